"""The node's memory monitor kills a worker when the node's memory passes the threshold:
a task with retries is retried (its retries not spent), one without raises
OutOfMemoryError naming the task, the node and the memory; the driver and the node
manager carry on.

Deterministic: the monitor reads RAYLITE_MEMORY_MONITOR_FAKE (memory_monitor.py's test
hook) instead of the machine, and a task "allocates" by appending its pid and a size
to that file, which counts while its process lives (so the kill frees it). The real
reading, with a real allocation, is tested against both engines in
tests/compat/test_oom.py.
"""

from __future__ import annotations

import os
import time

import pytest

from tests._engine import AGAINST_RAY, exceptions, ray, wait_for

pytestmark = pytest.mark.skipif(AGAINST_RAY, reason="raylite's test hook for the memory reading")

TOTAL = 10_000
THRESHOLD = 0.5  # 5,000 of the fake 10,000 bytes


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    fake = tmp_path_factory.mktemp("oom") / "memory"
    fake.write_text(f"1000 {TOTAL}\n")  # 10% used
    env = {
        "RAYLITE_MEMORY_MONITOR_FAKE": str(fake),
        "RAY_memory_usage_threshold": str(THRESHOLD),
        "RAY_memory_monitor_refresh_ms": "20",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    if ray.is_initialized():
        ray.shutdown()
    try:
        ray.init(num_cpus=2)
        yield fake
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def hold(fake: str, nbytes: int) -> None:
    """Say this process holds `nbytes` more (the test hook's line), then wait to be
    killed (bounded: a test that is not killed fails on its result)."""
    with open(fake, "a") as f:
        f.write(f"{os.getpid()} {nbytes}\n")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_task_without_retries_fails_with_out_of_memory_error(engine) -> None:
    fake = str(engine)

    @ray.remote(max_retries=0)
    def hog(path: str) -> str:
        hold(path, 8000)
        return "not killed"

    with pytest.raises(exceptions.OutOfMemoryError) as info:
        ray.get(hog.remote(fake), timeout=60)
    assert isinstance(info.value, exceptions.RayError)
    text = str(info.value)
    node_id = ray.get_runtime_context().get_node_id()
    assert text.startswith("1 worker(s) were killed due to the node running low on memory.")
    assert f"ID: {node_id})" in text  # the node
    assert "The task killed: name=hog, task ID=" in text  # the task
    assert "used / " in text  # the memory figures
    assert "exceeds the memory usage threshold of 0.500000" in text
    assert "OOM kill reason: Memory usage 9000B exceeded threshold of 5000B" in text

    @ray.remote
    def fine() -> int:
        return 1

    assert ray.get(fine.remote(), timeout=30) == 1  # the driver and the node carry on


def test_a_task_with_retries_is_retried_without_spending_them(engine, tmp_path) -> None:
    fake, attempts = str(engine), tmp_path / "attempts"

    @ray.remote(max_retries=1)
    def hog(path: str, marker: str) -> int:
        with open(marker, "a") as f:
            f.write("x")
        n = len(open(marker).read())
        if n <= 2:  # killed twice: more than its one retry
            hold(path, 8000)
        return n

    assert ray.get(hog.remote(fake, str(attempts)), timeout=60) == 3


def test_the_retriable_task_is_killed_before_a_newer_one_without_retries(engine, tmp_path) -> None:
    fake = str(engine)
    started, go, done = tmp_path / "started", tmp_path / "go", tmp_path / "done"
    running = tmp_path / "running"

    @ray.remote(max_retries=1)
    def retriable(path: str) -> str:
        if os.path.exists(started):
            return "retried"
        started.write_text("")
        wait_for(go.exists, 60, "go")
        hold(path, 8000)
        return "not killed"

    # Another shape: its own lease class, whose lease says it is not retriable.
    @ray.remote(max_retries=0, num_cpus=0.5)
    def fixed() -> str:
        running.write_text("")
        wait_for(done.exists, 60, "done")
        return "survived"

    first = retriable.remote(fake)
    wait_for(started.exists, 30, "the retriable task started")
    newer = fixed.remote()
    wait_for(running.exists, 30, "the newer task runs")  # its worker's lease is newer
    go.write_text("")
    assert ray.get(first, timeout=60) == "retried"
    done.write_text("")
    assert ray.get(newer, timeout=60) == "survived"


def test_an_actor_killed_for_memory_fails_its_call_with_out_of_memory_error(engine) -> None:
    """As on Ray 2.60: an actor without restarts whose worker the monitor kills is dead,
    and its calls raise OutOfMemoryError (a RayError, not an ActorDiedError) naming the
    actor; the driver and the node carry on."""
    fake = str(engine)

    @ray.remote
    class Hog:
        def hold(self, path: str) -> str:
            hold(path, 8000)
            return "not killed"

    actor = Hog.remote()
    with pytest.raises(exceptions.OutOfMemoryError) as info:
        ray.get(actor.hold.remote(fake), timeout=60)
    text = str(info.value)
    assert text.startswith("1 worker(s) were killed due to the node running low on memory.")
    assert "The actor killed: name=Hog, actor ID=" in text

    @ray.remote
    def fine() -> int:
        return 1

    assert ray.get(fine.remote(), timeout=30) == 1


def test_an_actor_with_restarts_killed_for_memory_restarts(engine, tmp_path) -> None:
    fake, lives = str(engine), tmp_path / "lives"

    @ray.remote(max_restarts=1)
    class Hog:
        def __init__(self, marker: str) -> None:
            with open(marker, "a") as f:
                f.write("x")

        def hold(self, path: str) -> str:
            hold(path, 8000)
            return "not killed"

        def ping(self) -> str:
            return "pong"

    actor = Hog.remote(str(lives))
    with pytest.raises(exceptions.OutOfMemoryError):  # the call (no max_task_retries), as Ray
        ray.get(actor.hold.remote(fake), timeout=60)
    assert ray.get(actor.ping.remote(), timeout=60) == "pong"
    assert lives.read_text() == "xx"  # its constructor ran again
