"""The actor method table: @method options, and their trip through msgpack and pickle."""

from __future__ import annotations

import pickle

import msgpack
import pytest

from raylite.actors import ActorHandle, _method_table, concurrency_groups_of, method


class Target:
    def plain(self):
        pass

    @method(num_returns=2, max_task_retries=3, retry_exceptions=[KeyError])
    def retried(self):
        pass

    @method(concurrency_group="io", retry_exceptions=True)
    def grouped(self):
        pass


def test_plain_methods_stay_ints_and_options_travel():
    table = _method_table(Target)
    assert table["plain"] == 1
    # Through the head (msgpack) and in a pickled handle, the options survive.
    table = msgpack.unpackb(msgpack.packb(table, use_bin_type=True), raw=False)
    handle = pickle.loads(pickle.dumps(ActorHandle(b"a" * 16, "Target", table, None)))
    retried = handle.retried
    assert (retried._num_returns, retried._max_task_retries) == (2, 3)
    assert retried._retry_exceptions == (KeyError,)
    assert handle.grouped._retry_exceptions is True
    assert handle.plain._retry_exceptions is False
    assert concurrency_groups_of(Target) == {"grouped": "io"}


def test_call_options_override_method_options():
    handle = ActorHandle(b"a" * 16, "Target", _method_table(Target), None)
    call = handle.retried.options(max_task_retries=0, concurrency_group="x")
    assert (call._max_task_retries, call._group, call._retry_exceptions) == (0, "x", (KeyError,))
    with pytest.raises(TypeError):
        handle.plain.options(retry_exceptions="yes")
