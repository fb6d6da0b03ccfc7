"""Freeing owned objects, and rebuilding lost ones from the task that made them.

Owns the CoreWorker methods that feed the object table (objects.ObjectTable) its
lineage events and run the actions it returns: free a segment through the node
that holds it, rerun a task to rebuild what it made, run an entry's waiters once
it is final. The decisions (what may go, which tasks up a chain rerun, when a value
is lost for good) are the table's. Not reference counts (refs), not submission
(submission). Lock held unless said.

    event ──▶ ObjectTable ──▶ [FreeSegment | Resubmit | RunWaiters] ──▶ _apply"""

from __future__ import annotations

import logging

from .. import protocol as P
from ..exceptions import ObjectLostError, OwnerDiedError
from ..object_ref import ObjectRef
from ..serialization import loads_inline
from .lifecycle import FAILED, WAITING_ARGS, spend_retry
from .objects import PENDING, Action, FreeSegment, HandlesGone, Resubmit
from .tasks import TaskSpec, task_transition

log = logging.getLogger("raylite")


class LineageMixin:
    def _apply(self, actions: list[Action]) -> None:
        """Run what the object table asked for, in its order (lock held): messages and
        callbacks wait for the lock to go (_free_segment, _when_ready, lock.defer)."""
        for action in actions:
            if type(action) is FreeSegment:
                self._free_segment(action.object_id, action.data)
            elif type(action) is Resubmit:
                self._resubmit(action.spec)
            elif type(action) is HandlesGone:
                # On the timer thread: ending the actor asks the node manager, which a
                # reader thread (where the lock may be let go) must not wait on.
                oid = action.object_id
                self.timers.call_later(0, lambda oid=oid: self._actor_handles_gone(oid))
            else:
                self.lock.defer(self._complete_waiters, action.object_id)

    def _object_lost(self, oid: bytes, why: str) -> None:
        """The only copy of an owned object is gone: rerun the task that made it, or fail."""
        with self.lock:
            actions = self.table.lost(oid, why, self.closed)
            if type(actions[0]) is Resubmit:
                log.info("rebuilding object %s: %s", oid.hex()[:12], why)
            self._apply(actions)

    def _resubmit(self, spec: TaskSpec) -> None:
        """Run a task again, resolving its ref arguments anew (lock held). The table
        took the lineage of each released argument first (its own Resubmit follows);
        an argument whose entry is gone fails the task with ObjectLostError."""
        task_transition(spec, WAITING_ARGS, "rerun to rebuild what it made")
        spec.cancelled, spec.deps, spec.held = False, [], list(spec.held)
        spec.unresolved = len(spec.dep_ids) + 1
        if spec.return_ids:
            self.running[spec.return_ids[0]] = spec
        if spec.actor_id is not None:  # an actor call: again, on that actor, in order
            self.actors[spec.actor_id].queue.append(spec)
        for position, dep, owner in spec.dep_ids:
            ref = ObjectRef(dep, owner, _count=False)
            self._when_ready(ref, self._dep_callback(spec, position, ref))
        self._dep_resolved(spec)

    def _keep_lineage(self, spec: TaskSpec, reply: P.TaskDone) -> None:
        """A task's stored returns keep it as their lineage while they live."""
        if not spec.rebuildable or not reply.returns:
            return
        returns = reply.returns
        if spec.generator > P.GENERATOR_FIXED:  # and its stored items (core/generators.py)
            with self.lock:
                returns = returns + self._stored_items(spec)
        if not spec.lineage_pinned and P.IN_STORE not in [r.kind for r in returns]:
            spec.rerunning = False  # small values only: the owner holds them, no lineage
            return
        with self.lock:
            self._apply(self.table.keep_lineage(spec, returns, self.address))

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
        only after the worker found the copy gone, or before: then the argument's
        rebuild is under way (PENDING) and the task runs again once it is done."""
        with self.lock:
            entry = self.objects.get(lost)
            lineage = entry.lineage if entry is not None else None
            rebuilding = entry is not None and entry.kind is PENDING
            if (
                entry is None
                or not (
                    rebuilding
                    or (entry.kind == P.IN_STORE and lineage is not None and lineage.max_retries)
                )
                or spec.cancelled
                or self.closed
                or not spend_retry(spec)
            ):
                return False
            task_transition(spec, FAILED, f"its argument {lost.hex()[:12]} was lost")
            if not rebuilding:
                self._object_lost(lost, "the task reading it could not fetch it")
            old_held, spec.held = spec.held, []
            self._apply(self.table.rerun(spec, self.closed))  # holds its arguments anew
            self._apply(self.table.unheld(old_held))  # before the old holds go
        return True

    def _complete_waiters(self, oid: bytes) -> None:
        """Run the waiters of an entry that just became final outside _complete."""
        with self.lock:
            entry = self.objects.get(oid)
            if entry is None or entry.kind is PENDING:
                return
            waiters, entry.waiters = entry.waiters, ()
            kind, data = entry.kind, entry.data
        if waiters:
            self.lock.check_unlocked("an object's waiters")
        for cb in waiters:
            try:
                cb(kind, data)
            except Exception:
                log.exception("object waiter failed")

    def _free_segment(self, oid: bytes, data: P.StoredAt) -> None:
        """Tell the node that holds an object's segment to free it (and its copies)."""
        holder = data.node
        if not holder or holder == self.node_tcp:
            if self.store.mapped(oid):
                # A view of it lives here (refs._on_mapped told nothing when we mapped
                # it): its memory must not be recycled. Same connection, so in order.
                self._told_mapped(oid)
                self._send_nm(P.ObjectMapped(oid))
            self._send_nm(P.FreeObject(oid))
            return
        # If that node is gone, so is its store and the segment with it.
        self._on_peer(holder, lambda conn: conn.send(P.FreeObject(oid)))
