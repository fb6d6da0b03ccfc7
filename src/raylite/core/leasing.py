"""Worker leases of one owner: the shell around the lease queues.

Owns the CoreWorker methods that feed lease_queue.LeaseQueues its events (a task is
ready, a task ended, a lease request is granted, sent on or refused, the linger timer
fired) and run the actions it returns: push a task on a lease (submission._push), send
RequestLease and follow its spillbacks to other nodes, CancelLease, ReturnLease, set
the linger timer, fail a queue that can never be placed. The decisions (which lease
runs which task, how many to ask for, what to give back and when) are the queues'.
Not what runs on a lease (submission), not the node's side (node/lease_book). Methods
run with the core worker's lock held unless their docstring says not.

    event ──▶ LeaseQueues ──▶ [Push | Ask | Cancel | GiveBack | ArmLinger | FailQueue]
    Ask ──RequestLease──▶ node manager ──LeaseGranted──▶ granted
                                       ──LeaseSpillback(address)──▶ ask that node
                                       ──Failed | lost──▶ refused"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from .. import protocol as P
from ..config import CONFIG, from_units
from ..exceptions import (
    ConnectionLost,
    NodeDiedError,
    RuntimeEnvSetupError,
    TaskPlacementGroupRemoved,
    TaskUnschedulableError,
)
from ..object_ref import new_id
from ..serialization import dumps_inline
from ..transport import Connection
from .lease_queue import (
    Action,
    ArmLinger,
    Ask,
    Cancel,
    FailQueue,
    GiveBack,
    Lease,
    Push,
    SchedulingClass,
)
from .tasks import TaskSpec

# An actor's lease refused for these reasons (the worker started for it died, a node
# on the way went away) is asked for again, up to ACTOR_LEASE_TRIES times with a
# growing pause (0.1 s doubling to 2 s: about 13 s, past a node's heartbeat timeout).
ACTOR_LEASE_AGAIN = (
    P.FailCode.WORKER_DIED,
    P.FailCode.UNREACHABLE,
    P.FailCode.NODE_MARKED_DEAD,
)
ACTOR_LEASE_TRIES = 10

log = logging.getLogger("raylite")


class LeasingMixin:
    def _enqueue(self, spec: TaskSpec) -> None:
        """Queue a ready task for its scheduling class (lock held)."""
        self._lease_actions(self.queues.enqueue(spec))

    def _after_task(self, lease: Lease) -> None:
        """A task on `lease` ended and the lease is still ours (lock held)."""
        action = self.queues.task_ended(lease, time.monotonic())
        if type(action) is Push:  # the hot path: the next queued task
            self._push(action.lease, action.spec)
            if lease.sclass.fast:  # and more behind it, if it may
                more = self.queues.pipeline(lease)
                while more is not None:
                    self._push(more.lease, more.spec)
                    more = self.queues.pipeline(lease)
        elif action is not None:
            self._lease_action(action)

    def _lease_exits(self, lease: Lease) -> None:
        """A task on `lease` ended and its worker exits now (max_calls): give the lease
        back, killing the worker so its node never hands it out again, and lease another
        for the tasks that wait (lock held)."""
        self._return_to_nm(lease, True)
        self._lease_actions(self.queues.lease_gone(lease))

    def _lease_actions(self, actions: list[Action]) -> None:
        """Run what the queues asked for, in their order (lock held)."""
        for action in actions:
            if type(action) is Push:
                self._push(action.lease, action.spec)
            else:
                self._lease_action(action)

    def _lease_action(self, action: Action) -> None:
        """Every action but Push (lock held): messages to node managers, the timer."""
        kind = type(action)
        if kind is Ask:
            self._request_lease(action.sclass, action.lease_id)
        elif kind is GiveBack:
            self._return_to_nm(action.lease, False)
        elif kind is Cancel:
            self._send_to_nm(action.nm, P.CancelLease(action.lease_id))
        elif kind is ArmLinger:
            self.timers.call_later(action.delay, self._linger_over)
        elif kind is FailQueue:
            if action.group_removed:
                error: type[Exception] = TaskPlacementGroupRemoved
            else:
                error = RuntimeEnvSetupError if action.env_failed else TaskUnschedulableError
            self._fail_queue(action.specs, action.reason, error)
        else:
            raise TypeError(f"not a lease action: {action!r}")

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
        lease_id: bytes,
        actor_id: bytes | None = None,
        on_grant: Callable[[Lease | None, str], None] | None = None,
        detached: bool = False,
        retriable: bool | None = None,
        tries: int = 0,
    ) -> None:
        """Ask our node manager for a worker; follow it to another node if it says so.

        A task lease (no on_grant) is the queues' (lease_id pending in `sc`): its
        answers are their events. An actor's lease goes to on_grant (None: refused, and
        why); one lost with the node it was sent to, or with the worker started for it,
        is asked for again (`tries` so far), as Ray reschedules an actor's creation when
        its node dies, rather than ending the actor. `retriable` (None: its first queued
        task's) tells the memory monitor whom to kill first."""
        hops = [0]
        if retriable is None:  # as Ray's lease spec: the task that asks for it says
            retriable = sc.queue[0].max_retries != 0 if sc.queue else sc.retriable

        def answered(reply: Any, nm: str) -> None:
            if isinstance(reply, P.LeaseSpillback):  # that node has room (or the resource)
                if on_grant is None:
                    with self.lock:
                        if not self.queues.spilled(sc, lease_id, reply.address):
                            return  # cancelled meanwhile
                hops[0] += 1
                ask(reply.address, hops[0])
                return
            if not isinstance(reply, P.LeaseGranted):
                if on_grant is not None:
                    code = reply.code if isinstance(reply, P.Failed) else None
                    if code == P.FailCode.RUNTIME_ENV_SETUP_FAILED and actor_id is not None:
                        self.env_failures[actor_id] = reply.reason  # the actor's cause
                    lost = (reply is None or isinstance(reply, ConnectionLost)) and bool(nm)
                    again = lost or code in ACTOR_LEASE_AGAIN
                    if again and not self.closed and tries < ACTOR_LEASE_TRIES:
                        self.timers.call_later(
                            min(0.1 * 2**tries, 2.0),
                            lambda: self._request_lease_again(
                                sc, actor_id, on_grant, detached, retriable, tries + 1
                            ),
                        )
                        return
                    on_grant(None, reply.reason if isinstance(reply, P.Failed) else "")
                    return
                with self.lock:  # refused, or the node went away: ask again if needed
                    # (not once our own node manager is gone: nothing would answer)
                    lost = reply is None or isinstance(reply, ConnectionLost)
                    gone = lost and (not nm or self.closed)
                    code = reply.code if isinstance(reply, P.Failed) else None
                    env_failed = code == P.FailCode.RUNTIME_ENV_SETUP_FAILED
                    unplaceable = (
                        reply.reason
                        if code in (P.FailCode.AFFINITY_UNAVAILABLE, P.FailCode.PG_REMOVED)
                        or env_failed
                        else None
                    )
                    actions = self.queues.refused(
                        sc,
                        lease_id,
                        gone=gone,
                        unplaceable=unplaceable,
                        group_removed=code == P.FailCode.PG_REMOVED,
                        env_failed=env_failed,
                    )
                    if gone and not self.closed:
                        # Our node manager is gone and nothing reconnects: fail what
                        # waits for this shape once, rather than leave it queued forever.
                        specs = self.queues.fail_queue(sc)
                        if specs:
                            self._fail_queue(specs, self._nm_gone_reason(), NodeDiedError)
                    self._lease_actions(actions)
                return
            lease = Lease(reply, sc, nm)
            if on_grant is not None:
                on_grant(lease, "")
                return
            with self.lock:
                self._lease_actions(self.queues.granted(lease, time.monotonic()))

        def ask(nm: str, spilled: int) -> None:
            msg = P.RequestLease(
                lease_id,
                sc.shape,
                actor_id,
                sc.strategy,
                spilled,
                detached,
                sc.label_selector,
                sc.runtime_env,
                retriable,
            )

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

    def _request_lease_again(
        self,
        sc: SchedulingClass,
        actor_id: bytes | None,
        on_grant: Callable[[Lease | None, str], None],
        detached: bool,
        retriable: bool | None,
        tries: int,
    ) -> None:
        with self.lock:
            if not self.closed:
                self._request_lease(
                    sc, new_id(), actor_id, on_grant, detached, retriable=retriable, tries=tries
                )

    def _fail_queue(
        self,
        specs: list[TaskSpec],
        reason: str,
        error: type[Exception] = TaskUnschedulableError,
    ) -> None:
        """Tasks that can never be placed (hard affinity to a dead node, our node
        manager gone, a removed placement group, a runtime env that failed to build):
        fail them with error(reason) (lock held)."""
        err = dumps_inline(error(reason))

        def fail() -> None:
            for spec in specs:
                self._fail_for_good(spec, err)

        self.timers.call_later(0, fail)  # not under the lock: waiters run callbacks

    def _nm_gone_reason(self) -> str:
        return (
            f"The connection to this process's node manager ({self.node_address}) was lost, "
            "so no task can be scheduled: the node died or was stopped. Call shutdown() "
            "and init() to start again."
        )

    def _warn_infeasible(self, msg: P.LeaseInfeasible) -> None:
        shape = {k: from_units(v) for k, v in msg.shape.items()}
        if msg.label_selector is not None:
            print(
                f"Warning: The following request cannot be scheduled right now: {shape} with "
                f"label_selector={msg.label_selector}. No node in the cluster has labels that "
                "match it (ray.nodes() lists each node's 'Labels'). The task or actor stays "
                "pending until such a node joins.",
                file=sys.stderr,
                flush=True,
            )
            return
        missing = ", ".join(f"{k!r} (requested {from_units(v):g})" for k, v in msg.missing.items())
        print(
            f"Warning: The following resource request cannot be scheduled right now: {shape}. "
            f"No node in the cluster has enough of: {missing}. "
            f"The cluster has {self.node_info.get('total_display', {})}. The task or actor stays "
            "pending until a node with these resources joins; check its resource options.",
            file=sys.stderr,
            flush=True,
        )

    def _warn_waiting(self, msg: P.LeaseWaiting) -> None:
        shape = {k: from_units(v) for k, v in msg.shape.items()}
        if msg.worker_cap:
            needs = f" (needing {shape})" if shape else ""
            print(
                f"Warning: a task or actor{needs} has waited "
                f"{CONFIG.pending_warn_s:g} s for a worker process: {msg.holders}. It runs "
                "when one of those ends; if they wait (ray.get) on this work, nothing will.",
                file=sys.stderr,
                flush=True,
            )
            return
        print(
            f"Warning: a task or actor has waited {CONFIG.pending_warn_s:g} s for {shape}; "
            f"the node has {msg.total} and all of it that this needs is held by "
            f"{msg.holders}. If those wait (ray.get) on this work, nothing will run: give "
            "actors that only wait num_cpus=0, or run on more CPUs.",
            file=sys.stderr,
            flush=True,
        )

    def _linger_over(self) -> None:
        """Give back the leases idle for lease_linger_s (timer thread, takes the lock)."""
        with self.lock:
            self._lease_actions(self.queues.linger_over(time.monotonic()))

    def release_idle_leases(self) -> None:
        """Give back leases kept warm for more tasks (so resource views are exact)."""
        with self.lock:
            self._lease_actions(self.queues.release_idle())
