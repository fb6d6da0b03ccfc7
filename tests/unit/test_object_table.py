"""The owner's object table in-process: reference counts, borrows and lineage chains.

The stand-ins of core_harness (a CoreWorker built from its tables, a
recording node manager and workers the test answers for). Each test drops refs,
reports borrows or losses, and asserts what the owner does: which segments it
frees (FreeObject), which entries it keeps as recipes (RELEASED), and which tasks
it pushes again, in what order. No process, socket or store.
"""

from __future__ import annotations

import gc
from typing import Any

from raylite import protocol as P
from raylite.core import lifecycle as L
from raylite.core.objects import RELEASED
from raylite.object_ref import ObjectRef

from .core_harness import Harness, StandIn, done, h

__all__ = ["h"]  # the fixture, imported for pytest

STORED = P.StoredAt(1 << 20, "")  # an IN_STORE value on the owner's own node: freed through its nm


class Replies(StandIn):
    """A borrower's connection: the owner acknowledges AddBorrower on it."""

    def reply(self, rid: int, msg: Any) -> None:
        self.sent.append(msg)


def finish(h: Harness, worker: StandIn, value: Any = STORED, kind: int = P.IN_STORE) -> bytes:
    """Answer the oldest push on `worker`; returns the id of that task's return."""
    push, reply = worker.take(P.PushTask)
    reply(done(push, value, kind))
    return push.return_ids[0]


def freed(h: Harness) -> list[bytes]:
    return [m.object_id for m in h.cw.nm.of(P.FreeObject)]  # type: ignore[attr-defined]


def release(h: Harness) -> None:
    """What the release loop does every 0.1 s: process the refs that __del__ queued."""
    gc.collect()
    h.cw._process_released()


def stored(h: Harness, *args: Any, max_retries: int = 1) -> tuple[Any, StandIn | None]:
    """Submit a task whose one return is stored; the lease stays warm between tasks."""
    ref, _ = h.submit(*args, max_retries=max_retries)
    worker = h.grant() if h.cw.nm.requests else None  # type: ignore[attr-defined]
    return ref, worker


def test_a_stored_value_is_freed_with_its_last_ref(h: Harness) -> None:
    ref, worker = stored(h, max_retries=0)
    assert worker is not None
    finish(h, worker)
    oid = ref.id
    assert h.cw.objects[oid].kind == P.IN_STORE
    copy = ref  # a second local ref to the same object
    del ref
    release(h)
    assert oid in h.cw.objects  # one ref is still alive
    assert freed(h) == []
    del copy
    release(h)
    assert oid not in h.cw.objects
    assert freed(h) == [oid]


def test_an_inline_value_is_dropped_without_a_message(h: Harness) -> None:
    ref, worker = stored(h, max_retries=0)
    assert worker is not None
    finish(h, worker, 42, P.INLINE)
    oid = ref.id
    del ref
    release(h)
    assert oid not in h.cw.objects
    assert freed(h) == []  # nothing in the store to free


def test_a_borrowed_value_lives_until_the_borrower_returns_it(h: Harness) -> None:
    ref, worker = stored(h, max_retries=0)
    assert worker is not None
    finish(h, worker)
    oid = ref.id
    borrower = Replies("unix:/borrower.sock")
    h.cw.on_add_borrower(borrower, P.AddBorrower(oid, borrower.name), 7)  # type: ignore[arg-type]
    h.cw.on_add_borrower(borrower, P.AddBorrower(oid, borrower.name), 8)  # type: ignore[arg-type]
    assert [type(m) for m in borrower.sent] == [P.Ok, P.Ok]
    del ref
    release(h)
    assert oid in h.cw.objects  # our last ref is gone, the borrower's are not
    h.cw.on_remove_borrower(P.RemoveBorrower(oid, borrower.name))
    assert oid in h.cw.objects  # it registered twice
    h.cw.on_remove_borrower(P.RemoveBorrower(oid, borrower.name))
    assert oid not in h.cw.objects
    assert freed(h) == [oid]


def test_a_dead_borrowers_borrows_end_with_it(h: Harness) -> None:
    ref, worker = stored(h, max_retries=0)
    assert worker is not None
    finish(h, worker)
    oid = ref.id
    borrower = Replies("unix:/borrower.sock")
    h.cw.on_add_borrower(borrower, P.AddBorrower(oid, borrower.name), 1)  # type: ignore[arg-type]
    del ref
    release(h)
    assert freed(h) == []
    h.cw._drop_borrower(borrower.name)  # ClientDied: it will never send RemoveBorrower
    assert freed(h) == [oid]


def chain(h: Harness) -> tuple[Any, Any, StandIn]:
    """a = f(); b = g(a): both stored, both rebuildable; returns (a, b, worker)."""
    a, worker = stored(h)
    assert worker is not None
    assert finish(h, worker) == a.id
    b, again = stored(h, a)
    assert again is None  # the same lease, kept warm, runs g
    assert finish(h, worker) == b.id
    return a, b, worker


def test_an_argument_read_by_a_kept_lineage_keeps_only_its_recipe(h: Harness) -> None:
    a, _b, _ = chain(h)  # _b stays alive: its lineage (g) reads a
    a_id = a.id
    del a
    release(h)
    # b's lineage (g) may need a again: a's segment goes, its entry (the recipe) stays.
    assert freed(h) == [a_id]
    entry = h.cw.objects[a_id]
    assert entry.kind == RELEASED
    assert entry.lineage is not None
    assert entry.lineage_refs == 1


def test_a_lost_value_is_rebuilt_up_its_chain_in_order(h: Harness) -> None:
    a, b, worker = chain(h)
    a_id = a.id
    del a
    release(h)
    f_spec = h.cw.objects[a_id].lineage
    h.cw._object_lost(b.id, "its node died")
    # g needs a, whose value was released: f runs first, then g, on the warm lease.
    assert finish(h, worker) == a_id
    assert f_spec.state is L.FINISHED
    g = h.cw.running[b.id]
    assert g.state is L.PUSHED
    assert finish(h, worker) == b.id
    assert h.cw.objects[b.id].kind == P.IN_STORE
    # Once g has read it, the rebuilt a is released again: its recipe stays for g.
    assert h.cw.objects[a_id].kind == RELEASED
    assert freed(h) == [a_id, a_id]
    assert f_spec.max_retries == 0  # each rerun spent one retry
    assert g.max_retries == 0


def test_a_rerun_waits_on_its_released_argument_before_the_lock_goes(h: Harness) -> None:
    a, b, _ = chain(h)
    a_id = a.id
    del a
    release(h)
    with h.cw.lock:
        h.cw._object_lost(b.id, "its node died")
        # Another thread may finish f's rerun the moment this lock goes: g must wait on
        # a already, or the rebuilt a, unheld, is released again before g reads it.
        assert len(h.cw.objects[a_id].waiters) == 1


def test_a_released_value_asked_for_is_rebuilt_not_handed_out(h: Harness) -> None:
    a, _b, worker = chain(h)
    a_id, a_owner = a.id, a.owner
    del a
    release(h)
    assert h.cw.objects[a_id].kind == RELEASED
    got: list[tuple[int, Any]] = []
    h.cw._when_ready(ObjectRef(a_id, a_owner, _count=False), lambda *v: got.append(v))
    assert got == []  # it waits for the rebuild: RELEASED has no value to give
    assert finish(h, worker) == a_id  # f ran again
    assert got == [(P.IN_STORE, STORED)]


def test_dropping_the_end_of_a_chain_frees_the_whole_chain(h: Harness) -> None:
    a, b, _ = chain(h)
    a_id, b_id = a.id, b.id
    del a
    release(h)
    assert freed(h) == [a_id]
    del b
    release(h)
    # b goes; its lineage lets go of a's recipe, which nothing else needs.
    assert b_id not in h.cw.objects
    assert a_id not in h.cw.objects
    assert freed(h) == [a_id, b_id]


def test_a_chain_without_retries_left_fails_with_object_lost(h: Harness) -> None:
    a, worker = stored(h, max_retries=0)
    assert worker is not None
    finish(h, worker)
    h.cw._object_lost(a.id, "its node died")
    kind, data = h.value(a)
    assert kind == P.ERROR
    from raylite.serialization import loads_inline

    assert "cannot be rebuilt" in str(loads_inline(data))
    assert worker.requests == []  # nothing was pushed again
