"""The core worker's task and actor lifecycles, in-process: events in, actions out.

A CoreWorker is built from its tables alone (`_init_tables`); stand-ins record what
it sends to its node manager and to workers, and the test answers for them: grants
a lease, replies to a push, reports a process death. Each test asserts the states
the task or actor passes through (lifecycle.py's tables), the budgets spent, and the
messages that come out. No process, socket or store.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from raylite import protocol as P
from raylite.core import lifecycle as L
from raylite.exceptions import (
    ActorDiedError,
    ConnectionLost,
    InvalidTransition,
    ObjectLostError,
    TaskCancelledError,
    WorkerCrashedError,
)
from raylite.object_ref import ObjectRef
from raylite.serialization import loads_inline
from tests._engine import wait_for

from .core_harness import CPU, Harness, StandIn, done, h

__all__ = ["h"]  # the fixture, imported for pytest


def test_a_task_goes_queued_pushed_finished(h: Harness) -> None:
    ref, spec = h.submit()
    assert spec.state is L.QUEUED  # no ref arguments: ready at once
    worker = h.grant()
    assert spec.state is L.PUSHED
    push, reply = worker.take(P.PushTask)
    reply(done(push))
    assert spec.state is L.FINISHED
    kind, data = h.value(ref)
    assert (kind, loads_inline(data)) == (P.INLINE, 42)
    assert ref.id not in h.cw.running


def test_a_worker_crash_spends_one_retry_then_fails_for_good(h: Harness) -> None:
    ref, spec = h.submit(max_retries=1)
    _, reply = h.grant().take(P.PushTask)
    h.worker_died(reply)
    assert spec.state is L.QUEUED
    assert spec.max_retries == 0
    killed = h.cw.nm.of(P.ReturnLease)  # type: ignore[attr-defined]
    assert [m.kill for m in killed] == [True]
    _, reply = h.grant().take(P.PushTask)  # the retry asked for a new lease
    h.worker_died(reply)
    assert spec.state is L.FAILED
    kind, data = h.value(ref)
    assert kind == P.ERROR
    assert isinstance(loads_inline(data), WorkerCrashedError)


def test_unlimited_retries_are_never_spent(h: Harness) -> None:
    _, spec = h.submit(max_retries=-1)
    for _ in range(3):
        _, reply = h.grant().take(P.PushTask)
        h.worker_died(reply)
        assert spec.state is L.QUEUED
        assert spec.max_retries == -1


def test_a_listed_exception_is_retried_and_others_are_not(h: Harness) -> None:
    ref, spec = h.submit(max_retries=2, retry_exceptions=(KeyError,))
    worker = h.grant()
    push, reply = worker.take(P.PushTask)
    reply(done(push, KeyError("k"), P.ERROR))
    assert spec.state is L.PUSHED
    assert spec.max_retries == 1
    push, reply = worker.take(P.PushTask)
    reply(done(push, ValueError("v"), P.ERROR))
    assert spec.state is L.FAILED
    assert spec.max_retries == 1
    assert h.value(ref)[0] == P.ERROR


def test_a_task_waits_for_its_arguments(h: Harness) -> None:
    arg, _ = h.submit()
    _, second = h.submit(arg)
    assert second.state is L.WAITING_ARGS
    worker = h.grant()  # only the first asked for a lease
    push, reply = worker.take(P.PushTask)
    reply(done(push, 1))
    assert second.state is L.PUSHED  # the same lease runs it once its argument is there
    push2, _ = worker.take(P.PushTask)
    assert [(d.position, d.kind) for d in push2.deps] == [(0, P.INLINE)]


def test_a_failed_argument_fails_the_task_without_running_it(h: Harness) -> None:
    arg, _ = h.submit(max_retries=0)
    ref, spec = h.submit(arg)
    push, reply = h.grant().take(P.PushTask)
    reply(done(push, ValueError("upstream"), P.ERROR))
    assert spec.state is L.FAILED
    assert not spec.pushed
    assert h.value(ref)[0] == P.ERROR


def test_cancel_while_queued_ends_it_cancelled_with_no_retry(h: Harness) -> None:
    ref, spec = h.submit(max_retries=3)
    h.cw.cancel(ref, force=False)
    assert spec.state is L.CANCELLED
    assert spec.max_retries == 0
    kind, data = h.value(ref)
    assert kind == P.ERROR
    assert isinstance(loads_inline(data), TaskCancelledError)
    h.cw.cancel(ref, force=False)  # again: nothing happens
    assert spec.state is L.CANCELLED


def test_cancel_while_running_asks_the_worker_and_a_crash_is_not_retried(h: Harness) -> None:
    ref, spec = h.submit(max_retries=3)
    worker = h.grant()
    push, reply = worker.take(P.PushTask)
    h.cw.cancel(ref, force=False)
    assert [m.task_id for m in worker.of(P.CancelTask)] == [push.task_id]
    assert spec.state is L.PUSHED
    reply(ConnectionLost("interrupted"))
    assert spec.state is L.CANCELLED


def test_a_lost_stored_return_reruns_its_task(h: Harness) -> None:
    ref, spec = h.submit(max_retries=1)
    worker = h.grant()
    push, reply = worker.take(P.PushTask)
    reply(done(push, P.StoredAt(1 << 20, "tcp:10.0.0.2:1"), P.IN_STORE))
    assert spec.state is L.FINISHED
    assert h.cw.objects[ref.id].lineage is spec
    h.cw._object_lost(ref.id, "its node died")
    # Rerun (WAITING_ARGS, QUEUED) on the lease kept warm: one retry spent.
    assert spec.state is L.PUSHED
    assert spec.max_retries == 0
    assert spec.rerunning
    push, reply = worker.take(P.PushTask)
    reply(done(push, P.StoredAt(1 << 20, "tcp:10.0.0.3:1"), P.IN_STORE))
    assert spec.state is L.FINISHED
    h.cw._object_lost(ref.id, "lost again")  # no retries left: it is an error now
    kind, data = h.value(ref)
    assert kind == P.ERROR
    assert "cannot be rebuilt" in str(loads_inline(data))


def test_a_move_the_table_does_not_allow_raises(h: Harness) -> None:
    _, spec = h.submit()
    with pytest.raises(InvalidTransition, match="QUEUED -> FINISHED"):
        L.transition(spec, L.FINISHED, L.TASK_TRANSITIONS, cause="test", who=spec.task_id)
    assert spec.state is L.QUEUED


# --- actors ---------------------------------------------------------------------------
_HANDLES: list[Any] = []  # the actors' handle refs: an actor with none left ends


def create(h: Harness, max_restarts: int) -> Any:
    actor_id, _, ref = h.cw.create_actor(
        class_name="Counter",
        function_id=b"c" * 16,
        function_blob=lambda: b"blob",
        args=(),
        kwargs={},
        shape=CPU,
        actor_options={"max_restarts": max_restarts},
    )
    _HANDLES.append(ref)
    return h.cw.actors[actor_id]


def construct(h: Harness) -> StandIn:
    worker = h.grant(for_actor=True)
    push, reply = worker.take(P.PushTask)
    assert push.actor_creation
    reply(done(push, None))
    return worker


def states(h: Harness) -> list[str]:
    return [m.state for m in h.cw.nm.of(P.ActorStateChanged)]  # type: ignore[attr-defined]


def call(h: Harness, client: Any, max_retries: int = 0) -> tuple[ObjectRef, Any]:
    (ref,) = h.cw.submit_task(
        name="Counter.incr",
        function_id=b"i" * 16,
        function_blob=lambda: b"blob",
        args=(),
        kwargs={},
        num_returns=1,
        shape={},
        max_retries=max_retries,
        retry_exceptions=False,
        actor_id=client.actor_id,
    )
    return ref, h.cw.running.get(ref.id)


def test_an_actor_restarts_once_then_dies(h: Harness) -> None:
    client = create(h, max_restarts=1)
    assert client.state is L.PENDING
    first = construct(h)
    assert client.state is L.ALIVE
    assert client.incarnation == 0
    h.cw._actor_process_died(first.name)
    h.answer_causes()  # not killed for memory
    assert client.state is L.RESTARTING
    assert client.incarnation == 1
    assert client.restarts_left == 0
    assert client.creation_spec.state is L.QUEUED  # its constructor runs again
    h.cw._actor_process_died(first.name)  # a second word about the same life: ignored
    h.answer_causes()  # not killed for memory
    assert client.incarnation == 1
    second = construct(h)
    assert client.state is L.ALIVE
    h.cw._actor_process_died(second.name)
    h.answer_causes()  # not killed for memory
    assert client.state is L.DEAD
    assert states(h) == ["ALIVE", "RESTARTING", "ALIVE", "DEAD"]


def test_a_call_in_flight_when_the_actor_dies_is_retried_on_the_next_life(h: Harness) -> None:
    client = create(h, max_restarts=1)
    worker = construct(h)
    ref, spec = call(h, client, max_retries=1)
    push, reply = worker.take(P.PushTask)
    assert spec.state is L.PUSHED
    assert spec.incarnation == 0
    reply(ConnectionLost("the actor's process died"))
    h.answer_causes()  # not killed for memory
    assert client.state is L.RESTARTING
    assert spec.state is L.QUEUED
    h.cw._actor_process_died(worker.name)  # the node's word comes later: stale
    h.answer_causes()  # not killed for memory
    assert client.incarnation == 1
    new = construct(h)
    push, reply = new.take(P.PushTask)  # the retried call went to the new life
    assert push.task_id == spec.task_id
    assert spec.incarnation == 1
    reply(done(push, 7))
    assert spec.state is L.FINISHED
    assert loads_inline(h.value(ref)[1]) == 7


def test_a_dead_actor_fails_its_queued_calls_and_its_constructor(h: Harness) -> None:
    client = create(h, max_restarts=0)
    ref, spec = call(h, client)  # before the actor exists
    worker = h.grant(for_actor=True)
    creation, reply = worker.take(P.PushTask)
    sent, call_reply = worker.take(P.PushTask)  # calls follow the constructor at once
    assert sent.task_id == spec.task_id
    assert spec.state is L.PUSHED
    reply(ConnectionLost("died in the constructor"))
    h.answer_causes()  # not killed for memory
    assert client.state is L.DEAD
    assert client.creation_spec.state is L.FAILED
    late, late_spec = call(h, client)  # a call after the death fails at once
    assert late_spec is None  # ended and let go of at once
    assert isinstance(loads_inline(h.value(late)[1]), ActorDiedError)
    call_reply(ConnectionLost("died in the constructor"))
    h.answer_causes()  # not killed for memory
    assert spec.state is L.FAILED
    kind, data = h.value(ref)
    assert kind == P.ERROR
    assert isinstance(loads_inline(data), ActorDiedError)
    assert h.cw.objects[creation.return_ids[0]].kind == P.ERROR
    assert states(h) == ["DEAD"]


def test_the_restart_budget_is_spent_by_spend_retry() -> None:
    class Client:
        restarts_left = 2

    client = Client()
    assert L.spend_retry(client, "restarts_left")
    assert client.restarts_left == 1
    assert L.spend_retry(client, "restarts_left")
    assert client.restarts_left == 0
    assert not L.spend_retry(client, "restarts_left")
    assert client.restarts_left == 0


def test_every_state_is_in_its_table_and_the_ends_are_ends() -> None:
    assert set(L.TASK_TRANSITIONS) == set(L.TaskState)
    assert set(L.ACTOR_TRANSITIONS) == set(L.ActorState)
    assert L.TASK_TRANSITIONS[L.CANCELLED] == frozenset()
    assert L.ACTOR_TRANSITIONS[L.DEAD] == frozenset()
    for table in (L.TASK_TRANSITIONS, L.ACTOR_TRANSITIONS):
        for targets in table.values():
            assert targets <= set(table)


def test_statistics_is_a_frozen_copy_of_what_the_worker_owns(h: Harness) -> None:
    arg, first = h.submit()
    _, second = h.submit(arg)
    stats = h.cw.statistics()
    by_id = {t.task_id: t.state for t in stats.tasks}
    assert by_id == {first.task_id: L.QUEUED, second.task_id: L.WAITING_ARGS}
    objects = {o.object_id: o for o in stats.objects}
    assert objects[arg.id].pending
    assert objects[arg.id].task_argument  # the second task will read it
    assert arg.id not in stats.own_refs  # the test's one ref is the task's pinned argument
    with pytest.raises(AttributeError):
        stats.tasks = ()  # type: ignore[misc]
    push, reply = h.grant().take(P.PushTask)
    reply(done(push, 1))
    assert {t.task_id: t.state for t in h.cw.statistics().tasks} == {second.task_id: L.PUSHED}
    assert by_id[second.task_id] is L.WAITING_ARGS  # the old snapshot did not change


def test_moves_are_logged_only_when_traced(
    h: Harness, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raylite.transitions import TRACE

    caplog.set_level(logging.DEBUG, logger="raylite")

    workers: list[StandIn] = []

    def run_one() -> list[str]:
        caplog.clear()
        h.submit()
        if not workers:
            workers.append(h.grant())  # later tasks run on its lease, kept warm
        push, reply = workers[0].take(P.PushTask)
        reply(done(push))
        return [
            r.getMessage().split(": ", 1)[1] for r in caplog.records if " -> " in r.getMessage()
        ]

    assert run_one() == []  # off (RAYLITE_TRACE_TRANSITIONS unset): the hot path logs nothing
    monkeypatch.setattr(TRACE, "on", True)
    assert run_one() == [
        "WAITING_ARGS -> QUEUED (its arguments are ready)",
        "QUEUED -> PUSHED (pushed to a worker)",
        "PUSHED -> FINISHED (its worker sent the returns)",
    ]


def test_an_actor_killed_for_memory_fails_its_calls_with_out_of_memory_error(h: Harness) -> None:
    """Ray 2.60: the call running on an actor its node's memory monitor killed, and the
    calls after, raise OutOfMemoryError (the node's words, the actor named)."""
    from raylite.exceptions import OutOfMemoryError

    client = create(h, max_restarts=0)
    worker = construct(h)
    ref, _ = call(h, client)
    _, reply = worker.take(P.PushTask)
    reply(ConnectionLost("the actor's process died"))
    h.answer_causes(oom="1 worker(s) were killed due to the node running low on memory.\nx")
    assert client.state is L.DEAD
    err = loads_inline(h.value(ref)[1])
    assert isinstance(err, OutOfMemoryError)
    assert f"The actor killed: name=Counter, actor ID={client.actor_id.hex()}." in str(err)
    late, _ = call(h, client)
    assert isinstance(loads_inline(h.value(late)[1]), OutOfMemoryError)


def test_a_task_whose_argument_is_already_being_rebuilt_runs_again_after_it(h: Harness) -> None:
    # The owner hears that the argument's node died (its rebuild starts) before the
    # task reading it reports it could not fetch it: the task runs again once the
    # argument is rebuilt, as when the reader's report comes first. (The chaos soak
    # found it failing with ObjectLostError while the argument was being rebuilt.)
    arg, maker = h.submit(max_retries=1)
    worker = h.grant()
    push, reply = worker.take(P.PushTask)
    reply(done(push, P.StoredAt(1 << 20, "tcp:10.0.0.2:1"), P.IN_STORE))
    ref, reader = h.submit(arg, max_retries=1)
    read_push, read_reply = worker.take(P.PushTask)
    h.cw._object_lost(arg.id, "its node died")  # heard first: the maker is rerun
    assert maker.rerunning
    assert maker.state is L.QUEUED  # behind the reader on the one lease
    lost = ObjectLostError(arg.id.hex(), "its copy could not be fetched")
    read_reply(done(read_push, lost, P.ERROR))
    assert reader.state is L.WAITING_ARGS  # not FAILED: it waits for the rebuild
    assert reader.max_retries == 0  # one retry spent
    push, reply = worker.take(P.PushTask)  # the maker again
    assert push.task_id == maker.task_id
    reply(done(push, P.StoredAt(1 << 20, "tcp:10.0.0.3:1"), P.IN_STORE))
    read_push, read_reply = worker.take(P.PushTask)  # the reader again, on the new copy
    assert read_push.task_id == reader.task_id
    assert [d.data.node for d in read_push.deps] == ["tcp:10.0.0.3:1"]
    read_reply(done(read_push, 7))
    assert reader.state is L.FINISHED
    assert loads_inline(h.value(ref)[1]) == 7


@pytest.mark.parametrize(
    "refusal",
    [P.Failed(P.FailCode.WORKER_DIED, "the worker started for it died"), None],
    ids=["worker-died", "node-gone"],
)
def test_an_actor_restart_whose_lease_is_lost_asks_again(h: Harness, refusal: Any) -> None:
    # The lease for an actor's new life is lost with the worker started for it or with
    # the node it went to: the actor asks again, as Ray reschedules it, instead of
    # dying for good with restarts left (found by the chaos soak: a node manager killed
    # while the actor it was starting again had spilled there).
    client = create(h, max_restarts=-1)
    first = construct(h)
    h.cw._actor_process_died(first.name)
    h.answer_causes()  # its node's memory monitor did not kill it
    assert client.state is L.RESTARTING
    _, answer = h.cw.nm.take(P.RequestLease)  # type: ignore[attr-defined]
    if refusal is None:  # it went to another node, which died: the reply is a lost link
        node = StandIn("tcp:10.0.0.9:1")
        h.cw.peers["tcp:10.0.0.9:1"] = node  # type: ignore[assignment]
        answer(P.LeaseSpillback("tcp:10.0.0.9:1"))
        _, node_answer = node.take(P.RequestLease)
        node_answer(ConnectionLost("that node died"))
    else:
        answer(refusal)
    assert client.state is L.RESTARTING  # not DEAD: its lease is asked for again
    nm: Any = h.cw.nm
    wait_for(lambda: nm.requests, 10, "the actor's lease asked for again")
    second = construct(h)
    assert client.state is L.ALIVE
    assert second is not first
