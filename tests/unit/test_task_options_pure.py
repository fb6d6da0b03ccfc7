"""Task and actor options without processes: the method table's task-event and handle
options, a lease whose worker exits (max_calls), and the blob that carries max_calls."""

from __future__ import annotations

import pickle

import msgpack

from raylite.actors import HANDLE_OPTIONS, ActorHandle, _method_table, method
from raylite.core.lease_queue import Ask, Push
from raylite.core.tasks import task_events_off
from raylite.serialization import dumps_function, loads_function, loads_function_limited

from .test_lease_queue import grant, idle_lease, queues, task


class Chatty:
    def talk(self):
        pass

    @method(enable_task_events=False)
    def hush(self):
        pass

    @method(enable_task_events=True, max_task_retries=2)
    def shout(self):
        pass


def _through_the_wire(table):
    """As a named actor's table comes back from the head, in a pickled handle."""
    table = msgpack.unpackb(msgpack.packb(table, use_bin_type=True), raw=False)
    return pickle.loads(pickle.dumps(ActorHandle(b"a" * 16, "Chatty", table, None)))


def test_a_method_without_task_events_is_marked_in_the_table():
    table = _method_table(Chatty)
    assert table["talk"] == 1  # plain methods stay ints: the hot path
    handle = _through_the_wire(table)
    assert task_events_off(handle.hush._task_options)
    assert handle.talk._task_options is None
    assert handle.shout._task_options is None
    # A call's .options() overrides the method's, both ways.
    assert handle.hush.options(enable_task_events=True)._task_options is None
    assert task_events_off(handle.talk.options(enable_task_events=False)._task_options)


def test_an_actor_without_task_events_keeps_its_methods_that_ask_for_them():
    handle = _through_the_wire(_method_table(Chatty, task_events=False))
    assert task_events_off(handle.talk._task_options)
    assert task_events_off(handle.hush._task_options)
    assert handle.shout._task_options is None  # its @method says True
    assert handle.shout._max_task_retries == 2


def test_handle_options_travel_and_name_no_method():
    table = {**_method_table(Chatty), HANDLE_OPTIONS: {"out_of_order": True}}
    handle = _through_the_wire(table)
    assert handle._out_of_order
    assert not _through_the_wire(_method_table(Chatty))._out_of_order
    assert not hasattr(handle, HANDLE_OPTIONS)


def test_a_lease_whose_worker_exits_is_dropped_and_replaced_if_tasks_wait():
    q = queues()
    lease = idle_lease(q)
    first, second = task(), task()
    assert q.enqueue(first) == [Push(lease, first)]
    (ask,) = q.enqueue(second)  # the only lease is busy: ask for another
    assert q.lease_gone(lease) == []  # a request is out for `second` already
    assert lease.returned
    assert lease.lease_id not in q.leases
    assert lease not in lease.sclass.idle
    # With no request out (that one was refused), a lease whose worker exits asks for
    # another for the tasks that wait.
    q = queues()
    lease = idle_lease(q)
    assert q.enqueue(first) == [Push(lease, first)]
    (ask,) = q.enqueue(second)
    assert q.refused(ask.sclass, ask.lease_id, gone=True) == []
    (again,) = q.lease_gone(lease)
    assert isinstance(again, Ask)


def test_a_lease_whose_worker_exits_with_nothing_queued_is_only_dropped():
    q = queues()
    spec = task()
    (ask,) = q.enqueue(spec)
    lease, _ = grant(q, ask)
    assert q.lease_gone(lease) == []
    assert q.leases == {}
    assert lease.sclass.idle == []


def test_max_calls_travels_with_the_function_blob():
    def f():
        return 1

    assert loads_function_limited(dumps_function(f))[1] == 0
    fn, limit = loads_function_limited(dumps_function(f, 3))
    assert (fn(), limit) == (1, 3)
    assert loads_function(dumps_function(f, 3))() == 1


def test_arguments_are_checked_against_the_signature_read_at_the_first_call() -> None:
    """@remote does not read the signature (inspect's import waits for a new session's
    node: decorator.py); the first .remote() does, and every call is checked by it."""
    import pytest

    from raylite.remote_function import RemoteFunction

    def two(a, b, *, c=0):
        return a + b + c

    fn = RemoteFunction(two, {})
    assert fn._signature is None  # not read yet
    with pytest.raises(TypeError, match=r"two\.remote\(\).*missing"):
        fn.remote(1)
    assert fn._signature is not None
    with pytest.raises(TypeError, match=r"two\.remote\(\).*too many"):
        fn.remote(1, 2, 3)
    with pytest.raises(TypeError, match=r"two\.remote\(\).*unexpected keyword"):
        fn.remote(1, 2, d=4)
    fresh = RemoteFunction(two, {})
    with pytest.raises(TypeError, match=r"two\.remote\(\).*unexpected keyword"):
        fresh.remote(1, 2, d=4)  # a first call with keywords is checked too
