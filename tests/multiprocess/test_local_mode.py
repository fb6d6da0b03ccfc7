"""init(local_mode=True): every task and actor call runs inline in the driver, in
submission order, with the API and errors of a normal session (raylite's debug mode;
Ray 2.60 removed it: tests/compat/test_init_options.py checks Ray's refusal)."""

from __future__ import annotations

import os
import threading

import pytest

from tests._engine import AGAINST_RAY, ray

pytestmark = pytest.mark.skipif(AGAINST_RAY, reason="Ray 2.60 has no local mode")
np = pytest.importorskip("numpy")


@pytest.fixture
def local(no_engine):
    ray.init(num_cpus=1, local_mode=True)
    yield
    ray.shutdown()


@ray.remote
def where(x=None):
    return os.getpid(), threading.get_ident(), x


@ray.remote
def scribble(a):
    a[0] = 99
    return a


@ray.remote
def fails():
    raise ValueError("inline failure")


@ray.remote
def double(x):
    return 2 * x


def test_tasks_run_inline_in_the_driver_in_order(local):
    order = []

    @ray.remote
    def note(i):
        order.append(i)  # the driver's own list: the task runs in this process
        return i

    refs = [note.remote(i) for i in range(5)]
    assert order == [0, 1, 2, 3, 4]  # ran at .remote(), in submission order
    assert ray.get(refs) == [0, 1, 2, 3, 4]
    pid, thread, _ = ray.get(where.remote())
    assert (pid, thread) == (os.getpid(), threading.get_ident())  # pdb works here


def test_values_are_copies_and_refs_are_resolved(local):
    data = np.zeros(3)
    out = ray.get(scribble.remote(data))
    assert out[0] == 99
    assert data[0] == 0  # the caller's array is untouched
    stored = ray.get(ray.put(np.ones(2)))
    assert not stored.flags.writeable  # as from the store in a normal session
    assert ray.get(double.remote(ray.put(21))) == 42
    ready, pending = ray.wait([double.remote(1), double.remote(2)], num_returns=2)
    assert (len(ready), pending) == (2, [])


def test_errors_are_raised_at_get_as_in_a_normal_session(local):
    ref = fails.remote()  # does not raise here
    with pytest.raises(ray.exceptions.RayTaskError, match="inline failure") as info:
        ray.get(ref)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="inline failure"):  # an argument's failure
        ray.get(double.remote(fails.remote()))


def test_generators_and_several_returns(local):
    @ray.remote
    def count(n):
        yield from range(n)

    @ray.remote(num_returns=2)
    def pair():
        return "a", "b"

    assert [ray.get(r) for r in count.remote(3)] == [0, 1, 2]
    assert ray.get(pair.remote()) == ["a", "b"]


def test_actors_live_in_the_driver(local):
    @ray.remote
    class Counter:
        def __init__(self, start):
            self.n = start

        def add(self, k=1):
            self.n += k
            return self.n, os.getpid()

        async def later(self):
            return self.n

    counter = Counter.options(name="counter").remote(10)
    assert ray.get(counter.add.remote())[0] == 11
    assert ray.get(counter.add.remote(5)) == (16, os.getpid())
    assert ray.get(counter.later.remote()) == 16  # an async method, run to its end
    assert ray.get(ray.get_actor("counter").add.remote())[0] == 17
    ray.kill(counter)
    with pytest.raises(ray.exceptions.ActorDiedError):
        ray.get(counter.add.remote())
    with pytest.raises(ValueError):
        ray.get_actor("counter")


def test_a_failing_constructor_makes_a_dead_actor(local):
    @ray.remote
    class Broken:
        def __init__(self):
            raise RuntimeError("no")

        def ping(self):
            return 1

    with pytest.raises(ray.exceptions.ActorDiedError, match="constructor"):
        ray.get(Broken.remote().ping.remote())


def test_local_mode_cannot_join_a_cluster(no_engine):
    with pytest.raises(ValueError, match="local_mode"):
        ray.init(address="127.0.0.1:1", local_mode=True)
