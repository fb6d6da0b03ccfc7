"""This process's side of actors: creation, calls in order, and the shell of their lives.

Owns the CoreWorker methods that create actors, send their calls in submission
order and take their replies (the hot path: no state machine on it), find a
borrowed actor through the head, and feed actor_life.ActorLives the events of an
actor's lives (a life ended, however that was learned; constructed; located; a
call's connection broke), then run the actions it returns once the lock is let
go: give back a dead life's lease, tell the head, restart the constructor, fail
calls, flush, ask the head. The record (ActorClient) and the rules of its lives
are actor_life's. Not the actor table (the head), not running the calls (worker).

    create_actor ─▶ lease ─PushTask(creation)─▶ worker ─TaskDone─▶ created ─▶ ALIVE
    call ─▶ client.queue ─PushTask─▶ actor's worker ─TaskDone─▶ results
    ClientDied | NodeDied | a broken call | a failed dial | kill | the head's word
        ─▶ _life_ended ─▶ ActorLives ─▶ [KillLease, ReportState, RestartActor,
                                        FailCalls, Flush, Resolve] ─▶ run, unlocked"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from .. import protocol as P
from ..config import CONFIG
from ..exceptions import (
    ActorAlreadyExistsError,
    ActorDiedError,
    ConnectionLost,
    OutOfMemoryError,
    RpcError,
    RuntimeEnvSetupError,
    TaskCancelledError,
)
from ..node.memory_policy import OOM_HEADLINE, with_task
from ..object_ref import ObjectRef, new_id
from ..serialization import dumps_inline, loads_inline
from ..transport import Connection
from .actor_life import (
    Action,
    ActorClient,
    FailCalls,
    Flush,
    KillLease,
    ReportState,
    Resolve,
    RestartActor,
    process_died,
)
from .lease_queue import Lease, SchedulingClass
from .lifecycle import DEAD, FAILED, FINISHED, PUSHED, TASK_ENDED
from .objects import PENDING
from .tasks import TaskSpec, blob_of, retry_task, retryable, task_transition

log = logging.getLogger("raylite")

_NONE = dumps_inline(None)  # the value of an actor's creation


# _flush_actor_locked: the connection broke while sending; flush again.
_RESEND: list[TaskSpec] = []


# The cause of an actor whose runtime env failed to build (Ray's words): its calls
# raise RuntimeEnvSetupError, as on Ray, not ActorDiedError.
ENV_FAILED_CAUSE = (
    "Could not create the actor because its associated runtime env failed to be created."
)


def actor_error(
    client: ActorClient, cause: str | None
) -> ActorDiedError | RuntimeEnvSetupError | OutOfMemoryError:
    if cause is not None and cause.startswith(ENV_FAILED_CAUSE):
        return RuntimeEnvSetupError(cause)
    if cause is not None and OOM_HEADLINE in cause.partition("\n")[0]:
        return OutOfMemoryError(cause)  # its node's memory monitor killed it, as Ray says
    return ActorDiedError(
        f"The actor {client.class_name} ({client.actor_id.hex()}) is dead: {cause}", cause
    )


class ActorClientMixin:
    def _actor_process_died(self, address: str, oom: str | None = None) -> None:
        """An actor we created lived at `address`: restart it now, not at the next call.
        Its node is asked first whether its memory monitor killed it (`oom`: the answer)."""
        if oom is None:
            lease = self._lease_at(address)
            if lease is not None:
                self._ask_failure_cause(lease, lambda why: self._actor_process_died(address, why))
                return
        with self.lock:
            actions = self.lives.process_died(address, self._oom_cause(address, oom or ""))
        self._actor_actions(actions)

    def _oom_cause(self, address: str, oom: str) -> str:
        """The node's OutOfMemoryError text with the actor it killed named ("": none),
        kept for the calls of that life whose loss is heard after (lock held)."""
        if not oom:
            return ""
        for client in self.lives.actors.values():
            if client.creator and client.address == address:
                why = with_task(oom, client.class_name, client.actor_id.hex(), "actor")
                self.actor_ooms[client.actor_id, client.incarnation] = why
                while len(self.actor_ooms) > 1000:
                    del self.actor_ooms[next(iter(self.actor_ooms))]
                return why
        return oom

    def _lease_at(self, address: str) -> Lease | None:
        """The lease of the actor we created that lived at `address`, if any."""
        with self.lock:
            for client in self.lives.actors.values():
                if client.creator and client.address == address and client.lease is not None:
                    return client.lease
        return None

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
        methods: dict[str, Any] | None = None,
        get_if_exists: bool = False,
        actor_options: dict[str, Any] | None = None,
        strategy: Any = None,
        runtime_env: tuple[dict[str, Any] | None, str] | None = None,
    ) -> tuple[bytes, str | None]:
        """Start an actor; returns (actor id, address if it already existed by name)."""
        actor_id = new_id()
        if name is not None:
            ns = namespace if namespace is not None else self.default_namespace()
            reply = self.nm.request(
                P.RegisterActorName(name, ns, actor_id, class_name, methods or {}),
                timeout=CONFIG.request_timeout_s,
            )
            if isinstance(reply, P.Failed):  # the head stayed unreachable (node: head_wait_s)
                raise RpcError(
                    f"Could not create the actor named {name!r} (namespace={ns!r}): "
                    f"{reply.reason}. Try again once the head is back."
                )
            if reply.found:
                if get_if_exists:
                    self.actor_client(reply.actor_id, reply.class_name, reply.address or None)
                    return reply.actor_id, reply.address or None, None
                raise ActorAlreadyExistsError(
                    f"The name {name!r} (namespace={ns!r}) is already taken by actor "
                    f"{reply.actor_id.hex()}. Please use a different name or get the existing "
                    f"actor using ray.get_actor({name!r}, namespace={ns!r}), or pass "
                    "get_if_exists=True."
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
            runtime_env=runtime_env,
        )
        # The handle holds the counted ref: when no handle is left anywhere (borrowers
        # included), the table says HandlesGone and the actor ends, as in Ray.
        client.creation_ref = ObjectRef(refs[0].id, refs[0].owner, _count=False)
        if not (actor_options or {}).get("detached"):
            with self.lock:
                self.creation_of[refs[0].id] = actor_id
                self.table.watched.add(refs[0].id)
        return actor_id, None, refs[0]

    def creation_ref_of(self, actor_id: bytes) -> ObjectRef | None:
        """A counted ref to the creation of an actor this process created and whose
        handles keep it alive (get_actor here gives a handle that counts too)."""
        client = self.actors.get(actor_id)
        ref = client.creation_ref if client is not None else None
        if ref is None or ref.id not in self.creation_of:
            return None
        return ObjectRef(ref.id, ref.owner)

    def _actor_handles_gone(self, creation_id: bytes) -> None:
        """No handle to an actor this process created is left: it ends once the calls
        made to it ran (a last call, as Ray's __ray_terminate__); not a detached one."""
        actor_id = self.creation_of.pop(creation_id, None)
        client = self.actors.get(actor_id) if actor_id is not None else None
        if actor_id is None or client is None or self.closed or client.state is DEAD:
            return
        with self.lock:
            if client.queue or client.inflight:  # after them (_actor_task_done)
                client.end_when_idle = True
                return
        self._terminate_actor(client)

    def _terminate_actor(self, client: ActorClient) -> None:
        """Send the actor its last call, __ray_terminate__ (as Ray's): it ends after it."""
        client.end_when_idle = False
        with contextlib.suppress(ConnectionLost):
            self.submit_task(
                name=f"{client.class_name}.__ray_terminate__",
                function_id=b"__ray_terminate__",
                function_blob=None,
                args=(),
                kwargs={},
                num_returns=0,
                shape={},
                max_retries=0,
                retry_exceptions=False,
                actor_id=client.actor_id,
            )

    def default_namespace(self) -> str:
        return self.namespace if self.namespace is not None else f"anonymous-{self.job_id.hex()}"

    def named_actor(self, name: str, namespace: str | None) -> P.NamedActor:
        ns = namespace if namespace is not None else self.default_namespace()
        reply = self.nm.request(P.GetNamedActor(name, ns), timeout=CONFIG.request_timeout_s)
        if isinstance(reply, P.Failed):  # the head stayed unreachable (node: head_wait_s)
            raise RpcError(
                f"Could not look up the actor named {name!r} (namespace={ns!r}): "
                f"{reply.reason}. Try again once the head is back."
            )
        if not reply.found:
            raise ValueError(f"Failed to look up actor with name {name!r} in namespace {ns!r}.")
        self.actor_client(reply.actor_id, reply.class_name, reply.address or None)
        return reply

    def _life_ended(
        self,
        client: ActorClient,
        incarnation: int | None,
        cause: str,
        *,
        final: bool = False,
        report: bool = True,
    ) -> None:
        """Life `incarnation` of the actor has ended (None: its current one): the one
        path for every way that is learned (actor_life.ActorLives.life_ended)."""
        with self.lock:
            actions = self.lives.life_ended(client, incarnation, cause, final=final, report=report)
        self._actor_actions(actions)

    def _actor_actions(self, actions: list[Action]) -> None:
        """Run what the lives asked for, in their order (no lock held)."""
        for action in actions:
            kind = type(action)
            if kind is Flush:
                self._flush_actor(action.client)
            elif kind is FailCalls:
                error = dumps_inline(actor_error(action.client, action.cause))
                for spec in action.specs:
                    self._fail_for_good(spec, error)
                creation = action.creation
                if creation is not None and creation.state not in TASK_ENDED:
                    self._fail_for_good(creation, error, FAILED, "the actor died")
            elif kind is ReportState:
                client = action.client
                self._send_nm(
                    P.ActorStateChanged(
                        client.actor_id,
                        action.state.name,
                        client.class_name,
                        action.address,
                        action.pid,
                        action.cause,
                        action.restarts_left,
                    )
                )
            elif kind is KillLease:
                self._return_to_nm(action.lease, True)
            elif kind is RestartActor:
                self._schedule_actor_creation(action.creation, action.client)
            elif kind is Resolve:
                with self.lock:
                    self._resolve_actor(action.client)
            else:
                raise TypeError(f"not an actor action: {action!r}")

    def _schedule_actor_creation(self, spec: TaskSpec, client: ActorClient) -> None:
        first = client.creation_spec is None
        client.creation_spec = spec
        spec.incarnation = client.incarnation
        options = spec.actor_options or {}
        if client.incarnation and not options.get("reconstructed"):
            # A new life: was_current_actor_reconstructed is True in it.
            spec.actor_options = options = {**options, "reconstructed": True}
        if first and options.get("detached") and self.node_tcp:
            inline = all(dep.kind == P.INLINE for dep in spec.deps)
            if spec.strategy is None and inline and not options.get("placement_group"):
                self._create_by_head(spec, client)
                return
            if client.restarts_left:
                self._register_detached(spec, client)
        # Its key has the strategy (a label_selector too): a class of the same shape with
        # another strategy must not be the one that asks for its lease.
        key = spec.shape_key
        sc = self.classes.get(key) or SchedulingClass(key, spec.strategy, spec.runtime_env)

        def on_grant(lease: Lease | None, why: str) -> None:
            if lease is None:
                env_log = self.env_failures.pop(client.actor_id, None)
                if env_log is not None:
                    cause = f"{ENV_FAILED_CAUSE}\n{env_log}"
                else:
                    cause = why or "the node manager could not start a worker for the actor"
                self._life_ended(client, None, cause, final=True, report=False)
                return
            with self.lock:
                actions = self.lives.granted(client, spec, lease)
            if actions:  # killed while its worker started
                self._actor_actions(actions)
                return
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
                sc,
                new_id(),
                actor_id=client.actor_id,
                on_grant=on_grant,
                detached=detached,
                retriable=client.restarts_left != 0,
            )

    def _create_by_head(self, spec: TaskSpec, client: ActorClient) -> None:
        """Hand a detached actor's creation to the head (head/detached.py): it must not
        depend on this process staying alive, as on Ray. Without arguments to wait for,
        this runs in the caller's thread and the head has it before `.remote()` returns.
        From then on this process finds the actor through the head, as a borrower."""
        msg = P.CreateDetached(
            client.actor_id,
            self.address,
            client.class_name,
            self._detached_push(spec),
            spec.shape,
            client.restarts_left,
            spec.runtime_env,
        )
        with self.lock:
            client.creator = False
            spec.pushed = True  # its worker reports the creation's event
            task_transition(spec, PUSHED, "handed to the head")
        try:
            if spec.dep_ids:  # its arguments came in a reader thread: do not block it
                self.nm.send(msg)
            else:
                self.nm.request(msg, timeout=CONFIG.request_timeout_s)
        except (ConnectionLost, TimeoutError) as exc:
            cause = f"The detached actor {client.class_name} could not be created: {exc}"
            self._life_ended(client, None, cause, final=True, report=False)
            return
        with self.lock:
            self._resolve_actor(client)

    def _register_detached(self, spec: TaskSpec, client: ActorClient) -> None:
        """Leave with the head what it takes to restart this detached actor after we are
        gone (head/detached.py): possible only if its constructor's arguments are all inline."""
        if any(dep.kind != P.INLINE for dep in spec.deps):
            self._send_nm(P.RegisterDetached(client.actor_id, self.address, None, spec.shape))
            return
        push = self._detached_push(spec)
        self._send_nm(
            P.RegisterDetached(client.actor_id, self.address, push, spec.shape, spec.runtime_env)
        )

    def _detached_push(self, spec: TaskSpec) -> P.PushTask:
        """The creation task of a detached actor as the head keeps it (its args inline)."""
        blob = blob_of(spec)
        return P.PushTask(
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
            self.namespace,
        )

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
        error = str(loads_inline(data)) if kind == P.ERROR else None
        with self.lock:
            actions = self.lives.created(client, spec, reply.worker_pid, error)
        self._actor_actions(actions)
        self._complete(oid, kind, data)

    def pending_actor_calls(self, actor_id: bytes) -> int:
        """Calls this process made to the actor that have not ended (max_pending_calls)."""
        client = self.actors.get(actor_id)
        if client is None:
            return 0
        with self.lock:
            return len(client.queue) + len(client.inflight)

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
                    actions = self.lives.located(client, reply.address)
                    creation = client.creation_spec  # one the head created for us
                    if creation is not None and creation.state not in TASK_ENDED:
                        task_transition(creation, FINISHED, "the head says it is alive")
                    else:
                        creation = None
                if creation is not None:
                    self._complete(creation.return_ids[0], P.INLINE, _NONE)
                self._actor_actions(actions)
            else:
                cause = reply.cause if isinstance(reply, P.ActorInfo) else "the head is unreachable"
                self._life_ended(
                    client, None, cause or "The actor is dead.", final=True, report=False
                )

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
        connection broke under us).

        Calls go in submission order, up to the first whose arguments are not ready;
        for an actor with allow_out_of_order_execution, every call whose arguments are
        ready goes, whatever waits before it (as Ray's out-of-order submit queue)."""
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
            if spec.state not in TASK_ENDED and not self._send_call(client, conn, spec):
                return _RESEND  # the connection broke under us: reconnect
        if client.out_of_order and client.queue:
            # Out of order: each queued call whose arguments are ready goes too, in
            # submission order among them.
            for spec in [spec for spec in client.queue if spec.unresolved == 0]:
                client.queue.remove(spec)
                if spec.state not in TASK_ENDED and not self._send_call(client, conn, spec):
                    return _RESEND
        return None

    def _send_call(self, client: ActorClient, conn: Connection, spec: TaskSpec) -> bool:
        """Send one call (lock held: its reply waits for it); False, the call queued
        first again, if the connection broke."""
        try:
            client.inflight.append(spec)
            spec.incarnation = client.incarnation
            conn.request_async(
                self._push_message(conn, spec, []),
                lambda reply: self._actor_task_done(client, spec, reply),
            )
            spec.pushed = True
            task_transition(spec, PUSHED, "sent to the actor")
            return True
        except ConnectionLost:
            client.inflight.remove(spec)
            client.queue.appendleft(spec)
            return False

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
                actions: list[Action] = [Flush(client)]  # it moved meanwhile: flush there
            elif conn is None:
                actions = self.lives.life_ended(client, incarnation, process_died(client))
            else:
                client.conn = conn
                actions = [Flush(client)]
        self._actor_actions(actions)

    def _actor_task_done(self, client: ActorClient, spec: TaskSpec, reply: Any) -> None:
        if isinstance(reply, P.TaskDone):
            error = bool(reply.returns) and reply.returns[0].kind == P.ERROR
            if error and spec.retry_exceptions and self._retry_call(client, spec, reply):
                return
            returns = reply.returns
            if error and spec.generator == P.GENERATOR_STREAMING:
                returns = self._error_item(spec, returns)  # the exception is its next item
            adopted = [self._adopt_contained(r.contained) for r in returns]
            dropped: list[P.TaskReturn] = []
            with self.lock:  # one hold: the call ends, its values are recorded
                if spec in client.inflight:
                    client.inflight.remove(spec)
                if spec.cancelled and not error and not spec.generator:
                    returns, dropped = self._cancelled_returns(spec, returns)
                    error = bool(dropped)
                ready = self._record_returns(spec, error, returns, adopted)
                self._keep_lineage(spec, reply)
                self._release_held(spec)
                last = client.end_when_idle and not client.inflight and not client.queue
            for r in dropped:
                if r.kind == P.IN_STORE:
                    self._free_segment(r.object_id, r.data)
            self._finish_returns(returns, ready)
            if last:  # no handle is left, and this was its last call
                self._terminate_actor(client)
            return
        # The process is gone, but the actor may come back (actor_life: call_lost).
        # Its node says first whether its memory monitor killed it (an actor we made).
        # (Its life may have ended already, its lease gone: then what that end learned.)
        lease = client.lease if client.creator else None
        if lease is not None and not self.closed and spec.incarnation == client.incarnation:
            self._ask_failure_cause(lease, lambda oom: self._call_lost(client, spec, oom))
        else:
            self._call_lost(client, spec, "")

    def _cancelled_returns(
        self, spec: TaskSpec, returns: list[P.TaskReturn]
    ) -> tuple[list[P.TaskReturn], list[P.TaskReturn]]:
        """A plain call cancelled while it ran, whose actor ended it before it heard of
        the cancel: its caller gets TaskCancelledError all the same, so what a cancel
        does does not hang on which of the two the actor read first. Only values not
        recorded yet are replaced (not those of a rerun that rebuilt a lost one: they
        are in use); returns (what is recorded, the values replaced, for the caller to
        free once the lock is let go). The refs they held are still adopted, and let
        go with the error (lock held)."""
        blob = dumps_inline(TaskCancelledError(spec.task_id.hex()))
        kept, dropped = [], []
        for r in returns:
            entry = self.objects.get(r.object_id)
            if entry is not None and entry.kind is PENDING:
                dropped.append(r)
                r = P.TaskReturn(r.object_id, P.ERROR, blob, r.contained)
            kept.append(r)
        return kept, dropped

    def _call_lost(self, client: ActorClient, spec: TaskSpec, oom: str) -> None:
        with self.lock:
            key = (client.actor_id, spec.incarnation)
            if oom:
                why = with_task(oom, client.class_name, client.actor_id.hex(), "actor")
                self.actor_ooms[key] = why
            else:
                why = self.actor_ooms.get(key, "")
            actions = self.lives.call_lost(client, spec, self.closed, why)
        self._actor_actions(actions)

    def _retry_call(self, client: ActorClient, spec: TaskSpec, reply: P.TaskDone) -> bool:
        """A call with retry_exceptions raised: if the error is one it retries and a
        retry is left (max_task_retries), send it again, ahead of later calls."""
        if spec.max_retries == 0 or not retryable(spec.retry_exceptions, reply.returns[0].data):
            return False
        with self.lock:
            if spec not in client.inflight or not retry_task(
                spec, "it raised an exception it retries", self.closed
            ):
                return False
            client.inflight.remove(spec)
            client.queue.appendleft(spec)
        self._flush_actor(client)
        return True

    def kill_actor(
        self, actor_id: bytes, class_name: str, no_restart: bool = True, cause: str = ""
    ) -> None:
        cause = cause or f"The actor {class_name} was killed by raylite.kill()."
        client = self.actor_client(actor_id, class_name, None)
        if not no_restart:  # kill the process; its owner restarts it if it may
            self.nm.request(P.KillActor(actor_id, cause, False), timeout=CONFIG.request_timeout_s)
            return
        # First: its calls must not restart it (the head hears of it from KillActor).
        self._life_ended(client, None, cause, final=True, report=False)
        self.nm.request(P.KillActor(actor_id, cause, True), timeout=CONFIG.request_timeout_s)
