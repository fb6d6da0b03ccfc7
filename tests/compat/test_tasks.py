"""Remote functions: decoration, options, submission, arguments, nesting, retries."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from tests._engine import exceptions, ray, wait_for_path

RAY_INIT = {"num_cpus": 4, "num_gpus": 1, "resources": {"Widget": 2}}


@ray.remote
def identity(x):
    return x


@ray.remote
def add(x, y=0):
    return x + y


@ray.remote
def describe(value):
    """What the task saw: the argument's type name, and those of its items."""
    if isinstance(value, list):
        return "list", [type(v).__name__ for v in value]
    if isinstance(value, dict):
        return "dict", {k: type(v).__name__ for k, v in value.items()}
    return type(value).__name__, None


@ray.remote
def sum_nested_refs(container):
    """Refs inside containers arrive as refs; the task fetches them itself."""
    if isinstance(container, dict):
        return sum(ray.get(list(container.values())))
    return sum(ray.get(container))


@ray.remote
def gated(path, value):
    wait_for_path(path)
    return value


@ray.remote(num_returns=2)
def two_values(x):
    return x, x * 10


@ray.remote
def three_values(x):
    return x, x + 1, x + 2


@ray.remote
def fan_out(n):
    """Nested tasks: submits children and waits for them."""
    return sum(ray.get([add.remote(i, 1) for i in range(n)]))


@ray.remote
def recurse(depth):
    if depth == 0:
        return 0
    return ray.get(recurse.remote(depth - 1)) + 1


@ray.remote(num_cpus=2, resources={"Widget": 1})
def needs_widget():
    return "widget"


@ray.remote(num_gpus=1)
def needs_gpu():
    return len(ray.get_gpu_ids())


@ray.remote(name="a_custom_task_name")
def named_task():
    return "named"


@ray.remote
def crash_once(marker):
    """Kill its own worker on the first attempt; succeed on the second."""
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        os._exit(1)
    return "second attempt"


@ray.remote(max_retries=0)
def crash_always():
    os._exit(1)


def test_remote_returns_object_ref_at_once(ray_start, tmp_path):
    gate = tmp_path / "release"
    # The task cannot finish before the gate opens, and the gate opens only after
    # .remote() has returned: a blocking .remote() would hang here until the timeout.
    ref = gated.remote(str(gate), 42)
    assert isinstance(ref, ray.ObjectRef)
    gate.touch()
    assert ray.get(ref, timeout=60) == 42


def test_decorated_function_keeps_remote_and_options():
    assert callable(identity.remote)
    assert callable(identity.options)


def test_calling_remote_function_directly_raises_type_error():
    with pytest.raises(TypeError, match=r"\.remote\(\)"):
        identity(1)


def test_wrong_number_of_arguments_fails_at_submission(ray_start):
    with pytest.raises(TypeError):
        identity.remote(1, 2, 3)


def test_args_by_value_and_by_ref(ray_start):
    assert ray.get(add.remote(1, 2)) == 3
    assert ray.get(add.remote(ray.put(1), 2)) == 3
    assert ray.get(add.remote(1, y=ray.put(5))) == 6
    assert ray.get(add.remote(identity.remote(10), y=identity.remote(20))) == 30


def test_top_level_ref_is_resolved_to_its_value(ray_start):
    array = np.arange(10)
    assert ray.get(describe.remote(ray.put(array))) == ("ndarray", None)
    assert ray.get(describe.remote(identity.remote("text"))) == ("str", None)


def test_refs_inside_containers_arrive_as_refs(ray_start):
    refs = [ray.put(1), ray.put(2)]
    assert ray.get(describe.remote(refs)) == ("list", ["ObjectRef", "ObjectRef"])
    assert ray.get(describe.remote({"a": refs[0]})) == ("dict", {"a": "ObjectRef"})
    assert ray.get(sum_nested_refs.remote(refs)) == 3
    assert ray.get(sum_nested_refs.remote({"a": refs[0], "b": identity.remote(5)})) == 6


def test_large_numpy_argument_and_result(ray_start):
    array = np.random.default_rng(0).normal(size=(500, 1000))  # 4 MB
    result = ray.get(identity.remote(array))
    np.testing.assert_array_equal(result, array)


def test_num_returns_in_decorator(ray_start):
    a, b = two_values.remote(3)
    assert isinstance(a, ray.ObjectRef)
    assert isinstance(b, ray.ObjectRef)
    assert ray.get([a, b]) == [3, 30]


def test_num_returns_in_options(ray_start):
    refs = three_values.options(num_returns=3).remote(7)
    assert len(refs) == 3
    assert ray.get(list(refs)) == [7, 8, 9]


def test_many_small_tasks(ray_start):
    refs = [add.remote(i, i) for i in range(200)]
    assert ray.get(refs) == [2 * i for i in range(200)]


def test_nested_tasks(ray_start):
    assert ray.get(fan_out.remote(5)) == sum(range(1, 6))
    assert ray.get([fan_out.remote(3) for _ in range(4)]) == [6, 6, 6, 6]


def test_resources_in_decorator_and_options(ray_start):
    assert ray.get(needs_widget.remote()) == "widget"
    assert ray.get(needs_gpu.remote()) == 1
    assert ray.get(identity.options(num_cpus=2, resources={"Widget": 2}).remote(5)) == 5
    assert ray.get(identity.options(num_gpus=1).remote(6)) == 6


def test_options_do_not_change_the_original(ray_start):
    # .options() returns a new callable: the original keeps num_returns=2.
    a, b = two_values.remote(2)
    assert ray.get([a, b]) == [2, 20]
    single = two_values.options(num_returns=1).remote(4)
    assert isinstance(single, ray.ObjectRef)
    assert ray.get(single) == (4, 40)


def test_name_option(ray_start):
    assert ray.get(named_task.remote()) == "named"
    assert ray.get(identity.options(name="renamed_identity").remote(8)) == 8


def test_max_retries_retries_after_worker_crash(ray_start, tmp_path):
    marker = tmp_path / "attempted"
    ref = crash_once.options(max_retries=1).remote(str(marker))
    assert ray.get(ref, timeout=60) == "second attempt"
    assert marker.exists()


def test_max_retries_zero_raises_worker_crashed(ray_start):
    with pytest.raises(exceptions.WorkerCrashedError):
        ray.get(crash_always.remote(), timeout=60)
    # The engine recovers: later tasks still run.
    assert ray.get(identity.remote("still alive"), timeout=60) == "still alive"


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"no_such_option": 1}, ValueError),
        ({"num_cpus": -1}, ValueError),
        ({"num_gpus": -1}, ValueError),
        ({"num_returns": 1.5}, TypeError),
        ({"max_retries": "many"}, TypeError),
    ],
)
def test_bad_options_rejected_at_decoration(options, error):
    def fn():
        return 1

    with pytest.raises(error):
        ray.remote(**options)(fn)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"no_such_option": 1}, ValueError),
        ({"num_cpus": -1}, ValueError),
        ({"num_returns": 1.5}, TypeError),
    ],
)
def test_bad_options_rejected_by_options(options, error):
    with pytest.raises(error):
        identity.options(**options)


def test_unknown_option_error_names_the_option():
    with pytest.raises(ValueError, match="no_such_option"):
        identity.options(no_such_option=1)


def test_remote_with_many_args_and_kwargs(ray_start):
    @ray.remote
    def signature(a, b, *args, c=3, **kwargs):
        return a, b, args, c, kwargs

    assert ray.get(signature.remote(1, 2, 5, 6, c=7, d=8)) == (1, 2, (5, 6), 7, {"d": 8})


def test_closure_defined_in_test_is_shipped_by_value(ray_start):
    offset = 100

    @ray.remote
    def plus_offset(x):
        return x + offset

    assert ray.get([plus_offset.remote(i) for i in range(3)]) == [100, 101, 102]


def test_getting_a_ref_twice_returns_the_same_value(ray_start):
    # The task runs once: a second get returns the same pid and timestamp.
    @ray.remote
    def stamp():
        return os.getpid(), time.time_ns()

    ref = stamp.remote()
    assert ray.get(ref) == ray.get(ref)


# Last: needs a cluster of its own.
@pytest.mark.ray_init(num_cpus=1)
@pytest.mark.timeout(60)
def test_task_blocked_in_get_gives_its_cpu_back(ray_start):
    # One CPU: each level waits in get() for a child that needs the CPU the parent
    # holds. Only works if a task blocked in get releases its CPU.
    assert ray.get(recurse.remote(3), timeout=50) == 3


@ray.remote
def sizes(value, *, extra=None):
    return type(value).__name__, len(value), None if extra is None else len(extra)


def test_large_arguments_of_every_kind_arrive_whole(ray_start):
    # Over the inline limit each goes through the store (raylite, as Ray): bytes, a
    # plain list (measured by pickling it) and a keyword argument.
    big_bytes = b"x" * (1 << 20)
    big_list = list(range(200_000))
    assert ray.get(sizes.remote(big_bytes)) == ("bytes", 1 << 20, None)
    assert ray.get(sizes.remote(big_list, extra=big_bytes)) == ("list", 200_000, 1 << 20)
    assert ray.get(sizes.remote([1, 2], extra=big_list)) == ("list", 2, 200_000)
