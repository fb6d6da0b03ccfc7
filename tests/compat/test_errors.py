"""Errors: remote exceptions at get, propagation, actor failures, bad arguments."""

from __future__ import annotations

import threading

import pytest

from tests._engine import exceptions, ray, strip_ansi

RAY_INIT = {"num_cpus": 2}


class TwoArgError(Exception):
    """An exception whose constructor needs two arguments."""

    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


@ray.remote
def boom(x):
    raise ValueError(f"bad value {x}")


@ray.remote
def plus_one(x):
    return x + 1


@ray.remote
def raise_two_arg_error():
    raise TwoArgError(7, "seven")


@ray.remote
def identity(x):
    return x


@ray.remote
class Flaky:
    def __init__(self):
        self.calls = 0

    def fail(self):
        self.calls += 1
        raise KeyError("missing-key")

    def ok(self):
        self.calls += 1
        return self.calls


@ray.remote
class Holder:
    def __init__(self, value):
        self.value = value


@ray.remote
class BrokenConstructor:
    def __init__(self):
        raise RuntimeError("constructor failed xyz")

    def method(self):
        return 1


def test_engine_exposes_exceptions_module():
    assert ray.exceptions is exceptions
    for name in (
        "RayError",
        "RayTaskError",
        "RayActorError",
        "ActorDiedError",
        "GetTimeoutError",
        "WorkerCrashedError",
        "TaskCancelledError",
        "ObjectLostError",
        "OwnerDiedError",
        "ObjectStoreFullError",
        "RaySystemError",
    ):
        assert issubclass(getattr(exceptions, name), exceptions.RayError), name


def test_task_error_is_ray_task_error_and_original_class(ray_start):
    with pytest.raises(ValueError) as info:
        ray.get(boom.remote(3))
    error = info.value
    assert isinstance(error, exceptions.RayTaskError)
    assert isinstance(error, exceptions.RayError)
    assert isinstance(error, ValueError)
    message = strip_ansi(str(error))
    assert "boom" in message, message
    assert "bad value 3" in message, message
    # The remote traceback: the frame of the failing function and its source line.
    assert "in boom" in message, message
    assert 'raise ValueError(f"bad value {x}")' in message, message


def test_task_error_can_be_caught_as_ray_task_error(ray_start):
    with pytest.raises(exceptions.RayTaskError):
        ray.get(boom.remote(1))


def test_task_error_keeps_the_cause(ray_start):
    with pytest.raises(ValueError) as info:
        ray.get(boom.remote(5))
    cause = info.value.cause
    assert type(cause) is ValueError
    assert str(cause) == "bad value 5"


def test_error_with_custom_constructor_is_instance_of_it(ray_start):
    with pytest.raises(TwoArgError) as info:
        ray.get(raise_two_arg_error.remote())
    assert isinstance(info.value, exceptions.RayTaskError)
    assert info.value.code == 7


def test_error_propagates_through_dependent_task(ray_start):
    with pytest.raises(ValueError) as info:
        ray.get(plus_one.remote(boom.remote(4)))
    assert isinstance(info.value, exceptions.RayTaskError)
    message = strip_ansi(str(info.value))
    assert "bad value 4" in message, message
    assert "boom" in message, message


def test_error_propagates_through_chain(ray_start):
    ref = boom.remote(9)
    for _ in range(3):
        ref = plus_one.remote(ref)
    with pytest.raises(ValueError, match="bad value 9"):
        ray.get(ref)


def test_get_of_list_raises_the_failed_tasks_error(ray_start):
    with pytest.raises(ValueError, match="bad value 2"):
        ray.get([identity.remote(1), boom.remote(2)])


def test_actor_method_error_and_actor_survives(ray_start):
    actor = Flaky.remote()
    with pytest.raises(KeyError) as info:
        ray.get(actor.fail.remote())
    assert isinstance(info.value, exceptions.RayTaskError)
    message = strip_ansi(str(info.value))
    assert "fail" in message, message
    assert "missing-key" in message, message
    # A method error does not kill the actor; its state continues.
    assert ray.get(actor.ok.remote()) == 2


def test_actor_constructor_error_kills_the_actor(ray_start):
    actor = BrokenConstructor.remote()
    with pytest.raises(exceptions.ActorDiedError) as info:
        ray.get(actor.method.remote(), timeout=60)
    assert isinstance(info.value, exceptions.RayActorError)
    assert "constructor failed xyz" in strip_ansi(str(info.value))
    # Every later call fails the same way.
    with pytest.raises(exceptions.RayActorError):
        ray.get(actor.method.remote(), timeout=60)


def test_unserialisable_argument_fails_at_remote(ray_start):
    lock = threading.Lock()
    with pytest.raises(TypeError) as info:
        identity.remote(lock)
    assert "lock" in str(info.value).lower(), str(info.value)


def test_unserialisable_actor_argument_fails_at_remote(ray_start):
    with pytest.raises(TypeError) as info:
        Holder.remote(threading.Lock())
    assert "lock" in str(info.value).lower(), str(info.value)


def test_unserialisable_put_fails(ray_start):
    with pytest.raises(TypeError) as info:
        ray.put(threading.Lock())
    assert "lock" in str(info.value).lower(), str(info.value)


def test_unserialisable_argument_message_names_the_function(ray_start):
    with pytest.raises(TypeError) as info:
        identity.remote(threading.Lock())
    message = str(info.value)
    assert "identity" in message, message


def test_engine_still_works_after_errors(ray_start):
    assert ray.get(plus_one.remote(1)) == 2


class _Unpicklable(Exception):
    def __init__(self):
        super().__init__("cannot travel xyz")

    def __reduce__(self):
        raise TypeError("this exception does not pickle")


@ray.remote
def raise_unpicklable():
    raise _Unpicklable()


def test_an_unpicklable_exception_arrives_as_a_ray_error_cause(ray_start):
    with pytest.raises(exceptions.RayTaskError) as info:
        ray.get(raise_unpicklable.remote())
    err = info.value
    assert not isinstance(err, RuntimeError)
    assert isinstance(err.cause, exceptions.RayError)
    assert "cannot travel xyz" in str(err)


@ray.remote
def fail_first():
    raise ValueError("the first task failed xyz")


@ray.remote
def take(x):
    return x


def test_a_task_whose_argument_failed_says_so(ray_start):
    with pytest.raises(ValueError) as info:  # still an instance of the cause's class
        ray.get(take.remote(fail_first.remote()))
    text = str(info.value)
    assert "At least one of the input arguments for this task could not be computed" in text
    assert "the first task failed xyz" in text
    assert isinstance(info.value, exceptions.RayTaskError)
