"""A head node started as a user would, `raylite start --head --block`, for tests that
need a cluster's node outliving its drivers (on 127.0.0.1, no testnet); and a driver
program run to its end as a process of its own."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def blocking_head(env: dict[str, str], num_cpus: int, cwd: Any = None) -> Iterator[str]:
    """The head's address while it runs; stopped with SIGTERM after, and checked gone
    with its node manager (killed and failed if either outlives it)."""
    cmd = [sys.executable, "-m", "raylite.cli", "start", "--head", "--port", str(free_port())]
    cmd += ["--num-cpus", str(num_cpus), "--include-dashboard", "false", "--block"]
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, text=True)
    family: list[psutil.Process] = []
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"started at (\S+) \(pid (\d+)\), with a node \(pid (\d+)\)", first)
        assert match, first
        for pid in (match.group(2), match.group(3)):
            with contextlib.suppress(psutil.NoSuchProcess):
                family.append(psutil.Process(int(pid)))
        yield match.group(1)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        _, alive = psutil.wait_procs(family, timeout=15)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                os.kill(p.pid, signal.SIGKILL)
        assert not alive, f"left running after the head stopped: {[p.pid for p in alive]}"


def run_driver(script: str, *args: str, env: dict[str, str], timeout: float = 90) -> str:
    """`python -c script args...` run to its end; its stdout (failed unless it exits 0,
    with its output)."""
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout
