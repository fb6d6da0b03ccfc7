"""Named actors, get_actor, exit_actor, ObjectRef.future() and await (issue 4, in part)."""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest

from tests._engine import ray, wait_for

RAY_INIT = {"num_cpus": 2, "namespace": "tests"}


@ray.remote
class Counter:
    def __init__(self, start=0):
        self.n = start

    def incr(self):
        self.n += 1
        return self.n

    def leave(self):
        ray.actor.exit_actor()


@ray.remote
def slow_value(x):
    return x * 2


def test_get_actor_finds_a_named_actor(ray_start):
    a = Counter.options(name="counter-a").remote(10)
    assert ray.get(a.incr.remote()) == 11
    same = ray.get_actor("counter-a")
    assert ray.get(same.incr.remote()) == 12


def test_get_actor_in_a_task(ray_start):
    a = Counter.options(name="counter-task").remote(4)
    assert ray.get(a.incr.remote()) == 5  # created (Ray registers names asynchronously)

    @ray.remote
    def bump():
        return ray.get(ray.get_actor("counter-task", namespace="tests").incr.remote())

    assert ray.get(bump.remote()) == 6


def test_unknown_name_raises_value_error(ray_start):
    with pytest.raises(ValueError):
        ray.get_actor("no-such-actor")


def test_taken_name_raises_unless_get_if_exists(ray_start):
    first = Counter.options(name="counter-dup").remote(100)
    ray.get(first.incr.remote())
    with pytest.raises(ValueError):
        Counter.options(name="counter-dup").remote()
    again = Counter.options(name="counter-dup", get_if_exists=True).remote()
    assert ray.get(again.incr.remote()) == 102


def test_namespaces_separate_names(ray_start):
    a = Counter.options(name="counter-ns", namespace="other").remote(0)
    assert ray.get(a.incr.remote()) == 1
    with pytest.raises(ValueError):
        ray.get_actor("counter-ns")
    assert ray.get(ray.get_actor("counter-ns", namespace="other").incr.remote()) == 2


def test_exit_actor_ends_the_actor(ray_start):
    a = Counter.remote()
    assert ray.get(a.incr.remote()) == 1
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(a.leave.remote(), timeout=30)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(a.incr.remote(), timeout=30)


def test_dead_named_actor_frees_its_name(ray_start):
    a = Counter.options(name="counter-reuse").remote()
    ray.get(a.incr.remote())
    ray.kill(a)

    def dead():
        try:
            ray.get(a.incr.remote(), timeout=30)
        except ray.exceptions.RayActorError:
            return True
        return False

    wait_for(dead, timeout=30, message="calls to the killed actor fail")

    def recreate():
        try:
            return Counter.options(name="counter-reuse").remote(40)
        except ValueError:  # Ray frees the name a moment after the actor dies
            return None

    b = wait_for(recreate, timeout=30, message="the name is free again")
    assert ray.get(b.incr.remote()) == 41


def test_future_and_await(ray_start):
    fut = slow_value.remote(21).future()
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.result(timeout=30) == 42

    async def main():
        return await slow_value.remote(5), await asyncio.gather(
            *[slow_value.remote(i) for i in range(3)]
        )

    assert asyncio.run(main()) == (10, [0, 2, 4])


@ray.remote
def named_actors_seen_from_a_task():
    return sorted(ray.util.list_named_actors())


@ray.remote
def namespace_of_a_task():
    return ray.get_runtime_context().namespace


@ray.remote
def lookup_from_task(name):
    return ray.get(ray.get_actor(name).incr.remote())  # no namespace=: the job's


def test_a_task_runs_in_its_drivers_namespace(ray_start):
    keeper = Counter.options(name="seen-from-a-task").remote()
    try:
        assert ray.get(namespace_of_a_task.remote()) == "tests"
        assert "seen-from-a-task" in ray.get(named_actors_seen_from_a_task.remote())
        assert ray.get(lookup_from_task.remote("seen-from-a-task")) == 1
    finally:
        ray.kill(keeper)
