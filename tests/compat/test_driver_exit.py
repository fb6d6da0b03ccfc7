"""A driver script that ends without ray.shutdown() (issue 13): its last fire-and-forget
task still runs and its output reaches the terminal, as on Ray; tasks left waiting
for a worker end quietly (no error flood) and the script exits promptly."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from tests._engine import ENGINE_NAME, strip_ansi

pytestmark = pytest.mark.timeout(180)


def run_script(body: str) -> subprocess.CompletedProcess[str]:
    script = f"import {ENGINE_NAME} as ray\n" + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=150
    )


def test_a_last_line_fire_and_forget_task_runs(no_engine):
    proc = run_script(
        """
        ray.init(num_cpus=1)

        @ray.remote
        def hello():
            print("hello from the last line", flush=True)

        hello.remote()
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "hello from the last line" in strip_ansi(proc.stdout + proc.stderr)


def test_a_script_ending_with_many_waiting_tasks_exits_quietly(no_engine):
    start = time.monotonic()
    proc = run_script(
        """
        import time
        ray.init(num_cpus=1)

        @ray.remote
        def slow(i):
            time.sleep(0.05)
            return i

        refs = [slow.remote(i) for i in range(500)]
        print("submitted", flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "submitted" in proc.stdout
    assert time.monotonic() - start < 60  # 500 x 50 ms on 1 CPU would take 25 s
    lines = [line for line in proc.stderr.splitlines() if "Error" in line]
    assert len(lines) < 10, proc.stderr[-3000:]
