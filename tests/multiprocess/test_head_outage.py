"""While the head is being restarted (SQLite storage), a driver's get_actor and the
creation of a named actor wait for it and then work, as Ray's clients wait for a
restarted GCS; the outage here lasts longer than the node timeout (the chaos soak
found get_actor failing with an AttributeError on the node's Failed reply after it).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from tests._engine import AGAINST_RAY, wait_for

pytestmark = [
    pytest.mark.skipif(AGAINST_RAY, reason="raylite's head storage and CLI"),
    pytest.mark.timeout(240),
]
TOKEN = "head outage test token"
NODE_TIMEOUT_S = 1.0

DRIVER = """
import json, os, sys
import raylite as ray

ray.init(address=sys.argv[1], namespace="outage")

@ray.remote
class Keeper:
    def __init__(self, n):
        self.n = n
    def get(self):
        return self.n

keeper = Keeper.options(name="kept", lifetime="detached").remote(7)
assert ray.get(keeper.get.remote(), timeout=60) == 7
print("READY", flush=True)
sys.stdin.readline()  # the head is down now
print("LOOKING", flush=True)
found = ray.get(ray.get_actor("kept").get.remote(), timeout=60)
made = Keeper.options(name="made_during_outage").remote(8)
print(json.dumps({"found": found, "made": ray.get(made.get.remote(), timeout=60)}), flush=True)
ray.kill(ray.get_actor("kept"))
ray.shutdown()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_head(env: dict[str, str], port: int, db: str) -> int:
    cmd = [sys.executable, "-m", "raylite.cli", "start", "--head", "--port", str(port)]
    cmd += ["--storage", f"sqlite:///{db}", "--num-cpus", "2"]
    cmd += ["--node-timeout-s", str(NODE_TIMEOUT_S)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=True)
    match = re.search(r"head started at \S+ \(pid (\d+)\)", out.stdout)
    assert match, out.stdout + out.stderr
    return int(match.group(1))


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_get_actor_and_a_named_actor_wait_for_a_restarting_head(tmp_path):
    env = {**os.environ, "RAYLITE_TOKEN": TOKEN, "TMPDIR": str(tmp_path)}
    port, db = _free_port(), str(tmp_path / "head.db")
    head_pid = _start_head(env, port, db)
    driver = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(DRIVER), f"127.0.0.1:{port}"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert driver.stdout.readline().startswith("READY"), driver.stderr.read()
        os.kill(head_pid, signal.SIGKILL)  # the head alone: its node and the actor stay
        wait_for(lambda: _gone(head_pid), 30, "the head gone")
        driver.stdin.write("\n")
        driver.stdin.flush()
        assert driver.stdout.readline().startswith("LOOKING")
        # The outage is the fault under test: it lasts past the node timeout, while
        # the driver's requests for the head are waiting.
        time.sleep(3 * NODE_TIMEOUT_S)
        head_pid = _start_head(env, port, db)  # the node rejoins it
        out, err = driver.communicate(timeout=120)
        assert driver.returncode == 0, err[-3000:]
        result = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
        assert result == {"found": 7, "made": 8}
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        subprocess.run(
            [sys.executable, "-m", "raylite.cli", "stop"], env=env, timeout=60, check=False
        )


def test_a_stopped_head_closes_its_storage(tmp_path):
    """`raylite stop` ends the head's process, which closes its SQLite storage first:
    its write-ahead log is folded into the file and removed, the file whole."""
    import sqlite3

    env = {**os.environ, "RAYLITE_TOKEN": TOKEN, "TMPDIR": str(tmp_path)}
    port, db = _free_port(), str(tmp_path / "head.db")
    head_pid = _start_head(env, port, db)
    try:
        assert os.path.exists(db + "-wal")  # open: its log is there
    finally:
        subprocess.run(
            [sys.executable, "-m", "raylite.cli", "stop"], env=env, timeout=60, check=False
        )
    wait_for(lambda: _gone(head_pid), 30, "the head gone")
    assert not os.path.exists(db + "-wal")
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
