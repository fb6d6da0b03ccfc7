"""This process's side of actors: creation, calls in order, restarts, death.

Owns ActorClient (where an actor lives, its lifecycle state and incarnation,
calls not yet sent or not answered, the restart budget) and the CoreWorker
methods that create actors, send their calls in submission order, restart an
actor this process created when its process dies, and fail calls once it is
dead. The states and their moves are lifecycle.py's ActorState table. Not the
actor table (the head), not running the calls (worker).

    create_actor ─▶ lease ─PushTask(creation)─▶ worker ─TaskDone─▶ ALIVE
    call ─▶ client.queue ─PushTask─▶ actor's worker ─TaskDone─▶ results
    a life ended (_life_ended) ─▶ RESTARTING (budget left) ─▶ resend retried calls
                              └─▶ DEAD: queued calls fail with ActorDiedError"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any

from .. import protocol as P
from ..config import CONFIG
from ..exceptions import (
    ActorDiedError,
    ConnectionLost,
)
from ..object_ref import ObjectRef, new_id
from ..serialization import dumps_inline, loads_inline
from ..transport import Connection
from .lease_queue import Lease, SchedulingClass
from .lifecycle import (
    ACTOR_TRANSITIONS,
    ALIVE,
    DEAD,
    FAILED,
    FINISHED,
    PENDING,
    PUSHED,
    QUEUED,
    RESTARTING,
    TASK_ENDED,
    ActorState,
    spend_retry,
    transition,
)
from .tasks import (
    TaskSpec,
    task_transition,
)

log = logging.getLogger("raylite")


# _flush_actor_locked: the connection broke while sending; flush again.
_RESEND: list[TaskSpec] = []


class ActorClient:
    """This process's view of one actor: where it is and calls not yet sent."""

    __slots__ = (
        "actor_id",
        "address",
        "class_name",
        "conn",
        "creation_ref",
        "creation_spec",
        "creator",
        "dead_cause",
        "failed_address",
        "incarnation",
        "inflight",
        "lease",
        "queue",
        "resolving",
        "restarts_left",
        "retry_buffer",
        "state",
    )

    def __init__(self, actor_id: bytes, class_name: str, address: str | None = None) -> None:
        self.actor_id = actor_id
        self.class_name = class_name
        self.address = address
        self.conn: Connection | None = None
        self.queue: collections.deque[TaskSpec] = collections.deque()
        self.dead_cause: str | None = None
        self.lease: Lease | None = None
        self.resolving = False
        self.creator = False
        # lifecycle.py's table. A borrower's ALIVE: the head told it where the actor
        # is (an address that came with the handle may be stale); RESTARTING: it asks
        # again after a call failed.
        self.state = PENDING
        # Restarts (owner side): budget left (-1: unlimited), the creation task to
        # rerun, calls sent and not answered, calls to resend after the restart.
        self.restarts_left = 0
        self.incarnation = 0  # which life: a word about an older one is stale
        self.creation_spec: TaskSpec | None = None
        self.inflight: list[TaskSpec] = []
        self.retry_buffer: list[TaskSpec] = []
        self.failed_address: str | None = None
        self.creation_ref: ObjectRef | None = None


def actor_transition(client: ActorClient, new: ActorState, cause: str) -> None:
    transition(client, new, ACTOR_TRANSITIONS, cause=cause, who=client.actor_id)


def process_died(client: ActorClient) -> str:
    return (
        f"The actor {client.class_name}'s worker process died unexpectedly "
        "(the process crashed or was killed)."
    )


def actor_error(client: ActorClient, cause: str) -> ActorDiedError:
    return ActorDiedError(
        f"The actor {client.class_name} ({client.actor_id.hex()}) is dead: {cause}", cause
    )


class ActorClientMixin:
    def _actor_process_died(self, address: str) -> None:
        """An actor we created lived at `address`: restart it now, not at the next call."""
        for client in list(self.actors.values()):
            with self.lock:  # the check and the incarnation it saw, together
                here = client.creator and client.address == address
                incarnation = client.incarnation
            if here:
                self._life_ended(client, incarnation, process_died(client))

    def create_actor(
        self,
        *,
        class_name: str,
        function_id: bytes,
        function_blob: Callable[[], bytes],
        args: tuple,
        kwargs: dict,
        shape: dict[str, int],
        name: str | None = None,
        namespace: str | None = None,
        methods: dict[str, int] | None = None,
        get_if_exists: bool = False,
        actor_options: dict[str, Any] | None = None,
        strategy: Any = None,
    ) -> tuple[bytes, str | None]:
        """Start an actor; returns (actor id, address if it already existed by name)."""
        actor_id = new_id()
        if name is not None:
            ns = namespace if namespace is not None else self.default_namespace()
            reply = self.nm.request(
                P.RegisterActorName(name, ns, actor_id, class_name, methods or {}),
                timeout=CONFIG.request_timeout_s,
            )
            if reply.found:
                if get_if_exists:
                    self.actor_client(reply.actor_id, reply.class_name, reply.address or None)
                    return reply.actor_id, reply.address or None
                raise ValueError(
                    f"The name {name!r} (namespace={ns!r}) is already taken by actor "
                    f"{reply.actor_id.hex()}. Use get_if_exists=True, or another name."
                )
        client = ActorClient(actor_id, class_name)
        client.creator = True
        client.restarts_left = (actor_options or {}).get("max_restarts") or 0
        self.actors[actor_id] = client
        refs = self.submit_task(
            name=f"{class_name}.__init__",
            function_id=function_id,
            function_blob=function_blob,
            args=args,
            kwargs=kwargs,
            num_returns=1,
            shape=shape,
            max_retries=0,
            retry_exceptions=False,
            actor_id=actor_id,
            actor_creation=True,
            actor_options=actor_options,
            strategy=strategy,
        )
        client.creation_ref = refs[0]
        return actor_id, None

    def default_namespace(self) -> str:
        return self.namespace if self.namespace is not None else f"anonymous-{self.job_id.hex()}"

    def named_actor(self, name: str, namespace: str | None) -> P.NamedActor:
        ns = namespace if namespace is not None else self.default_namespace()
        reply = self.nm.request(P.GetNamedActor(name, ns), timeout=CONFIG.request_timeout_s)
        if not reply.found:
            raise ValueError(f"Failed to look up actor with name {name!r} in namespace {ns!r}.")
        self.actor_client(reply.actor_id, reply.class_name, reply.address or None)
        return reply

    def _life_ended(self, client: ActorClient, incarnation: int, cause: str) -> None:
        """Life `incarnation` of an actor this process created has ended: rerun its
        constructor if restarts are left, else the actor is dead.

        The one path for every way the end of a life is learned: the node's ClientDied,
        a call whose connection broke, a failed reconnect, the constructor's push. A
        death is often reported by several of them, possibly after the restart it asks
        for has begun: only the first word about a given life counts.
        """
        with self.lock:
            if client.state is DEAD or incarnation != client.incarnation:
                return
            creation = client.creation_spec
            restart = creation is not None and spend_retry(client, "restarts_left")
            if restart:  # (else _actor_died fails an unfinished constructor)
                assert creation is not None
                if creation.state is PUSHED:
                    task_transition(creation, FAILED, "its process died in the constructor")
                actor_transition(client, RESTARTING, cause)
                task_transition(creation, QUEUED, "the actor restarts")
                client.incarnation += 1
                client.conn, client.address = None, None
                old, client.lease = client.lease, None
                if old is not None:
                    self.leases.pop(old.lease_id, None)
                    self._return_to_nm(old, True)
        if not restart:
            self._actor_died(client, cause, report=True)
            return
        self._send_nm(
            P.ActorStateChanged(
                client.actor_id,
                RESTARTING.name,
                client.class_name,
                "",
                0,
                "restarting",
                client.restarts_left,
            )
        )
        self._schedule_actor_creation(creation, client)

    def _schedule_actor_creation(self, spec: TaskSpec, client: ActorClient) -> None:
        first = client.creation_spec is None
        client.creation_spec = spec
        spec.incarnation = client.incarnation
        options = spec.actor_options or {}
        if first and options.get("detached") and client.restarts_left and self.node_tcp:
            self._register_detached(spec, client)
        key = tuple(sorted(spec.shape.items()))
        sc = self.classes.get(key) or SchedulingClass(key, spec.strategy)

        def on_grant(lease: Lease | None) -> None:
            if lease is None:
                self._actor_died(client, "the node manager could not start a worker for the actor")
                return
            with self.lock:
                if client.state is DEAD:  # killed while its worker started
                    self._return_to_nm(lease, True)
                    return
                client.lease = lease
                client.address = lease.address
                self.leases[lease.lease_id] = lease
                spec.pushed = True
                task_transition(spec, PUSHED, "pushed to the actor's worker")
            try:
                conn = self.peer(lease.address)
                msg = self._push_message(conn, spec, lease.gpu_ids)
                conn.request_async(msg, lambda reply: self._actor_created(client, spec, reply))
            except ConnectionLost:
                self._actor_created(client, spec, None)
                return
            with self.lock:
                client.conn = conn
            self._flush_actor(client)

        with self.lock:
            detached = bool((spec.actor_options or {}).get("detached"))
            self._request_lease(
                sc, new_id(), actor_id=client.actor_id, on_grant=on_grant, detached=detached
            )

    def _register_detached(self, spec: TaskSpec, client: ActorClient) -> None:
        """Leave with the head what it takes to restart this detached actor after we are
        gone (head/detached.py): possible only if its constructor's arguments are all inline."""
        if any(dep.kind != P.INLINE for dep in spec.deps):
            self._send_nm(P.RegisterDetached(client.actor_id, self.address, None, spec.shape))
            return
        blob = spec.function_blob() if spec.function_blob is not None else None
        push = P.PushTask(
            spec.task_id,
            spec.name,
            spec.function_id,
            blob,
            spec.args_blob,
            spec.deps,
            spec.return_ids,
            self.address,
            spec.actor_id,
            True,
            [],
            self.job_id,
            None,
            spec.actor_options,
        )
        self._send_nm(P.RegisterDetached(client.actor_id, self.address, push, spec.shape))

    def _actor_created(self, client: ActorClient, spec: TaskSpec, reply: Any) -> None:
        """The constructor's push was answered, or its connection broke."""
        if not isinstance(reply, P.TaskDone):
            self._life_ended(
                client,
                spec.incarnation,
                f"The actor {client.class_name}'s worker process died "
                "before its constructor finished.",
            )
            return
        ret = reply.returns[0]
        oid, kind, data = ret.object_id, ret.kind, ret.data
        with self.lock:
            now = client.state is not DEAD and spec.incarnation == client.incarnation
            if now:
                task_transition(spec, FAILED if kind == P.ERROR else FINISHED, "constructed")
                if kind != P.ERROR:
                    actor_transition(client, ALIVE, "its constructor finished")
                    client.queue.extendleft(reversed(client.retry_buffer))
                    client.retry_buffer = []
        if now and kind == P.ERROR:
            cause = loads_inline(data)
            self._actor_died(
                client,
                f"The actor {client.class_name} died in its constructor: {cause}",
                report=True,
            )
        elif now:
            self._send_nm(
                P.ActorStateChanged(
                    client.actor_id,
                    ALIVE.name,
                    client.class_name,
                    client.address or "",
                    reply.worker_pid,
                    "",
                    client.restarts_left,
                )
            )
            self._flush_actor(client)
        self._complete(oid, kind, data)

    def _actor_died(self, client: ActorClient, cause: str, report: bool = False) -> None:
        """The actor is dead for good: its queued calls and an unfinished constructor
        fail with ActorDiedError."""
        with self.lock:
            if client.state is DEAD:
                return
            actor_transition(client, DEAD, cause)
            client.dead_cause = cause
            queued = list(client.retry_buffer) + list(client.queue)
            client.queue.clear()
            client.retry_buffer = []
            creation = client.creation_spec
            if creation is None and client.creation_ref is not None:  # args not ready yet
                creation = self.running.get(client.creation_ref.id)
        if report:
            self._send_nm(
                P.ActorStateChanged(
                    client.actor_id, DEAD.name, client.class_name, client.address or "", 0, cause, 0
                )
            )
        error = dumps_inline(actor_error(client, cause))
        for spec in queued:
            self._fail_for_good(spec, error)
        if creation is not None and creation.state not in TASK_ENDED:
            self._fail_for_good(creation, error, FAILED, "the actor died")

    def actor_client(self, actor_id: bytes, class_name: str, address: str | None) -> ActorClient:
        client = self.actors.get(actor_id)
        if client is None:
            with self.lock:
                client = self.actors.get(actor_id)
                if client is None:
                    client = ActorClient(actor_id, class_name, address)
                    self.actors[actor_id] = client
        return client

    def _resolve_actor(self, client: ActorClient) -> None:
        """Ask the head where a borrowed actor lives (lock held)."""
        if client.resolving:
            return
        client.resolving = True

        def on_info(reply: Any) -> None:
            client.resolving = False
            if isinstance(reply, P.ActorInfo) and reply.state == "ALIVE":
                if reply.address == client.failed_address:  # the head has not heard yet
                    self.timers.call_later(0.05, lambda: self._retry_resolve(client))
                    return
                with self.lock:
                    client.address = reply.address
                    if client.state is not ALIVE and client.state is not DEAD:
                        actor_transition(client, ALIVE, "the head says where it is")
                    client.queue.extendleft(reversed(client.retry_buffer))
                    client.retry_buffer = []
                self._flush_actor(client)
            else:
                cause = reply.cause if isinstance(reply, P.ActorInfo) else "the head is unreachable"
                self._actor_died(client, cause or "The actor is dead.")

        try:
            self.nm.request_async(P.GetActorInfo(client.actor_id), on_info)
        except ConnectionLost:
            client.resolving = False

    def _retry_resolve(self, client: ActorClient) -> None:
        with self.lock:
            self._resolve_actor(client)

    def _flush_actor(self, client: ActorClient) -> None:
        """Send queued calls in order, up to the first with unresolved arguments."""
        with self.lock:
            failed = self._flush_actor_locked(client)
        if failed is not None:
            self._after_flush(client, failed)

    def _flush_actor_locked(self, client: ActorClient) -> list[TaskSpec] | None:
        """_flush_actor's part under the lock (held): None, or what _after_flush must do
        without it: fail these calls (the actor is dead), or flush again (_RESEND: its
        connection broke under us)."""
        if client.state is DEAD:
            queued = list(client.queue)
            client.queue.clear()
            return queued
        if client.conn is None or client.conn.closed:
            if client.creator and client.conn is None:
                return None  # the lease grant flushes
            if client.address is None:
                self._resolve_actor(client)
                return None
            # Dial without the lock, then flush again.
            self.lock.defer(self._reconnect_actor, client, client.address)
            return None
        conn = client.conn
        while client.queue and client.queue[0].unresolved == 0:
            spec = client.queue.popleft()
            if spec.state in TASK_ENDED:
                continue
            try:
                client.inflight.append(spec)
                spec.incarnation = client.incarnation
                conn.request_async(
                    self._push_message(conn, spec, []),
                    lambda reply, spec=spec: self._actor_task_done(client, spec, reply),
                )
                # (its reply waits for the lock we hold)
                spec.pushed = True
                task_transition(spec, PUSHED, "sent to the actor")
            except ConnectionLost:
                client.inflight.remove(spec)
                client.queue.appendleft(spec)
                return _RESEND  # the connection broke under us: reconnect
        return None

    def _after_flush(self, client: ActorClient, failed: list[TaskSpec]) -> None:
        if failed is _RESEND:
            self._flush_actor(client)  # reconnects (or fails the calls, if it died meanwhile)
            return
        cause = client.dead_cause
        for spec in failed:
            self._fail_for_good(spec, dumps_inline(actor_error(client, cause)))

    def _reconnect_actor(self, client: ActorClient, address: str) -> None:
        """Connect to the actor at `address` (no lock) and send what waits for it."""
        with self.lock:
            incarnation = client.incarnation
        try:
            conn: Connection | None = self.peer(address)
        except ConnectionLost:
            conn = None
        with self.lock:
            if client.address != address or client.incarnation != incarnation:
                conn = None  # it moved meanwhile: flush where it is now
            elif conn is not None:
                client.conn = conn
            elif not client.creator:
                client.failed_address, client.address = client.address, None
                self._resolve_actor(client)
                return
        if conn is None and client.creator and client.address == address:
            self._life_ended(client, incarnation, process_died(client))
            return
        self._flush_actor(client)

    def _actor_task_done(self, client: ActorClient, spec: TaskSpec, reply: Any) -> None:
        if isinstance(reply, P.TaskDone):
            error = bool(reply.returns) and reply.returns[0].kind == P.ERROR
            adopted = [self._adopt_contained(r.contained) for r in reply.returns]
            with self.lock:  # one hold: the call ends, its values are recorded
                if spec in client.inflight:
                    client.inflight.remove(spec)
                ready = self._record_returns(spec, error, reply.returns, adopted)
                self._keep_lineage(spec, reply)
                self._release_held(spec)
            self._finish_returns(reply.returns, ready)
            return
        # The process is gone, but the actor may come back (a restart, or a borrower
        # finding it again): resend the call if it has retries, else it fails; later
        # calls wait for the new life.
        cause = f"The actor {client.class_name}'s process died while running this call."
        with self.lock:
            if spec not in client.inflight:
                # Its send failed and it was queued again (the connection's close can
                # fail the request too): this word is about a call never made.
                return
            client.inflight.remove(spec)
            dead = client.state is DEAD
            # A call sent to a life that has since been replaced (restarted): its failure
            # says nothing of the actor now, whatever restarts are left.
            old_life = client.creator and spec.incarnation != client.incarnation
            retry = (
                not dead
                and (not client.creator or client.restarts_left != 0 or old_life)
                and self._retry(spec, cause)
            )
            if retry:
                if old_life and client.state is ALIVE:  # the new life runs: send it there
                    client.queue.appendleft(spec)
                else:
                    client.retry_buffer.append(spec)
            if not dead and not client.creator and client.address is not None:
                client.failed_address, client.address = client.address, None
                client.conn = None
                if client.state is not RESTARTING:
                    actor_transition(client, RESTARTING, "a call's connection broke")
        if client.creator and not dead:  # restarts it, or it is dead now
            self._life_ended(client, spec.incarnation, process_died(client))
        if not retry:
            self._fail_for_good(spec, dumps_inline(actor_error(client, client.dead_cause or cause)))
        if dead:
            return
        if not client.creator:
            with self.lock:
                self._resolve_actor(client)
        elif old_life:
            self._flush_actor(client)

    def kill_actor(self, actor_id: bytes, class_name: str, no_restart: bool = True) -> None:
        cause = f"The actor {class_name} was killed by raylite.kill()."
        client = self.actor_client(actor_id, class_name, None)
        if not no_restart:  # kill the process; its owner restarts it if it may
            self.nm.request(P.KillActor(actor_id, cause, False), timeout=CONFIG.request_timeout_s)
            return
        self._actor_died(client, cause)  # first: its calls must not restart it
        self.nm.request(P.KillActor(actor_id, cause, True), timeout=CONFIG.request_timeout_s)
