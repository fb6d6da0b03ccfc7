"""Per-node daemon: worker pool, resources and leases, log relay; on one machine
also the head (actor table, task events, cluster view).

    driver / workers ──RequestLease──▶ NodeManager ──fork──▶ worker
                     ◀─LeaseGranted──                ◀─RegisterClient─
    worker fd 1, 2 ──pipe──▶ NodeManager ──LogLines──▶ drivers

One asyncio event loop, no threads: workers are forked from it, which is safe only
because no other thread can hold a lock at fork time, and cheap (a few ms, the
child already has every module imported). Started by `init()` with the driver
holding its stdin: when the driver dies, stdin hits EOF and the node stops all its
workers and removes its sockets and shared memory.

Lease lifecycle: REQUESTED -> GRANTED -> (BLOCKED <-> GRANTED) -> RETURNED.
A blocked lease (its task waits in get/wait) gives its CPUs back to the node.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import logging
import os
import shutil
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

from . import protocol as P
from .config import CONFIG, RESOURCE_UNIT
from .object_ref import new_id
from .object_store import ObjectStore
from .transport import AsyncConnection, async_handshake

log = logging.getLogger("raylite.node_manager")


@dataclass(eq=False)
class WorkerRec:
    worker_id: bytes
    pid: int
    out_fd: int
    err_fd: int
    conn: AsyncConnection | None = None
    address: str = ""
    state: str = "starting"  # starting | idle | leased | dead
    lease_id: bytes | None = None
    for_request: LeaseReq | None = None
    actor_id: bytes | None = None
    partial: dict[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class LeaseReq:
    lease_id: bytes
    shape: dict[str, int]
    actor_id: bytes | None
    conn: AsyncConnection
    rid: int
    reserved: bool = False
    gpu_ids: list[int] = field(default_factory=list)


@dataclass(eq=False)
class Lease:
    lease_id: bytes
    shape: dict[str, int]
    worker: WorkerRec
    owner: AsyncConnection
    gpu_ids: list[int]
    blocked: bool = False


WARM_MIN = 8 << 20  # freed segments this large keep their memory for the next put
WARM_MAX = 1 << 30  # at most this much freed shared memory is kept for reuse
SPILL_THREADS = 4  # segments copied to the spill dir at once
SPILL_BATCH = 100 << 20  # when the store is full, spill this much more than needed


@dataclass(eq=False)
class Segment:
    size: int
    owner: str
    spilled: bool = False
    mapped: int = 0  # read-only mappings processes hold (its memory cannot be reused)


@dataclass(eq=False)
class ActorRec:
    actor_id: bytes
    state: str = "PENDING"
    class_name: str = ""
    address: str = ""
    pid: int = 0
    cause: str = ""
    waiters: list[tuple[AsyncConnection, int]] = field(default_factory=list)
    name: tuple[str, str] | None = None  # (namespace, name) for a named actor
    restarts_left: int = 0
    methods: dict[str, int] = field(default_factory=dict)


class NodeManager:
    def __init__(
        self,
        session_dir: str,
        store_dir: str,
        token: bytes,
        total: dict[str, int],
        num_gpus: int,
        prestart: int,
        max_spill_bytes: int | None = None,
    ) -> None:
        self.session_dir = session_dir
        self.store_dir = store_dir
        self.token = token
        self.total = dict(total)
        self.available = dict(total)
        self.free_gpus = list(range(num_gpus))
        self.prestart = prestart
        self.node_id = new_id()
        # The object store: capacity, segments in LRU order, spilling.
        self.capacity = total.get("object_store_memory", 0) // RESOURCE_UNIT
        self.spill_dir = os.path.join(session_dir, "spill")
        self.max_spill_bytes = max_spill_bytes
        self.store = ObjectStore(store_dir, self.spill_dir)
        self.segments: collections.OrderedDict[bytes, Segment] = collections.OrderedDict()
        self.used_bytes = 0
        self.spilled_bytes = 0
        self.spilled_total = 0  # objects ever spilled
        self.restored_total = 0  # reads served from the spill dir
        self.burst = [0, 0, 0.0]  # bytes, objects, seconds spent spilling since the last log
        self.burst_timer: asyncio.TimerHandle | None = None
        self.spill_lock: asyncio.Lock | None = None
        self.spill_slots = asyncio.Semaphore(1)  # replaced in start(), on the loop
        self.client_pids: dict[str, int] = {}
        self.names: dict[tuple[str, str], ActorRec] = {}  # (namespace, name) -> actor
        # Files whose shared memory is allocated ahead of demand: [(path, size)].
        self.warm: list[tuple[str, int]] = []
        self.warm_bytes = 0
        self.warm_seq = 0
        self.address = f"unix:{session_dir}/node.sock"
        self.workers: dict[bytes, WorkerRec] = {}
        self.by_pid: dict[int, WorkerRec] = {}
        self.idle: list[WorkerRec] = []
        self.pending: list[LeaseReq] = []
        self.leases: dict[bytes, Lease] = {}
        self.actors: dict[bytes, ActorRec] = {}
        self.drivers: set[AsyncConnection] = set()
        self.events: collections.deque[list[Any]] = collections.deque(maxlen=CONFIG.max_task_events)
        self.jobs = 0
        self.stopping = False
        self.stopped: asyncio.Event | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.handlers = {
            P.RegisterClient: self.on_register,
            P.RequestLease: self.on_request_lease,
            P.ReturnLease: self.on_return_lease,
            P.CancelLease: self.on_cancel_lease,
            P.NotifyBlocked: self.on_blocked,
            P.NotifyUnblocked: self.on_unblocked,
            P.GetClusterInfo: self.on_cluster_info,
            P.ActorStateChanged: self.on_actor_state,
            P.GetActorInfo: self.on_get_actor,
            P.TaskEvents: self.on_task_events,
            P.GetTimeline: self.on_get_timeline,
            P.ShutdownNode: self.on_shutdown,
            P.ReserveObject: self.on_reserve_object,
            P.FreeObject: self.on_free_object,
            P.GetStoreStats: self.on_store_stats,
            P.KillActor: self.on_kill_actor,
            P.RegisterActorName: self.on_register_name,
            P.GetNamedActor: self.on_get_named,
            P.ObjectRestored: self.on_object_restored,
            P.ObjectMapped: self.on_object_mapped,
            P.ObjectUnmapped: self.on_object_unmapped,
        }

    # ------------------------------------------------------------------ serving
    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.stopped = asyncio.Event()
        self.spill_lock = asyncio.Lock()
        self.spill_slots = asyncio.Semaphore(SPILL_THREADS)
        os.makedirs(self.spill_dir, mode=0o700, exist_ok=True)
        server = await asyncio.start_unix_server(self.on_client, path=self.address[5:])
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        loop.add_signal_handler(signal.SIGTERM, self.begin_shutdown)
        with contextlib.suppress(OSError):
            loop.add_reader(0, self.on_parent_stdin)
        gc.freeze()  # forked workers share these pages instead of copying them
        for _ in range(self.prestart):
            self.start_worker()
        sys.stdout.write(f"READY {self.address}\n")
        sys.stdout.flush()
        await self.stopped.wait()
        server.close()

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def on_parent_stdin(self) -> None:
        try:
            data = os.read(0, 4096)
        except OSError:
            data = b""
        if not data:  # the driver that started us is gone
            asyncio.get_running_loop().remove_reader(0)
            self.begin_shutdown()

    async def on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not await async_handshake(reader, writer, self.token):
            return
        conn = AsyncConnection(reader, writer)
        try:
            await conn.read_loop(self.dispatch)
        except asyncio.CancelledError:  # the loop is ending: nothing to report
            conn.close()
            return
        self.on_disconnect(conn)

    def dispatch(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        handler = self.handlers.get(type(msg))
        if handler is None:
            log.warning("node manager: unexpected %s", type(msg).__name__)
            return
        handler(conn, msg, rid)

    # ---------------------------------------------------------------- clients
    def on_register(self, conn: AsyncConnection, msg: P.RegisterClient, rid: int) -> None:
        if msg.kind == "worker":
            rec = self.workers.get(msg.worker_id)
            if rec is None or rec.state == "dead":
                conn.close()
                return
            rec.conn = conn
            rec.address = msg.address
            conn.peer = rec
            job_id = b"\0" * 4
        elif msg.kind == "cli":  # a command-line tool looking at the node
            conn.peer = "cli"
            job_id = b"\0" * 4
        else:
            self.drivers.add(conn)
            conn.peer = "driver"
            self.jobs += 1
            job_id = self.jobs.to_bytes(4, "little")
        self.client_pids[msg.address] = msg.pid
        info = {"total_display": self.display(self.total), "spill_dir": self.spill_dir}
        conn.reply(
            rid, P.ClientRegistered(self.node_id, job_id, self.store_dir, self.address, info)
        )
        if msg.kind == "worker":
            if rec.for_request is not None:
                req, rec.for_request = rec.for_request, None
                self.grant(req, rec)
            else:
                rec.state = "idle"
                self.idle.append(rec)
                self.schedule()

    def on_disconnect(self, conn: AsyncConnection) -> None:
        peer = conn.peer
        if isinstance(peer, WorkerRec):
            self.worker_gone(peer, "its process exited")
        elif peer == "driver":
            self.drivers.discard(conn)
            self.begin_shutdown()  # single-node: the node lives as long as its driver
        self.pending = [r for r in self.pending if r.conn is not conn or self.unreserve(r)]
        for lease in [x for x in self.leases.values() if x.owner is conn]:
            # The owner died: whatever its workers run now has nobody to report to.
            self.kill_worker(lease.worker)
        self.schedule()

    def unreserve(self, req: LeaseReq) -> bool:
        if req.reserved:
            self.release(req.shape, req.gpu_ids)
            req.reserved = False
        return False

    # ----------------------------------------------------------------- workers
    def start_worker(self, for_request: LeaseReq | None = None) -> None:
        from .worker import worker_main

        worker_id = new_id()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: becomes a worker, never returns
            worker_main(worker_id, self.address, self.token, self.session_dir, out_w, err_w)
        os.close(out_w)
        os.close(err_w)
        rec = WorkerRec(worker_id, pid, out_r, err_r, for_request=for_request)
        if for_request is not None:
            rec.actor_id = for_request.actor_id
        self.workers[worker_id] = rec
        self.by_pid[pid] = rec
        loop = asyncio.get_running_loop()
        for fd, stream in ((out_r, "out"), (err_r, "err")):
            os.set_blocking(fd, False)
            loop.add_reader(fd, self.on_log, rec, fd, stream)

    def on_log(self, rec: WorkerRec, fd: int, stream: str) -> None:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
            rest = rec.partial.pop(stream, "")
            if rest:
                self.forward_logs([[stream, rest + "\n"]])
            return
        text = rec.partial.get(stream, "") + data.decode("utf-8", "replace")
        head, sep, tail = text.rpartition("\n")
        rec.partial[stream] = tail
        if sep:
            self.forward_logs([[stream, head + "\n"]])

    def forward_logs(self, lines: list[list[Any]]) -> None:
        for conn in self.drivers:
            conn.send(P.LogLines(lines))

    def reap(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            rec = self.by_pid.pop(pid, None)
            if rec is not None:
                self.worker_gone(rec, "its process exited")

    def worker_gone(self, rec: WorkerRec, why: str) -> None:
        if rec.state == "dead":
            return
        rec.state = "dead"
        if rec in self.idle:
            self.idle.remove(rec)
        if rec.lease_id is not None:
            lease = self.leases.pop(rec.lease_id, None)
            if lease is not None and not lease.blocked:
                self.release(lease.shape, lease.gpu_ids)
            elif lease is not None:
                self.release({k: v for k, v in lease.shape.items() if k != "CPU"}, lease.gpu_ids)
        if rec.for_request is not None:
            self.unreserve(rec.for_request)
            req = rec.for_request
            rec.for_request = None
            req.conn.reply(req.rid, P.Failed(f"the worker for the actor died at start ({why})"))
        if rec.actor_id is not None:
            actor = self.actors.setdefault(rec.actor_id, ActorRec(rec.actor_id))
            if actor.state != "DEAD":
                cause = f"The actor's worker process (pid={rec.pid}) died: {why}."
                # Its owner restarts it if it may; askers wait for the new address.
                self.set_actor(actor, "RESTARTING" if actor.restarts_left else "DEAD", cause)
        if rec.conn is not None:
            rec.conn.close()
        if rec.address:  # a dead owner's objects are lost (Ray: OwnerDiedError)
            for oid in [o for o, seg in self.segments.items() if seg.owner == rec.address]:
                self.free_segment(oid)
            # Owners drop what the dead process borrowed from them.
            notice = P.ClientDied(rec.address)
            for conn in [*self.drivers, *(w.conn for w in self.workers.values() if w.conn)]:
                if conn is not rec.conn and not conn.closed:
                    conn.send(notice)
        if not self.stopping:
            self.schedule()

    def kill_worker(self, rec: WorkerRec) -> None:
        if rec.state != "dead":
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.pid, signal.SIGKILL)

    # ------------------------------------------------------------------- leases
    def fits(self, shape: dict[str, int]) -> bool:
        avail = self.available
        return all(avail.get(k, 0) >= v for k, v in shape.items())

    def acquire(self, shape: dict[str, int]) -> list[int]:
        for k, v in shape.items():
            self.available[k] = self.available.get(k, 0) - v
        gpus = shape.get("GPU", 0)
        n = -(-gpus // RESOURCE_UNIT)
        ids, self.free_gpus = self.free_gpus[:n], self.free_gpus[n:]
        return ids

    def release(self, shape: dict[str, int], gpu_ids: list[int]) -> None:
        for k, v in shape.items():
            self.available[k] = self.available.get(k, 0) + v
        self.free_gpus = sorted(set(self.free_gpus) | set(gpu_ids))

    def on_request_lease(self, conn: AsyncConnection, msg: P.RequestLease, rid: int) -> None:
        missing = {k: v for k, v in msg.shape.items() if self.total.get(k, 0) < v}
        if missing:
            conn.send(P.LeaseInfeasible(msg.lease_id, msg.shape, missing))
        self.pending.append(LeaseReq(msg.lease_id, msg.shape, msg.actor_id, conn, rid))
        self.schedule()

    def schedule(self) -> None:
        if self.stopping:
            return
        waiting_for_pool = 0
        still = []
        for req in self.pending:
            if req.conn.closed:
                self.unreserve(req)
                continue
            if req.reserved:  # its dedicated worker is starting
                continue
            if not self.fits(req.shape):
                still.append(req)
                continue
            if req.actor_id is not None:
                req.gpu_ids = self.acquire(req.shape)
                req.reserved = True
                self.start_worker(for_request=req)
                continue
            if self.idle:
                req.gpu_ids = self.acquire(req.shape)
                req.reserved = True
                self.grant(req, self.idle.pop())
                continue
            waiting_for_pool += 1
            still.append(req)
        self.pending = still
        starting = sum(
            1 for w in self.workers.values() if w.state == "starting" and w.for_request is None
        )
        for _ in range(waiting_for_pool - starting):
            self.start_worker()

    def grant(self, req: LeaseReq, rec: WorkerRec) -> None:
        if not req.reserved:
            req.gpu_ids = self.acquire(req.shape)
            req.reserved = True
        rec.state = "leased"
        rec.lease_id = req.lease_id
        self.leases[req.lease_id] = Lease(req.lease_id, req.shape, rec, req.conn, req.gpu_ids)
        if req.conn.closed:
            self.end_lease(req.lease_id, kill=req.actor_id is not None)
            return
        req.conn.reply(
            req.rid, P.LeaseGranted(req.lease_id, rec.worker_id, rec.address, rec.pid, req.gpu_ids)
        )

    def end_lease(self, lease_id: bytes, kill: bool) -> None:
        lease = self.leases.pop(lease_id, None)
        if lease is None:
            return
        shape = (
            lease.shape
            if not lease.blocked
            else {k: v for k, v in lease.shape.items() if k != "CPU"}
        )
        self.release(shape, lease.gpu_ids)
        rec = lease.worker
        rec.lease_id = None
        if kill or rec.actor_id is not None:
            self.kill_worker(rec)
        elif rec.state == "leased":
            rec.state = "idle"
            self.idle.append(rec)
        self.schedule()

    def on_return_lease(self, conn: AsyncConnection, msg: P.ReturnLease, rid: int) -> None:
        self.end_lease(msg.lease_id, msg.kill)

    def on_cancel_lease(self, conn: AsyncConnection, msg: P.CancelLease, rid: int) -> None:
        for req in self.pending:
            if req.lease_id == msg.lease_id:
                self.pending.remove(req)
                self.unreserve(req)
                conn.reply(req.rid, P.Failed("cancelled"))
                return

    def on_blocked(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        rec = conn.peer
        lease = (
            self.leases.get(rec.lease_id) if isinstance(rec, WorkerRec) and rec.lease_id else None
        )
        if lease is not None and not lease.blocked:
            lease.blocked = True
            cpu = lease.shape.get("CPU", 0)
            self.available["CPU"] = self.available.get("CPU", 0) + cpu
            self.schedule()

    def on_unblocked(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        rec = conn.peer
        lease = (
            self.leases.get(rec.lease_id) if isinstance(rec, WorkerRec) and rec.lease_id else None
        )
        if lease is not None and lease.blocked:
            lease.blocked = False
            cpu = lease.shape.get("CPU", 0)
            self.available["CPU"] = self.available.get("CPU", 0) - cpu

    # ------------------------------------------------------------ object store
    def spill_room(self) -> int:
        if self.max_spill_bytes is not None:
            return self.max_spill_bytes - self.spilled_bytes
        return shutil.disk_usage(self.spill_dir).free

    def on_reserve_object(self, conn: AsyncConnection, msg: P.ReserveObject, rid: int) -> None:
        self.spawn(self.reserve(conn, msg, rid))

    async def reserve(self, conn: AsyncConnection, msg: P.ReserveObject, rid: int) -> None:
        """Make room for a new segment, spilling the least recently used ones if needed."""
        assert self.spill_lock is not None
        async with self.spill_lock:
            size, room = msg.size, self.spill_room()
            if size > self.capacity + room:
                conn.reply(
                    rid,
                    P.Failed(
                        f"Cannot put an object of {size / 2**20:.1f} MiB: it is larger than the object "
                        f"store ({self.capacity / 2**20:.1f} MiB) plus the free spill space "
                        f"({room / 2**20:.1f} MiB). Start raylite with a larger "
                        "object_store_memory, free disk space, or split the object."
                    ),
                )
                return
            if size > self.capacity:  # never fits in memory: it lives on disk from the start
                self.segments[msg.object_id] = Segment(size, msg.owner, spilled=True)
                self.spilled_bytes += size
                conn.reply(rid, P.ObjectReserved(self.spill_dir, ""))
                return
            prealloc = self.take_warm(size)
            if self.used_bytes + self.warm_bytes + size > self.capacity:
                self.drop_warm()
            if self.used_bytes + size > self.capacity:
                # Spill a batch, not just enough for this object: the copies run in
                # parallel, and the next puts find room without waiting.
                batch = min(SPILL_BATCH, self.capacity // 4)
                await self.spill_until(self.capacity - size - batch)
            self.segments[msg.object_id] = Segment(size, msg.owner)
            self.used_bytes += size
            conn.reply(rid, P.ObjectReserved(self.store_dir, prealloc))

    def take_warm(self, size: int) -> str:
        """A pre-allocated file that fits `size` with little waste, or ""."""
        for i, (path, n) in enumerate(self.warm):
            if size <= n <= size + size // 4:
                del self.warm[i]
                self.warm_bytes -= n
                return path
        return ""

    def drop_warm(self) -> None:
        for path, _ in self.warm:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.warm, self.warm_bytes = [], 0

    async def spill_until(self, target: int) -> None:
        """Spill least recently used segments until at most `target` bytes are in memory.

        The victims are copied to disk in parallel: a cold page cache on this kind of disk
        takes writes from several threads about twice as fast as from one.
        """
        loop = asyncio.get_running_loop()
        victims: list[tuple[bytes, Segment]] = []
        freeing, room = 0, self.spill_room()
        for oid, seg in self.segments.items():
            if self.used_bytes - freeing <= target:
                break
            if seg.spilled or seg.size > room:
                continue
            victims.append((oid, seg))
            freeing += seg.size
            room -= seg.size
        if not victims:
            return
        start = loop.time()
        done = await asyncio.gather(
            *(self.spill_one(oid, seg) for oid, seg in victims), return_exceptions=True
        )
        seconds = loop.time() - start
        for (_, seg), ok in zip(victims, done, strict=True):
            if ok is True:
                self.burst[0] += seg.size
                self.burst[1] += 1
        self.burst[2] += seconds
        if self.burst[1] and self.burst_timer is None:
            self.burst_timer = loop.call_later(1.0, self.log_spill_burst)

    async def spill_one(self, oid: bytes, seg: Segment) -> bool:
        async with self.spill_slots:
            try:
                await asyncio.to_thread(self.store.spill, oid)
            except FileNotFoundError:  # still being written, or freed meanwhile
                return False
        if self.segments.get(oid) is not seg:  # freed while we copied
            self.store.delete(oid)
            return False
        seg.spilled = True
        self.used_bytes -= seg.size
        self.spilled_bytes += seg.size
        self.spilled_total += 1
        return True

    def log_spill_burst(self) -> None:
        nbytes, n, seconds = self.burst
        self.burst, self.burst_timer = [0, 0, 0.0], None
        mib = nbytes / 2**20
        self.forward_logs(
            [
                [
                    "err",
                    f"(raylite) Spilled {mib:.0f} MiB, {n} objects, write "
                    f"throughput {mib / max(seconds, 1e-9):.0f} MiB/s.\n",
                ]
            ]
        )

    def on_object_restored(self, conn: AsyncConnection, msg: P.ObjectRestored, rid: int) -> None:
        self.restored_total += 1

    def on_free_object(self, conn: AsyncConnection, msg: P.FreeObject, rid: int) -> None:
        self.free_segment(msg.object_id)

    def on_object_mapped(self, conn: AsyncConnection, msg: P.ObjectMapped, rid: int) -> None:
        seg = self.segments.get(msg.object_id)
        if seg is not None:
            seg.mapped += 1
            self.segments.move_to_end(msg.object_id)  # recently used: spilled last
        conn.reply(rid, P.Ok())

    def on_object_unmapped(self, conn: AsyncConnection, msg: P.ObjectUnmapped, rid: int) -> None:
        seg = self.segments.get(msg.object_id)
        if seg is not None:
            seg.mapped -= 1

    def free_segment(self, oid: bytes) -> None:
        seg = self.segments.pop(oid, None)
        if seg is not None:
            if seg.spilled:
                self.spilled_bytes -= seg.size
            else:
                self.used_bytes -= seg.size
                if seg.mapped <= 0 and seg.size >= WARM_MIN and self.recycle(oid, seg.size):
                    return
        self.store.delete(oid)

    def recycle(self, oid: bytes, size: int) -> bool:
        """Keep a freed segment's memory for the next put of its size, if nobody maps it."""
        if (
            self.warm_bytes + size > WARM_MAX
            or self.used_bytes + self.warm_bytes + size > self.capacity
        ):
            return False
        self.warm_seq += 1
        path = os.path.join(self.store_dir, f".warm-{self.warm_seq}")
        try:
            os.rename(self.store.path(oid), path)
        except OSError:
            return False
        self.warm.append((path, size))
        self.warm_bytes += size
        return True

    def on_store_stats(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        stats = {
            "used_bytes": self.used_bytes,
            "capacity_bytes": self.capacity,
            "spilled_bytes": self.spilled_bytes,
            "spilled_objects": self.spilled_total,
            "num_objects": len(self.segments),
            "store_dir": self.store_dir,
            "spill_dir": self.spill_dir,
            "restored_objects": self.restored_total,
            "clients": dict(self.client_pids),
        }
        objects = [
            {
                "object_id": oid.hex(),
                "size": seg.size,
                "owner": seg.owner,
                "owner_pid": self.client_pids.get(seg.owner, 0),
                "spilled": seg.spilled,
            }
            for oid, seg in self.segments.items()
        ]
        conn.reply(rid, P.StoreStats(stats, objects))

    # ----------------------------------------------------------------- head
    def display(self, res: dict[str, int]) -> dict[str, float]:
        return {k: v / RESOURCE_UNIT for k, v in res.items()}

    def on_cluster_info(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        avail = {k: max(v, 0) for k, v in self.available.items()}
        node = {
            "NodeID": self.node_id.hex(),
            "Alive": True,
            "NodeManagerAddress": "127.0.0.1",
            "NodeManagerHostname": socket.gethostname(),
            "NodeName": "127.0.0.1",
            "ObjectStoreSocketName": self.store_dir,
            "RayletSocketName": self.address,
            "Resources": self.display(self.total),
            "alive": True,
        }
        conn.reply(rid, P.ClusterInfo(self.total, avail, [node]))

    def on_register_name(self, conn: AsyncConnection, msg: P.RegisterActorName, rid: int) -> None:
        key = (msg.namespace, msg.name)
        taken = self.names.get(key)
        if taken is not None and taken.state != "DEAD":
            conn.reply(
                rid,
                P.NamedActor(True, taken.actor_id, taken.class_name, taken.methods, taken.address),
            )
            return
        actor = self.actors.setdefault(msg.actor_id, ActorRec(msg.actor_id))
        actor.name, actor.class_name, actor.methods = key, msg.class_name, msg.methods
        self.names[key] = actor
        conn.reply(rid, P.NamedActor(False, msg.actor_id, msg.class_name, msg.methods, ""))

    def on_get_named(self, conn: AsyncConnection, msg: P.GetNamedActor, rid: int) -> None:
        actor = self.names.get((msg.namespace, msg.name))
        if actor is None or actor.state == "DEAD":
            conn.reply(rid, P.NamedActor(False, b"", "", {}, ""))
        else:
            conn.reply(
                rid,
                P.NamedActor(True, actor.actor_id, actor.class_name, actor.methods, actor.address),
            )

    def set_actor(self, actor: ActorRec, state: str, cause: str = "") -> None:
        actor.state = state
        if cause:
            actor.cause = cause
        if state == "DEAD" and actor.name is not None and self.names.get(actor.name) is actor:
            del self.names[actor.name]  # a dead actor's name can be taken again
        if state in ("ALIVE", "DEAD"):
            for conn, rid in actor.waiters:
                conn.reply(
                    rid, P.ActorInfo(actor.actor_id, actor.state, actor.address, actor.cause)
                )
            actor.waiters.clear()

    def on_actor_state(self, conn: AsyncConnection, msg: P.ActorStateChanged, rid: int) -> None:
        actor = self.actors.setdefault(msg.actor_id, ActorRec(msg.actor_id))
        if actor.state == "DEAD":
            return
        actor.class_name = msg.class_name or actor.class_name
        actor.address = msg.address or actor.address
        actor.pid = msg.pid or actor.pid
        actor.restarts_left = msg.restarts_left
        self.set_actor(actor, msg.state, msg.cause)

    def on_kill_actor(self, conn: AsyncConnection, msg: P.KillActor, rid: int) -> None:
        actor = self.actors.setdefault(msg.actor_id, ActorRec(msg.actor_id))
        if msg.no_restart:
            actor.restarts_left = 0
            if actor.state != "DEAD":
                self.set_actor(actor, "DEAD", msg.cause)
        for rec in self.workers.values():
            if rec.actor_id == msg.actor_id:
                self.kill_worker(rec)
        conn.reply(rid, P.Ok())

    def on_get_actor(self, conn: AsyncConnection, msg: P.GetActorInfo, rid: int) -> None:
        actor = self.actors.setdefault(msg.actor_id, ActorRec(msg.actor_id))
        if actor.state in ("ALIVE", "DEAD"):
            conn.reply(rid, P.ActorInfo(actor.actor_id, actor.state, actor.address, actor.cause))
        else:
            actor.waiters.append((conn, rid))

    def on_task_events(self, conn: AsyncConnection, msg: P.TaskEvents, rid: int) -> None:
        self.events.extend(msg.events)

    def on_get_timeline(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        self.spawn(self.timeline(conn, rid))

    async def timeline(self, conn: AsyncConnection, rid: int) -> None:
        flushes = [
            asyncio.wait_for(w.conn.request(P.FlushEvents()), 5.0)
            for w in self.workers.values()
            if w.conn is not None and not w.conn.closed and w.state != "dead"
        ]
        await asyncio.gather(*flushes, return_exceptions=True)
        conn.reply(rid, P.Timeline(list(self.events)))

    # ----------------------------------------------------------------- shutdown
    def on_shutdown(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        self.spawn(self.shutdown(conn, rid))

    def begin_shutdown(self) -> None:
        if not self.stopping:
            self.spawn(self.shutdown(None, 0))

    async def shutdown(self, conn: AsyncConnection | None, rid: int) -> None:
        if self.stopping:
            if conn is not None:
                await self.stopped.wait()  # type: ignore[union-attr]
            return
        self.stopping = True
        alive = [w for w in self.workers.values() if w.pid in self.by_pid]
        for w in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONFIG.kill_grace_s
        while self.by_pid and loop.time() < deadline:
            self.reap()
            await asyncio.sleep(0.005)
        for pid in list(self.by_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(self.by_pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)  # noqa: ASYNC222 - just SIGKILLed: returns at once
            self.by_pid.pop(pid, None)
        self.remove_files()
        if conn is not None:
            conn.reply(rid, P.Ok())
            with contextlib.suppress(Exception):
                await conn.writer.drain()
        self.stopped.set()  # type: ignore[union-attr]

    def remove_files(self) -> None:
        shutil.rmtree(self.store_dir, ignore_errors=True)
        shutil.rmtree(self.session_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="raylite-node-manager")
    parser.add_argument("--session-dir", required=True)
    parser.add_argument("--store-dir", required=True)
    parser.add_argument("--resources", required=True, help="JSON: resource -> units")
    parser.add_argument("--num-gpus", type=int, default=0)
    parser.add_argument("--prestart", type=int, default=0)
    parser.add_argument("--max-spill-bytes", type=int, default=None)
    args = parser.parse_args(argv)
    token = bytes.fromhex(sys.stdin.readline().strip())
    logging.basicConfig(level=logging.WARNING, format="(raylite node manager) %(message)s")
    nm = NodeManager(
        args.session_dir,
        args.store_dir,
        token,
        json.loads(args.resources),
        args.num_gpus,
        args.prestart,
        args.max_spill_bytes,
    )
    try:
        asyncio.run(nm.serve())
    finally:
        nm.remove_files()


if __name__ == "__main__":
    main()
