"""Bad input to the API, as a new user would write it (issue 18): each call fails at
once with the exception type Ray raises, and the engine goes on running tasks.

Checks other files make already are not repeated here (test_objects: get(1), wait of
too many; test_tasks: calling a remote function directly, some bad options; test_errors:
unpicklable arguments, puts and exceptions; test_actors: actor calls without .remote,
bad actor options; test_named_actors: unknown names). The module's teardown fails on a
leftover process (conftest), and every test ends by running a task.
"""

from __future__ import annotations

import pickle
import threading

import pytest

from tests._engine import exceptions, ray, raylite_only

RAY_INIT = {"num_cpus": 2}

pytestmark = pytest.mark.timeout(300)


@ray.remote
def identity(x=1):
    return x


@ray.remote
class Box:
    def __init__(self, value=0):
        self.value = value

    def get(self):
        return self.value


def still_works(value=7):
    """A follow-up task runs and returns its value."""
    assert ray.get(identity.remote(value), timeout=60) == value


# --- get / wait / put -------------------------------------------------------------------


def test_get_of_a_list_holding_a_non_ref_is_a_type_error(ray_start):
    ref = ray.put(1)
    with pytest.raises(TypeError):  # was ValueError: code catching TypeError broke
        ray.get([ref, 3])
    with pytest.raises(ValueError):  # not a ref nor a list at all: ValueError, as Ray
        ray.get(None)
    assert ray.get([]) == []
    still_works()


def test_wait_rejects_what_is_not_a_list_of_refs(ray_start):
    ref = ray.put(1)
    with pytest.raises(TypeError):
        ray.wait(ref)
    with pytest.raises(TypeError):
        ray.wait([ref, 3])
    with pytest.raises(ValueError):
        ray.wait([ref], num_returns=0)
    with pytest.raises(ValueError):
        ray.wait([ref, ref])
    with pytest.raises(ValueError):
        ray.wait([ref], timeout=-1)
    assert ray.wait([]) == ([], [])
    still_works()


def test_put_of_a_ref_or_a_generator_is_a_type_error(ray_start):
    ref = ray.put(1)
    with pytest.raises(TypeError):
        ray.put(ref)
    with pytest.raises(TypeError):
        ray.put(i for i in range(3))
    assert ray.get(ray.get(ray.put([ref]))[0]) == 1  # wrapped in a list, as the error says
    still_works()


@raylite_only  # Ray 2.60 takes timeout=-1 as "wait forever" without a word
def test_a_negative_get_timeout_is_refused(ray_start):
    """Stricter than Ray on purpose: a negative timeout is most likely a bug (a deadline
    already past), and waiting forever on it hides that."""
    with pytest.raises(ValueError, match="timeout"):
        ray.get(ray.put(1), timeout=-1)
    still_works()


# --- kill / cancel / get_actor ----------------------------------------------------------


@pytest.mark.parametrize("target", [3, "name", None], ids=["int", "str", "none"])
def test_kill_of_what_is_not_an_actor_is_a_value_error(ray_start, target):
    with pytest.raises(ValueError):
        ray.kill(target)
    still_works()


def test_kill_of_a_ref_is_a_value_error(ray_start):
    with pytest.raises(ValueError):
        ray.kill(identity.remote())
    still_works()


def test_cancel_of_what_is_not_a_ref_is_a_type_error(ray_start):
    box = Box.remote()
    for target in (3, None, box):
        with pytest.raises(TypeError):
            ray.cancel(target)
    assert ray.get(box.get.remote(), timeout=60) == 0  # the actor was left alone
    still_works()


def test_get_actor_checks_the_types_of_its_arguments(ray_start):
    with pytest.raises(ValueError):
        ray.get_actor("")
    with pytest.raises(ValueError):
        ray.get_actor(None)
    with pytest.raises(TypeError):
        ray.get_actor(3)
    with pytest.raises(TypeError):
        ray.get_actor("x", namespace=3)
    still_works()


# --- options ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"num_cpus": "2"}, TypeError),
        ({"num_gpus": "x"}, TypeError),
        ({"memory": "x"}, TypeError),
        ({"memory": -1}, ValueError),
        ({"resources": "x"}, TypeError),
        ({"resources": {"CPU": 1}}, ValueError),
        ({"resources": {"a": -1}}, ValueError),
        ({"num_returns": -1}, ValueError),
        ({"num_returns": "2"}, TypeError),
        ({"max_retries": -2}, ValueError),
        ({"max_retries": 1.5}, TypeError),
        ({"retry_exceptions": "x"}, TypeError),
        ({"accelerator_type": 3}, TypeError),
        ({"scheduling_strategy": 3}, TypeError),
        ({"name": 3}, TypeError),
        ({"retry_exceptions": [1]}, ValueError),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else v.__name__,
)
def test_a_task_option_of_the_wrong_type_or_range(ray_start, options, error):
    with pytest.raises(error):
        identity.options(**options).remote()
    still_works()


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_restarts": -2}, ValueError),
        ({"max_task_retries": -2}, ValueError),
        ({"lifetime": "forever"}, ValueError),
        ({"num_cpus": -1}, ValueError),
        ({"num_cpus": "1"}, TypeError),
        ({"resources": {"GPU": 1}}, ValueError),
        ({"name": 3}, TypeError),
        ({"namespace": 3}, TypeError),
        ({"max_restarts": "x"}, TypeError),
        ({"max_task_retries": "x"}, TypeError),
        ({"get_if_exists": "y"}, TypeError),
    ],
    ids=repr,
)
def test_an_actor_option_of_the_wrong_type_or_range(ray_start, options, error):
    with pytest.raises(error):
        Box.options(**options).remote()
    still_works()


def test_a_request_no_node_can_meet_waits_and_the_rest_runs(ray_start):
    ref = identity.options(num_cpus=10**6).remote()
    with pytest.raises(exceptions.GetTimeoutError):
        ray.get(ref, timeout=1)
    still_works()
    ray.cancel(ref)


# --- what does not pickle ---------------------------------------------------------------


def _nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


def test_an_argument_nested_too_deep_raises_the_pickling_error(ray_start):
    """A list 5,000 deep: the error came from repr() building the message
    (RecursionError); it is the serialization error, as put raises."""
    deep = _nested(5000)
    with pytest.raises(pickle.PicklingError) as info:
        identity.remote(deep)
    assert len(str(info.value)) < 5000
    with pytest.raises(pickle.PicklingError):
        ray.put(deep)
    still_works()


def test_an_actor_argument_nested_too_deep_raises_the_pickling_error(ray_start):
    with pytest.raises(pickle.PicklingError):
        Box.remote(_nested(5000))
    still_works()


def test_a_return_value_or_exception_nested_too_deep(ray_start):
    @ray.remote
    def returns_deep():
        return _nested(5000)

    @ray.remote
    def raises_deep():
        raise ValueError(_nested(5000))

    with pytest.raises(exceptions.RayTaskError) as info:
        ray.get(returns_deep.remote(), timeout=60)
    assert isinstance(info.value, pickle.PicklingError)
    with pytest.raises(exceptions.RayTaskError) as info:
        ray.get(raises_deep.remote(), timeout=60)
    assert len(str(info.value)) < 20_000  # no repr of 5,000 levels
    still_works()


def test_a_return_value_that_does_not_pickle(ray_start):
    @ray.remote
    def returns_a_lock():
        return threading.Lock()

    with pytest.raises(exceptions.RayTaskError) as info:
        ray.get(returns_a_lock.remote(), timeout=60)
    assert isinstance(info.value, TypeError)
    still_works()


def test_an_actor_method_return_that_does_not_pickle(ray_start):
    @ray.remote
    class Locker:
        def lock(self):
            return threading.Lock()

        def ok(self):
            return "ok"

    actor = Locker.remote()
    with pytest.raises(exceptions.RayTaskError):
        ray.get(actor.lock.remote(), timeout=60)
    assert ray.get(actor.ok.remote(), timeout=60) == "ok"  # the actor survives it


# --- returns ----------------------------------------------------------------------------


def test_a_thousand_returns(ray_start):
    @ray.remote(num_returns=1000)
    def many():
        return list(range(1000))

    refs = many.remote()
    assert len(refs) == 1000
    assert ray.get(refs, timeout=120) == list(range(1000))
    still_works()


def test_fewer_returns_than_declared_fail_the_task(ray_start):
    @ray.remote(num_returns=3)
    def two():
        return [1, 2]

    @ray.remote(num_returns=2)
    def not_a_sequence():
        return 5

    refs = two.remote()
    with pytest.raises(exceptions.RayTaskError):
        ray.get(refs[0], timeout=60)
    with pytest.raises(exceptions.RayTaskError):
        ray.get(not_a_sequence.remote()[1], timeout=60)
    still_works()


# --- calling without .remote ------------------------------------------------------------


def test_remote_of_remote_and_a_missing_method(ray_start):
    with pytest.raises(AttributeError):
        identity.remote.remote()
    box = Box.remote(3)
    with pytest.raises(AttributeError):
        box.no_such_method.remote()
    with pytest.raises(TypeError):
        box.get()
    assert ray.get(box.get.remote(), timeout=60) == 3


# --- actor names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["a/b", " ", "x" * 1000, "名字", "a\nb", "a:b", "-"],
    ids=["slash", "space", "long", "unicode", "newline", "colon", "dash"],
)
def test_odd_actor_names_work(ray_start, name):
    box = Box.options(name=name).remote(name)
    found = ray.get_actor(name)
    assert ray.get(found.get.remote(), timeout=60) == name
    ray.kill(box)


def test_an_empty_actor_name_is_refused(ray_start):
    with pytest.raises(ValueError):
        Box.options(name="").remote()
    still_works()


# --- messages of any size ---------------------------------------------------------------


@raylite_only  # shrinks raylite's message limits to test them without gigabytes
def test_arguments_over_the_message_limit_fail_that_call_only(ray_start, monkeypatch):
    """No message size, however large, may leave the engine unusable: an oversized one
    fails its call at the call site (it was sent, the receiver dropped the connection,
    and the task was retried, sending it again). Many small arguments are not sent to
    the store one by one, so they make the message that is too large here."""
    from raylite.core import submission
    from raylite.exceptions import MessageTooLargeError

    @ray.remote
    def count(*args):
        return len(args)

    monkeypatch.setattr(submission, "MAX_ARGS_SIZE", 200_000)
    with pytest.raises(MessageTooLargeError) as info:
        count.remote(*[bytes([i]) * 50_000 for i in range(5)])  # distinct: pickle memoizes
    assert isinstance(info.value, ValueError)
    assert "count" in str(info.value)
    assert ray.get(count.remote(*[bytes([i]) * 50_000 for i in range(3)]), timeout=60) == 3
    # One large argument still goes through the store, whatever its size.
    assert len(ray.get(identity.remote(b"z" * 500_000), timeout=60)) == 500_000
    still_works()


@raylite_only  # shrinks raylite's message limits to test them without gigabytes
def test_a_function_over_the_message_limit_fails_at_its_first_call(ray_start, monkeypatch):
    from raylite import serialization
    from raylite.exceptions import MessageTooLargeError

    monkeypatch.setattr(serialization, "MAX_FUNCTION_SIZE", 100_000)
    captured = b"c" * 200_000

    @ray.remote
    def closure():
        return len(captured)

    with pytest.raises(MessageTooLargeError, match="closure"):
        closure.remote()
    still_works()


def test_large_bytes_values_come_back_as_bytes(ray_start):
    big = bytes(range(256)) * 8192  # 2 MiB

    @ray.remote
    def echo(value):
        return value, type(value).__name__

    for value in (big, [big, 1], {"k": big}):
        assert ray.get(ray.put(value), timeout=60) == value
        assert ray.get(echo.remote(value), timeout=60) == (value, type(value).__name__)
    assert type(ray.get(ray.put(big), timeout=60)) is bytes


# --- many threads -----------------------------------------------------------------------


def test_sixteen_threads_submitting_at_once(ray_start):
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def submit(i):
        try:
            start.wait(timeout=60)
            refs = [identity.remote(i * 1000 + j) for j in range(50)]
            results[i] = ray.get(refs, timeout=120)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=200)
    assert not errors, errors
    assert results == {i: [i * 1000 + j for j in range(50)] for i in range(16)}
    still_works()


# --- nested gets ------------------------------------------------------------------------


@ray.remote
def depth(n):
    if n == 0:
        return 0
    return ray.get(depth.remote(n - 1)) + 1


def test_recursion_fifty_deep_with_get_at_each_level_on_two_cpus(ray_start):
    """Each level blocks in get, which gives its CPU back, so 50 levels run on 2 CPUs."""
    assert ray.get(depth.remote(50), timeout=240) == 50
    still_works()
