"""Per-process client: submit tasks, own objects, resolve refs, talk to actors.

Every driver and worker runs one CoreWorker. It is the owner (Ray's ownership
model) of the objects it creates: `put` values and the results of tasks it submits.

    user thread ──submit──▶ CoreWorker ──RequestLease──▶ node manager
                              │   ◀──LeaseGranted (worker address)──
                              ├──PushTask──▶ leased worker ──TaskDone──▶ (reader thread)
                              └──GetObject──▶ owner of a borrowed ref ──ObjectValue──▶

Threads: user threads call in and send straight from their own thread; one reader
thread per connection handles replies and inbound requests; one timer thread gives
back idle leases. `self.lock` guards all scheduling and ownership state; it is
never held while waiting for the network. Callbacks registered with `_when_ready`
run without the lock.

Reference counting (Ray's ownership protocol, simplified):
- Each process counts its live ObjectRef instances per object id.
- A process that holds a ref it does not own is a *borrower*: the first instance
  registers it with the owner (AddBorrower, acknowledged before the borrower goes
  on), the last one to go unregisters it (RemoveBorrower).
- Refs pickled into task arguments are kept by the task spec until the task ends;
  the executing worker registers its own borrow before it replies.
- Refs inside a stored object are kept by the object's entry (`contains`); refs
  inside a task's return value are registered by the worker on the caller's behalf
  before it replies, and the caller keeps them with the returned object.
- The owner frees an object when no local instance, borrower, pending task or
  containing object remains: inline values are dropped, store segments are freed
  through the node manager (which also deletes spill files).
"""

from __future__ import annotations

import collections
import contextvars
import heapq
import itertools
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import object_ref as _object_ref
from . import protocol as P
from .config import CONFIG, from_units
from .exceptions import (
    ActorDiedError,
    ConnectionLost,
    GetTimeoutError,
    ObjectLostError,
    ObjectStoreFullError,
    OwnerDiedError,
    RayTaskError,
    TaskCancelledError,
    TaskUnschedulableError,
    WorkerCrashedError,
)
from .object_ref import ObjectRef, new_id
from .object_store import ObjectStore
from .serialization import dumps_inline, loads_inline, serialize
from .transport import Connection, Listener

log = logging.getLogger("raylite")

PENDING = None  # entry.kind while the value is not there yet
RELEASED = -1  # entry.kind once nothing refers to the value but a kept lineage needs its recipe
MAX_PENDING_EVENTS = 1000  # waiting tasks an owner reports per flush period
_CURRENT_TASK: contextvars.ContextVar[bytes | None] = contextvars.ContextVar(
    "raylite_current_task", default=None
)


class _Dep:
    """Placeholder for a top-level ObjectRef argument, filled in by the worker."""

    __slots__ = ()

    def __reduce__(self) -> Any:
        return (_Dep, ())


_DEP = _Dep()


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
        self.waiters: list[Callable[[int, Any], None]] = []
        self.seq = 0  # completion order, for wait()
        self.held = 0  # pending tasks that read this value from the store
        self.borrowers: dict[str, int] = {}  # borrower address -> registrations
        self.contains: list[ObjectRef] = []  # refs pickled inside this value
        self.lineage: TaskSpec | None = None  # the task to rerun if the value is lost
        self.lineage_refs = 0  # kept lineages that read this object: its recipe must stay


@dataclass(eq=False)
class TaskSpec:
    task_id: bytes
    name: str
    function_id: bytes
    function_blob: Callable[[], bytes] | None
    args_blob: bytes
    return_ids: list[bytes]
    shape: dict[str, int]
    shape_key: tuple[tuple[str, int], ...]
    max_retries: int
    retry_exceptions: Any  # bool, or a tuple of exception classes to retry
    actor_id: bytes | None = None
    actor_creation: bool = False
    deps: list[list[Any]] = field(default_factory=list)
    unresolved: int = 0
    held: list[bytes] = field(default_factory=list)
    arg_refs: list[ObjectRef] = field(default_factory=list)  # pinned until the task ends
    actor_options: dict[str, Any] | None = None
    cancelled: bool = False
    incarnation: int = 0  # which life of its actor the call was sent to
    lease: Any = None  # the lease it was pushed on, while it runs
    failed: bool = False
    strategy: Any = None  # scheduling_strategy as sent to node managers
    rebuildable: bool = False  # rerunning it rebuilds its value (see submit_task)
    dep_ids: list[tuple[Any, bytes, str]] = field(
        default_factory=list
    )  # ref args: (position, id, owner)
    lineage_pinned: bool = False  # counted in its arguments' lineage_refs
    lineage_holders: int = 0  # its return entries that keep it as their lineage
    nested_ids: list[bytes] = field(default_factory=list)  # refs inside its arguments
    kept_refs: list[ObjectRef] = field(default_factory=list)  # borrowed args, kept for a rerun
    rerunning: bool = False  # rerun to rebuild a lost return: the others come with it
    pushed: bool = False  # sent to a worker at least once (its worker reports it from then)
    submitted: float = 0.0  # time.time() at submission
    parent: bytes | None = None  # the task that submitted it


def _lineage_args(spec: TaskSpec) -> list[bytes]:
    """The owned objects a kept lineage needs to run its task again."""
    return [dep for _, dep, _ in spec.dep_ids] + spec.nested_ids


class Lease:
    __slots__ = (
        "address",
        "busy",
        "gpu_ids",
        "lease_id",
        "nm",
        "node_id",
        "pid",
        "returned",
        "sclass",
        "timer",
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
        self.timer: Any = None


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


class ActorClient:
    """This process's view of one actor: where it is and calls not yet sent."""

    __slots__ = (
        "actor_id",
        "address",
        "alive",
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
        "restarting",
        "restarts_left",
        "retry_buffer",
    )

    def __init__(self, actor_id: bytes, class_name: str) -> None:
        self.actor_id = actor_id
        self.class_name = class_name
        self.address: str | None = None
        self.conn: Connection | None = None
        self.queue: collections.deque[TaskSpec] = collections.deque()
        self.dead_cause: str | None = None
        self.lease: Lease | None = None
        self.resolving = False
        self.creator = False
        self.alive = False
        # Restarts (owner side): budget left (-1: unlimited), the creation task to
        # rerun, calls sent and not answered, calls to resend after the restart.
        self.restarts_left = 0
        self.restarting = False
        self.incarnation = 0
        self.creation_spec: TaskSpec | None = None
        self.inflight: list[TaskSpec] = []
        self.retry_buffer: list[TaskSpec] = []
        self.failed_address: str | None = None
        self.creation_ref: ObjectRef | None = None


class _Timers:
    """One thread running delayed callbacks (idle lease return, event flushes)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="raylite-timers", daemon=True)
        self._thread.start()

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), fn))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception:
                log.exception("timer callback failed")

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)


class CoreWorker(_object_ref._Hooks):
    def __init__(
        self,
        *,
        mode: str,
        node_address: str,
        token: bytes,
        session_dir: str,
        worker_id: bytes | None = None,
        job_id: bytes | None = None,
        log_to_driver: bool = True,
        namespace: str | None = None,
        task_handler: Callable[[Connection, P.PushTask, int], None] | None = None,
        nm_handler: Callable[[Connection, Any, int], None] | None = None,
        listen_ip: str | None = None,
    ) -> None:
        self.mode = mode
        self.token = token
        self.worker_id = worker_id or new_id()
        self.namespace = namespace
        self.log_to_driver = log_to_driver
        self.lock = threading.RLock()
        self.objects: dict[bytes, ObjectEntry] = {}
        self.local_refs: dict[bytes, int] = {}
        self.preregistered: set[bytes] = set()  # borrows a sender registered for us
        self.borrowed_owner: dict[bytes, str] = {}  # borrowed id -> owner (while we hold it)
        self.arg_pins: dict[bytes, int] = {}  # refs held by pending tasks' arguments
        self.running: dict[bytes, TaskSpec] = {}  # first return id -> unfinished task
        self._collecting = threading.local()
        self._ref_lock = threading.Lock()
        self._released: collections.deque[bytes] = collections.deque()
        # Owner task events: TaskSpecs submitted (reported if they still wait at the next
        # flush) and events of tasks that ended here without a worker.
        self._events: collections.deque[Any] = collections.deque()
        self._events_scheduled = False
        self._completion = itertools.count(1)
        self.classes: dict[tuple[tuple[str, int], ...], SchedulingClass] = {}
        self.leases: dict[bytes, Lease] = {}
        self.actors: dict[bytes, ActorClient] = {}
        self.peers: dict[str, Connection] = {}
        self._peer_lock = threading.Lock()
        self.closed = False
        self.timers = _Timers()
        # Execution context, set by the worker loop around each task. The task id is
        # per thread and per asyncio task (a context variable): threaded and async
        # actors run several calls at once.
        self.current_actor_id: bytes | None = None
        self.current_gpu_ids: list[int] = []
        self.current_task_name: str | None = None
        self.blocked_depth = 0
        # Set before registering: the node manager may lease us out at once.
        self.on_task_pushed = task_handler
        self.on_nm_message = nm_handler
        self.on_cancel_task: Callable[[bytes, bool], None] | None = None
        # Tasks submitted from inside a running task: its id -> their first return ids
        # (cancel(recursive=True) follows them). Emptied when the task ends.
        self.children: dict[bytes, list[bytes]] = {}

        # On a cluster node, other nodes' processes call us: listen on TCP there.
        if listen_ip:
            address = f"tcp:{listen_ip}:0"
        else:
            address = f"unix:{session_dir}/{mode[0]}-{self.worker_id.hex()}.sock"
        self.listener = Listener(address, token, self._handle_inbound)
        self.address = self.listener.address
        self.nm = Connection.connect(
            node_address, token, self._handle_nm, name="node-manager", on_close=self._nm_lost
        )
        reg = self.nm.request(
            P.RegisterClient(mode, self.worker_id, os.getpid(), self.address, job_id), timeout=30
        )
        self.node_id: bytes = reg.node_id
        self.job_id: bytes = reg.job_id
        self.node_address = node_address
        self.node_info = reg.info
        self.node_tcp: str = reg.info.get("tcp_address", "")  # "": a single-node session
        self.store = ObjectStore(reg.store_dir, reg.info.get("spill_dir"))
        self.store.on_spilled_read = lambda oid: self._send_nm(P.ObjectRestored(oid))
        self.store.on_mapped = self._on_mapped
        self._unmapped: collections.deque[bytes] = collections.deque()
        _object_ref.set_hooks(self)
        self.timers.call_later(0.1, self._release_loop)

    @property
    def current_task_id(self) -> bytes | None:
        return _CURRENT_TASK.get()

    @current_task_id.setter
    def current_task_id(self, task_id: bytes | None) -> None:
        _CURRENT_TASK.set(task_id)

    def _release_loop(self) -> None:
        """Free what dropped refs released even while the program makes no calls."""
        if self.closed:
            return
        self._process_released()
        self.timers.call_later(0.1, self._release_loop)

    # ------------------------------------------------------------------ refs
    def add_local_ref(self, ref: ObjectRef) -> None:
        oid = ref.id
        with self._ref_lock:
            n = self.local_refs.get(oid, 0)
            self.local_refs[oid] = n + 1
            if n or ref.owner == self.address or self.closed:
                return
            self.borrowed_owner[oid] = ref.owner
            if oid in self.preregistered:
                self.preregistered.discard(oid)
                return
        self._register_borrow(ref)

    def _register_borrow(self, ref: ObjectRef) -> None:
        """Tell the owner we borrow `ref`; waits for the ack unless on a reader thread."""
        try:
            conn = self.peer(ref.owner)
            msg = P.AddBorrower(ref.id, self.address)
            if threading.current_thread().name.startswith("raylite-conn"):
                conn.send(msg)
            else:
                conn.request(msg, timeout=30)
        except (ConnectionLost, TimeoutError):
            pass  # the owner is gone: get() will say so

    def _on_mapped(self, oid: bytes, mm: Any) -> None:
        """The node manager must not recycle a segment's memory while we map it.

        An owner's own FreeObject travels on this same connection, after this
        message, so it need not wait; a borrower's free comes through the owner,
        on another connection, so a borrower waits for the acknowledgement.
        """
        try:
            if oid in self.objects:
                self.nm.send(P.ObjectMapped(oid))
            else:
                self.nm.request(P.ObjectMapped(oid), timeout=30)
        except (ConnectionLost, TimeoutError):
            return
        weakref.finalize(mm, self._unmapped.append, oid)  # runs when the last view dies

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

    def on_add_borrower(self, conn: Connection, msg: P.AddBorrower, rid: int) -> None:
        with self.lock:
            entry = self.objects.get(msg.object_id)
            if entry is not None:
                entry.borrowers[msg.borrower] = entry.borrowers.get(msg.borrower, 0) + 1
        conn.reply(rid, P.Ok())

    def on_remove_borrower(self, msg: P.RemoveBorrower) -> None:
        with self.lock:
            entry = self.objects.get(msg.object_id)
            if entry is None:
                return
            n = entry.borrowers.get(msg.borrower, 0) - 1
            if n > 0:
                entry.borrowers[msg.borrower] = n
            else:
                entry.borrowers.pop(msg.borrower, None)
                self._maybe_free(msg.object_id)
        self._process_released()

    def _actor_process_died(self, address: str) -> None:
        """An actor we created lived at `address`: restart it now, not at the next call."""
        for client in list(self.actors.values()):
            with self.lock:  # the check and the incarnation it saw, together
                here = client.creator and client.address == address
                incarnation = client.incarnation
            if here and client.dead_cause is None:
                if client.restarts_left != 0:
                    self._restart_actor(client, incarnation)
                else:
                    self._actor_died(
                        client,
                        f"The actor {client.class_name}'s worker process died unexpectedly "
                        "(the process crashed or was killed).",
                        report=True,
                    )

    def _node_died(self, msg: P.NodeDied) -> None:
        """A node is gone: what ran there is retried, what was stored only there is rebuilt.

        Connections to its processes are closed now (a cut-off node never closes them),
        which fails their calls into the usual paths: task retries, actor restarts.
        """
        prefix = "" if msg.ip.startswith("127.") else f"tcp:{msg.ip}:"

        def there(address: str | None) -> bool:
            return bool(address) and (
                address == msg.address or bool(prefix and address.startswith(prefix))  # type: ignore[union-attr]
            )

        with self.lock:
            on_node = {
                lease.address for lease in self.leases.values() if lease.node_id == msg.node_id
            }
            for sc in self.classes.values():
                sc.idle = [lease for lease in sc.idle if lease.node_id != msg.node_id]
            actors = [
                c.address
                for c in self.actors.values()
                if c.creator and (there(c.address) or (c.lease and c.lease.node_id == msg.node_id))
            ]
            lost = [
                oid
                for oid, entry in self.objects.items()
                if entry.kind == P.IN_STORE
                and isinstance(entry.data, list)
                and entry.data[1] == msg.address
            ]
        for address, conn in list(self.peers.items()):
            if there(address) or address in on_node:
                conn.close(join=False)
        for address in actors:
            if address:
                self._actor_process_died(address)
        for oid in lost:
            self._object_lost(oid, f"its node {msg.address} died ({msg.cause})")

    def _object_lost(self, oid: bytes, why: str) -> None:
        """The only copy of an owned object is gone: rerun the task that made it, or fail."""
        with self.lock:
            spec = self._take_lineage(oid, why)
            if spec is not None:
                log.info("rebuilding object %s: %s", oid.hex()[:12], why)
                self._resubmit(spec)
        self._complete_waiters(oid)

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
        if spec is not None and spec.max_retries != 0 and not self.closed:
            if spec.max_retries > 0:
                spec.max_retries -= 1
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
            spec.failed, spec.cancelled, spec.deps = False, False, []
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
        if not spec.lineage_pinned and all(r[1] != P.IN_STORE for r in reply.returns):
            spec.rerunning = False  # small values only: the owner holds them, no lineage
            return
        with self.lock:
            spec.rerunning = False
            for oid, kind, _, _ in reply.returns:
                entry = self.objects.get(oid)
                stored = entry is not None and entry.kind == P.IN_STORE == kind
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
        if not spec.dep_ids or not reply.returns or reply.returns[0][1] != P.ERROR:
            return None
        try:
            err = loads_inline(reply.returns[0][2])
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
                or spec.max_retries == 0
                or spec.cancelled
                or self.closed
            ):
                return False
            if spec.max_retries > 0:
                spec.max_retries -= 1
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
        for cb in waiters:
            try:
                cb(kind, data)
            except Exception:
                log.exception("object waiter failed")

    def _drop_borrower(self, address: str) -> None:
        """A borrower died: its borrows will never be returned."""
        with self.lock:
            for oid, entry in list(self.objects.items()):
                if entry.borrowers.pop(address, None):
                    self._maybe_free(oid)
        self._process_released()

    def _process_released(self) -> None:
        unmapped = self._unmapped
        while unmapped:
            self._send_nm(P.ObjectUnmapped(unmapped.popleft()))
        released = self._released
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
                    if owner is not None and not self.closed:
                        try:
                            self.peer(owner).send(P.RemoveBorrower(oid, self.address))
                        except ConnectionLost:
                            pass
            if not to_free:
                return
            with self.lock:
                for oid in to_free:
                    if oid in self.objects:
                        self._maybe_free(oid)

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
        for dep in _lineage_args(spec):
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
        for dep in _lineage_args(spec):
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
        try:
            self.peer(holder).send(P.FreeObject(oid))
        except ConnectionLost:
            pass  # that node is gone, and its store with it

    # --------------------------------------------------------------- connections
    def peer(self, address: str) -> Connection:
        conn = self.peers.get(address)
        if conn is not None and not conn.closed:
            return conn
        with self._peer_lock:
            conn = self.peers.get(address)
            if conn is None or conn.closed:
                conn = Connection.connect(
                    address,
                    self.token,
                    self._handle_inbound,
                    name=address,
                    on_close=self._peer_lost,
                )
                self.peers[address] = conn
        return conn

    def _peer_lost(self, conn: Connection) -> None:
        with self._peer_lock:
            if self.peers.get(conn.name) is conn:
                del self.peers[conn.name]

    def _nm_lost(self, conn: Connection) -> None:
        if not self.closed and self.mode == "worker":
            os._exit(1)  # the node is gone: nothing left to work for

    def _handle_nm(self, conn: Connection, msg: Any, rid: int) -> None:
        if isinstance(msg, P.LogLines):
            if self.log_to_driver:
                _print_log_lines(msg.lines)
        elif isinstance(msg, P.LeaseInfeasible):
            self._warn_infeasible(msg)
        elif isinstance(msg, P.ClientDied):
            self._drop_borrower(msg.address)
            self._actor_process_died(msg.address)
        elif isinstance(msg, P.NodeDied):
            self._node_died(msg)
        elif self.on_nm_message is not None:
            self.on_nm_message(conn, msg, rid)

    def _handle_inbound(self, conn: Connection, msg: Any, rid: int) -> None:
        if isinstance(msg, P.PushTask):
            if self.on_task_pushed is None:
                conn.reply(rid, P.Failed("this process does not run tasks"))
            else:
                self.on_task_pushed(conn, msg, rid)
        elif isinstance(msg, P.GetObject):
            self._serve_object(conn, msg.object_id, rid)
        elif isinstance(msg, P.CancelTask):
            if self.on_cancel_task is not None:
                self.on_cancel_task(msg.task_id, msg.recursive)
        elif isinstance(msg, P.AddBorrower):
            self.on_add_borrower(conn, msg, rid)
        elif isinstance(msg, P.RemoveBorrower):
            self.on_remove_borrower(msg)
        else:
            log.warning("unexpected message %s", type(msg).__name__)

    def _serve_object(self, conn: Connection, oid: bytes, rid: int) -> None:
        def answer(kind: int, data: Any) -> None:
            try:
                conn.reply(rid, P.ObjectValue(oid, kind, data))
            except ConnectionLost:
                pass

        with self.lock:
            entry = self.objects.get(oid)
            if entry is None:
                err = ObjectLostError(oid.hex(), f"Object {oid.hex()} was freed by its owner.")
                answer(P.ERROR, dumps_inline(err))
                return
            if entry.kind == RELEASED:  # a rerun task reads a ref nested in its arguments
                spec = self._take_lineage(oid, "a rebuilt task asked for it")
                if spec is not None:
                    self._resubmit(spec)
            if entry.kind is PENDING:
                entry.waiters.append(answer)
                return
            kind, data = entry.kind, entry.data
        answer(kind, data)

    # ----------------------------------------------------------------- objects
    def put(self, value: Any) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise TypeError(
                "Calling 'put' on an ObjectRef is not allowed. If you really want to do "
                "this, wrap it in a list: put([ref])."
            )
        self._process_released()
        oid = new_id()
        sv, contained = self.serialize_collecting(serialize, value)
        entry = ObjectEntry()
        entry.kind, entry.data = self.store_serialized(oid, sv)
        entry.contains = contained
        entry.seq = next(self._completion)
        with self.lock:
            self.objects[oid] = entry
        return ObjectRef(oid, self.address)

    def store_serialized(self, oid: bytes, sv: Any) -> tuple[int, Any]:
        """(kind, data) for a value: inline bytes, or a segment the node manager made room for."""
        if sv.size <= CONFIG.inline_threshold:
            return P.INLINE, sv.inline()
        size = self.store.segment_size(sv)
        reply = self.nm.request(P.ReserveObject(oid, size, self.address), timeout=None)
        if isinstance(reply, P.Failed):
            raise ObjectStoreFullError(reply.reason)
        size = self.store.put(oid, sv, reply.directory, reply.prealloc)
        # On a cluster the value says which node holds it: [size, node manager address].
        return P.IN_STORE, [size, self.node_tcp] if self.node_tcp else size

    def _complete(self, oid: bytes, kind: int, data: Any, contained: Any = ()) -> None:
        """Record an owned object's value and run its waiters (call without lock)."""
        refs = self._adopt_contained(contained)
        with self.lock:
            entry = self.objects.get(oid)
            if entry is None or entry.kind is not PENDING:
                if kind == P.IN_STORE and (entry is None or self._elsewhere(entry, data)):
                    self._free_segment(oid, data)  # nobody's, or a rerun's second copy
                return
            entry.kind, entry.data = kind, data
            entry.contains = refs
            entry.seq = next(self._completion)
            waiters, entry.waiters = entry.waiters, []
        for cb in waiters:
            try:
                cb(kind, data)
            except Exception:
                log.exception("object waiter failed")
        if oid not in self.local_refs:
            with self.lock:
                self._maybe_free(oid)

    @staticmethod
    def _elsewhere(entry: ObjectEntry, data: Any) -> bool:
        """A rerun stored this return again, on another node than the copy in use (or
        the entry's value was released): that copy is extra."""
        if entry.kind == RELEASED:
            return True
        if entry.kind != P.IN_STORE:
            return False
        held = entry.data[1] if isinstance(entry.data, list) else ""
        new = data[1] if isinstance(data, list) else ""
        return held != new

    def _adopt_contained(self, contained: Any) -> list[ObjectRef]:
        """Refs inside a task's return value; the worker registered our borrows already."""
        if not contained:
            return []
        extra = []
        with self._ref_lock:
            for oid, owner in contained:
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
        return [ObjectRef(oid, owner) for oid, owner in contained]

    def _when_ready(self, ref: ObjectRef, callback: Callable[[int, Any], None]) -> int:
        """Call back with (kind, data) once the value exists; returns its seq if ready now."""
        oid = ref.id
        if ref.owner == self.address:
            with self.lock:
                entry = self.objects.get(oid)
                if entry is not None and entry.kind is PENDING:
                    entry.waiters.append(callback)
                    return 0
            if entry is None:
                err = ObjectLostError(oid.hex(), f"Object {oid.hex()} was already freed.")
                callback(P.ERROR, dumps_inline(err))
                return 0
            callback(entry.kind, entry.data)
            return entry.seq

        def on_reply(reply: Any) -> None:
            if isinstance(reply, P.ObjectValue):
                callback(reply.kind, reply.data)
            else:
                err = OwnerDiedError(
                    oid.hex(),
                    f"Object {oid.hex()} is lost: its owner ({ref.owner}) died or is unreachable.",
                )
                callback(P.ERROR, dumps_inline(err))

        try:
            self.peer(ref.owner).request_async(P.GetObject(oid), on_reply)
        except ConnectionLost:
            on_reply(None)
        return 0

    def _value(self, oid: bytes, kind: int, data: Any) -> Any:
        if kind == P.INLINE:
            return loads_inline(data)
        if kind == P.IN_STORE:
            holder = data[1] if isinstance(data, list) else ""
            if holder and holder != self.node_tcp and not self.store.contains(oid):
                self._fetch(oid, data)
            return self.store.get(oid)
        err = loads_inline(data)
        if isinstance(err, RayTaskError):
            raise err.as_instanceof_cause()
        raise err

    def _fetch(self, oid: bytes, data: list[Any]) -> None:
        """Have our node manager pull an object from the node that holds it."""
        size, holder = data[0], data[1]
        try:
            reply = self.nm.request(P.FetchObject(oid, holder, size, ""), timeout=None)
        except ConnectionLost as exc:
            raise ObjectLostError(oid.hex(), f"Object {oid.hex()} is lost: {exc}") from exc
        if isinstance(reply, P.Failed):
            raise ObjectLostError(
                oid.hex(),
                f"Object {oid.hex()} is lost: it could not be fetched from {holder} "
                f"({reply.reason}).",
            )

    def get(self, refs: list[ObjectRef], timeout: float | None) -> list[Any]:
        self._process_released()
        n = len(refs)
        results: list[Any] = [None] * n
        done = [False] * n
        remaining = [n]
        event = threading.Event()
        lock = threading.Lock()

        def make_cb(i: int) -> Callable[[int, Any], None]:
            def cb(kind: int, data: Any) -> None:
                with lock:
                    if done[i]:
                        return
                    done[i] = True
                    results[i] = (kind, data)
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        event.set()

            return cb

        for i, ref in enumerate(refs):
            if not isinstance(ref, ObjectRef):
                raise TypeError(
                    f"get() expects an ObjectRef or a list of ObjectRefs, got {type(ref).__name__}"
                )
            self._when_ready(ref, make_cb(i))
        if remaining[0]:
            self._wait_blocking(event, timeout, n)
        return [self._value_or_rebuild(refs[i], results[i], timeout) for i in range(n)]

    def _value_or_rebuild(
        self, ref: ObjectRef, result: tuple[int, Any], timeout: float | None
    ) -> Any:
        """The value; if its only copy turns out lost and we own it, rebuild it (lineage).

        The owner hears of a dead node from the head, but a reader may find the copy
        gone first (its fetch fails): then the rebuild starts here.
        """
        for _ in range(3):
            try:
                return self._value(ref.id, *result)
            except ObjectLostError:
                if ref.owner != self.address or result[0] != P.IN_STORE:
                    raise
                with self.lock:
                    entry = self.objects.get(ref.id)
                    rebuildable = entry is not None and (
                        entry.kind is PENDING or entry.lineage is not None
                    )
                if not rebuildable:
                    raise
                self._object_lost(ref.id, "its copy could not be fetched")
                result = self.get_raw(ref, timeout)
        return self._value(ref.id, *result)

    def get_raw(self, ref: ObjectRef, timeout: float | None) -> tuple[int, Any]:
        """(kind, data) of one ref once it is there."""
        box: list[tuple[int, Any]] = []
        event = threading.Event()

        def cb(kind: int, data: Any) -> None:
            box.append((kind, data))
            event.set()

        self._when_ready(ref, cb)
        if not box:
            self._wait_blocking(event, timeout, 1)
        return box[0]

    def _wait_blocking(self, event: threading.Event, timeout: float | None, n: int) -> None:
        self._notify_blocked()
        try:
            if not event.wait(timeout):
                raise GetTimeoutError(
                    f"Get timed out: some of the {n} object(s) were not ready after {timeout} s."
                )
        finally:
            self._notify_unblocked()

    def _notify_blocked(self) -> None:
        # A task that waits gives its CPU back, so nested tasks can run.
        if self.mode == "worker" and self.current_task_id is not None:
            self.blocked_depth += 1
            if self.blocked_depth == 1:
                self.nm.send(P.NotifyBlocked())

    def _notify_unblocked(self) -> None:
        if self.mode == "worker" and self.current_task_id is not None:
            self.blocked_depth -= 1
            if self.blocked_depth == 0:
                self.nm.send(P.NotifyUnblocked())

    def wait(
        self, refs: list[ObjectRef], num_returns: int, timeout: float | None
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        self._process_released()
        order: list[tuple[int, int]] = []  # (seq, index)
        cond = threading.Condition()
        arrivals = itertools.count(1 << 40)  # after anything ready at call time

        def make_cb(i: int) -> Callable[[int, Any], None]:
            def cb(kind: int, data: Any) -> None:
                with cond:
                    if any(j == i for _, j in order):
                        return
                    order.append((next(arrivals), i))
                    cond.notify_all()

            return cb

        for i, ref in enumerate(refs):
            seq = self._when_ready(ref, make_cb(i))
            if seq:
                with cond:
                    for k, (_, j) in enumerate(order):
                        if j == i:
                            order[k] = (seq, i)
        deadline = None if timeout is None else time.monotonic() + timeout
        with cond:
            if len(order) < num_returns:
                self._notify_blocked()
                try:
                    while len(order) < num_returns:
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            break
                        cond.wait(left)
                finally:
                    self._notify_unblocked()
            chosen = sorted(order)[:num_returns]
        ready_idx = [i for _, i in chosen]
        ready_set = set(ready_idx)
        return [refs[i] for i in ready_idx], [r for i, r in enumerate(refs) if i not in ready_set]

    # ------------------------------------------------------------------- tasks
    def _prepare(
        self, spec: TaskSpec, args: tuple, kwargs: dict, name: str
    ) -> list[tuple[Any, ObjectRef]]:
        """Pickle the arguments; top-level refs become placeholders resolved by position."""
        deps: list[tuple[Any, ObjectRef]] = []
        if any(isinstance(a, ObjectRef) for a in args):
            plain = []
            for i, a in enumerate(args):
                if isinstance(a, ObjectRef):
                    deps.append((i, a))
                    plain.append(_DEP)
                else:
                    plain.append(a)
            args = tuple(plain)
        if kwargs and any(isinstance(v, ObjectRef) for v in kwargs.values()):
            kwargs = dict(kwargs)
            for k, v in kwargs.items():
                if isinstance(v, ObjectRef):
                    deps.append((k, v))
                    kwargs[k] = _DEP
        try:
            spec.args_blob, nested = self.serialize_collecting(dumps_inline, (args, kwargs))
        except Exception as exc:
            raise _unserializable_argument(args, kwargs, name, exc) from exc
        spec.arg_refs = nested + [ref for _, ref in deps]
        if spec.arg_refs:
            with self._ref_lock:
                for ref in spec.arg_refs:
                    self.arg_pins[ref.id] = self.arg_pins.get(ref.id, 0) + 1
        return deps

    def submit_task(
        self,
        *,
        name: str,
        function_id: bytes,
        function_blob: Callable[[], bytes],
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
    ) -> list[ObjectRef]:
        self._process_released()
        task_id = new_id()
        return_ids = [new_id() for _ in range(num_returns)]
        key: tuple[Any, ...] = tuple(sorted(shape.items()))
        if strategy is not None:  # its own leases: SPREAD must not reuse one worker
            key += (("@strategy", repr(strategy)),)
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
        deps = self._prepare(spec, args, kwargs, name)
        spec.dep_ids = [(position, ref.id, ref.owner) for position, ref in deps]
        if len(spec.arg_refs) > len(deps):  # the worker gets these itself when it runs
            spec.nested_ids = [r.id for r in spec.arg_refs[: len(spec.arg_refs) - len(deps)]]
        # Lineage: a task can be rerun to rebuild its value if its arguments can be had
        # again: plain values, refs this process owns, at the top level or nested
        # (rebuilt first, or when the rerun asks for them, if they are lost too), and
        # borrowed refs, which the kept lineage goes on borrowing (kept_refs).
        spec.rebuildable = not actor_creation and num_returns >= 1 and max_retries != 0
        spec.submitted = time.time()
        spec.parent = self.current_task_id
        self._events.append(spec)  # reported at the next flush if it still waits
        self._schedule_events()
        with self.lock:
            for oid in return_ids:
                self.objects[oid] = ObjectEntry()
            if return_ids:
                self.running[return_ids[0]] = spec
        refs = [ObjectRef(oid, self.address) for oid in return_ids]
        parent = self.current_task_id
        if parent is not None and return_ids and actor_id is None:
            self.children.setdefault(parent, []).append(return_ids[0])
        spec.unresolved = len(deps) + 1
        if actor_id is not None and not actor_creation:
            client = self.actors[actor_id]
            with self.lock:
                client.queue.append(spec)
        for position, ref in deps:
            self._when_ready(ref, self._dep_callback(spec, position, ref))
        self._dep_resolved(spec)  # the +1 above: resolves only after all callbacks registered
        return refs

    def _dep_callback(
        self, spec: TaskSpec, position: Any, ref: ObjectRef
    ) -> Callable[[int, Any], None]:
        def cb(kind: int, data: Any) -> None:
            if kind == P.ERROR:
                self._fail_task(spec, data)
            else:
                if kind == P.IN_STORE and ref.owner == self.address:
                    with self.lock:
                        entry = self.objects.get(ref.id)
                        if entry is not None:
                            entry.held += 1
                            spec.held.append(ref.id)
                spec.deps.append([position, kind, data, ref.id])
            self._dep_resolved(spec)

        return cb

    def _dep_resolved(self, spec: TaskSpec) -> None:
        with self.lock:
            spec.unresolved -= 1
            if spec.unresolved or spec.failed:
                if spec.failed and not spec.unresolved:
                    self._release_held(spec)
                return
            if spec.actor_id is None:
                self._enqueue(spec)
                return
            client = self.actors[spec.actor_id]
        if spec.actor_creation:
            self._schedule_actor_creation(spec, client)
        else:
            self._flush_actor(client)

    def _fail_task(self, spec: TaskSpec, error_blob: bytes) -> None:
        with self.lock:
            if spec.failed:
                return
            spec.failed = True
            spec.rerunning = False
            for dep in self._unpin_lineage(spec):  # a rebuild that failed for good
                self._maybe_free(dep)
        if not spec.pushed:  # no worker will report it: we say how it ended
            from .task_events import error_info

            self._events.append(self._event_of(spec, time.time(), error_info(error_blob)))
            self._schedule_events()
        for oid in spec.return_ids:
            self._complete(oid, P.ERROR, error_blob)

    def _event_of(self, spec: TaskSpec, end: float | None, error: Any = None) -> list[Any]:
        """An owner's task event (task_events' fields, no worker): waiting (end None), or
        ended here without a worker."""
        kind = (
            "actor_creation"
            if spec.actor_creation
            else ("actor_task" if spec.actor_id is not None else "task")
        )
        return [spec.name, spec.task_id, spec.submitted, end, 0, b"", kind, spec.parent,
                [], spec.return_ids, spec.actor_id, self.job_id, error, spec.name, self.node_id]  # fmt: skip

    def _schedule_events(self) -> None:
        if not self._events_scheduled:
            self._events_scheduled = True
            self.timers.call_later(CONFIG.event_flush_s, self._flush_events)

    def _flush_events(self) -> None:
        """Send what ended here, and the submitted tasks that still wait for a worker.

        Only those that waited a whole flush period are reported, at most
        MAX_PENDING_EVENTS a period: a task that starts at once costs one append.
        """
        self._events_scheduled = False
        events = []
        waiting = 0
        while self._events:
            item = self._events.popleft()
            if isinstance(item, list):
                events.append(item)
            elif not item.pushed and not item.failed and waiting < MAX_PENDING_EVENTS:
                waiting += 1
                events.append(self._event_of(item, None))
        if events and not self.closed:
            self._send_nm(P.TaskEvents(events))

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
        for oid in spec.held:
            entry = self.objects.get(oid)
            if entry is not None:
                entry.held -= 1
                if not entry.held and oid not in self.local_refs:
                    self._maybe_free(oid)
        spec.held = []

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

    def _send_nm(self, msg: Any) -> None:
        try:
            self.nm.send(msg)
        except ConnectionLost:
            pass

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
        try:
            self.peer(nm).send(msg)
        except ConnectionLost:
            pass  # that node is gone: so is what we would tell it about

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
                    if sc.pending.pop(lease_id, None) is not None and sc.queue:
                        if isinstance(reply, P.Failed) and "affinity" in reply.reason:
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
            try:
                conn = self.peer(nm) if nm else self.nm
                conn.request_async(msg, lambda reply: answered(reply, nm))
            except ConnectionLost:
                answered(None, nm)

        ask("", 0)

    def _fail_queue(self, sc: SchedulingClass, reason: str) -> None:
        """Tasks that can never be placed (hard affinity to a dead node): fail them (lock held)."""
        queued = list(sc.queue)
        sc.queue.clear()
        err = dumps_inline(TaskUnschedulableError(reason))

        def fail() -> None:
            for spec in queued:
                self._fail_task(spec, err)
                with self.lock:
                    self._release_held(spec)

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

    def _push(self, lease: Lease, spec: TaskSpec) -> None:
        lease.busy = spec
        spec.lease = lease
        spec.pushed = True
        try:
            conn = self.peer(lease.address)
            conn.request_async(
                self._push_message(conn, spec, lease.gpu_ids),
                lambda reply: self._task_done(lease, spec, reply),
            )
        except ConnectionLost:
            self._task_done(lease, spec, ConnectionLost("worker unreachable"))

    def _push_message(self, conn: Connection, spec: TaskSpec, gpu_ids: list[int]) -> P.PushTask:
        blob = None
        if spec.function_id not in conn.sent_functions:
            conn.sent_functions.add(spec.function_id)
            blob = spec.function_blob() if spec.function_blob is not None else None
        return P.PushTask(
            spec.task_id,
            spec.name,
            spec.function_id,
            blob,
            spec.args_blob,
            [d for d in spec.deps],
            spec.return_ids,
            self.address,
            spec.actor_id,
            spec.actor_creation,
            gpu_ids,
            self.job_id,
            self.current_task_id,
            spec.actor_options,
        )

    def _task_done(self, lease: Lease, spec: TaskSpec, reply: Any) -> None:
        """A normal task finished, or its worker died (runs on a reader thread)."""
        spec.lease = None
        if not isinstance(reply, P.TaskDone):
            with self.lock:
                lease.busy = None
                self.leases.pop(lease.lease_id, None)
                self._return_to_nm(lease, True)
                if spec.cancelled:
                    err: Exception = TaskCancelledError(spec.task_id.hex())
                    self._fail_task(spec, dumps_inline(err))
                    self._release_held(spec)
                    return
                if spec.max_retries != 0 and not self.closed:
                    if spec.max_retries > 0:
                        spec.max_retries -= 1
                    self._enqueue(spec)
                    return
            err = WorkerCrashedError(
                f"The worker (pid={lease.pid}) died while running {spec.name}; no retries left."
            )
            self._fail_task(spec, dumps_inline(err))
            with self.lock:
                self._release_held(spec)
            return
        if (
            spec.retry_exceptions
            and spec.max_retries != 0
            and not spec.cancelled
            and reply.returns
            and reply.returns[0][1] == P.ERROR
            and not self.closed
            and _retryable(spec.retry_exceptions, reply.returns[0][2])
        ):
            with self.lock:
                if spec.max_retries > 0:
                    spec.max_retries -= 1
                lease.busy = None
                self._enqueue(spec)
                self._after_task(lease)
            return
        lost = self._lost_argument(spec, reply)
        if lost is not None and self._rebuild_argument(spec, lost):
            with self.lock:
                lease.busy = None
                self._after_task(lease)
            return
        for oid, kind, data, contained in reply.returns:
            self._complete(oid, kind, data, contained)
        self._keep_lineage(spec, reply)
        with self.lock:
            self._release_held(spec)
            lease.busy = None
            self._after_task(lease)

    def _after_task(self, lease: Lease) -> None:
        sc = lease.sclass
        if sc.queue:
            self._push(lease, sc.queue.popleft())
        else:
            self._idle(lease)

    def _idle(self, lease: Lease) -> None:
        sc = lease.sclass
        sc.idle.append(lease)
        token = object()
        lease.timer = token

        def linger_over() -> None:
            with self.lock:
                if lease.timer is token and lease.busy is None and lease in sc.idle:
                    sc.idle.remove(lease)
                    self._return_lease(lease)

        self.timers.call_later(CONFIG.lease_linger_s, linger_over)

    def _return_lease(self, lease: Lease) -> None:
        if not lease.returned:
            lease.returned = True
            self.leases.pop(lease.lease_id, None)
            self._return_to_nm(lease, False)

    # ------------------------------------------------------------------ actors
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
                P.RegisterActorName(name, ns, actor_id, class_name, methods or {}), timeout=30
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
        reply = self.nm.request(P.GetNamedActor(name, ns), timeout=30)
        if not reply.found:
            raise ValueError(f"Failed to look up actor with name {name!r} in namespace {ns!r}.")
        self.actor_client(reply.actor_id, reply.class_name, reply.address or None)
        return reply

    def when_ready_future(self, ref: ObjectRef) -> Any:
        """A concurrent.futures.Future resolved with the ref's value (or its error)."""
        import concurrent.futures

        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def done(kind: int, data: Any) -> None:
            try:
                fut.set_result(self._value(ref.id, kind, data))
            except BaseException as exc:
                fut.set_exception(exc)

        self._when_ready(ref, done)
        return fut

    def _restart_actor(self, client: ActorClient, incarnation: int) -> None:
        """Life `incarnation` of the actor died and restarts are left: rerun its constructor.

        A death is reported by up to three paths (the node's ClientDied, a call whose
        connection broke, a failed reconnect), possibly after the restart they ask for
        has already happened: only the first word about a given life restarts it.
        """
        with self.lock:
            if (
                client.restarting
                or incarnation != client.incarnation
                or client.dead_cause is not None
                or client.creation_spec is None
            ):
                return
            client.restarting = True
            client.incarnation += 1
            if client.restarts_left > 0:
                client.restarts_left -= 1
            client.conn, client.alive, client.address = None, False, None
            old, client.lease = client.lease, None
            if old is not None:
                self.leases.pop(old.lease_id, None)
                self._return_to_nm(old, True)
        self._send_nm(
            P.ActorStateChanged(
                client.actor_id,
                "RESTARTING",
                client.class_name,
                "",
                0,
                "restarting",
                client.restarts_left,
            )
        )
        self._schedule_actor_creation(client.creation_spec, client)

    def _schedule_actor_creation(self, spec: TaskSpec, client: ActorClient) -> None:
        first = client.creation_spec is None
        client.creation_spec = spec
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
                client.lease = lease
                client.address = lease.address
                self.leases[lease.lease_id] = lease
            try:
                conn = self.peer(lease.address)
                msg = self._push_message(conn, spec, lease.gpu_ids)
                spec.pushed = True
                conn.request_async(msg, lambda reply: self._actor_created(client, spec, reply))
            except ConnectionLost:
                self._actor_created(client, spec, None)
                return
            with self.lock:
                client.conn = conn
            self._flush_actor(client)

        with self.lock:
            detached = bool((spec.actor_options or {}).get("detached"))
            self._request_lease(sc, actor_id=client.actor_id, on_grant=on_grant, detached=detached)

    def _register_detached(self, spec: TaskSpec, client: ActorClient) -> None:
        """Leave with the head what it takes to restart this detached actor after we are
        gone (head/detached.py): possible only if its constructor's arguments are all inline."""
        if any(dep[1] != P.INLINE for dep in spec.deps):
            self._send_nm(P.RegisterDetached(client.actor_id, self.address, [], spec.shape))
            return
        blob = spec.function_blob() if spec.function_blob is not None else None
        push = [
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
        ]
        self._send_nm(P.RegisterDetached(client.actor_id, self.address, push, spec.shape))

    def _actor_created(self, client: ActorClient, spec: TaskSpec, reply: Any) -> None:
        if isinstance(reply, P.TaskDone):
            oid, kind, data, _ = reply.returns[0]
            if kind == P.ERROR:
                cause = loads_inline(data)
                self._actor_died(
                    client,
                    f"The actor {client.class_name} died in its constructor: {cause}",
                    report=True,
                )
            else:
                with self.lock:
                    client.alive = True
                    client.restarting = False
                    client.queue.extendleft(reversed(client.retry_buffer))
                    client.retry_buffer = []
                self._send_nm(
                    P.ActorStateChanged(
                        client.actor_id,
                        "ALIVE",
                        client.class_name,
                        client.address or "",
                        reply.worker_pid,
                        "",
                        client.restarts_left,
                    )
                )
                self._flush_actor(client)
            self._complete(oid, kind, data)
        elif client.restarts_left != 0 and client.dead_cause is None:
            client.restarting = False  # it died again while starting: try once more
            self._restart_actor(client, client.incarnation)
        else:
            self._actor_died(
                client,
                f"The actor {client.class_name}'s worker process died "
                "before its constructor finished.",
                report=True,
            )
            self._complete(
                spec.return_ids[0], P.ERROR, dumps_inline(ActorDiedError(client.dead_cause or ""))
            )

    def _actor_died(self, client: ActorClient, cause: str, report: bool = False) -> None:
        with self.lock:
            if client.dead_cause is not None:
                return
            client.dead_cause = cause
            queued = list(client.retry_buffer) + list(client.queue)
            client.queue.clear()
            client.retry_buffer = []
        if report:
            self._send_nm(
                P.ActorStateChanged(
                    client.actor_id, "DEAD", client.class_name, client.address or "", 0, cause, 0
                )
            )
        for spec in queued:
            self._fail_task(spec, dumps_inline(_actor_error(client, cause)))

    def actor_client(self, actor_id: bytes, class_name: str, address: str | None) -> ActorClient:
        client = self.actors.get(actor_id)
        if client is None:
            with self.lock:
                client = self.actors.get(actor_id)
                if client is None:
                    client = ActorClient(actor_id, class_name)
                    client.address = address
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
                    client.alive = True
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
        died = resend = False
        incarnation = client.incarnation
        with self.lock:
            if client.dead_cause is not None:
                queued = list(client.queue)
                client.queue.clear()
                cause = client.dead_cause
            else:
                queued = []
                if client.conn is None or client.conn.closed:
                    if client.creator and client.conn is None:
                        return  # the lease grant flushes
                    if client.address is None:
                        self._resolve_actor(client)
                        return
                    try:
                        incarnation = client.incarnation
                        client.conn = self.peer(client.address)
                    except ConnectionLost:
                        client.conn = None
                        if client.creator:
                            died = True
                        else:
                            client.failed_address, client.address = client.address, None
                            self._resolve_actor(client)
                            return
                conn = client.conn
                while conn is not None and client.queue and client.queue[0].unresolved == 0:
                    spec = client.queue.popleft()
                    if spec.failed:
                        continue
                    try:
                        client.inflight.append(spec)
                        spec.incarnation = client.incarnation
                        spec.pushed = True
                        conn.request_async(
                            self._push_message(conn, spec, []),
                            lambda reply, spec=spec: self._actor_task_done(client, spec, reply),
                        )
                    except ConnectionLost:
                        client.inflight.remove(spec)
                        client.queue.appendleft(spec)
                        resend = True  # the connection broke under us: reconnect
                        break
        if resend and not died:
            self._flush_actor(client)
            return
        if died and client.restarts_left != 0:
            self._restart_actor(client, incarnation)
            return
        if died:
            self._actor_died(
                client,
                f"The actor {client.class_name}'s worker process died "
                "unexpectedly (the process crashed or was killed).",
                report=True,
            )
            return
        for spec in queued:
            self._fail_task(spec, dumps_inline(_actor_error(client, cause)))

    def _actor_task_done(self, client: ActorClient, spec: TaskSpec, reply: Any) -> None:
        with self.lock:
            if spec in client.inflight:
                client.inflight.remove(spec)
            # A call sent to a life that has since been replaced (restarted): its failure
            # says nothing of the actor now, whatever restarts are left.
            old_life = client.creator and spec.incarnation != client.incarnation
        if (
            not isinstance(reply, P.TaskDone)
            and client.dead_cause is None
            and (not client.creator or client.restarts_left != 0 or old_life)
        ):
            # The process is gone but the actor may come back (restart): resend the
            # call if it has retries, else it fails; later calls wait for the new one.
            cause = f"The actor {client.class_name}'s process died while running this call."
            with self.lock:
                retry = spec.max_retries != 0 and not spec.cancelled
                if retry:
                    spec.max_retries -= 1 if spec.max_retries > 0 else 0
                    if old_life and client.alive:  # the new life runs: send it there
                        client.queue.appendleft(spec)
                    else:
                        client.retry_buffer.append(spec)
                if not client.creator and client.address is not None:
                    client.failed_address, client.address = client.address, None
                    client.conn = None
            if not retry:
                self._fail_task(spec, dumps_inline(_actor_error(client, cause)))
                with self.lock:
                    self._release_held(spec)
            if client.creator:
                if spec.incarnation == client.incarnation:  # not a late word of an old life
                    self._restart_actor(client, spec.incarnation)
                else:
                    self._flush_actor(client)
            else:
                with self.lock:
                    self._resolve_actor(client)
            return
        if isinstance(reply, P.TaskDone):
            for oid, kind, data, contained in reply.returns:
                self._complete(oid, kind, data, contained)
            self._keep_lineage(spec, reply)
        else:
            self._actor_died(
                client,
                client.dead_cause
                or f"The actor {client.class_name}'s worker process died "
                "unexpectedly (the process crashed or was killed).",
                report=client.lease is not None,
            )
            self._fail_task(spec, dumps_inline(_actor_error(client, client.dead_cause or "")))
        with self.lock:
            self._release_held(spec)

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
            if lease is None:  # not running: take it out of the queues
                sc = self.classes.get(spec.shape_key)
                if sc is not None and spec in sc.queue:
                    sc.queue.remove(spec)
                client = self.actors.get(spec.actor_id) if spec.actor_id else None
                if client is not None and spec in client.queue:
                    client.queue.remove(spec)
        if lease is None:
            if spec.actor_id is None or spec.unresolved or client is not None:
                self._fail_task(spec, dumps_inline(TaskCancelledError(spec.task_id.hex())))
                with self.lock:
                    self._release_held(spec)
            return
        if force:
            self._return_to_nm(lease, True)  # kills the worker
        else:
            try:
                self.peer(lease.address).send(P.CancelTask(spec.task_id, recursive))
            except ConnectionLost:
                pass

    def kill_actor(self, actor_id: bytes, class_name: str, no_restart: bool = True) -> None:
        cause = f"The actor {class_name} was killed by raylite.kill()."
        client = self.actor_client(actor_id, class_name, None)
        if not no_restart:  # kill the process; its owner restarts it if it may
            self.nm.request(P.KillActor(actor_id, cause, False), timeout=30)
            return
        with self.lock:
            if client.dead_cause is None:
                client.dead_cause = cause
        self.nm.request(P.KillActor(actor_id, cause, True), timeout=30)
        self._actor_died(client, cause)

    # ----------------------------------------------------------------- cluster
    def release_idle_leases(self) -> None:
        """Give back leases kept warm for more tasks (so resource views are exact)."""
        with self.lock:
            for sc in self.classes.values():
                while sc.idle:
                    self._return_lease(sc.idle.pop())

    def cluster_info(self) -> P.ClusterInfo:
        self.release_idle_leases()
        return self.nm.request(P.GetClusterInfo(), timeout=30)

    def timeline_events(self) -> list[list[Any]]:
        reply = self.nm.request(P.GetTimeline(), timeout=60)
        return reply.events

    def shutdown(self) -> None:
        """Stop talking; the node manager (driver's) is stopped by the caller."""
        self.closed = True
        _object_ref.set_hooks(None)
        self.store.close()
        self.timers.stop()
        self.listener.close()
        for conn in list(self.peers.values()):
            conn.close()
        self.peers.clear()
        self.nm.close()


# The process's live core worker, and how to start one on first use (set by api).
_global: CoreWorker | None = None
_auto_init: Callable[[], CoreWorker] | None = None


def global_worker() -> CoreWorker:
    """The live core worker, starting raylite (init()) on first use, as Ray does."""
    cw = _global
    if cw is None or cw.closed:
        if _auto_init is None:
            raise RuntimeError("raylite is not initialised; call raylite.init()")
        cw = _auto_init()
    return cw


def _retryable(retry: Any, error_blob: bytes) -> bool:
    """retry_exceptions=True retries any application error; a tuple, those classes."""
    if retry is True:
        return True
    err = loads_inline(error_blob)
    cause = getattr(err, "cause", err)
    return isinstance(cause, retry)


def _actor_error(client: ActorClient, cause: str) -> ActorDiedError:
    return ActorDiedError(
        f"The actor {client.class_name} ({client.actor_id.hex()}) is dead: {cause}", cause
    )


def _unserializable_argument(args: tuple, kwargs: dict, name: str, exc: Exception) -> TypeError:
    culprit = None
    for i, a in enumerate(args):
        try:
            dumps_inline(a)
        except Exception:
            culprit = f"argument {i} ({a!r})"
            break
    else:
        for k, v in kwargs.items():
            try:
                dumps_inline(v)
            except Exception:
                culprit = f"keyword argument {k!r} ({v!r})"
                break
    what = culprit or "the arguments"
    return TypeError(
        f"Could not serialize {what} for a call to {name}: {type(exc).__name__}: {exc}. "
        "Pass a value that pickles (or create it inside the task)."
    )


def _print_log_lines(lines: list[list[Any]]) -> None:
    out = [t for s, t in lines if s == "out"]
    err = [t for s, t in lines if s == "err"]
    try:
        if out:
            sys.stdout.write("".join(out))
            sys.stdout.flush()
        if err:
            sys.stderr.write("".join(err))
            sys.stderr.flush()
    except (ValueError, OSError):  # the driver closed its streams
        pass
