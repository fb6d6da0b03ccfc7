"""Freeing owned objects, and rebuilding lost ones from the task that made them.

Owns the CoreWorker methods that free an object nothing refers to (its segment
through the node that holds it), keep a task as the lineage of its stored
returns, pin the recipes of that task's arguments, and rerun it when a copy is
lost (a dead node, a failed fetch), walking up the chain with a work list. Not
reference counts (refs), not submission (submission). Lock held unless said."""

from __future__ import annotations

import logging
from typing import Any

from .. import protocol as P
from ..exceptions import (
    ObjectLostError,
    OwnerDiedError,
)
from ..object_ref import ObjectRef
from ..serialization import dumps_inline, loads_inline
from .lifecycle import FAILED, WAITING_ARGS, spend_retry
from .objects import PENDING, RELEASED
from .tasks import (
    TaskSpec,
    lineage_args,
    task_transition,
)

log = logging.getLogger("raylite")


class LineageMixin:
    def _object_lost(self, oid: bytes, why: str) -> None:
        """The only copy of an owned object is gone: rerun the task that made it, or fail."""
        with self.lock:
            spec = self._take_lineage(oid, why)
            if spec is not None:
                log.info("rebuilding object %s: %s", oid.hex()[:12], why)
                self._resubmit(spec)
        self.lock.defer(self._complete_waiters, oid)  # the caller may hold the lock

    def _take_lineage(self, oid: bytes, why: str) -> TaskSpec | None:
        """Mark a lost (or released) owned object PENDING and return the task that will
        rebuild it; if it cannot be rebuilt, it becomes ObjectLostError (lock held)."""
        entry = self.objects.get(oid)
        if entry is None or entry.kind not in (P.IN_STORE, RELEASED):
            return None
        spec = entry.lineage
        if spec is not None and spec.rerunning:  # rerun already for another return
            entry.kind, entry.data, entry.lineage = PENDING, None, None
            spec.lineage_holders -= 1
            return None
        if spec is not None and not self.closed and spend_retry(spec):
            entry.kind, entry.data, entry.lineage = PENDING, None, None
            spec.lineage_holders -= 1
            spec.rerunning = True
            return spec
        err = ObjectLostError(
            oid.hex(),
            f"Object {oid.hex()} is lost: {why}, and it cannot be rebuilt "
            "(it was put(), its task (or actor call) has no retries left, or an "
            "argument of that task cannot be had again).",
        )
        entry.kind, entry.data = P.ERROR, dumps_inline(err)
        if spec is not None:
            entry.lineage = None
            for dep in self._drop_holder(spec):
                self._maybe_free(dep)
        return None

    def _resubmit(self, spec: TaskSpec) -> None:
        """Run a task again, resolving its ref arguments anew (lock held).

        An argument whose value was released is rebuilt first, from its own lineage,
        and so on up the chain (a work list, not recursion: chains can be long); one
        whose entry is gone fails the task with ObjectLostError.
        """
        work = [spec]
        while work:
            spec = work.pop()
            task_transition(spec, WAITING_ARGS, "rerun to rebuild what it made")
            spec.cancelled, spec.deps = False, []
            spec.unresolved = len(spec.dep_ids) + 1
            if spec.return_ids:
                self.running[spec.return_ids[0]] = spec
            if spec.actor_id is not None:  # an actor call: again, on that actor, in order
                self.actors[spec.actor_id].queue.append(spec)
            for position, dep, owner in spec.dep_ids:
                entry = self.objects.get(dep) if owner == self.address else None
                if entry is not None and entry.kind == RELEASED:
                    upstream = self._take_lineage(dep, "a task that read it is being rebuilt")
                    if upstream is not None:
                        work.append(upstream)
                ref = ObjectRef(dep, owner, _count=False)
                self._when_ready(ref, self._dep_callback(spec, position, ref))
            self._dep_resolved(spec)

    def _keep_lineage(self, spec: TaskSpec, reply: P.TaskDone) -> None:
        """A task's stored returns keep it as their lineage while they live."""
        if not spec.rebuildable or not reply.returns:
            return
        if not spec.lineage_pinned and all(r.kind != P.IN_STORE for r in reply.returns):
            spec.rerunning = False  # small values only: the owner holds them, no lineage
            return
        with self.lock:
            spec.rerunning = False
            for r in reply.returns:
                entry = self.objects.get(r.object_id)
                stored = entry is not None and entry.kind == P.IN_STORE == r.kind
                if stored and entry.lineage is None:  # type: ignore[union-attr]
                    entry.lineage = spec  # type: ignore[union-attr]
                    spec.lineage_holders += 1
            if spec.lineage_holders > 0:
                self._pin_lineage(spec)
            else:
                for dep in self._unpin_lineage(spec):
                    self._maybe_free(dep)

    def _lost_argument(self, spec: TaskSpec, reply: P.TaskDone) -> bytes | None:
        """The id of a ref argument the worker could not fetch (lost), if that is why
        the task failed."""
        if not spec.dep_ids or not reply.returns or reply.returns[0].kind != P.ERROR:
            return None
        try:
            err = loads_inline(reply.returns[0].data)
        except Exception:
            return None
        cause = getattr(err, "cause", err)
        if not isinstance(cause, ObjectLostError) or isinstance(cause, OwnerDiedError):
            return None
        return {dep.hex(): dep for _, dep, _ in spec.dep_ids}.get(cause.object_ref_hex)

    def _rebuild_argument(self, spec: TaskSpec, lost: bytes) -> bool:
        """A task failed because an argument we own was lost: rebuild that argument
        and run the task again, if both can be. The owner may hear of the dead node
        only after the worker found the copy gone."""
        with self.lock:
            entry = self.objects.get(lost)
            lineage = entry.lineage if entry is not None else None
            if (
                entry is None
                or entry.kind != P.IN_STORE
                or lineage is None
                or lineage.max_retries == 0
                or spec.cancelled
                or self.closed
                or not spend_retry(spec)
            ):
                return False
            task_transition(spec, FAILED, f"its argument {lost.hex()[:12]} was lost")
            self._object_lost(lost, "the task reading it could not fetch it")
            old_held, spec.held = spec.held, []
            self._resubmit(spec)  # holds its arguments anew before the old holds go
            for oid in old_held:
                held = self.objects.get(oid)
                if held is not None:
                    held.held -= 1
                    if not held.held:
                        self._maybe_free(oid)
        return True

    def _complete_waiters(self, oid: bytes) -> None:
        """Run the waiters of an entry that just became final outside _complete."""
        with self.lock:
            entry = self.objects.get(oid)
            if entry is None or entry.kind is PENDING:
                return
            waiters, entry.waiters = entry.waiters, []
            kind, data = entry.kind, entry.data
        if waiters:
            self.lock.check_unlocked("an object's waiters")
        for cb in waiters:
            try:
                cb(kind, data)
            except Exception:
                log.exception("object waiter failed")

    def _maybe_free(self, oid: bytes) -> None:
        """Free an owned object nothing refers to any more (lock held).

        If a kept lineage still reads it, only its value goes (RELEASED): the task
        that made it stays, to rebuild it should that lineage ever be rerun.
        """
        todo = [oid]
        while todo:
            oid = todo.pop()
            if oid in self.local_refs:
                continue
            entry = self.objects.get(oid)
            if entry is None or entry.kind is PENDING:
                continue
            if entry.held or entry.waiters or entry.borrowers:
                continue
            if entry.lineage_refs:
                if entry.kind == P.IN_STORE and entry.lineage is not None:
                    self._free_segment(oid, entry.data)
                    entry.kind, entry.data = RELEASED, None
                    entry.contains = []
                if entry.kind != P.IN_STORE:
                    continue  # released, or a small value kept as it is
            del self.objects[oid]
            if entry.kind == P.IN_STORE:
                self._free_segment(oid, entry.data)
            entry.contains = []  # their __del__ queues them on _released
            if entry.lineage is not None:
                todo.extend(self._drop_holder(entry.lineage))
                entry.lineage = None

    def _drop_holder(self, spec: TaskSpec) -> list[bytes]:
        """A return entry lets go of its lineage; the last one unpins the arguments."""
        spec.lineage_holders -= 1
        return self._unpin_lineage(spec) if spec.lineage_holders <= 0 else []

    def _pin_lineage(self, spec: TaskSpec) -> None:
        """A kept lineage holds its arguments' recipes (lock held)."""
        if spec.lineage_pinned:
            return
        spec.lineage_pinned = True
        spec.kept_refs = [ref for ref in spec.arg_refs if ref.owner != self.address]
        for dep in lineage_args(spec):
            entry = self.objects.get(dep)
            if entry is not None:
                entry.lineage_refs += 1

    def _unpin_lineage(self, spec: TaskSpec) -> list[bytes]:
        """Drop a lineage's hold on its arguments; returns those that may go now."""
        if not spec.lineage_pinned:
            return []
        spec.lineage_pinned = False
        spec.kept_refs = []  # their __del__ ends the borrows
        freed = []
        for dep in lineage_args(spec):
            entry = self.objects.get(dep)
            if entry is not None and entry.lineage_refs > 0:
                entry.lineage_refs -= 1
                if not entry.lineage_refs:
                    freed.append(dep)
        return freed

    def _free_segment(self, oid: bytes, data: Any) -> None:
        """Tell the node that holds an object's segment to free it (and its copies)."""
        holder = data[1] if isinstance(data, list) else ""
        if not holder or holder == self.node_tcp:
            self._send_nm(P.FreeObject(oid))
            return
        # If that node is gone, so is its store and the segment with it.
        self._on_peer(holder, lambda conn: conn.send(P.FreeObject(oid)))
