"""A borrower in-process. Its get of an object sealed in its node's store reads it
there: no question to its owner, no message to the node manager (its pin keeps the
segment: object_store); an object not in the store is asked of its owner
(core/blocking.py's _in_local_store). Refs read from a running task's arguments are
told to their owners only if they outlive the task (refs.register_deferred)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from raylite import protocol as P
from raylite.object_ref import ObjectRef, new_id
from raylite.object_store import ObjectStore, readers
from raylite.serialization import dumps_inline, serialize
from tests.unit.core_harness import Harness, StandIn, h  # noqa: F401  (h: the fixture)

OWNER = "unix:/the-owner.sock"


class Owner(StandIn):
    """The owner's connection: acknowledges borrows, and tells when it is asked."""

    def __init__(self) -> None:
        super().__init__(OWNER)
        self.asked = threading.Event()
        self.waited: list[Any] = []  # requests answered at once (AddBorrower)

    def request(self, msg: Any, timeout: float | None = None) -> Any:
        self.waited.append(msg)
        return P.Ok()

    def request_async(self, msg: Any, callback: Callable[[Any], None]) -> None:
        super().request_async(msg, callback)
        self.asked.set()


@pytest.fixture
def owner(h: Harness, tmp_path) -> Owner:  # noqa: F811
    cw = h.cw
    cw.store = ObjectStore(str(tmp_path))
    cw.store.on_mapped = cw._on_mapped
    cw.store.on_unmapped = cw._unmapped.append
    cw.peers[OWNER] = owner = Owner()
    return owner


def _get_in_thread(cw: Any, refs: list[ObjectRef]) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []
    reader = threading.Thread(target=lambda: box.append(cw.get(refs, timeout=10)))
    reader.start()
    return reader, box


def test_a_stored_object_is_read_from_the_store_without_its_owner(
    h: Harness,  # noqa: F811
    owner: Owner,
) -> None:
    cw = h.cw
    oid = new_id()
    cw.store.put(oid, serialize(np.arange(1000)))
    ref = ObjectRef(oid, OWNER)
    (value,) = cw.get([ref], timeout=10)
    assert value[999] == 999
    assert owner.of_requests(P.GetObject) == []
    assert cw.nm.of(P.ObjectMapped) == []
    assert cw.nm.of_requests(P.ObjectMapped) == []
    assert readers(cw.store.path(oid)) == 1  # pinned while the value lives

    # Two at once, one of them not in the store: only that one is asked for.
    other = ObjectRef(new_id(), OWNER)
    reader, box = _get_in_thread(cw, [ref, other])
    assert owner.asked.wait(10)
    msg, answer = owner.take(P.GetObject)
    assert msg.object_id == other.id
    answer(P.ObjectValue(P.INLINE, dumps_inline("small")))
    reader.join(10)
    assert box[0][0][999] == 999
    assert box[0][1] == "small"


def test_an_object_not_in_the_store_is_asked_of_its_owner(
    h: Harness,  # noqa: F811
    owner: Owner,
) -> None:
    ref = ObjectRef(new_id(), OWNER)
    reader, box = _get_in_thread(h.cw, [ref])
    assert owner.asked.wait(10)
    _, answer = owner.take(P.GetObject)
    answer(P.ObjectValue(P.INLINE, dumps_inline([1, 2])))
    reader.join(10)
    assert box == [[[1, 2]]]


def test_refs_in_a_tasks_arguments_are_told_only_if_they_outlive_it(
    h: Harness,  # noqa: F811
    owner: Owner,
) -> None:
    cw = h.cw
    dropped, kept = new_id(), new_id()
    cw.deferring.on = True  # the worker reads a pushed task's arguments
    args = [ObjectRef(dropped, OWNER), ObjectRef(kept, OWNER)]
    cw.deferring.on = False
    assert owner.sent == []
    assert owner.waited == []  # no AddBorrower while the task runs
    held = args[1]  # the task keeps one (an actor's state)
    del args
    cw._process_released()
    assert owner.of(P.RemoveBorrower) == []  # the dropped one was never told
    cw.register_deferred()  # the task ends
    assert [m.object_id for m in owner.waited] == [held.id]
    assert owner.of(P.AddBorrower) == []
    assert not cw.unregistered
    del held
    cw._process_released()
    assert [m.object_id for m in owner.of(P.RemoveBorrower)] == [kept]


def test_a_borrow_not_told_yet_is_told_before_its_owner_is_asked(
    h: Harness,  # noqa: F811
    owner: Owner,
) -> None:
    """A rerun task's reader: no submitter holds the value, so its owner must know."""
    cw = h.cw
    cw.deferring.on = True
    ref = ObjectRef(new_id(), OWNER)
    cw.deferring.on = False
    reader, box = _get_in_thread(cw, [ref])
    assert owner.asked.wait(10)
    assert [type(m).__name__ for m in owner.sent] == ["AddBorrower"]  # ahead, same conn
    _, answer = owner.take(P.GetObject)
    answer(P.ObjectValue(P.INLINE, dumps_inline(7)))
    reader.join(10)
    assert box == [[7]]
    assert not cw.unregistered


def test_an_error_the_owner_answers_is_asked_once(h: Harness, owner: Owner) -> None:  # noqa: F811
    """Only a value mapped here and then unreadable is asked of the owner again; an
    error the owner answers (its object lost) is raised at once."""
    from raylite.exceptions import OwnerDiedError

    raised: list[BaseException] = []

    def get() -> None:
        try:
            h.cw.get([ObjectRef(new_id(), OWNER)], timeout=5)
        except OwnerDiedError as exc:
            raised.append(exc)

    reader = threading.Thread(target=get)
    reader.start()
    assert owner.asked.wait(10)
    _, answer = owner.take(P.GetObject)
    answer(P.ObjectValue(P.ERROR, dumps_inline(OwnerDiedError("x", "its owner died"))))
    reader.join(10)
    assert len(raised) == 1
    assert not owner.requests  # not asked again


def test_a_remote_driver_gets_a_borrowed_ref_from_its_owner(h: Harness) -> None:  # noqa: F811
    """A remote driver has no store on its machine (_NoStore): nothing is mapped here."""
    from raylite.core.remote_driver import _NoStore

    h.cw.store = _NoStore()
    h.cw.peers[OWNER] = owner = Owner()
    reader, box = _get_in_thread(h.cw, [ObjectRef(new_id(), OWNER)])
    assert owner.asked.wait(10)
    _, answer = owner.take(P.GetObject)
    answer(P.ObjectValue(P.INLINE, dumps_inline("the value")))
    reader.join(10)
    assert box == [["the value"]]
