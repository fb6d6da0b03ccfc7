"""Out-of-memory prevention (Ray's memory monitor), with a real allocation: the node's
threshold (RAY_memory_usage_threshold) is set 1.2 GB above the memory in use when the
module starts, and a task allocates until the monitor kills it.

Ray 2.60's behaviour, which raylite follows: a task with max_retries=0 fails with
OutOfMemoryError (a RayError) whose message says the worker was killed because the node
ran low on memory, names the node and the task; a task with retries is retried, and a
kill for memory does not spend them (Ray retries without limit, with a backoff); an
actor without restarts dies, and its call raises OutOfMemoryError too.

The machine is shared: another process using 1.2 GB more at the same moment makes the
monitor act earlier, which these tests allow (the outcome is the same).
"""

from __future__ import annotations

import os
import time

import psutil
import pytest

from tests._engine import exceptions, ray

MARGIN = 1_200_000_000  # bytes above the memory in use at the start


@pytest.fixture(scope="module")
def engine():
    vm = psutil.virtual_memory()
    threshold = (vm.total - vm.available + MARGIN) / vm.total
    env = {
        "RAY_memory_usage_threshold": f"{threshold:.4f}",
        "RAY_memory_monitor_refresh_ms": "100",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    if ray.is_initialized():
        ray.shutdown()
    try:
        # address="local": a Ray cluster another process started on this host is not ours.
        ray.init(num_cpus=1, address="local", include_dashboard=False)
        yield
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def allocate_until_killed() -> int:
    """Take memory 20 MB at a time (written, so it is resident), up to 8 GB in all."""
    chunks = []
    for _ in range(400):
        chunks.append(b"\x01" * (20 << 20))
        time.sleep(0.01)
    return len(chunks)


def test_a_task_without_retries_raises_out_of_memory_error(engine) -> None:
    @ray.remote(max_retries=0)
    def hog() -> int:
        return allocate_until_killed()

    with pytest.raises(exceptions.OutOfMemoryError) as info:
        ray.get(hog.remote(), timeout=120)
    assert isinstance(info.value, exceptions.RayError)
    text = str(info.value)
    assert "worker(s) were killed due to the node running low on memory" in text
    assert f"ID: {ray.get_runtime_context().get_node_id()})" in text
    assert "name=hog" in text

    @ray.remote
    def fine() -> int:
        return 1

    assert ray.get(fine.remote(), timeout=60) == 1  # the driver and the node carry on


def test_a_task_with_retries_is_retried_without_spending_them(engine, tmp_path) -> None:
    attempts = tmp_path / "attempts"

    @ray.remote(max_retries=1)
    def hog(marker: str) -> int:
        with open(marker, "a") as f:
            f.write("x")
        n = len(open(marker).read())
        if n <= 2:  # killed twice: more kills than its one retry
            allocate_until_killed()
            return -n  # not killed: the monitor did not act
        return n

    assert ray.get(hog.remote(str(attempts)), timeout=120) == 3


def test_an_actor_killed_for_memory_fails_its_call_with_out_of_memory_error(engine) -> None:
    @ray.remote
    class Hog:
        def hold(self) -> int:
            return allocate_until_killed()

    actor = Hog.remote()
    with pytest.raises(exceptions.OutOfMemoryError) as info:
        ray.get(actor.hold.remote(), timeout=120)
    assert "worker(s) were killed due to the node running low on memory" in str(info.value)
    with pytest.raises(exceptions.OutOfMemoryError):  # dead, and why
        ray.get(actor.hold.remote(), timeout=120)
