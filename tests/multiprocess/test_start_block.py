"""`raylite start --block`: the node runs while the command does, and ends with it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import psutil
import pytest

from tests._engine import AGAINST_RAY

pytestmark = pytest.mark.skipif(AGAINST_RAY, reason="raylite's own command line")

DRIVER = """
import sys
import raylite as ray
ray.init(address="{address}")

@ray.remote
def where():
    import os
    return os.getpid()

print("RAN", ray.get(where.remote()), flush=True)
sys.stdin.readline()  # connected, with its worker, until the test says
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_blocking(env: dict[str, str]) -> tuple[subprocess.Popen[str], int, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "raylite.cli", "start", "--head", "--port", str(port)]
    cmd += ["--num-cpus", "1", "--include-dashboard", "false", "--block"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    match = re.search(r"started at (\S+) \(pid (\d+)\)", first)
    assert match, first
    return proc, int(match.group(2)), match.group(1)


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "RAYLITE_TOKEN": "block test token", "TMPDIR": str(tmp_path)}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_block_keeps_the_node_until_the_command_is_stopped(env, tmp_path, sig):
    proc, nm_pid, address = _start_blocking(env)
    try:
        driver = subprocess.Popen(
            [sys.executable, "-c", DRIVER.format(address=address)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert driver.stdout is not None
        assert driver.stdin is not None
        line = driver.stdout.readline()
        assert line.startswith("RAN"), line
        assert proc.poll() is None, "start --block returned while its node runs"
        family = [psutil.Process(nm_pid), psutil.Process(int(line.split()[1]))]
        node_file = tmp_path / "raylite" / "nodes" / f"{nm_pid}.json"
        assert node_file.exists()
        proc.send_signal(sig)  # Ctrl-C in a terminal, or a service manager's stop
        assert proc.wait(30) == 0
        gone, alive = psutil.wait_procs(family, timeout=15)
        assert not alive, f"left running: {[p.pid for p in alive]}"
        assert not node_file.exists()
        driver.stdin.close()
        driver.wait(30)
    finally:
        for p in (proc, locals().get("driver")):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
        if psutil.pid_exists(nm_pid):
            os.kill(nm_pid, signal.SIGKILL)


def test_block_returns_an_error_when_its_node_dies(env, tmp_path):
    proc, nm_pid, _ = _start_blocking(env)
    try:
        os.kill(nm_pid, signal.SIGKILL)
        assert proc.wait(30) != 0
        assert not (tmp_path / "raylite" / "nodes" / f"{nm_pid}.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
