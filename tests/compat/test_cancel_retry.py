"""cancel() of queued and running tasks; retries of crashed workers and of exceptions."""

from __future__ import annotations

import os
import time

import pytest

from tests._engine import ray, raylite_only, wait_for

RAY_INIT = {"num_cpus": 1}


@ray.remote
def sleep_then(x, seconds):
    time.sleep(seconds)
    return x


@ray.remote
def busy(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "finished"


def test_cancel_a_queued_task(ray_start):
    blocker = sleep_then.remote("blocker", 1.0)  # holds the only CPU
    queued = sleep_then.remote("queued", 0)
    ray.cancel(queued)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(queued, timeout=30)
    assert ray.get(blocker, timeout=30) == "blocker"


@ray.remote
def mark_then_loop(marker, seconds):
    open(marker, "w").close()
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # Python code between short sleeps: Ray interrupts
        time.sleep(0.05)  # between bytecodes, so not inside one long sleep
    return "finished"


def test_cancel_a_running_task_interrupts_it(ray_start, tmp_path):
    marker = tmp_path / "started"
    ref = mark_then_loop.remote(str(marker), 60)
    wait_for(marker.exists, timeout=60, message="the task to start")
    start = time.monotonic()
    ray.cancel(ref)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(ref, timeout=30)
    assert time.monotonic() - start < 20


def test_force_cancel_kills_a_busy_task(ray_start):
    ref = busy.remote(60)
    time.sleep(0.5)
    ray.cancel(ref, force=True)
    with pytest.raises((ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError)):
        ray.get(ref, timeout=30)
    assert ray.get(sleep_then.remote("still works", 0), timeout=30) == "still works"


def test_cancel_needs_an_object_ref(ray_start):
    with pytest.raises(TypeError):
        ray.cancel("not a ref")


@ray.remote(max_retries=2)
def crash_until(marker_dir):
    attempts = len(os.listdir(marker_dir))
    open(os.path.join(marker_dir, str(attempts)), "w").close()
    if attempts < 2:
        os._exit(1)
    return attempts


def test_crashed_worker_is_retried(ray_start, tmp_path):
    assert ray.get(crash_until.remote(str(tmp_path)), timeout=60) == 2


@ray.remote(max_retries=0)
def crash_always():
    os._exit(1)


def test_crash_without_retries_raises_worker_crashed(ray_start):
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        ray.get(crash_always.remote(), timeout=60)


class Flaky(Exception):
    pass


@ray.remote(max_retries=3, retry_exceptions=[Flaky])
def flaky_until(marker_dir, exc_name):
    attempts = len(os.listdir(marker_dir))
    open(os.path.join(marker_dir, str(attempts)), "w").close()
    if attempts < 2:
        raise {"Flaky": Flaky, "ValueError": ValueError}[exc_name]("not yet")
    return attempts


def test_listed_exceptions_are_retried(ray_start, tmp_path):
    assert ray.get(flaky_until.remote(str(tmp_path), "Flaky"), timeout=60) == 2


def test_other_exceptions_are_not_retried(ray_start, tmp_path):
    with pytest.raises(ValueError):
        ray.get(flaky_until.remote(str(tmp_path), "ValueError"), timeout=60)
    assert len(os.listdir(tmp_path)) == 1


@ray.remote
def child_until_interrupted(marker_dir, seconds):
    open(os.path.join(marker_dir, "child-started"), "w").close()
    try:
        # Short sleeps: Ray interrupts a task between bytecodes, not inside one long sleep.
        for _ in range(int(seconds / 0.01)):
            time.sleep(0.01)
    except KeyboardInterrupt:
        open(os.path.join(marker_dir, "child-interrupted"), "w").close()
        raise
    open(os.path.join(marker_dir, "child-finished"), "w").close()
    return "child"


@ray.remote
def parent_of(marker_dir, seconds):
    return ray.get(child_until_interrupted.remote(marker_dir, seconds))


def _wait_file(path, timeout=30):
    from tests._engine import wait_for

    wait_for(lambda: os.path.exists(path), timeout=timeout, message=f"{path} to appear")


@pytest.mark.timeout(90)
def test_recursive_cancel_interrupts_the_tasks_it_submitted(ray_start, tmp_path):
    ref = parent_of.remote(str(tmp_path), 60)
    _wait_file(tmp_path / "child-started")  # the parent runs and waits on its child
    ray.cancel(ref, recursive=True)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(ref, timeout=30)
    _wait_file(tmp_path / "child-interrupted")
    assert not (tmp_path / "child-finished").exists()


@pytest.mark.timeout(90)
def test_non_recursive_cancel_lets_the_child_finish(ray_start, tmp_path):
    ref = parent_of.remote(str(tmp_path), 1.5)
    _wait_file(tmp_path / "child-started")
    ray.cancel(ref, recursive=False)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(ref, timeout=30)
    _wait_file(tmp_path / "child-finished")
    assert not (tmp_path / "child-interrupted").exists()


@ray.remote
class AsyncWaiter:
    def __init__(self):
        self.seen = None

    async def wait_long(self, started):
        import asyncio
        import os

        os.close(os.open(started, os.O_CREAT | os.O_WRONLY))  # the call runs now
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.seen = "cancelled"
            raise
        return "finished"

    async def what_was_seen(self):
        return self.seen


def test_cancel_of_a_running_async_actor_call(ray_start, tmp_path):
    from tests._engine import exceptions, wait_for_path

    actor = AsyncWaiter.remote()
    started = tmp_path / "started"
    ref = actor.wait_long.remote(str(started))
    wait_for_path(started)
    ray.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError) as info:
        ray.get(ref, timeout=30)
    assert isinstance(info.value, exceptions.RayTaskError)  # Ray: both at once
    assert ray.get(actor.what_was_seen.remote(), timeout=30) == "cancelled"


@ray.remote
class SyncWorker:
    def work(self, started, release, done):
        from pathlib import Path

        from tests._engine import wait_for_path

        Path(started).touch()
        wait_for_path(release)
        Path(done).touch()
        return "finished"

    def ping(self):
        return "pong"


@ray.remote
class DeafWorker:
    """A sync actor whose process does not hear of cancels: the race in which a call
    ends before its actor reads the CancelTask, made certain (raylite's hook)."""

    def __init__(self, heard):
        from pathlib import Path

        from raylite.core import context

        def ignore(task_id, recursive=False):
            Path(heard).touch()  # the CancelTask came, and is dropped

        context.global_worker().on_cancel_task = ignore

    def work(self, started, release):
        from pathlib import Path

        import numpy as np

        from tests._engine import wait_for_path

        Path(started).touch()
        wait_for_path(release)
        return np.ones(1 << 18)  # 2 MiB: a value in the store

    def ping(self):
        return "pong"


@raylite_only  # it silences the actor's cancel handler through raylite's own internals
def test_a_sync_actor_call_that_ends_before_its_cancel_arrives_is_still_cancelled(
    ray_start, tmp_path
):
    from tests._churn import store_objects
    from tests._engine import exceptions, wait_for_path

    started, release, heard = (str(tmp_path / n) for n in ("started", "release", "heard"))
    actor = DeafWorker.remote(heard)
    running = actor.work.remote(started, release)
    wait_for_path(started)
    ray.cancel(running)
    wait_for_path(heard)  # the actor got the cancel and did nothing with it
    (tmp_path / "release").touch()
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(running, timeout=30)
    assert ray.get(actor.ping.remote(), timeout=30) == "pong"
    # The 2 MiB value the call stored (under the ref's id) is freed: nobody can get it.
    wait_for(lambda: running.hex() not in store_objects(), timeout=10)


def test_cancel_of_a_running_sync_actor_call_lets_it_finish(ray_start, tmp_path):
    from tests._engine import exceptions, wait_for_path

    actor = SyncWorker.remote()
    started, release, done = (str(tmp_path / n) for n in ("started", "release", "done"))
    running = actor.work.remote(started, release, done)
    queued = actor.ping.remote()
    wait_for_path(started)
    ray.cancel(running)
    ray.cancel(queued)
    (tmp_path / "release").touch()
    # Ray does not interrupt a sync actor's running call: it ends, but its caller
    # gets TaskCancelledError; the queued call is cancelled before it runs.
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(running, timeout=30)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(queued, timeout=30)
    wait_for_path(done)
    assert ray.get(actor.ping.remote(), timeout=30) == "pong"
