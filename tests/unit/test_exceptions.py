"""The error hierarchy: Ray's names, the right bases, and every error pickles."""

from __future__ import annotations

import inspect
import pickle

import pytest

from tests._engine import AGAINST_RAY, exceptions

RAY_NAMES = [
    "RayError",
    "RayTaskError",
    "RayActorError",
    "ActorDiedError",
    "TaskCancelledError",
    "WorkerCrashedError",
    "ObjectStoreFullError",
    "GetTimeoutError",
    "ObjectLostError",
    "OwnerDiedError",
    "RaySystemError",
]


def _error_classes():
    return sorted(
        (
            obj
            for _, obj in inspect.getmembers(exceptions, inspect.isclass)
            if issubclass(obj, BaseException) and obj.__module__ == exceptions.__name__
        ),
        key=lambda cls: cls.__name__,
    )


def _instance(cls):
    """An instance built the way the engine builds one, or with no arguments."""
    if issubclass(cls, exceptions.RayTaskError):
        return exceptions.RayTaskError(
            "my_function", "Traceback...\nValueError: bad", ValueError("bad")
        )
    try:
        return cls()
    except TypeError:
        return cls("message")


@pytest.mark.parametrize("name", RAY_NAMES)
def test_ray_names_exist(name):
    assert issubclass(getattr(exceptions, name), exceptions.RayError)


def test_hierarchy():
    assert issubclass(exceptions.ActorDiedError, exceptions.RayActorError)
    assert issubclass(exceptions.OwnerDiedError, exceptions.ObjectLostError)
    assert issubclass(exceptions.GetTimeoutError, TimeoutError)
    assert issubclass(exceptions.RayError, Exception)


@pytest.mark.skipif(AGAINST_RAY, reason="Ray's classes need engine-specific arguments")
@pytest.mark.parametrize("cls", _error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_round_trips_through_pickle(cls):
    error = _instance(cls)
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is type(error)
    assert str(restored) == str(error)
    # Exceptions inside args (the cause) compare by identity: compare their reprs.
    assert repr(restored.args) == repr(error.args)


def test_get_timeout_error_is_a_timeout_error():
    with pytest.raises(TimeoutError):
        raise exceptions.GetTimeoutError("timed out")


@pytest.mark.skipif(AGAINST_RAY, reason="Ray's dual classes pickle only with cloudpickle")
def test_task_error_as_instance_of_cause_pickles():
    error = exceptions.RayTaskError("f", "Traceback...\nKeyError: 'k'", KeyError("k"))
    dual = error.as_instanceof_cause()
    assert isinstance(dual, KeyError)
    assert isinstance(dual, exceptions.RayTaskError)
    restored = pickle.loads(pickle.dumps(dual))
    assert isinstance(restored, KeyError)
    assert isinstance(restored, exceptions.RayTaskError)
    assert "f" in str(restored)


class _CustomError(Exception):
    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code = code


@pytest.mark.skipif(AGAINST_RAY, reason="raylite's constructor signature")
def test_task_error_with_custom_cause_class_pickles():
    error = exceptions.RayTaskError("g", "tb", _CustomError(3, "x")).as_instanceof_cause()
    assert isinstance(error, _CustomError)
    restored = pickle.loads(pickle.dumps(error))
    assert isinstance(restored, _CustomError)
    assert isinstance(restored, exceptions.RayTaskError)
    assert restored.code == 3
