"""ActorPool (`ray.util.ActorPool`): ordering, queueing, timeouts, the idle set."""

from __future__ import annotations

import os
import time

import pytest

from tests._engine import AGAINST_RAY, exceptions, ray, raylite_only, wait_for_path

if AGAINST_RAY:
    from ray.util import ActorPool
else:
    from raylite.util.actor_pool import ActorPool

RAY_INIT = {"num_cpus": 4}


@ray.remote
class Worker:
    def double(self, v):
        return 2 * v

    def echo_after(self, v, gate=None, delay=0.0):
        """Return `v` once `gate` exists (if given) and `delay` seconds have passed."""
        if gate is not None:
            wait_for_path(gate)
        time.sleep(delay)
        return v

    def pid(self, _v=None):
        return os.getpid()


def double(actor, v):
    return actor.double.remote(v)


def echo(actor, args):
    return actor.echo_after.remote(*args)


@pytest.fixture
def gate(tmp_path):
    """A path that gated calls wait for; created at teardown so no call stays blocked."""
    path = tmp_path / "gate"
    yield str(path)
    path.touch()


def test_map_keeps_order(ray_start):
    pool = ActorPool([Worker.remote(), Worker.remote()])
    # Earlier values take longer, so completion order is the reverse of input order.
    values = [(i, None, 0.05 * (4 - i)) for i in range(5)]
    assert list(pool.map(echo, values)) == [0, 1, 2, 3, 4]
    assert list(pool.map(double, [5, 6, 7])) == [10, 12, 14]
    assert not pool.has_next()


def test_map_unordered_yields_fast_result_first(ray_start, gate):
    pool = ActorPool([Worker.remote(), Worker.remote()])
    results = pool.map_unordered(echo, [("slow", gate), ("fast", None)])
    assert next(results) == "fast"
    open(gate, "w").close()
    assert next(results) == "slow"
    assert list(results) == []
    assert sorted(pool.map_unordered(double, range(6))) == [0, 2, 4, 6, 8, 10]


def test_map_drops_results_pending_from_before(ray_start, gate):
    pool = ActorPool([Worker.remote(), Worker.remote()])
    pool.submit(echo, ("stale", gate))
    results = pool.map(double, [1, 2, 3])
    open(gate, "w").close()
    assert list(results) == [2, 4, 6]


def test_submit_get_next_in_submission_order(ray_start):
    pool = ActorPool([Worker.remote(), Worker.remote()])
    # More values than actors: the rest wait in the pool's queue.
    for i, delay in enumerate([0.2, 0.0, 0.1, 0.0, 0.0]):
        pool.submit(echo, (i, None, delay))
    assert pool.has_next()
    assert [pool.get_next() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert not pool.has_next()


def test_get_next_unordered(ray_start, gate):
    pool = ActorPool([Worker.remote(), Worker.remote()])
    pool.submit(echo, ("slow", gate))
    pool.submit(echo, ("fast", None))
    assert pool.get_next_unordered() == "fast"
    open(gate, "w").close()
    assert pool.get_next_unordered() == "slow"
    assert not pool.has_next()


def test_get_next_on_empty_pool_raises_stop_iteration(ray_start):
    pool = ActorPool([Worker.remote()])
    with pytest.raises(StopIteration, match="No more results to get"):
        pool.get_next()
    with pytest.raises(StopIteration, match="No more results to get"):
        pool.get_next_unordered()
    pool.submit(double, 1)
    assert pool.get_next() == 2
    with pytest.raises(StopIteration, match="No more results to get"):
        pool.get_next()


def test_has_free_pop_idle_push(ray_start):
    a1, a2 = Worker.remote(), Worker.remote()
    pool = ActorPool([a1])
    assert pool.has_free()
    pool.submit(double, 1)
    assert not pool.has_free()
    assert pool.pop_idle() is None
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(a1)  # busy
    assert pool.get_next() == 2
    assert pool.has_free()
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(a1)  # idle

    assert pool.pop_idle() == a1
    assert not pool.has_free()
    assert pool.pop_idle() is None
    # No actor: the value is queued, and a queued value is not a pending result.
    pool.submit(double, 2)
    assert not pool.has_next()
    assert not pool.has_free()
    pool.push(a2)  # takes the queued value at once
    assert pool.has_next()
    assert not pool.has_free()
    assert pool.get_next() == 4
    assert pool.has_free()
    pool.push(a1)
    assert {pool.pop_idle(), pool.pop_idle()} == {a1, a2}
    assert pool.pop_idle() is None


def test_work_is_spread_over_all_actors(ray_start):
    actors = [Worker.remote() for _ in range(3)]
    actor_pids = set(ray.get([a.pid.remote() for a in actors]))
    assert len(actor_pids) == 3
    pool = ActorPool(actors)
    assert set(pool.map(lambda a, v: a.pid.remote(v), range(9))) == actor_pids


def test_get_next_timeout(ray_start, gate):
    pool = ActorPool([Worker.remote()])
    pool.submit(echo, ("slow", gate))

    start = time.monotonic()
    with pytest.raises(TimeoutError, match="Timed out waiting for result") as info:
        pool.get_next(timeout=0.2)
    assert time.monotonic() - start < 5
    if not AGAINST_RAY:
        assert isinstance(info.value, exceptions.GetTimeoutError)
    with pytest.raises(TimeoutError):
        pool.get_next_unordered(timeout=0.1)
    # Without ignore_if_timedout the call stays pending and can still be collected.
    assert pool.has_next()
    assert not pool.has_free()
    open(gate, "w").close()
    assert pool.get_next(timeout=30) == "slow"


def test_get_next_timeout_ignored(ray_start, gate):
    pool = ActorPool([Worker.remote()])
    pool.submit(echo, ("ignored", gate))
    pool.submit(echo, ("queued", None))
    with pytest.raises(TimeoutError, match="has been ignored") as info:
        pool.get_next(timeout=0.2, ignore_if_timedout=True)
    if not AGAINST_RAY:
        assert isinstance(info.value, exceptions.GetTimeoutError)
    # The timed-out call is dropped; its actor went back to the pool and took the
    # queued value (which runs once the actor's blocked call ends).
    assert pool.has_next()
    open(gate, "w").close()
    assert pool.get_next(timeout=30) == "queued"
    assert not pool.has_next()
    assert pool.has_free()


@raylite_only  # Ray 2.60 fails here with UnboundLocalError
def test_get_next_unordered_timeout_ignored_drops_oldest(ray_start, gate):
    pool = ActorPool([Worker.remote(), Worker.remote()])
    pool.submit(echo, ("first", gate))
    pool.submit(echo, ("second", gate))
    with pytest.raises(exceptions.GetTimeoutError, match="has been ignored"):
        pool.get_next_unordered(timeout=0.1, ignore_if_timedout=True)
    assert pool.has_free()
    open(gate, "w").close()
    assert pool.get_next_unordered(timeout=30) == "second"
    assert not pool.has_next()


def test_dead_actor_leaves_the_pool(ray_start):
    a1 = Worker.remote()
    pool = ActorPool([a1])
    assert ray.get(a1.double.remote(1)) == 2
    ray.kill(a1)
    pool.submit(double, 1)
    with pytest.raises(exceptions.RayActorError):
        pool.get_next(timeout=30)
    assert not pool.has_free()
    assert pool.pop_idle() is None
