"""ray.util.register_serializer / deregister_serializer: custom serializers for a class.

As Ray 2.60: a registration holds in the process that made it (the driver's does
not reach workers); the deserializer travels with each value, so a receiver needs
none; a worker that returns such a value registers a serializer itself.
"""

from __future__ import annotations

import threading

import pytest

from tests._engine import AGAINST_RAY, ray

if AGAINST_RAY:
    from ray.util import deregister_serializer, register_serializer
else:
    from raylite.util import deregister_serializer, register_serializer

RAY_INIT = {"num_cpus": 1}


class Locked:
    """Does not pickle by itself (a lock)."""

    def __init__(self, x):
        self.x = x
        self.lock = threading.Lock()


class SubLocked(Locked):
    pass


def _times_ten(x):
    return Locked(x * 10)


def _plus_hundred(x):
    return Locked(x + 100)


@pytest.fixture
def registered():
    register_serializer(Locked, serializer=lambda a: a.x, deserializer=_times_ten)
    yield
    deregister_serializer(Locked)


@ray.remote
def read_x(a):
    return a.x


@ray.remote
def make_locked(register):
    # Kept by the worker after the task (it serializes the return after the function
    # ends); only this module's Locked uses it.
    if register:
        register_serializer(Locked, serializer=lambda a: a.x, deserializer=_plus_hundred)
    return Locked(3)


def test_an_unregistered_class_does_not_serialize(ray_start):
    with pytest.raises(TypeError):
        ray.put(Locked(1))


def test_put_get_and_task_arguments_use_the_serializer(ray_start, registered):
    assert ray.get(ray.put(Locked(1))).x == 10
    # The worker has no registration: the deserializer came with the value.
    assert ray.get(read_x.remote(Locked(2))) == 20
    assert ray.get(read_x.remote([Locked(4), 1][0])) == 40


def test_a_registration_does_not_reach_workers(ray_start, registered):
    with pytest.raises(TypeError):
        ray.get(make_locked.remote(False))
    # Registered in the worker: its deserializer rebuilds the value in the driver.
    assert ray.get(make_locked.remote(True)).x == 103


def test_deregister_and_its_scope(ray_start, registered):
    with pytest.raises(TypeError):  # only that class, not its subclasses
        ray.put(SubLocked(1))
    deregister_serializer(Locked)
    with pytest.raises(TypeError):
        ray.put(Locked(1))
    deregister_serializer(Locked)  # none registered: no effect
    deregister_serializer(int)


def test_serializer_and_deserializer_are_keyword_only(ray_start):
    with pytest.raises(TypeError):
        register_serializer(Locked, lambda a: a.x, _times_ten)
