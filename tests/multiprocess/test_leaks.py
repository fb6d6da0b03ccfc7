"""raylite leaves nothing behind: processes, shared memory and threads.

Three ways a driver ends: `shutdown()`, exiting without it, and SIGKILL. In each case
every process raylite started for the driver, and every shared-memory segment it
created, must be gone within a bounded time. Processes are recorded (pid and start
time, so a reused pid is not mistaken for a survivor) while the driver runs.
Only processes started by these tests are ever killed, by pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest

from tests._engine import ray, raylite_only, wait_for

pytestmark = [raylite_only, pytest.mark.timeout(90)]

GONE_WITHIN_S = 10.0
SHM = Path("/dev/shm")
REPO_ROOT = Path(__file__).resolve().parents[2]


def raylite_shm_entries() -> set[str]:
    if not SHM.is_dir():
        return set()
    return {name for name in os.listdir(SHM) if "raylite" in name.lower()}


def is_gone(pid: int, create_time: float, *, zombie_is_gone: bool) -> bool:
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > 0.01:
            return True  # the pid was reused by an unrelated process
        return zombie_is_gone and proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def describe(pid: int) -> str:
    try:
        proc = psutil.Process(pid)
        return f"pid={pid} status={proc.status()} cmdline={' '.join(proc.cmdline())[:160]!r}"
    except psutil.Error:
        return f"pid={pid} (gone)"


def wait_until_gone(procs: dict[int, float], *, zombie_is_gone: bool) -> None:
    wait_for(
        lambda: all(is_gone(p, t, zombie_is_gone=zombie_is_gone) for p, t in procs.items()),
        timeout=GONE_WITHIN_S,
        message=lambda: (
            "processes to exit: "
            + "; ".join(
                describe(p)
                for p, t in procs.items()
                if not is_gone(p, t, zombie_is_gone=zombie_is_gone)
            )
        ),
    )


def wait_until_no_new_shm(before: set[str]) -> None:
    wait_for(
        lambda: not (raylite_shm_entries() - before),
        timeout=GONE_WITHIN_S,
        message=lambda: f"/dev/shm raylite entries to go: {sorted(raylite_shm_entries() - before)}",
    )


@ray.remote
def square(x):
    return x * x


@ray.remote
class Keeper:
    def __init__(self):
        self.items = []

    def keep(self, item):
        self.items.append(item)
        return len(self.items)


def _exercise_engine() -> None:
    assert ray.get([square.remote(i) for i in range(10)]) == [i * i for i in range(10)]
    keepers = [Keeper.remote() for _ in range(2)]
    assert ray.get([k.keep.remote(1) for k in keepers]) == [1, 1]
    big = ray.put(np.ones(20 * 1024 * 1024 // 8))  # 20 MB: goes to shared memory
    assert ray.get(big).nbytes == 20 * 1024 * 1024


@pytest.fixture
def clean_start():
    if ray.is_initialized():
        ray.shutdown()
    yield
    if ray.is_initialized():
        ray.shutdown()


def test_shutdown_leaves_no_process_and_no_shared_memory(clean_start):
    shm_before = raylite_shm_entries()
    me = psutil.Process()
    children_before = {p.pid for p in me.children(recursive=True)}

    ray.init(num_cpus=2)
    _exercise_engine()
    started = {
        p.pid: p.create_time() for p in me.children(recursive=True) if p.pid not in children_before
    }
    assert started, "raylite ran tasks and actors without starting any process?"
    ray.shutdown()
    assert not ray.is_initialized()

    try:
        # Zombies count: the driver started these processes and must reap them.
        wait_until_gone(started, zombie_is_gone=False)
        wait_until_no_new_shm(shm_before)
        assert not [p for p in me.children(recursive=True) if p.pid not in children_before]
    finally:
        _kill_survivors(started)


def test_shutdown_joins_its_threads(clean_start):
    threads_before = set(threading.enumerate())
    ray.init(num_cpus=1)
    assert ray.get(square.remote(3)) == 9
    for _ in range(2):  # the second into a recycled file: copied by threads (object_store)
        assert ray.get(ray.put(np.ones(16 << 20, dtype=np.uint8)))[-1] == 1
    ray.shutdown()
    wait_for(
        lambda: set(threading.enumerate()) <= threads_before,
        timeout=GONE_WITHIN_S,
        message=lambda: f"threads to stop: {set(threading.enumerate()) - threads_before}",
    )


def test_init_after_shutdown_in_same_process_is_clean(clean_start):
    shm_before = raylite_shm_entries()
    me = psutil.Process()
    children_before = {p.pid for p in me.children(recursive=True)}
    for _ in range(2):
        ray.init(num_cpus=1)
        assert ray.get(square.remote(4)) == 16
        ray.shutdown()
    started = {
        p.pid: p.create_time() for p in me.children(recursive=True) if p.pid not in children_before
    }
    try:
        wait_until_gone(started, zombie_is_gone=False)
        wait_until_no_new_shm(shm_before)
    finally:
        _kill_survivors(started)


DRIVER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import psutil
    import raylite as ray

    @ray.remote
    def square(x):
        return x * x

    @ray.remote
    class Keeper:
        def keep(self, item):
            return item

    ray.init(num_cpus=2)
    assert ray.get([square.remote(i) for i in range(10)]) == [i * i for i in range(10)]
    keepers = [Keeper.remote() for _ in range(2)]
    assert ray.get([k.keep.remote(1) for k in keepers]) == [1, 1]
    big = ray.put(np.ones(20 * 1024 * 1024 // 8))
    assert ray.get(big).nbytes == 20 * 1024 * 1024
    children = {p.pid: p.create_time() for p in psutil.Process().children(recursive=True)}
    print(json.dumps(children), flush=True)
    if sys.argv[1] == "block":
        sys.stdin.read()   # wait to be killed
    # "exit": leave without calling shutdown()
    """
)


def _kill_survivors(procs: dict[int, float]) -> None:
    """After a failed check, kill (by pid) what the test's own driver left running."""
    for pid, create_time in procs.items():
        if not is_gone(pid, create_time, zombie_is_gone=True):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def start_driver(tmp_path: Path, source: str, *args: str) -> subprocess.Popen[str]:
    """Run `source` as a raylite driver of its own (never Ray), pipes on every stream."""
    script = tmp_path / "driver.py"
    script.write_text(source)
    env = dict(os.environ)
    env.pop("RAYLITE_TESTS_AGAINST_RAY", None)
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_children(proc: subprocess.Popen[str]) -> dict[int, float]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"driver failed before reporting its processes:\n{err[-3000:]}")
    children = {int(pid): t for pid, t in json.loads(line).items()}
    assert children, "the driver ran tasks and actors without starting any process?"
    return children


def test_driver_exiting_without_shutdown_leaves_nothing(tmp_path):
    shm_before = raylite_shm_entries()
    proc = start_driver(tmp_path, DRIVER, "exit")
    children: dict[int, float] = {}
    try:
        children = _read_children(proc)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-3000:]
        # The driver is gone; orphans are reaped by init, so a zombie counts as exited.
        wait_until_gone(children, zombie_is_gone=True)
        wait_until_no_new_shm(shm_before)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        _kill_survivors(children)


def test_driver_killed_with_sigkill_leaves_nothing(tmp_path):
    shm_before = raylite_shm_entries()
    proc = start_driver(tmp_path, DRIVER, "block")
    children: dict[int, float] = {}
    try:
        children = _read_children(proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        wait_until_gone(children, zombie_is_gone=True)
        wait_until_no_new_shm(shm_before)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        _kill_survivors(children)
