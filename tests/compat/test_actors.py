"""Actors: creation, state, per-caller ordering, handles, methods, resources."""

from __future__ import annotations

import os

import pytest

from tests._engine import ray, wait_for

RAY_INIT = {"num_cpus": 4, "num_gpus": 1, "resources": {"Widget": 2}}


@ray.remote
class Counter:
    def __init__(self, start=0, *, step=1):
        self.value = start
        self.step = step

    def increment(self):
        self.value += self.step
        return self.value

    def get(self):
        return self.value

    def pid(self):
        return os.getpid()

    @ray.method(num_returns=2)
    def value_and_double(self):
        return self.value, 2 * self.value


@ray.remote
class Forwarder:
    """Holds another actor's handle and calls it."""

    def __init__(self, counter):
        self.counter = counter

    def bump(self, times):
        return ray.get([self.counter.increment.remote() for _ in range(times)])

    def bump_via_argument(self, counter):
        return ray.get(counter.increment.remote())


@ray.remote
class ResourceReporter:
    def gpu_ids(self):
        return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")


@ray.remote
def increment_from_task(counter, times):
    return [ray.get(counter.increment.remote()) for _ in range(times)]


def test_actor_keeps_state(ray_start):
    counter = Counter.remote()
    assert ray.get(counter.increment.remote()) == 1
    assert ray.get(counter.increment.remote()) == 2
    assert ray.get(counter.get.remote()) == 2


def test_constructor_args_kwargs_and_refs(ray_start):
    counter = Counter.remote(ray.put(10), step=5)
    assert ray.get(counter.increment.remote()) == 15
    other = Counter.remote(100, step=ray.put(50))
    assert ray.get(other.increment.remote()) == 150


def test_method_calls_return_refs_at_once(ray_start):
    counter = Counter.remote()
    ref = counter.increment.remote()
    assert isinstance(ref, ray.ObjectRef)
    assert ray.get(ref) == 1


def test_calls_from_one_caller_run_in_order(ray_start):
    counter = Counter.remote()
    refs = [counter.increment.remote() for _ in range(100)]
    assert ray.get(refs) == list(range(1, 101))


def test_each_actor_has_its_own_process_and_state(ray_start):
    a, b = Counter.remote(), Counter.remote(1000)
    ray.get([a.increment.remote() for _ in range(3)])
    assert ray.get([a.get.remote(), b.get.remote()]) == [3, 1000]
    pid_a, pid_b = ray.get([a.pid.remote(), b.pid.remote()])
    assert pid_a != pid_b
    assert os.getpid() not in (pid_a, pid_b)
    # An actor keeps its process: repeated calls run in the same one.
    assert ray.get(a.pid.remote()) == pid_a


def test_handle_passed_to_tasks(ray_start):
    counter = Counter.remote()
    results = ray.get([increment_from_task.remote(counter, 5) for _ in range(3)])
    flat = sorted(v for r in results for v in r)
    assert flat == list(range(1, 16))
    for r in results:  # each task is one caller: its own calls stay in order
        assert r == sorted(r)
    assert ray.get(counter.get.remote()) == 15


def test_handle_passed_to_another_actor(ray_start):
    counter = Counter.remote()
    forwarder = Forwarder.remote(counter)
    assert ray.get(forwarder.bump.remote(3)) == [1, 2, 3]
    assert ray.get(forwarder.bump_via_argument.remote(counter)) == 4
    assert ray.get(counter.get.remote()) == 4


def test_method_num_returns(ray_start):
    counter = Counter.remote(21)
    value, double = counter.value_and_double.remote()
    assert ray.get([value, double]) == [21, 42]
    refs = counter.increment.options(num_returns=1).remote()
    assert ray.get(refs) == 22


def test_actor_options_num_cpus(ray_start):
    holder = Counter.options(num_cpus=2).remote(7)
    assert ray.get(holder.get.remote()) == 7
    # The actor holds its 2 CPUs for as long as it lives.
    wait_for(
        lambda: ray.available_resources().get("CPU", 0) <= RAY_INIT["num_cpus"] - 2,
        timeout=10,
        message=lambda: f"CPU held by actor; available={ray.available_resources()}",
    )


def test_actor_num_gpus(ray_start):
    reporter = ResourceReporter.options(num_gpus=1).remote()
    ids, visible = ray.get(reporter.gpu_ids.remote())
    assert ids == [0]
    assert visible == "0"


def test_actor_custom_resources(ray_start):
    widget_user = Counter.options(resources={"Widget": 1}).remote(3)
    assert ray.get(widget_user.increment.remote()) == 4


def test_decorated_actor_with_resources(ray_start):
    @ray.remote(num_cpus=1, resources={"Widget": 1})
    class Tool:
        def use(self):
            return "used"

    tool = Tool.remote()
    assert ray.get(tool.use.remote()) == "used"


def test_instantiating_actor_class_directly_raises(ray_start):
    with pytest.raises(TypeError, match=r"\.remote\(\)"):
        Counter()


def test_calling_actor_method_directly_raises(ray_start):
    counter = Counter.remote()
    with pytest.raises(TypeError, match=r"\.remote\(\)"):
        counter.increment()


def test_unknown_actor_method_raises_attribute_error(ray_start):
    counter = Counter.remote()
    with pytest.raises(AttributeError):
        counter.no_such_method.remote()


def test_actor_bad_options_rejected():
    with pytest.raises(ValueError):
        Counter.options(no_such_option=1)
    with pytest.raises(ValueError):
        Counter.options(num_cpus=-1)
