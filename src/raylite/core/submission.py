"""Submitting tasks, resolving their ref arguments, and what happens when they end.

Owns the CoreWorker methods that pickle arguments (top-level refs become
placeholders resolved by position), wait for argument values, push a ready task
on a lease, and handle its reply: results, retries of crashed workers and of
listed exceptions, rebuilding a lost argument, cancellation, and the owner's task
events. A lost worker's node is asked whether its memory monitor killed it: then the
task is retried without spending a retry, or fails with OutOfMemoryError (Ray's rule,
node/memory_policy.py). Not leases (leasing), not actor calls (actor_client).

    submit_task ─▶ deps ready ─▶ leasing._enqueue ─▶ _push ─PushTask─▶ worker
                                            _task_done ◀──TaskDone──┘
    worker lost ──GetWorkerFailureCause──▶ its node ──WorkerFailureCause──▶ _worker_lost"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from .. import metric_values
from .. import protocol as P
from ..codec import MAX_FRAME
from ..config import CONFIG
from ..exceptions import (
    ConnectionLost,
    MessageTooLargeError,
    OutOfMemoryError,
    RayTaskError,
    TaskCancelledError,
    WorkerCrashedError,
)
from ..node.memory_policy import oom_retry_delay_s, with_task
from ..object_ref import ObjectRef, new_id
from ..serialization import (
    args_blob,
    dumps_inline,
    loads_inline,
    pickle_args,
    pickle_call,
)
from ..transport import Connection
from . import context
from .lease_queue import Lease
from .lifecycle import (
    CANCELLED,
    FAILED,
    FINISHED,
    PUSHED,
    QUEUED,
    TASK_ENDED,
    TaskState,
)
from .objects import ObjectEntry
from .tasks import (
    DEP,
    TaskSpec,
    blob_of,
    retry_task,
    retryable,
    task_events_off,
    task_transition,
    unserializable_argument,
)

log = logging.getLogger("raylite")


class _TaskReply:
    """A pushed task's reply callback (request_async): one object for the cyclic
    collector to track while the task runs, where a closure over the three is five."""

    __slots__ = ("cw", "lease", "spec")

    def __init__(self, cw: Any, lease: Lease, spec: TaskSpec) -> None:
        self.cw, self.lease, self.spec = cw, lease, spec

    def __call__(self, reply: Any) -> None:
        self.cw._task_done(self.lease, self.spec, reply)


class SubmissionMixin:
    def _prepare(
        self, spec: TaskSpec, args: tuple, kwargs: dict, name: str
    ) -> list[tuple[Any, ObjectRef]]:
        """Pickle the arguments; top-level refs become placeholders resolved by position."""
        given = args, kwargs
        deps: list[tuple[Any, ObjectRef]] = []
        if args and any(isinstance(a, ObjectRef) for a in args):
            plain = []
            for i, a in enumerate(args):
                if isinstance(a, ObjectRef):
                    deps.append((i, a))
                    plain.append(DEP)
                else:
                    plain.append(a)
            args = tuple(plain)
        if kwargs and any(isinstance(v, ObjectRef) for v in kwargs.values()):
            kwargs = dict(kwargs)
            for k, v in kwargs.items():
                if isinstance(v, ObjectRef):
                    deps.append((k, v))
                    kwargs[k] = DEP
        try:
            (meta, views), nested = self.serialize_collecting(pickle_call, (args, kwargs))
        except Exception as exc:
            raise unserializable_argument(args, kwargs, name, exc) from exc
        if _size(meta, views) > CONFIG.inline_threshold:
            # As Ray: an argument too large to travel in the push goes to the store once,
            # and the task reads it from there (zero-copy; arrays read-only).
            stored = self._store_large_arguments(*given)
            if stored is not None:
                return self._prepare(spec, *stored, name)
            if _size(meta, views) > MAX_ARGS_SIZE:  # many arguments, none large alone
                raise MessageTooLargeError(
                    f"The arguments of a call to {name} pickle to {_size(meta, views)} bytes "
                    f"together, over the {MAX_ARGS_SIZE} a task message carries (each is "
                    "small, so none went to the object store alone). Pass them in fewer, "
                    "larger values, or put() them and pass the refs."
                )
        spec.args_blob = args_blob(meta, views)
        if nested or deps:
            spec.arg_refs = nested + [ref for _, ref in deps]
            if context.PAST_OWNERS:  # a ref of a session shutdown() ended: Ray's ValueError
                context.check_session(spec.arg_refs, f"an argument of {name}")
            with self._ref_lock:
                for ref in spec.arg_refs:
                    self.arg_pins[ref.id] = self.arg_pins.get(ref.id, 0) + 1
        return deps

    def submit_task(
        self,
        *,
        name: str,
        function_id: bytes,
        function_blob: bytes | Callable[[], bytes] | None,
        args: tuple,
        kwargs: dict,
        num_returns: int,
        shape: dict[str, int],
        max_retries: int,
        retry_exceptions: Any,
        actor_id: bytes | None = None,
        actor_creation: bool = False,
        actor_options: dict[str, Any] | None = None,
        strategy: Any = None,
        generator: tuple[int, int] | None = None,
        runtime_env: tuple[dict[str, Any] | None, str] | None = None,
        max_calls: int = 0,
    ) -> list[ObjectRef]:
        """`generator`: (PushTask.generator, backpressure) of a generator function; a
        streaming or dynamic one's single return is its generator ref, its items come
        into a Stream (core/generators.py)."""
        task_id = new_id()
        return_ids = [new_id() for _ in range(num_returns)]
        cached = self._shape_keys.get(id(shape))
        if cached is not None and cached[0] is shape:  # the hot path: a function's shape
            key: tuple[Any, ...] = cached[1]
        else:
            key = tuple(sorted(shape.items()))
            if len(self._shape_keys) >= 1024:  # options() made many: start over
                self._shape_keys.clear()
            self._shape_keys[id(shape)] = (shape, key)
        if strategy is not None:  # its own leases: SPREAD must not reuse one worker
            key += (("@strategy", repr(strategy)),)
        if runtime_env is not None and runtime_env[1]:  # only workers of its env run it
            key += (("@env", runtime_env[1]),)
        spec = TaskSpec(
            task_id,
            name,
            function_id,
            function_blob,
            b"",
            return_ids,
            shape,
            key,
            max_retries,
            retry_exceptions,
            actor_id,
            actor_creation,
            actor_options=actor_options,
            strategy=strategy,
        )
        if generator is not None:
            spec.generator, spec.backpressure = generator
        if max_calls:
            spec.pipelinable = False
        if runtime_env is not None:
            spec.runtime_env = runtime_env[0]
        deps = self._prepare(spec, args, kwargs, name)
        if deps:  # resolved by the callbacks below, into lists of their own
            spec.dep_ids = [(position, ref.id, ref.owner) for position, ref in deps]
            spec.deps, spec.held = [], []
        if len(spec.arg_refs) > len(deps):  # the worker gets these itself when it runs
            spec.nested_ids = [r.id for r in spec.arg_refs[: len(spec.arg_refs) - len(deps)]]
        # Lineage: a task can be rerun to rebuild its value if its arguments can be had
        # again: plain values, refs this process owns, at the top level or nested
        # (rebuilt first, or when the rerun asks for them, if they are lost too), and
        # borrowed refs, which the kept lineage goes on borrowing (kept_refs).
        spec.rebuildable = not actor_creation and num_returns >= 1 and max_retries != 0
        spec.submitted = time.time()
        spec.parent = self.current_task_id
        if actor_options is None or not task_events_off(actor_options):
            self._events.append(spec)  # reported at the next flush if it still waits
            self._schedule_events()
        spec.unresolved = len(deps) + 1
        client = self.actors[actor_id] if actor_id is not None and not actor_creation else None
        with self.lock:
            for oid in return_ids:
                self.objects[oid] = ObjectEntry()
            if return_ids:
                self.running[return_ids[0]] = spec
            if client is not None:
                client.queue.append(spec)
        refs = [ObjectRef(oid, self.address) for oid in return_ids]
        if generator is not None and generator[0] != P.GENERATOR_FIXED:
            self._open_stream(spec)  # before it can be pushed: its items may come at once
        parent = spec.parent
        if parent is not None and return_ids and actor_id is None:
            self.children.setdefault(parent, []).append(return_ids[0])
        for position, ref in deps:
            self._when_ready(ref, self._dep_callback(spec, position, ref))
        self._dep_resolved(spec)  # the +1 above: resolves only after all callbacks registered
        # Refs the program dropped are freed after the push, while the task runs: in a
        # loop of get(f.remote()) that is the previous result, ~10% of the round trip.
        self._process_released()
        return refs

    def _store_large_arguments(self, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """The arguments with each large one put in the store (a ref in its place);
        None if none is large by itself (many small ones travel inline)."""
        big_args = [_large(a) for a in args]  # each measured once (it may pickle it)
        big_kwargs = {k: _large(v) for k, v in kwargs.items()}
        if not any(big_args) and not any(big_kwargs.values()):
            return None
        args = tuple(self.put(a) if big else a for a, big in zip(args, big_args, strict=True))
        kwargs = {k: self.put(v) if big_kwargs[k] else v for k, v in kwargs.items()}
        return args, kwargs

    def _dep_callback(
        self, spec: TaskSpec, position: Any, ref: ObjectRef
    ) -> Callable[[int, Any], None]:
        def cb(kind: int, data: Any) -> None:
            if kind == P.ERROR:
                self._fail_task(spec, _argument_error(data, spec.name))
            else:
                if kind == P.IN_STORE and ref.owner == self.address:
                    with self.lock:
                        entry = self.objects.get(ref.id)
                        if entry is not None:
                            entry.held += 1
                            spec.held.append(ref.id)
                spec.deps.append(P.Dep(position, kind, data, ref.id))
            self._dep_resolved(spec)

        return cb

    def _dep_resolved(self, spec: TaskSpec) -> None:
        with self.lock:
            spec.unresolved -= 1
            if spec.unresolved or spec.state in TASK_ENDED:
                if spec.state in TASK_ENDED and not spec.unresolved:
                    self._release_held(spec)  # what the late callbacks held
                return
            task_transition(spec, QUEUED, "its arguments are ready")
            if spec.actor_id is None:
                self._enqueue(spec)
                return
            client = self.actors[spec.actor_id]
            if not spec.actor_creation:
                failed = self._flush_actor_locked(client)
        if spec.actor_creation:
            self._schedule_actor_creation(spec, client)
        elif failed is not None:
            self._after_flush(client, failed)

    def _fail_task(
        self, spec: TaskSpec, error_blob: bytes, state: TaskState = FAILED, cause: str = "failed"
    ) -> None:
        """End a task with an error as all its returns (FAILED or CANCELLED); a task that
        has ended already stays as it ended."""
        with self.lock:
            if spec.state in TASK_ENDED:
                return
            task_transition(spec, state, cause)
            spec.rerunning = False
            if spec.lineage_pinned:  # a rebuild that failed for good
                self._apply(self.table.lineage_dropped(spec))
        if not spec.pushed and not task_events_off(spec.actor_options):
            # No worker will report it: we say how it ended.
            from ..task_events import error_info

            self._events.append(self._event_of(spec, time.time(), error_info(error_blob)))
            self._schedule_events()
        for oid in spec.return_ids:
            self._complete(oid, P.ERROR, error_blob)

    def _event_of(
        self, spec: TaskSpec, end: float | None, error: list[str] | None = None
    ) -> P.TaskEvent:
        """An owner's task event (no worker: pid 0): waiting (end None), or ended here
        without a worker."""
        kind = (
            "actor_creation"
            if spec.actor_creation
            else ("actor_task" if spec.actor_id is not None else "task")
        )
        return P.TaskEvent(spec.name, spec.task_id, spec.submitted, end, 0, b"", kind, spec.parent,
                           [], spec.return_ids, spec.actor_id, self.job_id, error, spec.name,
                           self.node_id)  # fmt: skip

    def _schedule_events(self) -> None:
        if not self._events_scheduled:
            self._events_scheduled = True
            self.timers.call_later(CONFIG.event_flush_s, self._flush_events)

    def _flush_events(self) -> None:
        """Send what ended here, and the submitted tasks that still wait for a worker.

        Only those that waited a whole flush period are reported, at most
        CONFIG.max_pending_events a period: a task that starts at once costs one append.
        """
        self._events_scheduled = False
        events = []
        waiting = 0
        while self._events:
            item = self._events.popleft()
            if isinstance(item, P.TaskEvent):
                events.append(item)
            elif (
                not item.pushed
                and item.state not in TASK_ENDED
                and waiting < CONFIG.max_pending_events
            ):
                waiting += 1
                events.append(self._event_of(item, None))
        metrics = metric_values.PROCESS.drain()
        if (events or metrics) and not self.closed:
            self._send_nm(P.TaskEvents(events, metrics))

    def _fail_for_good(
        self, spec: TaskSpec, error_blob: bytes, state: TaskState = FAILED, cause: str = "failed"
    ) -> None:
        """Fail a task that will not run again and let go of what it holds (no lock)."""
        self._fail_task(spec, error_blob, state, cause)
        with self.lock:
            self._release_held(spec)

    def _release_held(self, spec: TaskSpec) -> None:
        if spec.return_ids:
            self.running.pop(spec.return_ids[0], None)
        if spec.arg_refs:
            with self._ref_lock:
                for ref in spec.arg_refs:
                    n = self.arg_pins.get(ref.id, 0) - 1
                    if n > 0:
                        self.arg_pins[ref.id] = n
                    else:
                        self.arg_pins.pop(ref.id, None)
            spec.arg_refs = []  # the refs' __del__ queues them for release
        if spec.held:
            self._apply(self.table.unheld(spec.held))
            spec.held = []

    def _push(self, lease: Lease, spec: TaskSpec) -> None:
        if lease.busy is None:
            lease.busy = spec
            lease.mark = time.monotonic()
        else:  # pipelined behind the running one (lease_queue.pipeline)
            lease.queued.append(spec)
        spec.lease = lease
        spec.pushed = True
        task_transition(spec, PUSHED, "pushed to a worker")
        conn = self.peers.get(lease.address)
        if conn is not None and not conn.closed:  # the hot path: the lease's worker is dialled
            try:
                conn.request_async(
                    self._push_message(conn, spec, lease.gpu_ids), _TaskReply(self, lease, spec)
                )
            except ConnectionLost:
                self.lock.defer(self._task_done, lease, spec, ConnectionLost("worker unreachable"))
            return

        def send(conn: Connection) -> None:
            conn.request_async(
                self._push_message(conn, spec, lease.gpu_ids),
                lambda reply: self._task_done(lease, spec, reply),
            )

        self._on_peer(
            lease.address,
            send,
            lambda: self._task_done(lease, spec, ConnectionLost("worker unreachable")),
        )

    def _push_message(self, conn: Connection, spec: TaskSpec, gpu_ids: list[int]) -> P.PushTask:
        blob = None
        if spec.function_id not in conn.sent_functions:
            conn.sent_functions.add(spec.function_id)
            blob = blob_of(spec)
        return P.PushTask(
            spec.task_id,
            spec.name,
            spec.function_id,
            blob,
            spec.args_blob,
            spec.deps,  # resolved all before the push: not changed after
            spec.return_ids,
            self.address,
            spec.actor_id,
            spec.actor_creation,
            gpu_ids,
            self.job_id,
            self.current_task_id,
            spec.actor_options,
            self.namespace,
            spec.generator,
            spec.backpressure,
        )

    def _task_done(self, lease: Lease, spec: TaskSpec, reply: Any) -> None:
        """A normal task finished, or its worker died (runs on a reader thread)."""
        spec.lease = None
        if type(reply) is P.TaskBounced:
            self._bounced(lease, spec)
            return
        if not isinstance(reply, P.TaskDone):
            with self.lock:
                _advance(lease)
                self.leases.pop(lease.lease_id, None)
                if not lease.returned:  # once, where tasks were pipelined on it
                    lease.returned = True
                    self._return_to_nm(lease, True)
                if spec.cancelled:
                    err: Exception = TaskCancelledError(spec.task_id.hex())
                    self.lock.defer(
                        self._fail_for_good, spec, dumps_inline(err), CANCELLED, "cancelled"
                    )
                    return
            # Was it killed by its node's memory monitor? Its node says (Ray's
            # GetWorkerFailureCause): asked only when a worker is lost.
            self._ask_failure_cause(lease, lambda oom: self._worker_lost(lease, spec, oom))
            return
        # The lease's next step once the task is done: run the next queued task, or,
        # where its worker exits now (max_calls), give it back and lease another.
        after = self._lease_exits if reply.worker_exiting else self._after_task
        error = bool(reply.returns) and reply.returns[0].kind == P.ERROR
        if (
            error
            and spec.retry_exceptions
            and spec.max_retries != 0
            and not spec.cancelled
            and not self.closed
            and retryable(spec.retry_exceptions, reply.returns[0].data)
        ):
            with self.lock:
                if self._retry(spec, "it raised an exception it retries"):
                    _advance(lease)
                    self._enqueue(spec)
                    after(lease)
                    return
        lost = self._lost_argument(spec, reply) if error else None
        if lost is not None and self._rebuild_argument(spec, lost):
            with self.lock:
                _advance(lease)
                after(lease)
            return
        returns = reply.returns
        if error and spec.generator == P.GENERATOR_STREAMING:
            returns = self._error_item(spec, returns)  # the exception is its next item
        # One hold of the lock: the task ends, its values are recorded, its lease takes
        # the next queued task; then the values' waiters run.
        adopted = [self._adopt_contained(r.contained) for r in returns]
        with self.lock:
            ready = self._record_returns(spec, error, returns, adopted)
            self._keep_lineage(spec, reply)
            self._release_held(spec)
            _advance(lease)
            after(lease)
        self._finish_returns(returns, ready)

    def _bounced(self, lease: Lease, spec: TaskSpec) -> None:
        """Pipelined behind a task that blocked, `spec` came back unrun: it waits for a
        lease again (no retry spent); the class pipelines no more until a task is quick."""
        with self.lock:
            if spec in lease.queued:
                lease.queued.remove(spec)
            lease.sclass.fast = False
            if spec.state in TASK_ENDED:
                return
            if not spec.cancelled:
                task_transition(spec, QUEUED, "its worker blocked before it began")
                self._enqueue(spec)
                return
        err = dumps_inline(TaskCancelledError(spec.task_id.hex()))
        self._fail_for_good(spec, err, CANCELLED, "cancelled")

    def _ask_failure_cause(self, lease: Lease, then: Callable[[str], None]) -> None:
        """then(message): the node's OutOfMemoryError text if its memory monitor killed
        the lease's worker, "" if not (or the node cannot say)."""
        msg = P.GetWorkerFailureCause(lease.worker_id)

        def answered(reply: Any) -> None:
            then(reply.oom_message if isinstance(reply, P.WorkerFailureCause) else "")

        if self.closed:
            then("")
        elif not lease.nm:
            try:
                self.nm.request_async(msg, answered)
            except ConnectionLost:
                then("")
        else:
            self._on_peer(
                lease.nm, lambda conn: conn.request_async(msg, answered), lambda: then("")
            )

    def _worker_lost(self, lease: Lease, spec: TaskSpec, oom: str) -> None:
        """The worker running `spec` died (`oom`: the node's message if its memory
        monitor killed it): retry the task, or fail it for good (no lock held).

        Killed for memory, a task is retried as on Ray 2.60, without spending a retry
        and after an exponential backoff, unless it was submitted with max_retries=0
        (other failures may have spent its retries since: it is retried all the same);
        else it fails with OutOfMemoryError."""
        if oom:
            retriable = spec.max_retries != 0 or spec.oom_retriable
            if retriable and not spec.cancelled and not self.closed:
                self._retry_after_oom(spec, oom)
                return
            message = with_task(oom, spec.name, spec.task_id.hex())
            self._fail_for_good(
                spec, dumps_inline(OutOfMemoryError(message)), FAILED, "killed for memory"
            )
            return
        with self.lock:
            if self._retry(spec, "its worker died"):
                self._enqueue(spec)
                return
        err = WorkerCrashedError(
            f"The worker (pid={lease.pid}) died while running {spec.name}; no retries left."
        )
        self._fail_for_good(spec, dumps_inline(err), FAILED, "its worker died")

    def _retry_after_oom(self, spec: TaskSpec, oom: str) -> None:
        """Queue `spec` again after Ray's backoff; its retry budget is not spent."""
        attempt = spec.oom_kills
        spec.oom_kills = attempt + 1
        delay = oom_retry_delay_s(attempt, CONFIG.task_oom_retry_delay_base_ms)
        first = oom.partition("\n")[0]
        log.warning(
            "Task %s failed due to oom. There are infinite oom retries remaining, so the "
            "task will be retried in %.1f s. Error: %s",
            spec.name,
            delay,
            first,
        )
        with self.lock:
            task_transition(spec, FAILED, "killed for memory")
            task_transition(spec, QUEUED, "retry after oom")

        def again() -> None:
            with self.lock:
                if spec.cancelled or self.closed:
                    cancelled = True
                else:
                    cancelled = False
                    self._enqueue(spec)
            if cancelled:
                err: Exception = TaskCancelledError(spec.task_id.hex())
                self._fail_for_good(spec, dumps_inline(err), CANCELLED, "cancelled")

        if delay > 0:
            self.timers.call_later(delay, again)
        else:
            again()

    def _answered(self, spec: TaskSpec, error: bool) -> None:
        """Its worker sent the returns: the task has ended (lock held)."""
        if spec.state in TASK_ENDED:
            return  # cancelled as the reply came: its returns are TaskCancelledError already
        if not error:
            task_transition(spec, FINISHED, "its worker sent the returns")
        elif spec.cancelled:
            task_transition(spec, CANCELLED, "cancelled while it ran")
        else:
            task_transition(spec, FAILED, "it raised")

    def _retry(self, spec: TaskSpec, cause: str) -> bool:
        """An attempt failed: if a retry is left, spend it and queue the task again (the
        caller enqueues it); False if it fails for good (lock held)."""
        if not retry_task(spec, cause, self.closed):
            return False
        if spec.max_retries == 0:  # its last retry spent: memory kills still retry (Ray)
            spec.oom_retriable = True
        return True

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool = True) -> None:
        """Cancel the task that makes `ref`: dequeue it, interrupt it, or kill its worker."""
        with self.lock:
            spec = self.running.get(ref.id)
            if spec is None or spec.cancelled:
                return  # finished already (or not a task's first return): nothing to do
            if force and spec.actor_id is not None:
                raise ValueError("force=True is not supported for actor tasks.")
            spec.cancelled = True
            spec.max_retries = 0
            lease = spec.lease
            sent_to = None  # an actor call the actor has: the actor cancels it
            if lease is None:  # not running: take it out of the queues
                self.queues.dequeue(spec)
                client = self.actors.get(spec.actor_id) if spec.actor_id else None
                if client is not None and spec in client.queue:
                    client.queue.remove(spec)
                elif client is not None and spec in client.inflight and client.conn is not None:
                    # Sent: the actor cancels it (an async call) or marks it (a sync one).
                    sent_to = client.conn
        if sent_to is not None:
            with contextlib.suppress(ConnectionLost):
                sent_to.send(P.CancelTask(spec.task_id, recursive))
            return
        if lease is None:
            if spec.actor_id is None or spec.unresolved or client is not None:
                err = dumps_inline(TaskCancelledError(spec.task_id.hex()))
                self._fail_for_good(spec, err, CANCELLED, "cancelled")
            return
        if force:
            self._return_to_nm(lease, True)  # kills the worker
        else:
            try:
                self.peer(lease.address).send(P.CancelTask(spec.task_id, recursive))
            except ConnectionLost:
                pass


def _advance(lease: Lease) -> None:
    """The lease's running task ended: the next pushed to it runs now, if any."""
    lease.busy = lease.queued.pop(0) if lease.queued else None


def _large(value: Any) -> bool:
    """An argument over the inline limit (arrays and byte strings by their size)."""
    if isinstance(value, ObjectRef) or value is DEP:
        return False
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes > CONFIG.inline_threshold
    if isinstance(value, (bytes, bytearray, str)):
        return len(value) > CONFIG.inline_threshold
    return _size(*pickle_args(value)) > CONFIG.inline_threshold  # buffers measured, not copied


# What a task's inline arguments may weigh: half a frame (the function, pickled once
# per connection, may take the other half: serialization.MAX_FUNCTION_SIZE).
MAX_ARGS_SIZE = MAX_FRAME // 2


def _size(meta: bytes, views: list[memoryview]) -> int:
    return len(meta) + sum(v.nbytes for v in views) if views else len(meta)


def _argument_error(blob: bytes, task_name: str) -> bytes:
    """A task whose argument failed fails with Ray's wrapper around that error."""
    try:
        err = loads_inline(blob)
    except Exception:  # its class does not load here: pass it on as it is
        return blob
    if not isinstance(err, RayTaskError):
        return blob  # lost, cancelled, an actor's death: passed on as they are
    return dumps_inline(err.argument_failed(task_name))
