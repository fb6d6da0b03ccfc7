"""A head started again on its SQLite storage still has its jobs: a finished one with
its logs, and one whose driver was running when the head was killed is FAILED, with
that driver (a process group of its own, outliving the head) ended."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import psutil
import pytest

from tests._engine import AGAINST_RAY, wait_for

pytestmark = [
    pytest.mark.skipif(AGAINST_RAY, reason="raylite's head storage"),
    pytest.mark.timeout(240),
]
TOKEN = "job restart test token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(env: dict[str, str], port: int, dash: int, db: str) -> int:
    cmd = [sys.executable, "-m", "raylite.cli", "start", "--head", "--port", str(port)]
    cmd += ["--dashboard-port", str(dash), "--storage", f"sqlite:///{db}", "--num-cpus", "1"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=True)
    match = re.search(r"head started at \S+ \(pid (\d+)\)", out.stdout)
    assert match, out.stdout + out.stderr
    return int(match.group(1))


def _client(url: str):
    from raylite.job_submission import JobSubmissionClient

    def connected():
        try:
            return JobSubmissionClient(url)
        except ConnectionError:
            return None

    return wait_for(connected, 60, f"the job API at {url}", interval=0.1)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_jobs_survive_a_head_restart_on_sqlite(tmp_path, monkeypatch):
    from raylite.job_submission import JobStatus

    monkeypatch.setenv("RAYLITE_TOKEN", TOKEN)
    env = {**os.environ, "RAYLITE_TOKEN": TOKEN, "TMPDIR": str(tmp_path)}
    port, dash, db = _free_port(), _free_port(), str(tmp_path / "head.db")
    url = f"http://127.0.0.1:{dash}"
    head_pid = _start(env, port, dash, db)
    try:
        client = _client(url)
        done = client.submit_job(entrypoint="echo done-a")
        wait_for(lambda: client.get_job_status(done) == JobStatus.SUCCEEDED, 60, "job a")
        code = "import os, time; print('pid', os.getpid(), flush=True); time.sleep(300)"
        running = client.submit_job(entrypoint=f'exec {sys.executable} -c "{code}"')
        logs = wait_for(lambda: re.search(r"pid (\d+)", client.get_job_logs(running)), 60, "pid")
        driver = int(logs.group(1))

        os.kill(head_pid, signal.SIGKILL)  # the head alone; its node and the driver stay
        wait_for(lambda: _gone(head_pid), 30, "the head gone")
        assert psutil.pid_exists(driver)
        head_pid = _start(env, port, dash, db)  # the node rejoins it
        client = _client(url)

        assert client.get_job_status(done) == JobStatus.SUCCEEDED
        assert client.get_job_logs(done) == "done-a\n"
        info = client.get_job_info(running)
        assert info.status == JobStatus.FAILED
        assert "when the head stopped" in info.message
        wait_for(lambda: _gone(driver), 30, "the leftover driver ended")
        assert "pid" in client.get_job_logs(running)  # its output so far, from storage
        assert {done, running} <= {j.submission_id for j in client.list_jobs()}
    finally:
        subprocess.run(
            [sys.executable, "-m", "raylite.cli", "stop"], env=env, timeout=60, check=False
        )
