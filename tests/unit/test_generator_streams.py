"""The owner's side of generator tasks in process (core/generators.GeneratorsMixin):
a CoreWorker built from its tables (tests/unit/core_harness.py), items fed to it as
a worker would send them, and what its reader gets. No process, socket or store."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from raylite import protocol as P
from raylite.core.generators import END, FAILED, ITEM, item_id
from raylite.exceptions import (
    GetTimeoutError,
    ObjectLostError,
    WorkerCrashedError,
)
from raylite.object_ref import ObjectRef
from raylite.serialization import dumps_inline

from .core_harness import CPU, Harness, StandIn, done, h

__all__ = ["h"]  # the fixture, imported for pytest


class Answering(StandIn):
    """A worker's connection that records the owner's answers to its item requests."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.answered: list[int] = []

    def reply(self, rid: int, msg: object) -> None:
        assert isinstance(msg, P.Ok)
        self.answered.append(rid)


def submit_generator(
    h: Harness, mode: int = P.GENERATOR_STREAMING, backpressure: int = -1, max_retries: int = 0
) -> Any:
    (ref,) = h.cw.submit_task(
        name="gen",
        function_id=b"g" * 16,
        function_blob=lambda: b"blob",
        args=(),
        kwargs={},
        num_returns=1,
        shape=CPU,
        max_retries=max_retries,
        retry_exceptions=False,
        generator=(mode, backpressure),
    )
    worker = h.grant()
    push, answer = worker.take(P.PushTask)
    assert push.generator == mode
    assert push.backpressure == backpressure
    return SimpleNamespace(
        ref=ref, stream=h.cw.streams[ref.id], push=push, answer=answer, worker=worker
    )


def item(push: P.PushTask, index: int, value: object) -> P.GeneratorItem:
    oid = item_id(push.task_id, index)
    return P.GeneratorItem(
        push.return_ids[0], index, P.TaskReturn(oid, P.INLINE, dumps_inline(value), {})
    )


def test_items_reach_the_reader_in_order_then_the_end(h: Harness) -> None:
    g = submit_generator(h)
    conn = Answering("w")
    h.cw._generator_item(conn, item(g.push, 0, "a"), 0)
    h.cw._generator_item(conn, item(g.push, 1, "b"), 0)
    kind, first = h.cw.stream_next(g.stream, timeout=1)
    assert kind == ITEM
    assert h.cw.get([first], timeout=1) == ["a"]
    g.answer(done(g.push, None))
    kind, second = h.cw.stream_next(g.stream, timeout=1)
    assert h.cw.get([second], timeout=1) == ["b"]
    assert h.cw.stream_next(g.stream, timeout=1) == (END, None)
    assert conn.answered == []


def test_a_repeated_item_is_ignored(h: Harness) -> None:
    g = submit_generator(h)
    conn = Answering("w")
    h.cw._generator_item(conn, item(g.push, 0, "first"), 0)
    h.cw._generator_item(conn, item(g.push, 0, "again"), 0)
    _, first = h.cw.stream_next(g.stream, timeout=1)
    assert h.cw.get([first], timeout=1) == ["first"]
    assert g.stream.received == 1


def test_a_tasks_exception_is_its_next_item_and_its_ref_is_none(h: Harness) -> None:
    """As in Ray: the exception a streaming task raised (not retried) is an item."""
    g = submit_generator(h)
    h.cw._generator_item(Answering("w"), item(g.push, 0, 1), 0)
    g.answer(done(g.push, ValueError("boom"), kind=P.ERROR))
    assert h.cw.stream_next(g.stream, timeout=1)[0] == ITEM
    kind, failed = h.cw.stream_next(g.stream, timeout=1)
    assert kind == ITEM
    assert failed.id == item_id(g.push.task_id, 1)
    with pytest.raises(ValueError, match="boom"):
        h.cw.get([failed], timeout=1)
    assert h.cw.stream_next(g.stream, timeout=1) == (END, None)
    assert h.cw.get([g.ref], timeout=1) == [None]


def test_a_crashed_task_hands_out_its_generator_ref_once(h: Harness) -> None:
    g = submit_generator(h)
    h.cw._generator_item(Answering("w"), item(g.push, 0, 1), 0)
    h.worker_died(g.answer)
    assert h.cw.stream_next(g.stream, timeout=1)[0] == ITEM
    assert h.cw.stream_next(g.stream, timeout=1) == (FAILED, None)
    assert h.cw.stream_next(g.stream, timeout=1) == (END, None)
    with pytest.raises(WorkerCrashedError):
        h.cw.get([g.ref], timeout=1)


def test_the_owner_answers_a_held_back_worker_once_the_reader_takes_an_item(h: Harness) -> None:
    g = submit_generator(h, backpressure=1)
    conn = Answering("w")
    h.cw._generator_item(conn, item(g.push, 0, 1), 7)
    assert conn.answered == []  # one unread item: the worker waits
    h.cw.stream_next(g.stream, timeout=1)
    assert conn.answered == [7]


def test_dropping_the_reader_answers_the_worker_and_frees_later_items(h: Harness) -> None:
    g = submit_generator(h, backpressure=1)
    conn = Answering("w")
    h.cw._generator_item(conn, item(g.push, 0, 1), 7)
    h.cw.drop_stream(g.stream)
    assert conn.answered == [7]
    later = item(g.push, 1, 2)
    h.cw._generator_item(conn, later, 8)
    assert conn.answered == [7, 8]
    assert later.item.object_id not in h.cw.objects
    g.answer(done(g.push, None))
    assert g.ref.id not in h.cw.streams


def test_a_dynamic_tasks_items_live_on_in_its_value(h: Harness) -> None:
    g = submit_generator(h, mode=P.GENERATOR_DYNAMIC)
    h.cw._generator_item(Answering("w"), item(g.push, 0, "x"), 0)
    oid = item_id(g.push.task_id, 0)
    contained = {oid: h.cw.address}
    g.answer(
        P.TaskDone(
            [
                P.TaskReturn(
                    g.ref.id,
                    P.INLINE,
                    dumps_inline([ObjectRef(oid, h.cw.address, _count=False)]),
                    contained,
                )
            ],
            1,
        )
    )
    assert g.ref.id not in h.cw.streams  # no reader: the stream went at the end
    h.cw._process_released()
    assert oid in h.cw.objects  # held by the return value's entry


def test_next_times_out_while_nothing_came(h: Harness) -> None:
    g = submit_generator(h)
    with pytest.raises(GetTimeoutError):
        h.cw.stream_next(g.stream, timeout=0.01)


def stored(push: P.PushTask, index: int) -> P.GeneratorItem:
    """An item in the store (its segment is not there: the harness has no store)."""
    oid = item_id(push.task_id, index)
    return P.GeneratorItem(
        push.return_ids[0], index, P.TaskReturn(oid, P.IN_STORE, P.StoredAt(100, ""), {})
    )


def test_a_lost_stored_item_is_rebuilt_by_running_the_generator_again(h: Harness) -> None:
    g = submit_generator(h, max_retries=1)
    conn = Answering("w")
    h.cw._generator_item(conn, stored(g.push, 0), 0)
    h.cw._generator_item(conn, stored(g.push, 1), 0)
    g.answer(done(g.push, None))
    _, first = h.cw.stream_next(g.stream, timeout=1)
    oid = first.id
    assert h.cw.objects[oid].lineage is not None  # the task is kept as its lineage
    h.cw._object_lost(oid, "its node died")
    assert h.value(first)[0] is None  # pending: the generator runs again
    rerun, answer = g.worker.take(P.PushTask)
    assert rerun.task_id == g.push.task_id
    h.cw._generator_item(conn, stored(rerun, 0), 0)
    h.cw._generator_item(conn, stored(rerun, 1), 0)
    answer(done(rerun, None))
    assert h.value(first) == (P.IN_STORE, P.StoredAt(100, ""))
    # The unread item is as it was (the rerun's copy is the same segment: kept).
    _, second = h.cw.stream_next(g.stream, timeout=1)
    assert h.value(second) == (P.IN_STORE, P.StoredAt(100, ""))
    assert h.cw.stream_next(g.stream, timeout=1) == (END, None)
    assert not h.cw.nm.of(P.FreeObject)  # type: ignore[attr-defined]


def test_a_lost_item_of_a_task_without_retries_is_lost(h: Harness) -> None:
    g = submit_generator(h, max_retries=0)
    h.cw._generator_item(Answering("w"), stored(g.push, 0), 0)
    g.answer(done(g.push, None))
    _, first = h.cw.stream_next(g.stream, timeout=1)
    h.cw._object_lost(first.id, "its node died")
    with pytest.raises(ObjectLostError):
        h.cw.get([first], timeout=1)
