"""Worker leases of one owner: scheduling classes, lease requests, spillback, linger.

Owns Lease and SchedulingClass and the CoreWorker methods that queue ready
tasks by resource shape, ask node managers for workers (following spillback to
another node), keep an idle lease warm for `lease_linger_s` and give leases back.
Not what runs on a lease (submission), not the node's side (node_manager).
Methods run with the core worker's lock held unless their docstring says not.

    ready task ─▶ SchedulingClass.queue ─RequestLease─▶ node manager
                  ◀─LeaseGranted | LeaseSpillback(address) ─ ask that node"""

from __future__ import annotations

import collections
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from .. import protocol as P
from ..config import CONFIG, from_units
from ..exceptions import (
    ConnectionLost,
    TaskUnschedulableError,
)
from ..object_ref import new_id
from ..serialization import dumps_inline
from ..transport import Connection
from .tasks import (
    TaskSpec,
)

log = logging.getLogger("raylite")


class Lease:
    __slots__ = (
        "address",
        "busy",
        "gpu_ids",
        "idle_at",
        "lease_id",
        "nm",
        "node_id",
        "pid",
        "returned",
        "sclass",
        "worker_id",
    )

    def __init__(self, grant: P.LeaseGranted, sclass: SchedulingClass, nm: str = "") -> None:
        self.lease_id = grant.lease_id
        self.node_id = grant.node_id
        self.nm = nm  # the node manager that granted it ("": ours)
        self.worker_id = grant.worker_id
        self.address = grant.address
        self.pid = grant.pid
        self.gpu_ids = grant.gpu_ids
        self.sclass = sclass
        self.busy: TaskSpec | None = None
        self.returned = False
        self.idle_at = 0.0  # time.monotonic() when it last went idle


class SchedulingClass:
    """Queued tasks of one resource shape and the worker leases serving them."""

    __slots__ = ("idle", "key", "pending", "queue", "shape", "strategy", "warned")

    def __init__(self, key: tuple[Any, ...], strategy: Any = None) -> None:
        self.key = key
        self.shape = dict(k for k in key if k[0] != "@strategy")
        self.strategy = strategy
        self.queue: collections.deque[TaskSpec] = collections.deque()
        self.idle: list[Lease] = []
        # Lease ids requested, not yet granted -> the node manager asked ("": ours).
        self.pending: dict[bytes, str] = {}
        self.warned = False


class LeasingMixin:
    def _enqueue(self, spec: TaskSpec) -> None:
        """Queue a ready task for its scheduling class (lock held)."""
        sc = self.classes.get(spec.shape_key)
        if sc is None:
            sc = self.classes[spec.shape_key] = SchedulingClass(spec.shape_key, spec.strategy)
        sc.queue.append(spec)
        self._dispatch(sc)

    def _dispatch(self, sc: SchedulingClass) -> None:
        while sc.queue and sc.idle:
            lease = sc.idle.pop()
            self._push(lease, sc.queue.popleft())
        want = min(len(sc.queue), CONFIG.max_pending_leases) - len(sc.pending)
        if want > 0:
            # Idle leases of other shapes hold resources these tasks may need: give
            # them back now rather than after their linger time.
            for other in self.classes.values():
                while other is not sc and other.idle:
                    self._return_lease(other.idle.pop())
        for _ in range(want):
            self._request_lease(sc)
        if not sc.queue and sc.pending:
            for lease_id, nm in list(sc.pending.items()):
                del sc.pending[lease_id]
                self._send_to_nm(nm, P.CancelLease(lease_id))

    def _return_to_nm(self, lease: Lease, kill: bool) -> None:
        """Give a lease back; another node's goes through ours, which then knows it is free."""
        if lease.nm:
            self._send_nm(P.ReturnLease(lease.lease_id, kill, lease.nm, lease.sclass.shape))
        else:
            self._send_nm(P.ReturnLease(lease.lease_id, kill))

    def _send_to_nm(self, nm: str, msg: Any) -> None:
        """To our node manager ("") or another node's."""
        if not nm:
            self._send_nm(msg)
            return
        # If that node is gone, so is what we would tell it about.
        self._on_peer(nm, lambda conn: conn.send(msg))

    def _request_lease(
        self,
        sc: SchedulingClass,
        actor_id: bytes | None = None,
        on_grant: Callable[[Lease | None], None] | None = None,
        detached: bool = False,
    ) -> None:
        """Ask our node manager for a worker; follow it to another node if it says so."""
        lease_id = new_id()
        if on_grant is None:
            sc.pending[lease_id] = ""

        hops = [0]

        def answered(reply: Any, nm: str) -> None:
            if isinstance(reply, P.LeaseSpillback):  # that node has room (or the resource)
                with self.lock:
                    if on_grant is None:
                        if lease_id not in sc.pending:  # cancelled meanwhile
                            return
                        sc.pending[lease_id] = reply.address
                hops[0] += 1
                ask(reply.address, hops[0])
                return
            if not isinstance(reply, P.LeaseGranted):
                if on_grant is not None:
                    on_grant(None)
                    return
                with self.lock:  # refused, or the node went away: ask again if needed
                    # (not once our own node manager is gone: nothing would answer)
                    gone = reply is None and (not nm or self.closed)
                    if sc.pending.pop(lease_id, None) is not None and sc.queue and not gone:
                        if (
                            isinstance(reply, P.Failed)
                            and reply.code == P.FailCode.AFFINITY_UNAVAILABLE
                        ):
                            self._fail_queue(sc, reply.reason)
                        else:
                            self._dispatch(sc)
                return
            lease = Lease(reply, sc, nm)
            if on_grant is not None:
                on_grant(lease)
                return
            with self.lock:
                self.leases[lease.lease_id] = lease
                if lease_id not in sc.pending:  # cancelled meanwhile
                    self._return_lease(lease)
                    return
                del sc.pending[lease_id]
                if sc.queue:
                    self._push(lease, sc.queue.popleft())
                    self._dispatch(sc)
                else:
                    self._idle(lease)

        def ask(nm: str, spilled: int) -> None:
            msg = P.RequestLease(lease_id, sc.shape, actor_id, sc.strategy, spilled, detached)

            def send(conn: Connection) -> None:
                conn.request_async(msg, lambda reply: answered(reply, nm))

            if nm:
                self._on_peer(nm, send, lambda: answered(None, nm))
                return
            try:
                send(self.nm)
            except ConnectionLost:
                self.lock.defer(answered, None, nm)

        ask("", 0)

    def _fail_queue(self, sc: SchedulingClass, reason: str) -> None:
        """Tasks that can never be placed (hard affinity to a dead node): fail them (lock held)."""
        queued = list(sc.queue)
        sc.queue.clear()
        err = dumps_inline(TaskUnschedulableError(reason))

        def fail() -> None:
            for spec in queued:
                self._fail_for_good(spec, err)

        self.timers.call_later(0, fail)  # not under the lock: waiters run callbacks

    def _warn_infeasible(self, msg: P.LeaseInfeasible) -> None:
        shape = {k: from_units(v) for k, v in msg.shape.items()}
        missing = ", ".join(f"{k!r} (requested {from_units(v):g})" for k, v in msg.missing.items())
        print(
            f"Warning: The following resource request cannot be scheduled right now: {shape}. "
            f"No node in the cluster has enough of: {missing}. "
            f"The cluster has {self.node_info.get('total_display', {})}. The task or actor stays "
            "pending until a node with these resources joins; check its resource options.",
            file=sys.stderr,
            flush=True,
        )

    def _after_task(self, lease: Lease) -> None:
        sc = lease.sclass
        if sc.queue:
            self._push(lease, sc.queue.popleft())
        else:
            self._idle(lease)

    def _idle(self, lease: Lease) -> None:
        sc = lease.sclass
        sc.idle.append(lease)
        lease.idle_at = time.monotonic()
        if not self._linger_armed:
            self._linger_armed = True
            self.timers.call_later(CONFIG.lease_linger_s, self._linger_over)

    def _linger_over(self) -> None:
        """Give back the leases idle for lease_linger_s (timer thread, takes the lock).

        One timer serves every idle lease: it re-arms for the next to linger out, so a
        lease going idle after each task costs a time stamp, not a timer."""
        with self.lock:
            now = time.monotonic()
            linger = CONFIG.lease_linger_s
            first = None
            for sc in self.classes.values():
                for lease in list(sc.idle):
                    if lease.idle_at + linger <= now:
                        sc.idle.remove(lease)
                        self._return_lease(lease)
                    elif first is None or lease.idle_at < first:
                        first = lease.idle_at
            if first is None:
                self._linger_armed = False
            else:
                self.timers.call_later(first + linger - now, self._linger_over)

    def _return_lease(self, lease: Lease) -> None:
        if not lease.returned:
            lease.returned = True
            self.leases.pop(lease.lease_id, None)
            self._return_to_nm(lease, False)

    def release_idle_leases(self) -> None:
        """Give back leases kept warm for more tasks (so resource views are exact)."""
        with self.lock:
            for sc in self.classes.values():
                while sc.idle:
                    self._return_lease(sc.idle.pop())
