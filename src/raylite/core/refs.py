"""Local reference counts and borrowing (Ray's ownership protocol, simplified).

Owns the CoreWorker methods that count live ObjectRef instances, register and
end borrows with owners (AddBorrower / RemoveBorrower), track the borrowers of
owned objects (as events for the object table, objects.ObjectTable), and process
released refs off the `__del__` path. Not what frees values (the table), not the
objects' values (core_worker).

    borrower: first ref ─AddBorrower─▶ owner   last ref ─RemoveBorrower─▶ owner

A worker reading a pushed task's arguments tells no owner of the refs inside them
while the task runs: the task's submitter holds them until it hears the task ended.
When a task ends, the refs of those still held (kept by an actor, passed on) are
registered, and their owners have acknowledged before the worker replies; the others
were never told, so their release sends nothing (as Ray: borrowed refs reported at
the end of the task). 1,000 refs in a task's arguments cost no message instead of a
round trip each."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .. import protocol as P
from ..config import CONFIG
from ..exceptions import (
    ConnectionLost,
)
from ..object_ref import ObjectRef
from ..transport import Connection

log = logging.getLogger("raylite")

# A per-object dict is copied to its present size (_compact_tables) once it is over
# this many bytes with under one entry per COMPACT_BYTES of them: a dict never shrinks.
COMPACT_FROM = 1 << 20
COMPACT_BYTES = 200


def _oversized(table: dict[Any, Any]) -> bool:
    size = sys.getsizeof(table)  # O(1): the dict's own allocation
    return size > COMPACT_FROM and len(table) * COMPACT_BYTES < size


def trim_heap() -> None:
    """glibc's malloc_trim(0): free pages of its heap go back to the system."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class RefsMixin:
    def add_local_ref(self, ref: ObjectRef) -> None:
        oid = ref.id
        with self._ref_lock:
            n = self.local_refs.get(oid, 0)
            self.local_refs[oid] = n + 1
            if n or ref.owner == self.address or self.closed or not ref.owner:
                return
            self.borrowed_owner[oid] = ref.owner
            if oid in self.preregistered:
                self.preregistered.discard(oid)
                return
            if getattr(self.deferring, "on", False):  # a running task's argument
                self.unregistered.add(oid)
                return
        self._register_borrow(ref)

    def register_deferred(self) -> None:
        """A task ends: the owners of its arguments' refs that are still held here
        learn that we borrow them, and have acknowledged, before it replies (its
        submitter's hold on them ends with the reply)."""
        by_owner: dict[str, list[bytes]] = {}
        with self._ref_lock:
            for oid in self.unregistered:
                owner = self.borrowed_owner.get(oid)
                if owner is not None and self.local_refs.get(oid):
                    by_owner.setdefault(owner, []).append(oid)
            self.unregistered.clear()
        for owner, oids in by_owner.items():
            try:
                conn = self.peer(owner)
                for oid in oids[:-1]:  # one connection, handled in order: the last
                    conn.send(P.AddBorrower(oid, self.address))  # ack covers them all
                conn.request(
                    P.AddBorrower(oids[-1], self.address), timeout=CONFIG.request_timeout_s
                )
            except (ConnectionLost, TimeoutError):
                pass  # the owner is gone: a get will say so

    def _register_borrow(self, ref: ObjectRef) -> None:
        """Tell the owner we borrow `ref`; waits for the ack unless on a reader thread."""
        try:
            conn = self.peer(ref.owner)
            msg = P.AddBorrower(ref.id, self.address)
            if threading.current_thread().name.startswith("raylite-conn"):
                conn.send(msg)
            else:
                conn.request(msg, timeout=CONFIG.request_timeout_s)
        except (ConnectionLost, TimeoutError):
            pass  # the owner is gone: get() will say so

    def _on_mapped(self, oid: bytes, pinned: bool) -> None:
        """The node manager must not recycle a segment's memory while we map it.

        Once per mapping: the store keeps one per object while any view lives
        (object_store.Mappings), and queues the id on `_unmapped` when the last goes.
        A borrower's free comes through the owner, on another connection: its pin (a
        link the node manager looks for before it reuses or spills a file,
        object_store) keeps the segment, and no message is sent; where no pin could be
        made, it says ObjectMapped and waits for the acknowledgement. An owner of a
        segment on this node says nothing now: it frees the segment itself, on this
        connection, and says ObjectMapped just before its FreeObject if it maps the
        object then (lineage._free_segment); a first get costs no message.
        """
        if pinned:
            return
        entry = self.objects.get(oid)
        try:
            if entry is None:
                self.nm.request(P.ObjectMapped(oid), timeout=CONFIG.request_timeout_s)
            elif entry.kind == P.IN_STORE and entry.data.node in ("", self.node_tcp):
                return
            else:  # a copy pulled from another node: that node frees it, through ours
                self.nm.send(P.ObjectMapped(oid))
        except (ConnectionLost, TimeoutError):
            return  # the node is gone (its ObjectUnmapped would find no one either)
        self._told_mapped(oid)

    def _told_mapped(self, oid: bytes) -> None:
        """The node manager counts one more mapping of `oid` by us (undone by the
        ObjectUnmapped _process_released sends once its views are gone)."""
        with self._mapped_lock:
            told = self._mapped_told
            told[oid] = told.get(oid, 0) + 1

    def owner_of(self, object_id: bytes) -> str:
        """The owner of an id: this process, or the owner of a ref to it held here."""
        if object_id in self.objects:
            return self.address
        return self.borrowed_owner.get(object_id, "")

    def remove_local_ref(self, object_id: bytes) -> None:
        self._released.append(object_id)  # processed later: __del__ may run anywhere

    def on_ref_serialized(self, ref: ObjectRef) -> None:
        refs = getattr(self._collecting, "refs", None)
        if refs is not None:
            refs.append(ref)

    def serialize_collecting(
        self, fn: Callable[[Any], Any], value: Any
    ) -> tuple[Any, list[ObjectRef]]:
        """fn(value), plus the ObjectRefs pickled inside it."""
        outer = getattr(self._collecting, "refs", None)
        self._collecting.refs = refs = []
        try:
            return fn(value), refs
        finally:
            self._collecting.refs = outer

    def lend_to(self, refs: list[ObjectRef], caller: str) -> dict[bytes, str]:
        """Register `caller` as a borrower of the refs inside a value returned to it
        (before the reply goes); {id: owner} of them, for the reply's `contained`."""
        contained: dict[bytes, str] = {}
        for ref in refs:
            contained.setdefault(ref.id, ref.owner)
        for oid, owner in contained.items():
            if owner == caller:
                continue  # the caller owns it; its returned object keeps it
            if owner == self.address:
                with self.lock:
                    self.table.borrower_added(oid, caller)
            else:
                try:
                    self.peer(owner).request(
                        P.AddBorrower(oid, caller), timeout=CONFIG.request_timeout_s
                    )
                except Exception:
                    pass  # owner gone: the caller will see OwnerDiedError on get
        return contained

    def on_add_borrower(self, conn: Connection, msg: P.AddBorrower, rid: int) -> None:
        with self.lock:
            self.table.borrower_added(msg.object_id, msg.borrower)
        conn.reply(rid, P.Ok())

    def on_remove_borrower(self, msg: P.RemoveBorrower) -> None:
        with self.lock:
            if msg.object_id not in self.objects:
                return
            self._apply(self.table.borrower_removed(msg.object_id, msg.borrower))
        self._process_released()

    def _drop_borrower(self, address: str) -> None:
        """A borrower died: its borrows will never be returned."""
        with self.lock:
            self._apply(self.table.borrower_died(address))
        self._process_released()

    def _process_released(self) -> None:
        unmapped = self._unmapped
        while unmapped:
            oid = unmapped.popleft()
            with self._mapped_lock:
                told = self._mapped_told
                n = told.pop(oid, 0)
                if n > 1:
                    told[oid] = n - 1
            if n:  # a mapping the node manager never heard of is not undone
                self._send_nm(P.ObjectUnmapped(oid))
        released = self._released
        freed = 0
        while released:
            to_free = []
            with self._ref_lock:
                while released:
                    oid = released.popleft()
                    n = self.local_refs.get(oid, 0) - 1
                    if n > 0:
                        self.local_refs[oid] = n
                        continue
                    self.local_refs.pop(oid, None)
                    to_free.append(oid)
                # Sent under the ref lock: a new borrow of the same id (add_local_ref)
                # can then only reach the owner after this RemoveBorrower.
                for oid in to_free:
                    owner = self.borrowed_owner.pop(oid, None)
                    if oid in self.unregistered:  # its owner never heard of this borrow
                        self.unregistered.discard(oid)
                        continue
                    if owner is not None and not self.closed:
                        try:
                            self.peer(owner).send(P.RemoveBorrower(oid, self.address))
                        except ConnectionLost:
                            pass
            if not to_free:
                break
            freed += len(to_free)
            with self.lock:
                for oid in to_free:
                    if oid in self.objects:
                        self._apply(self.table.released(oid))
        if freed and _oversized(self.objects):
            self._compact_tables()

    def _compact_tables(self) -> None:
        """After a mass release (a program dropped tens of thousands of refs): a Python
        dict keeps the table of its largest size, so the two that hold an entry per
        object are copied to their present size, and glibc is asked to give its free
        memory back; so the process returns to about its size before them."""
        with self.lock, self._ref_lock:
            self.local_refs = self.table.local_refs = dict(self.local_refs)
            self.objects = self.table.entries = dict(self.objects)
        trim_heap()

    def _adopt_contained(self, contained: dict[bytes, str] | None) -> Sequence[ObjectRef]:
        """Refs inside a task's return value (object id -> owner); the worker registered
        our borrows already."""
        if not contained:
            return ()  # most values hold none: no list for each to keep
        extra = []
        with self._ref_lock:
            for oid, owner in contained.items():
                if owner == self.address:
                    continue
                if self.local_refs.get(oid) or oid in self.preregistered:
                    extra.append((oid, owner))  # we borrow it already: one registration too many
                else:
                    self.preregistered.add(oid)
        for oid, owner in extra:
            try:
                self.peer(owner).send(P.RemoveBorrower(oid, self.address))
            except ConnectionLost:
                pass
        return [ObjectRef(oid, owner) for oid, owner in contained.items()]

    def _release_loop(self) -> None:
        """Free what dropped refs released even while the program makes no calls."""
        if self.closed:
            return
        try:
            self._process_released()
            self.store.tidy()  # idle mappings of files gone since: their memory goes now
        finally:  # (a failure is logged by the timers; the loop goes on)
            self.timers.call_later(0.1, self._release_loop)
