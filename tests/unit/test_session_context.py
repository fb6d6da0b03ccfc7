"""core/context.py's memory of ended sessions and of a fork (issue 18), in-process."""

from __future__ import annotations

import pytest

from raylite.core import context
from raylite.object_ref import ObjectRef, new_id


@pytest.fixture
def fresh_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "PAST_OWNERS", set())
    monkeypatch.setattr(context, "_past_prefixes", ())
    monkeypatch.setattr(context, "_verdicts", {})


def ref(owner: str) -> ObjectRef:
    return ObjectRef(new_id(), owner, _count=False)


def test_refs_of_an_ended_session_are_refused_and_others_pass(fresh_context: None) -> None:
    live = ref("unix:/tmp/raylite/s2/d-2.sock")
    context.check_session([live], "get")  # nothing ended yet
    context.session_ended("unix:/tmp/raylite/s1/d-1.sock", "/tmp/raylite/s1")
    context.session_ended("tcp:10.0.0.1:4000", None)  # a cluster driver's own address
    for owner in (
        "unix:/tmp/raylite/s1/d-1.sock",  # the driver itself
        "unix:/tmp/raylite/s1/w-9.sock",  # a worker of the session it started
        "tcp:10.0.0.1:4000",
    ):
        with pytest.raises(ValueError, match="not part of the current session"):
            context.check_session([live, ref(owner)], "get")
    context.check_session([live, ref("tcp:10.0.0.1:40001"), ref("unix:/tmp/raylite/s10/x")], "get")


def test_a_forked_child_refuses_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    class Worker:
        closed = False

        def when_ready_future(self, ref: object) -> object:
            return None

    worker = Worker()
    monkeypatch.setattr(context, "_global", worker)
    monkeypatch.setattr(context, "FORKED_FROM", None)
    assert context.global_worker() is worker
    context.forked_from(1234)
    assert worker.closed  # this copy of the parent's worker sends nothing
    assert context.live_worker() is None
    with pytest.raises(RuntimeError, match=r"forked from a raylite driver \(pid 1234\)"):
        context.global_worker()
