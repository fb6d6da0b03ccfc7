"""The owner's object table: its entries, when they are freed, and their lineage pins.

Owns ObjectEntry, the entry kinds an owner uses beyond protocol's INLINE, IN_STORE
and ERROR (PENDING: the value is not there yet; RELEASED: nothing refers to the
value, but a kept lineage needs its recipe), and ObjectTable: the entries and the
rules that free them (local refs, borrowers, pending readers, kept lineages) and
that take a lost value's lineage to rebuild it. Pure: events in, actions out
(FreeSegment, Resubmit, RunWaiters); no lock, no I/O, no callbacks. Not the lock,
the messages or the reruns themselves (core_worker, lineage), not reference counts
(refs), not completions (core_worker._complete writes a value into its entry).

    released | borrower_removed | borrower_died | unheld ──▶ FreeSegment ...
    keep_lineage ──▶ pins its arguments' recipes | FreeSegment (nothing kept)
    lost ──▶ Resubmit(task), Resubmit(a released argument's task) ..., RunWaiters
         └─ no retries left ──▶ entry = ObjectLostError, RunWaiters
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from ..exceptions import ObjectLostError
from ..object_ref import ObjectRef
from ..protocol import ERROR, IN_STORE, StoredAt
from ..serialization import dumps_inline
from .lifecycle import spend_retry
from .tasks import TaskSpec, lineage_args

log = logging.getLogger("raylite")


PENDING = None  # entry.kind while the value is not there yet
RELEASED = -1  # entry.kind once nothing refers to the value but a kept lineage needs its recipe


class ObjectEntry:
    """An object this process owns."""

    __slots__ = (
        "borrowers",
        "contains",
        "data",
        "held",
        "kind",
        "lineage",
        "lineage_refs",
        "seq",
        "waiters",
    )

    def __init__(self) -> None:
        self.kind: int | None = PENDING
        self.data: Any = None
        # A list while the value is PENDING; () once it is final (one object less each
        # for the cyclic collector); a list again when a rebuild makes it PENDING.
        self.waiters: list[Callable[[int, Any], None]] | tuple[()] = []
        self.seq = 0  # completion order, for wait()
        self.held = 0  # pending tasks that read this value from the store
        self.borrowers: dict[str, int] = {}  # borrower address -> registrations
        self.contains: Sequence[ObjectRef] = ()  # refs pickled inside this value
        self.lineage: TaskSpec | None = None  # the task to rerun if the value is lost
        self.lineage_refs = 0  # kept lineages that read this object: its recipe must stay


# Actions: what the table asks its shell (the CoreWorker, lock held) to do.


class FreeSegment(msgspec.Struct, frozen=True):
    """Free a stored value's segment through the node that holds it."""

    object_id: bytes
    data: StoredAt


class Resubmit(msgspec.Struct, frozen=True):
    """Run a task again to rebuild what it made: resolve its ref arguments anew. The
    arguments up its chain that must be rebuilt first come as their own Resubmits."""

    spec: TaskSpec


class RunWaiters(msgspec.Struct, frozen=True):
    """An entry became final outside a completion (an error, say): run its waiters."""

    object_id: bytes


class HandlesGone(msgspec.Struct, frozen=True):
    """A watched entry (an actor's creation return, which its handles hold) is gone:
    no handle to that actor is left anywhere."""

    object_id: bytes


Action = FreeSegment | Resubmit | RunWaiters | HandlesGone


class ObjectTable:
    """The entries of the objects this process owns, and when they go.

    Pure: events in, actions out. No lock (the CoreWorker holds its own around every
    call), no I/O, no callback run. Dropping an entry's `contains`, or a lineage's
    `kept_refs`, lets ObjectRefs go: their __del__ only queues them for the shell's
    release loop. `local_refs` is the shell's count of live local refs, read only.
    """

    __slots__ = ("entries", "local_refs", "watched")

    def __init__(self, local_refs: Mapping[bytes, int]) -> None:
        self.entries: dict[bytes, ObjectEntry] = {}
        self.local_refs = local_refs
        self.watched: set[bytes] = set()  # entries whose end is told (HandlesGone)

    # -- references --------------------------------------------------------------

    def released(self, oid: bytes) -> list[Action]:
        """Something let go of an object (its last local ref, a borrow, a pending task):
        free it if nothing refers to it any more.

        If a kept lineage still reads it, only its value goes (RELEASED): the task
        that made it stays, to rebuild it should that lineage ever be rerun.
        """
        actions: list[Action] = []
        self._free(oid, actions)
        return actions

    def borrower_added(self, oid: bytes, borrower: str) -> None:
        entry = self.entries.get(oid)
        if entry is not None:
            entry.borrowers[borrower] = entry.borrowers.get(borrower, 0) + 1

    def borrower_removed(self, oid: bytes, borrower: str) -> list[Action]:
        entry = self.entries.get(oid)
        if entry is None:
            return []
        n = entry.borrowers.get(borrower, 0) - 1
        if n > 0:
            entry.borrowers[borrower] = n
            return []
        entry.borrowers.pop(borrower, None)
        return self.released(oid)

    def borrower_died(self, borrower: str) -> list[Action]:
        """A borrower died: its borrows will never be returned."""
        actions: list[Action] = []
        for oid, entry in list(self.entries.items()):
            if entry.borrowers.pop(borrower, None):
                self._free(oid, actions)
        return actions

    def unheld(self, oids: list[bytes]) -> list[Action]:
        """Tasks that read these values from the store (one count each) are done with them."""
        actions: list[Action] = []
        for oid in oids:
            entry = self.entries.get(oid)
            if entry is not None:
                entry.held -= 1
                if not entry.held:
                    self._free(oid, actions)
        return actions

    # -- lineage -----------------------------------------------------------------

    def keep_lineage(self, spec: TaskSpec, returns: list[Any], owner: str) -> list[Action]:
        """A finished task's stored returns keep it as their lineage while they live; a
        kept lineage holds its arguments' recipes (`owner`: this process's address; the
        refs it borrows are kept, for a rerun to read)."""
        spec.rerunning = False
        for r in returns:
            entry = self.entries.get(r.object_id)
            if entry is not None and entry.kind == IN_STORE == r.kind and entry.lineage is None:
                entry.lineage = spec
                spec.lineage_holders += 1
        if spec.lineage_holders > 0:
            self._pin(spec, owner)
            return []
        return self.lineage_dropped(spec)

    def lineage_dropped(self, spec: TaskSpec) -> list[Action]:
        """A task will not keep its lineage (a rerun failed for good): its hold on its
        arguments' recipes ends."""
        actions: list[Action] = []
        for dep in self._unpin(spec):
            self._free(dep, actions)
        return actions

    def lost(self, oid: bytes, why: str, closed: bool) -> list[Action]:
        """The only copy of an owned object is gone: rerun the task that made it (and
        those up its chain), or it becomes ObjectLostError. Its waiters run either way."""
        actions = self.rebuild(oid, why, closed)
        actions.append(RunWaiters(oid))
        return actions

    def rebuild(self, oid: bytes, why: str, closed: bool) -> list[Action]:
        """A lost or RELEASED value is needed: the Resubmits that rebuild it (none if its
        rebuild is under way, or if it cannot be rebuilt: then it is ObjectLostError)."""
        actions: list[Action] = []
        spec = self._take_lineage(oid, why, closed, actions)
        if spec is not None:
            actions.extend(self.rerun(spec, closed))
        return actions

    def rerun(self, spec: TaskSpec, closed: bool) -> list[Action]:
        """A task runs again: Resubmit it, then each argument whose value was released,
        from its own lineage, and so on up the chain (a work list, not recursion:
        chains can be long). The order is the order to resubmit them in."""
        actions: list[Action] = []
        work = [spec]
        while work:
            spec = work.pop()
            actions.append(Resubmit(spec))
            for _, dep, _ in spec.dep_ids:  # only owned ids have entries
                entry = self.entries.get(dep)
                if entry is not None and entry.kind == RELEASED:
                    why = "a task that read it is being rebuilt"
                    upstream = self._take_lineage(dep, why, closed, actions)
                    if upstream is not None:
                        work.append(upstream)
        return actions

    # -- the steps ---------------------------------------------------------------

    def _take_lineage(
        self, oid: bytes, why: str, closed: bool, actions: list[Action]
    ) -> TaskSpec | None:
        """Mark a lost (or released) owned object PENDING and return the task that will
        rebuild it; if it cannot be rebuilt, it becomes ObjectLostError."""
        entry = self.entries.get(oid)
        if entry is None or entry.kind not in (IN_STORE, RELEASED):
            return None
        spec = entry.lineage
        if spec is not None and spec.rerunning:  # rerun already for another return
            entry.kind, entry.data, entry.lineage = PENDING, None, None
            entry.waiters = []
            spec.lineage_holders -= 1
            return None
        if spec is not None and not closed and spend_retry(spec):
            entry.kind, entry.data, entry.lineage = PENDING, None, None
            entry.waiters = []
            spec.lineage_holders -= 1
            spec.rerunning = True
            return spec
        err = ObjectLostError(
            oid.hex(),
            f"Object {oid.hex()} is lost: {why}, and it cannot be rebuilt "
            "(it was put(), its task (or actor call) has no retries left, or an "
            "argument of that task cannot be had again).",
        )
        entry.kind, entry.data = ERROR, dumps_inline(err)
        if spec is not None:
            entry.lineage = None
            for dep in self._drop_holder(spec):
                self._free(dep, actions)
        return None

    def _free(self, oid: bytes, actions: list[Action]) -> None:
        """Free an object nothing refers to, and what its lineage alone kept."""
        todo = [oid]
        while todo:
            oid = todo.pop()
            if oid in self.local_refs:
                continue
            entry = self.entries.get(oid)
            if entry is None or entry.kind is PENDING:
                continue
            if entry.held or entry.waiters or entry.borrowers:
                continue
            if entry.lineage_refs:
                if entry.kind == IN_STORE and entry.lineage is not None:
                    actions.append(FreeSegment(oid, entry.data))
                    entry.kind, entry.data = RELEASED, None
                    entry.contains = []
                if entry.kind != IN_STORE:
                    continue  # released, or a small value kept as it is
            del self.entries[oid]
            if oid in self.watched:
                self.watched.discard(oid)
                actions.append(HandlesGone(oid))
            if entry.kind == IN_STORE:
                actions.append(FreeSegment(oid, entry.data))
            entry.contains = []  # their __del__ queues them on the shell's release queue
            if entry.lineage is not None:
                todo.extend(self._drop_holder(entry.lineage))
                entry.lineage = None

    def _drop_holder(self, spec: TaskSpec) -> list[bytes]:
        """A return entry lets go of its lineage; the last one unpins the arguments."""
        spec.lineage_holders -= 1
        return self._unpin(spec) if spec.lineage_holders <= 0 else []

    def _pin(self, spec: TaskSpec, owner: str) -> None:
        """A kept lineage holds its arguments' recipes."""
        if spec.lineage_pinned:
            return
        spec.lineage_pinned = True
        spec.kept_refs = [ref for ref in spec.arg_refs if ref.owner != owner]
        for dep in lineage_args(spec):
            entry = self.entries.get(dep)
            if entry is not None:
                entry.lineage_refs += 1

    def _unpin(self, spec: TaskSpec) -> list[bytes]:
        """Drop a lineage's hold on its arguments; returns those that may go now."""
        if not spec.lineage_pinned:
            return []
        spec.lineage_pinned = False
        spec.kept_refs = []  # their __del__ ends the borrows
        freed = []
        for dep in lineage_args(spec):
            entry = self.entries.get(dep)
            if entry is not None and entry.lineage_refs > 0:
                entry.lineage_refs -= 1
                if not entry.lineage_refs:
                    freed.append(dep)
        return freed
