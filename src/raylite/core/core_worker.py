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
import contextlib
import itertools
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .. import metric_values
from .. import object_ref as _object_ref
from .. import protocol as P
from ..config import CONFIG
from ..exceptions import (
    ConnectionLost,
    ObjectFreedError,
    ObjectLostError,
    ObjectStoreFullError,
    OwnerDiedError,
    ProtocolError,
    RayTaskError,
)
from ..object_ref import ObjectRef, new_id
from ..object_store import ObjectStore, load_segment
from ..serialization import SerializedValue, dumps_inline, loads_inline, plain_pickle, serialize
from ..transport import Connection, Listener
from ..transport_lead import Doorbell, LeadableConnection
from . import context
from .actor_client import ActorClientMixin
from .actor_life import ActorClient, ActorLives
from .blocking import BlockingMixin
from .deferring_lock import DeferringLock
from .generators import GeneratorsMixin, Stream
from .lease_queue import LeaseQueues
from .leasing import LeasingMixin
from .lineage import LineageMixin
from .objects import PENDING, RELEASED, ObjectEntry, ObjectTable
from .refs import RefsMixin
from .replies import RepliesMixin
from .runtime_envs import RuntimeEnvsMixin
from .statistics import CoreStatistics, snapshot
from .submission import SubmissionMixin
from .tasks import TaskSpec
from .timers import Timers

log = logging.getLogger("raylite")


class CoreWorker(
    RefsMixin,
    LineageMixin,
    SubmissionMixin,
    LeasingMixin,
    ActorClientMixin,
    GeneratorsMixin,
    RepliesMixin,
    BlockingMixin,
    RuntimeEnvsMixin,
    _object_ref._Hooks,
):
    # The job's default actor lifetime (init(job_config=JobConfig(default_actor_lifetime=
    # "detached"))): an actor that names none gets it.
    default_actor_lifetime = "non_detached"

    def __init__(
        self,
        *,
        mode: str,
        node_address: str,
        token: bytes,
        session_dir: str,
        worker_id: bytes | None = None,
        log_to_driver: bool = True,
        namespace: str | None = None,
        task_handler: Callable[[Connection, P.PushTask, int], None] | None = None,
        nm_handler: Callable[[Connection, Any, int], None] | None = None,
        listen_ip: str | None = None,
    ) -> None:
        self._init_tables(
            mode=mode,
            token=token,
            worker_id=worker_id,
            namespace=namespace,
            log_to_driver=log_to_driver,
            task_handler=task_handler,
            nm_handler=nm_handler,
        )
        # A node of a --tls cluster: its tls/ holds our certificate (one stat otherwise).
        if session_dir and os.path.exists(os.path.join(session_dir, "tls", "node.crt")):
            from .. import tls

            tls.activate_for(session_dir)
        # On a cluster node, other nodes' processes call us: listen on TCP there.
        if listen_ip:
            address = f"tcp:{listen_ip}:0"
        else:
            address = f"unix:{session_dir}/{mode[0]}-{self.worker_id.hex()}.sock"
        # A worker's main thread reads its task connections itself between tasks.
        leadable = LeadableConnection if mode == "worker" else None
        self.listener = Listener(address, token, self._handle_inbound, connection_class=leadable)
        # The main thread's doorbell while a get waits by reading a connection
        # (blocking._lead_until).
        self.doorbell = Doorbell()
        self.address = self.listener.address
        self.nm = Connection.connect(
            node_address,
            token,
            self._handle_nm,
            name="node-manager",
            on_close=self._nm_lost,
            cluster=True,
        )
        about = context.driver_registration() if mode == "driver" else {}
        reg = self.nm.request(
            P.RegisterClient(mode, self.worker_id, os.getpid(), self.address, about),
            timeout=CONFIG.request_timeout_s,
        )
        self.node_id: bytes = reg.node_id
        self.job_id: bytes = reg.job_id
        self.node_address = node_address
        self.node_info = reg.info
        self.node_tcp: str = reg.info.get("tcp_address", "")  # "": a single-node session
        self.store = ObjectStore(reg.store_dir, reg.info.get("spill_dir"))
        self.store.on_spilled_read = lambda oid: self._send_nm(P.ObjectRestored(oid))
        self.store.on_mapped = self._on_mapped
        self.store.on_unmapped = self._unmapped.append  # any thread: only queues
        _object_ref.set_hooks(self)
        self.timers.call_later(0.1, self._release_loop)

    def _init_tables(
        self,
        *,
        mode: str,
        token: bytes,
        worker_id: bytes | None,
        namespace: str | None,
        log_to_driver: bool,
        task_handler: Callable[[Connection, P.PushTask, int], None] | None,
        nm_handler: Callable[[Connection, Any, int], None] | None,
    ) -> None:
        """The worker's tables, before any connection (unit tests stop here and stand
        in for the node manager and the peers)."""
        self.mode = mode
        self.token = token
        self.worker_id = worker_id or new_id()
        self.namespace = namespace
        self.log_to_driver = log_to_driver
        self.lock = DeferringLock(bool(CONFIG.lock_checks))
        self.local_refs: dict[bytes, int] = {}
        self.table = ObjectTable(self.local_refs)  # events in, actions out (lineage._apply)
        self.objects: dict[bytes, ObjectEntry] = self.table.entries  # read on the hot path
        self.preregistered: set[bytes] = set()  # borrows a sender registered for us
        # Borrows of a running task's arguments, told to their owners only if a ref is
        # still held when a task ends (refs.register_deferred); `deferring.on` while a
        # thread reads a pushed task's arguments.
        self.unregistered: set[bytes] = set()
        self.deferring = threading.local()
        self.borrowed_owner: dict[bytes, str] = {}  # borrowed id -> owner (while we hold it)
        self.arg_pins: dict[bytes, int] = {}  # refs held by pending tasks' arguments
        self.running: dict[bytes, TaskSpec] = {}  # first return id -> unfinished task
        self.streams: dict[bytes, Stream] = {}  # generator tasks: generator id -> its items
        self._collecting = threading.local()
        self._ref_lock = threading.Lock()
        self._released: collections.deque[bytes] = collections.deque()
        # Owner task events: TaskSpecs submitted (reported if they still wait at the next
        # flush) and events of tasks that ended here without a worker.
        self._events: collections.deque[Any] = collections.deque()
        # A resource shape's scheduling key, by the shape dict's id (the dict is kept,
        # so its id is not reused): a function's shape is one dict for all its calls.
        self._shape_keys: dict[int, tuple[dict[str, int], tuple[Any, ...]]] = {}
        self._events_scheduled = False
        self._completion = itertools.count(1)
        self.queues = LeaseQueues()  # events in, actions out (leasing._lease_actions)
        self.env_failures: dict[bytes, str] = {}  # core/runtime_envs.py
        # (actor id, life) -> its node's OutOfMemoryError text, for its lost calls
        # (actor_client.py; an entry per actor life the memory monitor ended).
        self.actor_ooms: dict[tuple[bytes, int], str] = {}
        self.classes = self.queues.classes  # read by the actor client (a shape's class)
        self.leases = self.queues.leases
        self.lives = ActorLives(self.leases, self.running)  # (actor_client._actor_actions)
        self.actors: dict[bytes, ActorClient] = self.lives.actors
        self.creation_of: dict[bytes, bytes] = {}  # creation return id -> actor (handles)
        self.peers: dict[str, Connection] = {}
        self._peer_lock = threading.Lock()
        self.closed = False
        self.timers = Timers()
        # util.metrics: the first change after a report asks for the next event flush.
        metric_values.PROCESS.on_dirty = self._schedule_events
        if metric_values.PROCESS.dirty:  # recorded before init, or after a shutdown
            self._schedule_events()
        # Execution context, set by the worker loop around each task. The task id is
        # per thread and per asyncio task (a context variable): threaded and async
        # actors run several calls at once.
        self.current_actor_id: bytes | None = None
        self.current_gpu_ids: list[int] = []
        self.current_task_name: str | None = None
        # An actor's worker: its creation options (name, shape, reconstructed, ...), and
        # whether it is async; the task ids cancelled before or while running (a worker
        # fills them; RuntimeContext reads them).
        self.actor_options: dict[str, Any] = {}
        # The placement group the current task or actor runs in: [id, bundle index,
        # capture child tasks, bundles] (remote_function.placement_of), or None.
        self.placement_group: list[Any] | None = None
        self.actor_instance: Any = None
        self.actor_is_async = False
        self.cancelled_tasks: set[bytes] = set()
        self.blocked_depth = 0
        # The worker: called as its running task first blocks (worker._bounce_queued).
        self.on_blocked: Callable[[], None] | None = None
        # Set before registering: the node manager may lease us out at once.
        self.on_task_pushed = task_handler
        self.on_nm_message = nm_handler
        self.on_cancel_task: Callable[[bytes, bool], None] | None = None
        # Tasks submitted from inside a running task: its id -> their first return ids
        # (cancel(recursive=True) follows them). Emptied when the task ends.
        self.children: dict[bytes, list[bytes]] = {}
        self._unmapped: collections.deque[bytes] = collections.deque()  # segments to unmap
        # ObjectMapped sent minus ObjectUnmapped sent, by id (refs._on_mapped).
        self._mapped_told: dict[bytes, int] = {}
        self._mapped_lock = threading.Lock()
        # The node's store once registered (__init__); unit tests keep this empty one.
        self.store = ObjectStore("")

    @property
    def current_task_id(self) -> bytes | None:
        return context.CURRENT_TASK.get()

    @current_task_id.setter
    def current_task_id(self, task_id: bytes | None) -> None:
        context.CURRENT_TASK.set(task_id)

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
            on_node = self.queues.node_died(msg.node_id)
            lost = [
                oid
                for oid, entry in self.objects.items()
                if entry.kind == P.IN_STORE and entry.data.node == msg.address
            ]
        for address, conn in list(self.peers.items()):
            if there(address) or address in on_node:
                conn.close(join=False)
        with self.lock:
            actions = self.lives.node_died(msg.node_id, msg.address, prefix)
        self._actor_actions(actions)
        for oid in lost:
            self._object_lost(oid, f"its node {msg.address} died ({msg.cause})")

    def peer(self, address: str) -> Connection:
        conn = self.peers.get(address)
        if conn is not None and not conn.closed:
            return conn
        self.lock.check_unlocked(f"dialling {address}")
        with self._peer_lock:
            conn = self.peers.get(address)
            if conn is None or conn.closed:
                conn = LeadableConnection.connect(  # a get may wait by reading it
                    address,
                    self.token,
                    self._handle_inbound,
                    name=address,
                    on_close=self._peer_lost,
                )
                self.peers[address] = conn
        return conn

    def _on_peer(
        self,
        address: str,
        send: Callable[[Connection], None],
        lost: Callable[[], None] | None = None,
    ) -> None:
        """send(conn) on the connection to `address`, or lost() if there is none to be
        had. At once if it is open; a dial (and lost, which may run callbacks) waits
        until the lock is let go."""
        conn = self.peers.get(address)
        if conn is not None and not conn.closed:
            try:
                send(conn)
            except ConnectionLost:
                if lost is not None:
                    self.lock.defer(lost)
            return

        def dial() -> None:
            try:
                send(self.peer(address))
            except ConnectionLost:
                if lost is not None:
                    lost()

        self.lock.defer(dial)

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
        elif isinstance(msg, P.LeaseWaiting):
            self._warn_waiting(msg)
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
                conn.reply(
                    rid, P.Failed(P.FailCode.NOT_A_WORKER, "this process does not run tasks")
                )
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
        elif isinstance(msg, P.GeneratorItem):
            self._generator_item(conn, msg, rid)
        else:  # the read loop closes the connection and logs it
            raise ProtocolError(f"a {type(msg).__name__} is no message for a {self.mode}")

    def _serve_object(self, conn: Connection, oid: bytes, rid: int) -> None:
        def answer(kind: int, data: Any) -> None:
            try:
                conn.reply(rid, P.ObjectValue(kind, data))
            except ConnectionLost:
                pass

        with self.lock:
            entry = self.objects.get(oid)
            if entry is None:
                err = ObjectFreedError(oid.hex(), f"Object {oid.hex()} was freed by its owner.")
                answer(P.ERROR, dumps_inline(err))
                return
            if entry.kind == RELEASED:  # a rerun task reads a ref nested in its arguments
                self._apply(self.table.rebuild(oid, "a rebuilt task asked for it", self.closed))
            if entry.kind is PENDING:
                entry.waiters.append(answer)
                return
            kind, data = entry.kind, entry.data
        answer(kind, data)

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
        entry.kind, entry.data = self.store_serialized(oid, sv, own=True)
        entry.contains = contained
        entry.seq = next(self._completion)
        with self.lock:
            self.objects[oid] = entry
        return ObjectRef(oid, self.address)

    def put_error(self, error_blob: bytes) -> ObjectRef:
        """An object whose get raises this pickled error (local_mode.py's failed calls)."""
        oid = new_id()
        entry = ObjectEntry()
        entry.kind, entry.data = P.ERROR, error_blob
        entry.seq = next(self._completion)
        with self.lock:
            self.objects[oid] = entry
        return ObjectRef(oid, self.address)

    def store_serialized(
        self, oid: bytes, sv: Any, own: bool = False, owner: str = ""
    ) -> tuple[int, Any]:
        """(kind, data) for a value: inline bytes, or a segment the node manager made room
        for. `own`: this process's put (ObjectStore.put: its first get reads it here).
        `owner`: whose object it is, if not this process's (a task's return: its
        caller's, so the segment lives as long as the caller holds it, not the worker)."""
        if sv.size <= CONFIG.inline_threshold:
            return P.INLINE, sv.inline()
        size = self.store.segment_size(sv)
        reply = self.nm.request(P.ReserveObject(oid, size, owner or self.address), timeout=None)
        if isinstance(reply, P.Failed):
            raise ObjectStoreFullError(reply.reason)
        size = self.store.put(oid, sv, reply.directory, reply.prealloc, own=own)
        # On a cluster the value says which node holds it (its node manager's address).
        return P.IN_STORE, P.StoredAt(size, self.node_tcp)

    def store_return(self, oid: bytes, value: Any, caller: str) -> P.TaskReturn:
        """A task's return, or a generator's item, as its caller gets it: inline or in
        the store, the caller told it borrows the refs inside it (lend_to). A plain
        value (None, a number, a str) holds none: its pickle needs no collecting."""
        meta = plain_pickle(value)
        if meta is not None:
            kind, data = self.store_serialized(oid, SerializedValue(meta, []), owner=caller)
            return P.TaskReturn(oid, kind, data, {})
        sv, refs = self.serialize_collecting(serialize, value)
        kind, data = self.store_serialized(oid, sv, owner=caller)
        return P.TaskReturn(oid, kind, data, self.lend_to(refs, caller))

    def drop_returns(self, returns: list[P.TaskReturn]) -> None:
        """Returns stored for a caller that never heard of them (its connection went
        before the reply): the node frees them (DropReturn), as it frees what a dead
        owner held; nobody else would."""
        for r in returns:
            if r.kind == P.IN_STORE:
                with contextlib.suppress(ConnectionLost):
                    self.nm.send(P.DropReturn(r.object_id))

    def _complete(
        self, oid: bytes, kind: int, data: Any, contained: dict[bytes, str] | None = None
    ) -> None:
        """Record an owned object's value and run its waiters (call without lock)."""
        refs = self._adopt_contained(contained)
        with self.lock:
            waiters = self._set_value(oid, kind, data, refs)
        if waiters:
            self._run_waiters(waiters, kind, data)
        if oid not in self.local_refs:
            with self.lock:
                self._apply(self.table.released(oid))

    def _record_returns(
        self,
        spec: TaskSpec,
        error: bool,
        returns: list[P.TaskReturn],
        adopted: list[Sequence[ObjectRef]],
    ) -> list[tuple[list[Callable[[int, Any], None]], int, Any]]:
        """A task's worker sent its returns: the task ends, then each value is recorded
        (lock held). Returns the waiters for _finish_returns, once the lock is let go;
        `adopted` is what _adopt_contained made of each return's refs (without the lock)."""
        self._answered(spec, error)
        ready = []
        for r, refs in zip(returns, adopted, strict=True):
            waiters = self._set_value(r.object_id, r.kind, r.data, refs)
            if waiters:
                ready.append((waiters, r.kind, r.data))
        return ready

    def _finish_returns(
        self,
        returns: list[P.TaskReturn],
        ready: list[tuple[list[Callable[[int, Any], None]], int, Any]],
    ) -> None:
        """Run the returns' waiters, then let go of the values no ref points to (no lock)."""
        for waiters, kind, data in ready:
            self._run_waiters(waiters, kind, data)
        for r in returns:
            if r.object_id not in self.local_refs:
                with self.lock:
                    self._apply(self.table.released(r.object_id))

    def _set_value(
        self, oid: bytes, kind: int, data: Any, refs: Sequence[ObjectRef]
    ) -> list[Callable[[int, Any], None]] | None:
        """Record an owned object's value; its waiters, to run without the lock (lock held)."""
        entry = self.objects.get(oid)
        if entry is None or entry.kind is not PENDING:
            if kind == P.IN_STORE and (entry is None or self._elsewhere(entry, data)):
                self._free_segment(oid, data)  # nobody's, or a rerun's second copy
            return None
        entry.kind, entry.data = kind, data
        entry.contains = refs
        entry.seq = next(self._completion)
        waiters, entry.waiters = entry.waiters, ()
        return waiters

    def _run_waiters(self, waiters: list[Callable[[int, Any], None]], kind: int, data: Any) -> None:
        self.lock.check_unlocked("an object's waiters")
        for cb in waiters:
            try:
                cb(kind, data)
            except Exception:
                log.exception("object waiter failed")

    @staticmethod
    def _elsewhere(entry: ObjectEntry, data: P.StoredAt) -> bool:
        """A return stored for an entry that has its value already (not PENDING): the
        copy is extra if the entry's value was released, is not in a store (an inline
        value, or an error recorded first: a cancel, a kill), or is a copy on another
        node (a rerun stored it again elsewhere). One on the same node is the copy in
        use: a rerun's store there replaced it under the same name."""
        if entry.kind != P.IN_STORE:
            return True
        return entry.data.node != data.node

    def drain(self, timeout: float) -> None:
        """Wait, at most `timeout` s, for the tasks this process submitted to end."""
        with self.lock:
            ids = list(self.running)
        if not ids:
            return
        left = [len(ids)]
        done = threading.Event()
        count = threading.Lock()

        def ended(kind: int, data: Any) -> None:
            with count:
                left[0] -= 1
                if not left[0]:
                    done.set()

        for oid in ids:
            self._when_ready(ObjectRef(oid, self.address, _count=False), ended)
        done.wait(timeout)

    def _when_ready(self, ref: ObjectRef, callback: Callable[[int, Any], None]) -> int:
        """Call back with (kind, data) once the value exists; returns its seq if ready now.

        Under the lock it waits on an owned PENDING value at once (a rerun's argument:
        released the moment its rebuild ends unless a reader waits on it), else it
        queues itself: the callback may run at once, and a borrowed ref's owner may
        have to be dialled. A RELEASED value (a rerun reads it) is rebuilt first."""
        oid = ref.id
        if self.lock.held():
            entry = self.objects.get(oid) if ref.owner == self.address else None
            if entry is not None and entry.kind is PENDING:
                entry.waiters.append(callback)
            else:
                self.lock.defer(self._when_ready, ref, callback)
            return 0
        if ref.owner == self.address:
            with self.lock:
                entry = self.objects.get(oid)
                if entry is None:
                    kind, data, seq = P.ERROR, None, 0
                else:
                    if entry.kind == RELEASED:
                        why = "a rebuilt task reads it"
                        self._apply(self.table.rebuild(oid, why, self.closed))
                    if entry.kind is PENDING:
                        entry.waiters.append(callback)
                        return 0
                    kind, data, seq = entry.kind, entry.data, entry.seq
            self.lock.check_unlocked("an object's waiter")
            if entry is None:
                err = ObjectFreedError(oid.hex(), f"Object {oid.hex()} was already freed.")
                data = dumps_inline(err)
            callback(kind, data)
            return seq

        if not ref.owner:  # ObjectRef(binary) of an object this process knows nothing of
            err = ObjectLostError(
                oid.hex(),
                f"Object {oid.hex()} cannot be read here: its owner is unknown. A ref made "
                "from an id alone (ObjectRef(binary)) can be read only in the process that "
                "owns the object or holds a ref to it.",
            )
            callback(P.ERROR, dumps_inline(err))
            return 0

        def on_reply(reply: Any) -> None:
            if isinstance(reply, P.ObjectValue):
                callback(reply.kind, reply.data)
                return
            err: Exception = OwnerDiedError(
                oid.hex(),
                f"Object {oid.hex()} is lost: its owner ({ref.owner}) died or is unreachable.",
            )
            if context.PAST_OWNERS:  # a ref of a session shutdown() ended (await, future)
                try:
                    context.check_session((ref,), "reading an object")
                except ValueError as stale:
                    err = stale
            callback(P.ERROR, dumps_inline(err))

        try:
            conn = self.peer(ref.owner)
            if self.unregistered:
                self._register_before_asking(conn, oid)
            conn.request_async(P.GetObject(oid), on_reply)
        except ConnectionLost:
            on_reply(None)
        return 0

    def _register_before_asking(self, conn: Any, oid: bytes) -> None:
        """A borrow not told yet (refs.register_deferred) is told now, ahead of the
        question on the same connection: an owner that rebuilds the value for a rerun
        task's reader keeps it for that borrower (no submitter holds it then)."""
        with self._ref_lock:
            if oid not in self.unregistered:
                return
            self.unregistered.discard(oid)
        conn.send(P.AddBorrower(oid, self.address))

    def _value(self, oid: bytes, kind: int, data: Any) -> Any:
        if kind == P.INLINE:
            return loads_inline(data)
        if kind == P.IN_STORE:
            if type(data) is not P.StoredAt:  # mapped here already (_in_local_store)
                return load_segment(oid, data)
            holder = data.node
            if (
                holder
                and holder != self.node_tcp
                and not self.store.mapped(oid)
                and not self.store.contains(oid)
            ):
                self._fetch(oid, data)
            # A reader that is not the owner pins the segment (object_store): the
            # owner's free, which reaches the node by another way, cannot recycle it.
            return self.store.get(oid, oid not in self.objects)
        err = loads_inline(data)
        if isinstance(err, RayTaskError):
            raise err.as_instanceof_cause()
        raise err

    def _fetch(self, oid: bytes, data: P.StoredAt) -> None:
        """Have our node manager pull an object from the node that holds it."""
        holder = data.node
        try:
            reply = self.nm.request(P.FetchObject(oid, holder, data.size, ""), timeout=None)
        except ConnectionLost as exc:
            raise ObjectLostError(oid.hex(), f"Object {oid.hex()} is lost: {exc}") from exc
        if isinstance(reply, P.Failed):
            raise ObjectLostError(
                oid.hex(),
                f"Object {oid.hex()} is lost: it could not be fetched from {holder} "
                f"({reply.reason}).",
            )

    def statistics(self) -> CoreStatistics:
        """A frozen copy of what this worker owns: unfinished tasks, objects, refs."""
        self._process_released()
        with self.lock:
            return snapshot(self)

    def ask_node(self, msg: Any, timeout: float) -> Any:
        """A request to this process's node manager (refs let go of are told first)."""
        self._process_released()
        return self.nm.request(msg, timeout=timeout)

    def _send_nm(self, msg: Any) -> None:
        try:
            self.nm.send(msg)
        except ConnectionLost:
            pass

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

    def cluster_info(self) -> P.ClusterInfo:
        self.release_idle_leases()
        return self.nm.request(P.GetClusterInfo(), timeout=CONFIG.request_timeout_s)

    def timeline_events(self) -> list[P.TaskEvent]:
        reply = self.nm.request(P.GetTimeline(), timeout=CONFIG.timeline_timeout_s)
        return reply.events

    def shutdown(self) -> None:
        """Stop talking; the node manager (driver's) is stopped by the caller."""
        self.closed = True
        if metric_values.PROCESS.on_dirty == self._schedule_events:
            metric_values.PROCESS.on_dirty = None
        _object_ref.set_hooks(None)
        self.store.close()
        self.timers.stop()
        self.listener.close()
        for conn in list(self.peers.values()):
            conn.close()
        self.peers.clear()
        self.nm.close()


_TQDM_MAGIC = "__ray_tqdm_magic_token__"  # experimental.tqdm_ray's state lines


def _print_log_lines(lines: list[P.LogLine]) -> None:
    out = [line.text for line in lines if line.stream == "out"]
    if any(_TQDM_MAGIC in text for text in out):  # progress bars of tasks: drawn, not printed
        from ..experimental import tqdm_ray

        out = [
            line
            for text in out
            for line in text.splitlines(keepends=True)
            if not tqdm_ray.process_output_line(line)
        ]
    err = [line.text for line in lines if line.stream == "err"]
    try:
        if out:
            sys.stdout.write("".join(out))
            sys.stdout.flush()
        if err:
            sys.stderr.write("".join(err))
            sys.stderr.flush()
    except (ValueError, OSError):  # the driver closed its streams
        pass
