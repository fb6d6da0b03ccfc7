"""multiprocessing.Pool on actors (`ray.util.multiprocessing`): map, imap, apply, errors,
callbacks, chunking, close/terminate/join, starting the engine.

Small pools (2 processes) so the module runs quickly on 2 cores; work that must stay
unfinished waits for a gate file, created at teardown at the latest.
"""

from __future__ import annotations

import multiprocessing
import os
import queue

import pytest

from tests._engine import AGAINST_RAY, exceptions, ray, wait_for, wait_for_path

if AGAINST_RAY:
    from ray.util.multiprocessing import Pool, TimeoutError
else:
    from raylite.util.multiprocessing import Pool, TimeoutError

RAY_INIT = {"num_cpus": 2}


# Module-level functions: workers of either engine import them by reference.
def square(x):
    return x * x


def add(a, b):
    return a + b


def pid(_=None):
    return os.getpid()


def fail_on_3(x):
    if x == 3:
        raise ValueError("three is bad")
    return x


def gated(args):
    """Return `x` once `gate` exists (None: at once)."""
    x, gate = args
    if gate is not None:
        wait_for_path(gate)
    return x


def record_pid(dirname):
    with open(os.path.join(dirname, str(os.getpid())), "w") as f:
        f.write("started")


def fail_to_start():
    raise RuntimeError("init failed")


def kwargs_echo(a, b, *, c=None, d=None):
    return (a, b, c, d)


@pytest.fixture
def gate(tmp_path):
    path = tmp_path / "gate"
    yield str(path)
    path.touch()


@pytest.fixture
def pool(ray_start):
    p = Pool(processes=2)
    yield p
    p.terminate()
    p.join()


def test_stdlib_names_are_reexported():
    assert TimeoutError is multiprocessing.TimeoutError


def test_map_and_starmap_keep_order(pool):
    assert pool.map(square, range(10)) == [x * x for x in range(10)]
    assert pool.map(square, (x for x in range(5))) == [0, 1, 4, 9, 16]  # any iterable
    assert pool.map(square, []) == []
    assert pool.starmap(add, [(1, 2), (3, 4), (5, 6)]) == [3, 7, 11]
    assert pool.starmap(add, zip([1, 2], [3, 4], strict=True)) == [4, 6]
    assert pool.map_async(square, range(4)).get(timeout=60) == [0, 1, 4, 9]
    assert pool.starmap_async(add, [(1, 1)]).get(timeout=60) == [2]


def test_processes_default_to_the_cluster_cpus(ray_start):
    with Pool() as p:
        # Two items, chunksize 1 by the default rule: one chunk on each of 2 actors.
        assert len(set(p.map(pid, range(2)))) == 2
        assert os.getpid() not in p.map(pid, range(2))


def test_processes_must_fit_the_cluster(ray_start):
    with pytest.raises(ValueError, match="only 2 CPUs"):
        Pool(processes=3)
    with pytest.raises(ValueError, match="must be >0"):
        Pool(processes=0)


def test_chunks_go_round_robin(pool):
    # chunksize 3 over 7 items: [0,1,2] -> actor 0, [3,4,5] -> actor 1, [6] -> actor 0.
    pids = pool.map(pid, range(7), chunksize=3)
    assert len(set(pids[0:3])) == 1
    assert len(set(pids[3:6])) == 1
    assert pids[0] != pids[3]
    assert pids[6] == pids[0]


def test_initializer_runs_in_every_process_before_the_pool_returns(ray_start, tmp_path):
    with Pool(processes=2, initializer=record_pid, initargs=(str(tmp_path),)) as p:
        started = sorted(int(name) for name in os.listdir(tmp_path))
        assert len(started) == 2
        assert sorted(set(p.map(pid, range(2)))) == started


def test_a_failing_initializer_fails_the_pool(ray_start):
    with pytest.raises(exceptions.RayActorError, match="init failed"):
        Pool(processes=1, initializer=fail_to_start)


def test_apply_passes_args_and_kwargs(pool):
    assert pool.apply(kwargs_echo, (1, 2), {"d": 4}) == (1, 2, None, 4)
    assert pool.apply_async(kwargs_echo, (1, 2)).get(timeout=60) == (1, 2, None, None)
    assert pool.apply(pid) != os.getpid()
    with pytest.raises(TypeError):
        pool.apply(kwargs_echo, (1,))


def test_an_error_is_raised_in_the_caller_as_itself(pool):
    with pytest.raises(ValueError, match="three is bad") as info:
        pool.map(fail_on_3, range(6))
    assert info.type is ValueError  # the function's exception, not a task error
    with pytest.raises(ValueError, match="three is bad") as info:
        pool.apply(fail_on_3, (3,))
    assert info.type is ValueError
    with pytest.raises(ValueError, match="three is bad"):
        pool.starmap(fail_on_3, [(1,), (3,)])


def test_async_result_before_and_after_it_is_ready(pool, gate):
    result = pool.apply_async(gated, ((7, gate),))
    result.wait(timeout=0.05)
    assert not result.ready()
    with pytest.raises(TimeoutError):
        result.get(timeout=0.05)
    with pytest.raises(ValueError, match="not ready"):
        result.successful()
    open(gate, "w").close()
    result.wait(timeout=60)
    assert result.ready()
    assert result.successful()
    assert result.get() == 7


def test_a_failed_map_async_is_not_successful(pool):
    result = pool.map_async(fail_on_3, range(8), chunksize=2)
    result.wait(timeout=60)
    assert result.ready()
    assert not result.successful()
    with pytest.raises(ValueError, match="three is bad"):
        result.get()


def test_callback_gets_every_result_once(pool):
    calls = queue.Queue()
    result = pool.map_async(square, range(6), chunksize=1, callback=calls.put)
    assert result.get(timeout=60) == [0, 1, 4, 9, 16, 25]
    # The callback has run before the result is ready, and only once.
    assert sorted(calls.get_nowait()) == [0, 1, 4, 9, 16, 25]
    assert calls.empty()

    result = pool.apply_async(square, (5,), callback=calls.put)
    assert result.get(timeout=60) == 25
    assert calls.get_nowait() == 25  # apply_async: the one result, not a list
    assert calls.empty()


def test_error_callback_gets_the_first_failure_once(pool):
    calls, errors = queue.Queue(), queue.Queue()
    result = pool.map_async(
        fail_on_3, range(8), chunksize=1, callback=calls.put, error_callback=errors.put
    )
    result.wait(timeout=60)
    assert not result.successful()
    error = errors.get_nowait()
    assert errors.empty()
    assert calls.empty()  # no callback when an item failed
    # Ray passes the pool's wrapper, whose `underlying` is the function's exception.
    assert isinstance(error, Exception)
    assert type(error).__name__ == "PoolTaskError"
    assert isinstance(error.underlying, ValueError)

    result = pool.apply_async(fail_on_3, (3,), error_callback=errors.put)
    result.wait(timeout=60)
    assert isinstance(errors.get_nowait().underlying, ValueError)


def test_imap_yields_in_order_and_failures_as_values(pool):
    results = list(pool.imap(fail_on_3, range(8), chunksize=3))
    assert results[:3] == [0, 1, 2]
    assert results[4:] == [4, 5, 6, 7]
    assert isinstance(results[3], Exception)
    assert isinstance(results[3].underlying, ValueError)
    assert list(pool.imap(square, iter(range(5)))) == [0, 1, 4, 9, 16]  # an iterator
    assert list(pool.imap(square, [])) == []


def test_imap_next_times_out_and_resumes(pool, gate):
    it = pool.imap(gated, [(0, gate), (1, None), (2, None)])
    with pytest.raises(TimeoutError):
        it.next(timeout=0.1)
    open(gate, "w").close()
    assert [it.next(timeout=60) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(StopIteration):
        it.next()


def test_imap_unordered_yields_as_chunks_finish(pool, gate):
    # Item 0 waits for the gate; item 1 runs on the other actor; items 2 and 3 are only
    # submitted as results are taken, so the first result can only be item 1's.
    it = pool.imap_unordered(gated, [(0, gate), (1, None), (2, None), (3, None)])
    assert next(it) == 1
    open(gate, "w").close()
    assert sorted(it) == [0, 2, 3]
    assert sorted(pool.imap_unordered(square, iter(range(4)), chunksize=3)) == [0, 1, 4, 9]


def test_bad_chunksize_or_iterable(pool):
    with pytest.raises(TypeError):
        pool.imap(square, 3)


def test_close_lets_queued_work_finish(ray_start, gate):
    p = Pool(processes=2)
    result = p.map_async(gated, [(i, gate) for i in range(4)], chunksize=1)
    p.close()
    with pytest.raises(ValueError, match="Pool not running"):
        p.map(square, [1])
    with pytest.raises(ValueError, match="Pool not running"):
        p.apply_async(square, (1,))
    with pytest.raises(ValueError, match="Pool not running"):
        p.imap(square, [1])
    assert not result.ready()
    open(gate, "w").close()
    p.join()
    result.wait(timeout=60)
    assert result.successful()
    assert result.get() == [0, 1, 2, 3]


def test_terminate_fails_unfinished_work(ray_start, gate):
    p = Pool(processes=2)
    result = p.map_async(gated, [(i, gate) for i in range(2)], chunksize=1)
    p.terminate()
    p.join()  # returns although the work would wait forever
    result.wait(timeout=60)
    assert result.ready()
    assert not result.successful()
    with pytest.raises(exceptions.RayActorError):
        result.get()


def test_join_needs_a_closed_pool(pool):
    with pytest.raises(ValueError, match="still running"):
        pool.join()


def test_the_context_manager_terminates(ray_start):
    with Pool(processes=2) as p:
        assert p.map(square, [3]) == [9]
    with pytest.raises(ValueError, match="Pool not running"):
        p.map(square, [1])
    p.join()


def test_maxtasksperchild_replaces_actors(ray_start):
    with Pool(processes=2, maxtasksperchild=1) as p:
        assert len(set(p.map(pid, range(4), chunksize=1))) == 4


def test_ray_remote_args_go_to_the_actors(ray_start):
    # Pool actors take no CPU by default; with num_cpus=1 each holds one.
    with Pool(processes=2, ray_remote_args={"num_cpus": 1}) as p:
        assert len(set(p.map(pid, range(2)))) == 2
        wait_for(lambda: ray.available_resources().get("CPU", 0) == 0, 30, "CPUs held")


def use_a_pool_inside(n):
    # A pool inside a task: raylite/Ray already runs there; its actors take no CPU, so
    # they start although the task holds one of the 2.
    with Pool(processes=2, ray_address="auto") as p:
        return p.map(square, range(n))


def test_a_pool_inside_a_task(ray_start):
    f = ray.remote(use_a_pool_inside)
    assert ray.get(f.remote(3), timeout=120) == [0, 1, 4]


@pytest.mark.parametrize("address", [None, "local"])
def test_a_pool_starts_the_engine_with_its_processes(no_engine, address):
    p = Pool(processes=2, ray_address=address)
    try:
        assert ray.is_initialized()
        assert ray.cluster_resources()["CPU"] == 2
        assert len(set(p.map(pid, range(2)))) == 2
    finally:
        p.terminate()
        p.join()
