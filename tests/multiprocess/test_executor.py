"""raylite.util.Executor: concurrent.futures' API, its calls run as tasks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import time

import pytest

from tests._engine import AGAINST_RAY, ray, wait_for_path

pytestmark = pytest.mark.skipif(AGAINST_RAY, reason="raylite's own (Ray has no Executor)")
RAY_INIT = {"num_cpus": 2}


@pytest.fixture
def executor(ray_start):
    from raylite.util import Executor

    with Executor() as ex:
        yield ex


def square(x):
    return x * x


def pid_of(_):
    return os.getpid()


def fail(x):
    raise ValueError(f"bad {x}")


def span(gate=None):
    start = time.time()
    if gate is not None:
        wait_for_path(gate)
    time.sleep(0.2)
    return start, time.time()


def test_submit_runs_in_a_worker_and_errors_come_back(executor):
    assert executor.submit(square, 7).result(timeout=60) == 49
    assert executor.submit(pid_of, 0).result(timeout=60) != os.getpid()
    with pytest.raises(ValueError, match="bad 3") as info:  # the cause's type catches it
        executor.submit(fail, 3).result(timeout=60)
    assert isinstance(info.value, ray.exceptions.RayTaskError)


def test_a_remote_function_keeps_its_options(executor):
    @ray.remote(num_cpus=2)
    def cpus():
        return ray.get_runtime_context().get_assigned_resources()["CPU"]

    assert executor.submit(cpus).result(timeout=60) == 2


def test_map_in_order_with_chunks_and_a_timeout(executor):
    assert list(executor.map(square, range(10))) == [x * x for x in range(10)]
    assert list(executor.map(pow, range(7), [2] * 7, chunksize=3)) == [x**2 for x in range(7)]
    pids = set(executor.map(pid_of, range(4), chunksize=4))
    assert len(pids) == 1  # one task ran the whole chunk
    results = executor.map(time.sleep, [5], timeout=0.2)
    with pytest.raises(TimeoutError):
        next(results)
    with pytest.raises(ValueError, match="chunksize"):
        executor.map(square, [1], chunksize=0)


def test_max_workers_bounds_the_calls_in_flight(ray_start):
    from raylite.util import Executor

    with Executor(max_workers=1) as ex:
        spans = sorted(f.result(timeout=60) for f in [ex.submit(span) for _ in range(3)])
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end  # one after the other, though 2 CPUs are there
    with pytest.raises(ValueError, match="max_workers"):
        Executor(max_workers=0)


def test_shutdown_cancels_what_waits_and_refuses_new_calls(ray_start, tmp_path):
    from raylite.util import Executor

    gate = tmp_path / "gate"
    ex = Executor(max_workers=1)
    first = ex.submit(span, str(gate))
    queued = [ex.submit(square, i) for i in range(3)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 1)
    gate.touch()
    ex.shutdown(wait=True)  # returns once the running call ended
    assert first.done()
    assert first.exception() is None


def test_futures_work_with_wait_as_completed_and_asyncio(executor):
    futures = [executor.submit(square, i) for i in range(5)]
    done, pending = concurrent.futures.wait(futures, timeout=60)
    assert (len(done), pending) == (5, set())
    assert sorted(f.result() for f in concurrent.futures.as_completed(futures)) == [
        0, 1, 4, 9, 16,
    ]  # fmt: skip

    async def main():
        return await asyncio.wrap_future(executor.submit(square, 12))

    assert asyncio.run(main()) == 144


def test_cancelling_a_running_call_cancels_its_task(executor, tmp_path):
    future = executor.submit(span, str(tmp_path / "never"))
    time.sleep(0.5)  # let it start: cancel() of a submitted call
    assert future.cancel() is False  # running: as a thread pool says
    with pytest.raises(ray.exceptions.TaskCancelledError):
        future.result(timeout=60)
