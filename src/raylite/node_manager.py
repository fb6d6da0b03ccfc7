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
import time
from dataclasses import dataclass, field
from typing import Any

from . import protocol as P
from . import scheduling
from .config import CONFIG, RESOURCE_UNIT
from .exceptions import ConnectionLost
from .head import Head, open_storage
from .object_ref import new_id
from .object_store import ObjectStore
from .serialization import loads_inline
from .task_events import StateViews, TaskEventStore, WorkerLogs
from .transport import AsyncConnection, async_connect, async_handshake, receive_stream

log = logging.getLogger("raylite.node_manager")


class _Capture:
    """Stands for a connection: the reply to a request answered in this process."""

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future
        self.closed = False

    def reply(self, rid: int, msg: Any) -> None:
        if not self.future.done():
            self.future.set_result(msg)

    def send(self, msg: Any) -> None:
        pass


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
    strategy: Any = None
    spilled: int = 0  # times other nodes sent it on: after MAX_HOPS it waits where it is
    detached: bool = False


@dataclass(eq=False)
class Lease:
    lease_id: bytes
    shape: dict[str, int]
    worker: WorkerRec
    owner: AsyncConnection
    gpu_ids: list[int]
    blocked: bool = False
    detached: bool = False  # a detached actor's: its owner may go, it stays


HEAD_REQUESTS = (
    P.GetClusterInfo,
    P.GetNodeStatus,
    P.ActorStateChanged,
    P.GetActorInfo,
    P.KillActor,
    P.RegisterActorName,
    P.GetNamedActor,
    P.RegisterJob,
    P.RegisterDetached,
)
MAX_HOPS = 3  # a lease request is sent on (spillback) at most this many times
BEAT_MIN_S = 0.02  # at most one early heartbeat per this many seconds

WARM_MIN = 8 << 20  # freed segments this large keep their memory for the next put
WARM_MAX = 1 << 30  # at most this much freed shared memory is kept for reuse
SPILL_THREADS = 4  # segments copied to the spill dir at once
SPILL_BATCH = 100 << 20  # when the store is full, spill this much more than needed
PREFETCH_AHEAD = 3  # spilled segments read ahead when one is restored


@dataclass(eq=False)
class Segment:
    size: int
    owner: str
    spilled: bool = False
    mapped: int = 0  # read-only mappings processes hold (its memory cannot be reused)
    copies: set[str] = field(default_factory=set)  # node managers that pulled a copy
    prefetched: bool = False  # spilled, and its file already asked to be read ahead


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
        *,
        ip: str = "127.0.0.1",
        port: int | None = None,
        head_address: str | None = None,
        storage: str | None = None,
        cluster: bool = False,
        node_timeout_s: float | None = None,
        dashboard_port: int | None = None,
        dashboard_host: str = "127.0.0.1",
        head_only: bool = False,
        head_node: bool = False,
    ) -> None:
        # head_only: the head's own process (`raylite start --head`): it runs no work
        # and is no node, so killing it kills no actor. head_node: the node beside it.
        self.head_only = head_only
        self.head_node = head_node
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
        self.drivers: set[AsyncConnection] = set()
        self.driver_addresses: dict[AsyncConnection, str] = {}
        # Task records and timeline, recent worker output, the state API (task_events.py).
        self.task_events = TaskEventStore(CONFIG.max_task_events, self.node_id)
        self.worker_logs = WorkerLogs()
        self.state_views = StateViews(self, self.task_events, self.worker_logs)
        # The cluster. `cluster`: started by `raylite start`, lives until stopped (not
        # with a driver) and listens on TCP. The head runs in this process unless
        # `head_address` names another node's.
        self.ip = ip
        self.port = port
        self.cluster = cluster
        self.kept_actors: dict[bytes, Any] = {}  # start_actor's connections (detached actors)
        self.tcp_address = ""
        self.head_address = head_address
        self.node_timeout_s = node_timeout_s or CONFIG.node_timeout_s
        # The web dashboard (dashboard/), served by the head only; None: off.
        self.dashboard_port = dashboard_port
        self.dashboard_host = dashboard_host
        self.dashboard: Any = None
        self.dashboard_url = ""  # http://HOST:PORT once it listens (also <session>/dashboard_url)
        self.head: Head | None = None
        if head_address is None:
            self.head = Head(self, open_storage(storage), self.node_timeout_s)
        self.head_conn: AsyncConnection | None = None
        self.head_ready: asyncio.Event | None = None
        self.beat_now: asyncio.Event | None = None  # set: heartbeat now (joined nodes)
        self.others: dict[bytes, scheduling.NodeView] = {}  # other live nodes, last view
        self.view_rows: list[dict[str, Any]] = []
        self.spread_seq = 0
        self.nm_peers: dict[str, AsyncConnection] = {}  # other node managers, by address
        self.fetches: dict[bytes, asyncio.Future[Any]] = {}  # objects being pulled here
        self.started_at = 0.0
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
            P.TaskEvents: self.on_task_events,
            P.GetTimeline: self.on_task_query,
            P.ListState: self.on_list_state,
            P.SummarizeTasks: self.on_task_query,
            P.GetLogs: self.on_get_logs,
            P.ShutdownNode: self.on_shutdown,
            P.ReserveObject: self.on_reserve_object,
            P.FreeObject: self.on_free_object,
            P.GetStoreStats: self.on_store_stats,
            P.ObjectRestored: self.on_object_restored,
            P.ObjectMapped: self.on_object_mapped,
            P.ObjectUnmapped: self.on_object_unmapped,
            P.PullObject: self.on_pull_object,
            P.FetchObject: self.on_fetch_object,
            P.KillActorWorker: self.on_kill_actor_worker,
            P.StartActor: self.on_start_actor,
            P.NodeDied: self.on_head_message,
            P.ClusterView: self.on_head_view,
        }
        # Head requests: served here on the head node, forwarded to it elsewhere.
        for kind in HEAD_REQUESTS:
            self.handlers[kind] = self.forward_to_head
        if self.head is not None:
            self.handlers.update(self.head.handlers)
        else:  # what the head sends us
            self.handlers[P.ClientDied] = self.on_head_message
            self.handlers[P.LogLines] = self.on_head_message

    @property
    def actors(self) -> dict[bytes, Any]:
        """The actor table (the head's; empty on other nodes, which ask the head)."""
        return self.head.actors if self.head is not None else {}

    # ------------------------------------------------------------------ serving
    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.stopped = asyncio.Event()
        self.spill_lock = asyncio.Lock()
        self.spill_slots = asyncio.Semaphore(SPILL_THREADS)
        os.makedirs(self.spill_dir, mode=0o700, exist_ok=True)
        self.started_at = time.time()
        server = await asyncio.start_unix_server(self.on_client, path=self.address[5:])
        tcp_server = None
        if self.cluster:
            tcp_server = await asyncio.start_server(
                self.on_client, host=self.ip, port=self.port or 0, reuse_address=True
            )
            port = tcp_server.sockets[0].getsockname()[1]
            self.tcp_address = f"tcp:{self.ip}:{port}"
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        loop.add_signal_handler(signal.SIGTERM, self.begin_shutdown)
        if not self.cluster:  # the driver that started us holds our stdin
            with contextlib.suppress(OSError):
                loop.add_reader(0, self.on_parent_stdin)
        if self.head is not None:
            if not self.head_only:
                self.head.add_own_node()
            self.spawn(self.head.monitor_loop())
        else:
            self.head_ready = asyncio.Event()
            try:
                await self.join_head(rejoin=False)
            except Exception as exc:
                sys.stdout.write(f"FAILED cannot join the head at {self.head_address}: {exc}\n")
                sys.stdout.flush()
                return
            self.spawn(self.heartbeat_loop())
        if self.head is not None and self.dashboard_port is not None:
            from .dashboard import start_dashboard

            self.dashboard = await start_dashboard(self, self.dashboard_host, self.dashboard_port)
            self.dashboard_url = self.dashboard.url if self.dashboard is not None else ""
        gc.freeze()  # forked workers share these pages instead of copying them
        for _ in range(self.prestart):
            self.start_worker()
        sys.stdout.write(f"READY {self.address} {self.tcp_address}\n")
        sys.stdout.flush()
        if self.cluster:  # the CLI that started us stops reading: log to a file
            fd = os.open(
                os.path.join(self.session_dir, "node.log"), os.O_WRONLY | os.O_CREAT, 0o600
            )
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
        await self.stopped.wait()
        if self.dashboard is not None:
            await self.dashboard.stop()
        server.close()
        if tcp_server is not None:
            tcp_server.close()

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
            self.driver_addresses[conn] = msg.address
            if self.head is None:  # job ids are the cluster's: the head hands them out
                self.spawn(self.register_driver(conn, msg, rid))
                return
            job_id = self.head.new_job()
        self.registered(conn, msg, rid, job_id)

    async def register_driver(self, conn: AsyncConnection, msg: P.RegisterClient, rid: int) -> None:
        reply = await self.head_request(P.RegisterJob(msg.address, msg.pid))
        if not isinstance(reply, P.JobRegistered):
            conn.reply(rid, reply)
            return
        self.registered(conn, msg, rid, reply.job_id)

    def registered(
        self, conn: AsyncConnection, msg: P.RegisterClient, rid: int, job_id: bytes
    ) -> None:
        self.client_pids[msg.address] = msg.pid
        total = self.head.cluster_totals()[0] if self.head is not None else self.total
        info = {
            "total_display": self.display(total),
            "spill_dir": self.spill_dir,
            "tcp_address": self.tcp_address,
            "ip": self.ip,
        }
        conn.reply(
            rid, P.ClientRegistered(self.node_id, job_id, self.store_dir, self.address, info)
        )
        rec = conn.peer
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
            address = self.driver_addresses.pop(conn, "")
            if not self.cluster:
                self.begin_shutdown()  # init()'s node lives as long as its driver
            elif address:  # the node outlives drivers: drop what this one owned
                for oid in [o for o, seg in self.segments.items() if seg.owner == address]:
                    self.free_segment(oid)
                self.tell_clients(P.ClientDied(address))
                self.to_head(P.ClientDied(address))
        elif self.head is not None and peer is not None and not isinstance(peer, str):
            self.head.on_node_disconnect(conn)
        for address, peer_conn in list(self.nm_peers.items()):
            if peer_conn is conn:
                del self.nm_peers[address]
        self.pending = [r for r in self.pending if r.conn is not conn or self.unreserve(r)]
        for lease in [x for x in self.leases.values() if x.owner is conn and not x.detached]:
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
            worker_main(
                worker_id,
                self.address,
                self.token,
                self.session_dir,
                out_w,
                err_w,
                self.ip if self.cluster else None,
            )
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
                self.worker_logs.add(rec.pid, stream, rest)
                self.forward_logs([[stream, rest + "\n"]], rec.pid)
            return
        text = rec.partial.get(stream, "") + data.decode("utf-8", "replace")
        head, sep, tail = text.rpartition("\n")
        rec.partial[stream] = tail
        if sep:
            self.worker_logs.add(rec.pid, stream, head)
            self.forward_logs([[stream, head + "\n"]], rec.pid)

    def forward_logs(self, lines: list[list[Any]], pid: int = 0) -> None:
        msg = P.LogLines(lines, pid)
        for conn in self.drivers:
            conn.send(msg)
        if self.cluster:  # drivers on other nodes see it too
            self.to_head(msg)

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
        self.task_events.worker_died(rec.pid, f"The worker process (pid={rec.pid}) died: {why}.")
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
            cause = f"The actor's worker process (pid={rec.pid}) died: {why}."
            self.to_head(
                P.ActorStateChanged(rec.actor_id, "PROCESS_DIED", "", "", rec.pid, cause, 0)
            )
        if rec.conn is not None:
            rec.conn.close()
        if rec.actor_id is not None:
            kept = self.kept_actors.pop(rec.actor_id, None)
            if kept is not None:
                kept.close()
        if rec.address:  # a dead owner's objects are lost (Ray: OwnerDiedError)
            for oid in [o for o, seg in self.segments.items() if seg.owner == rec.address]:
                self.free_segment(oid)
            # Owners drop what the dead process borrowed from them.
            notice = P.ClientDied(rec.address)
            self.tell_clients(notice, skip=rec.conn)
            if self.cluster:  # and owners on other nodes
                self.to_head(notice)
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
        self.resources_changed()

    def resources_changed(self) -> None:
        """Tell the head soon (not at the next period): others place work by our numbers."""
        if self.beat_now is not None:
            self.beat_now.set()

    def on_request_lease(self, conn: AsyncConnection, msg: P.RequestLease, rid: int) -> None:
        req = LeaseReq(
            msg.lease_id,
            msg.shape,
            msg.actor_id,
            conn,
            rid,
            strategy=msg.strategy,
            spilled=int(msg.spilled),
            detached=msg.detached,
        )
        if not msg.spilled:
            where = self.place(req)
            if where.kind == "spill" or where.kind == "fail":
                self.redirect(req, where)
                return
            if where.kind == "infeasible":
                missing = {k: v for k, v in msg.shape.items() if self.total.get(k, 0) < v}
                conn.send(P.LeaseInfeasible(msg.lease_id, msg.shape, missing))
        self.pending.append(req)
        self.schedule()

    def place(self, req: LeaseReq) -> scheduling.Placement:
        local = scheduling.NodeView(self.node_id, self.tcp_address, self.total, self.available)
        others = self.other_nodes()
        if not others and req.strategy is None:  # one node: no choice
            if scheduling.fits(req.shape, self.total):
                return scheduling.Placement(None, scheduling.HERE)
            return scheduling.Placement(None, "infeasible")
        if req.strategy == "SPREAD":
            self.spread_seq += 1
            req.spilled = MAX_HOPS  # placed once, round-robin: it waits where it lands
        return scheduling.place(req.shape, req.strategy, local, others, self.spread_seq)

    def redirect(self, req: LeaseReq, where: scheduling.Placement) -> None:
        """Answer a lease request with another node (spillback) or a failure."""
        if where.kind == "fail" or where.node is None:
            req.conn.reply(req.rid, P.Failed(where.reason))
            return
        node = where.node
        # Count the resources as taken until the next view, so a burst of requests
        # spreads over the free nodes instead of all landing on the first.
        avail = dict(node.available)
        for k, v in req.shape.items():
            avail[k] = avail.get(k, 0) - v
        self.update_view(node.node_id, avail)
        req.conn.reply(req.rid, P.LeaseSpillback(req.lease_id, node.node_id, node.address))

    def other_nodes(self) -> list[scheduling.NodeView]:
        if self.head is not None:
            return [v for v in self.head.node_views() if v.node_id != self.node_id and v.alive]
        return list(self.others.values())

    def update_view(self, node_id: bytes, available: dict[str, int]) -> None:
        if self.head is not None:
            rec = self.head.nodes.get(node_id)
            if rec is not None:
                rec.available = available
        elif node_id in self.others:
            old = self.others[node_id]
            self.others[node_id] = scheduling.NodeView(
                old.node_id, old.address, old.total, available, old.alive
            )

    def place_shape(self, shape: dict[str, int], actor_id: bytes) -> scheduling.Placement:
        """Where a lease of `shape` for the actor would go (the head's detached restarts)."""
        return self.place(LeaseReq(b"", shape, actor_id, None, 0))  # type: ignore[arg-type]

    def pending_shapes(self) -> list[dict[str, int]]:
        return [r.shape for r in self.pending[:100]]

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
                if req.spilled < MAX_HOPS and self.cluster:  # another node may have room now
                    where = self.place(req)
                    # Sent here already: move on again only to a node with room now
                    # (the view that sent it may have been stale), never to wait elsewhere.
                    moving = where.kind == "fail" or (
                        where.kind == "spill"
                        and where.node is not None
                        and (not req.spilled or scheduling.fits(req.shape, where.node.available))
                    )
                    if moving:
                        self.redirect(req, where)
                        continue
                    self.resources_changed()  # a fresh view may find it room elsewhere
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
        self.leases[req.lease_id] = Lease(
            req.lease_id, req.shape, rec, req.conn, req.gpu_ids, detached=req.detached
        )
        if req.conn.closed:
            self.end_lease(req.lease_id, kill=req.actor_id is not None)
            return
        req.conn.reply(
            req.rid,
            P.LeaseGranted(
                req.lease_id, rec.worker_id, rec.address, rec.pid, req.gpu_ids, self.node_id
            ),
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
        if not msg.via or msg.via == self.tcp_address:
            self.end_lease(msg.lease_id, msg.kill)
            return
        for node in self.other_nodes():  # credit it now: placement reads this view
            if node.address == msg.via:
                avail = dict(node.available)
                for k, v in (msg.shape or {}).items():
                    avail[k] = min(avail.get(k, 0) + v, node.total.get(k, 0))
                self.update_view(node.node_id, avail)
        forward = P.ReturnLease(msg.lease_id, msg.kill)

        async def send() -> None:
            with contextlib.suppress(ConnectionLost, OSError):
                (await self.connect_nm(msg.via)).send(forward)

        self.spawn(send())

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
        where = await self.make_room(msg.object_id, msg.size, msg.owner, warm=True)
        if isinstance(where, P.Failed):
            conn.reply(rid, where)
        else:
            directory, prealloc = where
            conn.reply(rid, P.ObjectReserved(directory, prealloc))

    async def make_room(
        self, oid: bytes, size: int, owner: str, warm: bool = False
    ) -> tuple[str, str] | P.Failed:
        """Account a new segment, spilling the least recently used ones if needed.

        Returns (directory to write it in, a pre-allocated file or ""), or Failed.
        """
        assert self.spill_lock is not None
        async with self.spill_lock:
            old = self.segments.pop(oid, None)
            if old is not None:  # stored again (rebuilt by lineage): count it once
                if old.spilled:
                    self.spilled_bytes -= old.size
                else:
                    self.used_bytes -= old.size
            room = self.spill_room()
            if size > self.capacity + room:
                return P.Failed(
                    f"Cannot put an object of {size / 2**20:.1f} MiB: it is larger than the object "
                    f"store ({self.capacity / 2**20:.1f} MiB) plus the free spill space "
                    f"({room / 2**20:.1f} MiB). Start raylite with a larger "
                    "object_store_memory, free disk space, or split the object."
                )
            if size > self.capacity:  # never fits in memory: it lives on disk from the start
                self.segments[oid] = Segment(size, owner, spilled=True)
                self.spilled_bytes += size
                return self.spill_dir, ""
            prealloc = self.take_warm(size) if warm else ""
            if self.used_bytes + self.warm_bytes + size > self.capacity:
                self.drop_warm()
            if self.used_bytes + size > self.capacity:
                # Spill a batch, not just enough for this object: the copies run in
                # parallel, and the next puts find room without waiting.
                batch = min(SPILL_BATCH, self.capacity // 4)
                await self.spill_until(self.capacity - size - batch)
            self.segments[oid] = Segment(size, owner)
            self.used_bytes += size
            return self.store_dir, prealloc

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
        """A spilled object was read: have the disk read the next spilled ones ahead.

        Readers often go through spilled data in the order it was spilled; asking the
        kernel to read the next few files now overlaps the disk with the reader.
        """
        self.restored_total += 1
        ahead = 0
        for oid, seg in self.segments.items():
            if ahead >= PREFETCH_AHEAD:
                break
            if not seg.spilled or seg.prefetched or oid == msg.object_id:
                continue
            seg.prefetched = True
            ahead += 1
            with contextlib.suppress(OSError, AttributeError):
                fd = os.open(self.store.path(oid, self.spill_dir), os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, seg.size, os.POSIX_FADV_WILLNEED)
                finally:
                    os.close(fd)

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
            for address in seg.copies:  # other nodes pulled it: their copies go too
                self.spawn(self.tell_node(address, P.FreeObject(oid)))
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
            "recycled_bytes": self.warm_bytes,  # freed memory kept for the next put or pull
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

    # ----------------------------------------------------------------- cluster
    def display(self, res: dict[str, int]) -> dict[str, float]:
        return {k: v / RESOURCE_UNIT for k, v in res.items()}

    def node_info(self) -> dict[str, Any]:
        return {
            "hostname": socket.gethostname(),
            "store_dir": self.store_dir,
            "session_dir": self.session_dir,
            "pid": os.getpid(),
            "start_time": self.started_at,
            "unix_address": self.address,
            "head_node": self.head_node or (self.head is not None and not self.head_only),
        }

    def node_dict(self, rec: Any) -> dict[str, Any]:
        """A node as Ray's `nodes()` shows it."""
        port = int(rec.address.rpartition(":")[2]) if rec.address.startswith("tcp:") else 0
        return {
            "NodeID": rec.node_id.hex(),
            "Alive": rec.alive,
            "NodeManagerAddress": rec.ip,
            "NodeManagerHostname": rec.info.get("hostname", ""),
            "NodeManagerPort": port,
            "NodeName": rec.ip,
            "ObjectStoreSocketName": rec.info.get("store_dir", ""),
            "RayletSocketName": rec.address or rec.info.get("unix_address", ""),
            "Resources": self.display(rec.total) if rec.alive else {},
            "IsHead": rec.node_id == self.node_id if self.head is not None else False,
            "alive": rec.alive,
        }

    def to_head(self, msg: Any) -> None:
        """A one-way message for the head: a call here, a send elsewhere."""
        if self.head is not None:
            self.head.handlers[type(msg)](None, msg, 0)
        else:
            self.spawn(self.head_request(msg, reply=False))

    async def head_request(self, msg: Any, reply: bool = True) -> Any:
        """Send to the head once it is reachable; its reply, or Failed."""
        assert self.head_ready is not None
        try:
            await asyncio.wait_for(self.head_ready.wait(), self.node_timeout_s)
            conn = self.head_conn
            assert conn is not None
            if not reply:
                conn.send(msg)
                return None
            return await conn.request(msg)
        except (ConnectionLost, TimeoutError) as exc:
            return P.Failed(f"the head at {self.head_address} is unreachable ({exc!r})")

    def forward_to_head(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        async def forward() -> None:
            reply = await self.head_request(msg, reply=rid > 0)
            if rid > 0:
                conn.reply(rid, reply)

        self.spawn(forward())

    def tell_clients(self, msg: Any, skip: AsyncConnection | None = None) -> None:
        for conn in [*self.drivers, *(w.conn for w in self.workers.values() if w.conn)]:
            if conn is not skip and not conn.closed:
                conn.send(msg)

    def on_head_view(self, conn: AsyncConnection, msg: P.ClusterView, rid: int) -> None:
        if self.head is None:
            self.on_cluster_view(msg.nodes)

    def on_head_message(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        self.on_head_event(msg)

    def on_head_event(self, msg: Any) -> None:
        """News from the head: a node died, a process elsewhere died, output to show."""
        if isinstance(msg, P.LogLines):
            for driver in self.drivers:
                driver.send(msg)
        elif isinstance(msg, P.ClientDied):
            self.tell_clients(msg)
        elif isinstance(msg, P.NodeDied):
            self.others.pop(msg.node_id, None)
            peer = self.nm_peers.pop(msg.address, None)
            if peer is not None:
                peer.close()  # pulls from it fail now, not at a TCP timeout
            self.tell_clients(msg)

    def on_cluster_view(self, rows: list[dict[str, Any]]) -> None:
        self.view_rows = rows
        self.others = {
            r["node_id"]: scheduling.NodeView(
                r["node_id"], r["address"], r["total"], r["available"], r["alive"]
            )
            for r in rows
            if r["alive"] and r["node_id"] != self.node_id
        }
        self.schedule()  # waiting requests may fit elsewhere now

    async def join_head(self, rejoin: bool) -> None:
        assert self.head_address is not None
        assert self.head_ready is not None
        conn = await async_connect(self.head_address, self.token)
        self.spawn(self.read_peer(conn))
        reply = await asyncio.wait_for(
            conn.request(
                P.RegisterNode(
                    self.node_id,
                    self.tcp_address,
                    self.ip,
                    self.total,
                    self.available,
                    self.node_info(),
                    rejoin,
                )
            ),
            self.node_timeout_s,
        )
        if not reply.accepted:
            conn.close()
            raise ConnectionLost(reply.reason)
        self.head_conn = conn
        self.on_cluster_view(reply.view)
        self.head_ready.set()

    async def read_peer(self, conn: AsyncConnection) -> None:
        try:
            await conn.read_loop(self.dispatch)
        except asyncio.CancelledError:
            conn.close()
            return
        self.on_disconnect(conn)

    async def heartbeat_loop(self) -> None:
        """Tell the head we live and what is free; rejoin a restarted head."""
        assert self.head_ready is not None
        period = min(CONFIG.heartbeat_s, self.node_timeout_s / 4)
        self.beat_now = asyncio.Event()
        while not self.stopping:
            # A beat every period, or sooner when resources were freed here or a request
            # waits for them (so placement elsewhere sees fresh numbers), at most one
            # per BEAT_MIN_S.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.beat_now.wait(), period)
            self.beat_now.clear()
            await asyncio.sleep(BEAT_MIN_S)
            conn = self.head_conn
            if conn is None or conn.closed:
                self.head_ready.clear()
                try:
                    await self.join_head(rejoin=True)
                    log.warning("rejoined the head at %s", self.head_address)
                except ConnectionLost as exc:
                    if "marked dead" in str(exc):
                        self.marked_dead(str(exc))
                except (OSError, TimeoutError):
                    pass
                continue
            beat = P.Heartbeat(self.node_id, dict(self.available), self.pending_shapes())
            try:
                reply = await asyncio.wait_for(conn.request(beat), self.node_timeout_s)
            except (ConnectionLost, TimeoutError):
                continue
            if isinstance(reply, P.Failed):
                self.marked_dead(reply.reason)
            else:
                self.on_cluster_view(reply.nodes)

    def marked_dead(self, reason: str) -> None:
        """The head gave us up (we were cut off): our actors may live elsewhere now.

        Kill every worker, so no actor runs twice, and join again as a new node.
        """
        log.warning("the head marked this node dead (%s): restarting it as a new node", reason)
        for rec in list(self.workers.values()):
            self.kill_worker(rec)
        self.node_id = new_id()
        if self.head_conn is not None:
            self.head_conn.close()
            self.head_conn = None

    def kill_actor_worker(self, actor_id: bytes) -> None:
        for rec in self.workers.values():
            if rec.actor_id == actor_id:
                self.kill_worker(rec)

    def on_start_actor(self, conn: AsyncConnection, msg: P.StartActor, rid: int) -> None:
        self.start_detached_actor(msg)

    def start_detached_actor(self, msg: P.StartActor) -> None:
        self.spawn(start_actor(self, msg))

    def on_kill_actor_worker(self, conn: AsyncConnection, msg: P.KillActorWorker, rid: int) -> None:
        self.kill_actor_worker(msg.actor_id)

    async def tell_node(self, address: str, msg: Any) -> None:
        with contextlib.suppress(ConnectionLost, OSError):
            (await self.connect_nm(address)).send(msg)

    async def connect_nm(self, address: str) -> AsyncConnection:
        conn = self.nm_peers.get(address)
        if conn is None or conn.closed:
            conn = await async_connect(address, self.token)
            self.nm_peers[address] = conn
            self.spawn(self.read_peer(conn))
        return conn

    # ------------------------------------------------------- objects across nodes
    def on_pull_object(self, conn: AsyncConnection, msg: P.PullObject, rid: int) -> None:
        self.spawn(self.send_object(conn, msg, rid))

    async def send_object(self, conn: AsyncConnection, msg: P.PullObject, rid: int) -> None:
        """Send a segment raw with sendfile: no copy of it in this process's memory."""
        oid = msg.object_id
        seg = self.segments.get(oid)
        f = None
        for _ in range(2):  # it may move to the spill dir between locate and open
            path = self.store.locate(oid)
            if seg is None or path is None:
                break
            with contextlib.suppress(FileNotFoundError):
                f = open(path, "rb")  # noqa: ASYNC230 - closed below; a local file
                break
        if f is None:
            conn.reply(rid, P.Failed(f"object {oid.hex()} is not on node {self.tcp_address}"))
            return
        if msg.requester:
            seg.copies.add(msg.requester)  # type: ignore[union-attr]
        try:
            size = os.fstat(f.fileno()).st_size
            conn.reply(rid, P.ObjectStream(oid, size))
            await conn.writer.drain()
            loop = asyncio.get_running_loop()
            await loop.sendfile(conn.writer.transport, f, 0, size)
        except (OSError, ConnectionError, RuntimeError) as exc:
            log.warning("sending object %s failed: %s", oid.hex()[:12], exc)
        finally:
            f.close()
            conn.close()  # one stream per connection

    def on_fetch_object(self, conn: AsyncConnection, msg: P.FetchObject, rid: int) -> None:
        self.spawn(self.fetch(conn, msg, rid))

    async def fetch(self, conn: AsyncConnection, msg: P.FetchObject, rid: int) -> None:
        """A reader here needs an object another node holds: pull it (once) and answer."""
        oid = msg.object_id
        if oid in self.segments and self.store.contains(oid):
            conn.reply(rid, P.Ok())
            return
        fut = self.fetches.get(oid)
        if fut is None:
            fut = self.fetches[oid] = asyncio.get_running_loop().create_future()
            self.spawn(self.pull(msg, fut))
        error = await asyncio.shield(fut)
        conn.reply(rid, P.Failed(error) if error else P.Ok())

    async def pull(self, msg: P.FetchObject, fut: asyncio.Future[Any]) -> None:
        """Copy an object from the node that holds it into this node's store.

        The copy goes into a recycled segment file when one fits: writing into memory
        that is already allocated is what makes a pull run near the network's speed
        (allocating fresh tmpfs pages costs as much as the transfer itself).
        """
        oid = msg.object_id
        error = ""
        tmp = ""
        try:
            where = await self.make_room(oid, msg.size, msg.owner, warm=True)
            if isinstance(where, P.Failed):
                error = where.reason
                return
            final = self.store.path(oid, where[0])
            tmp = f"{final}.pull.tmp"
            if where[1]:
                os.rename(where[1], tmp)
            request = P.PullObject(oid, self.tcp_address)
            reply = await asyncio.to_thread(self.receive_into, msg.address, request, tmp)
            if isinstance(reply, P.Failed):
                error = reply.reason
            else:
                os.rename(tmp, final)  # sealed: readers see all of it or nothing
        except (ConnectionLost, OSError) as exc:
            error = f"the node holding it ({msg.address}) is unreachable: {exc}"
        finally:
            if error:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                self.free_segment(oid)
            self.fetches.pop(oid, None)
            fut.set_result(error)

    def receive_into(self, address: str, request: P.PullObject, path: str) -> Any:
        """(In a thread.) The raw stream, written into the segment file at `path`.

        No O_TRUNC: a recycled file keeps its pages, and receive_stream sets the size.
        """
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            return receive_stream(address, self.token, request, fd, self.node_timeout_s)
        finally:
            os.close(fd)

    def on_task_events(self, conn: AsyncConnection, msg: P.TaskEvents, rid: int) -> None:
        if self.head is None and self.cluster:
            self.to_head(msg)  # the head keeps the cluster's task table (events say the node)
        else:
            self.task_events.add_events(msg.events)

    def on_task_query(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        """Task and actor listings, summaries and the timeline: the head's, on a cluster."""
        if self.head is None and self.cluster:
            self.forward_to_head(conn, msg, rid)
        elif isinstance(msg, P.ListState):
            self.state_views.on_list_state(conn, msg, rid)
        elif isinstance(msg, P.SummarizeTasks):
            self.state_views.on_summarize_tasks(conn, msg, rid)
        else:
            self.on_get_timeline(conn, msg, rid)

    def on_get_logs(self, conn: AsyncConnection, msg: P.GetLogs, rid: int) -> None:
        if self.head is None and self.cluster:  # the head keeps every node's output
            self.forward_to_head(conn, msg, rid)
        else:
            self.state_views.on_get_logs(conn, msg, rid)

    def on_list_state(self, conn: AsyncConnection, msg: P.ListState, rid: int) -> None:
        if msg.kind in ("tasks", "actors", "nodes"):  # cluster-wide, at the head
            self.on_task_query(conn, msg, rid)
        elif msg.local or not self.cluster:  # this node's own workers and store
            self.state_views.on_list_state(conn, msg, rid)
        else:
            self.spawn(self.list_everywhere(conn, msg, rid))

    async def list_everywhere(self, conn: AsyncConnection, msg: P.ListState, rid: int) -> None:
        """Objects or workers of every live node: each answers for its own, merged here."""
        mine: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        local = P.ListState(msg.kind, msg.filters, msg.limit, True)
        self.state_views.on_list_state(_Capture(mine), local, 1)

        async def ask(address: str) -> Any:
            try:
                peer = await self.connect_nm(address)
                return await asyncio.wait_for(peer.request(local), 5.0)
            except (ConnectionLost, OSError, TimeoutError):
                return None  # gone or cut off: its rows are missing, not the listing

        others = [n.address for n in self.other_nodes() if n.address]
        replies = [await mine, *await asyncio.gather(*(ask(a) for a in others))]
        if isinstance(replies[0], P.Failed):
            conn.reply(rid, replies[0])
            return
        rows: list[Any] = []
        total = 0
        for reply in replies:
            if isinstance(reply, P.StateList):
                rows.extend(reply.rows)
                total += reply.total
        conn.reply(rid, P.StateList(rows[: msg.limit], total))

    def on_get_timeline(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        self.spawn(self.timeline(conn, rid))

    async def timeline(self, conn: AsyncConnection, rid: int) -> None:
        flushes = [
            asyncio.wait_for(w.conn.request(P.FlushEvents()), 5.0)
            for w in self.workers.values()
            if w.conn is not None and not w.conn.closed and w.state != "dead"
        ]
        await asyncio.gather(*flushes, return_exceptions=True)
        conn.reply(rid, P.Timeline(self.task_events.timeline_events()))

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


# --------------------------------------------------- detached actors, the node's half
START_TIMEOUT_S = 60.0  # a restarted life's worker must come up within this


class _SelfOwner:
    """Stands in for an owner's connection on the lease a node gives itself."""

    def __init__(self, fut: asyncio.Future[Any]) -> None:
        self.fut = fut
        self.closed = False
        self.peer = None

    def reply(self, rid: int, msg: Any) -> None:
        if not self.fut.done():
            self.fut.set_result(msg)

    def send(self, msg: Any) -> None:
        self.reply(0, msg)


async def start_actor(nm: NodeManager, msg: P.StartActor) -> None:
    """Lease a worker here, run the actor's constructor on it, tell the head."""
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    owner = _SelfOwner(fut)
    req = LeaseReq(new_id(), msg.shape, msg.actor_id, owner, 1, spilled=MAX_HOPS, detached=True)  # type: ignore[arg-type]
    nm.pending.append(req)
    nm.schedule()
    try:
        granted = await asyncio.wait_for(fut, START_TIMEOUT_S)
    except TimeoutError:
        granted = P.Failed(f"no worker started within {START_TIMEOUT_S:.0f} s")
    if not isinstance(granted, P.LeaseGranted):
        owner.closed = True  # a request still pending is dropped
        nm.schedule()
        _report(nm, msg, "DEAD", cause=f"It could not be restarted: {granted}")
        return
    fields = list(msg.push)
    fields[7] = nm.tcp_address  # owner: this node (clusters only: detached actors)
    fields[10] = list(granted.gpu_ids)
    try:
        conn = await async_connect(granted.address, nm.token)
        nm.spawn(conn.read_loop(lambda c, m, r: None))
        reply = await conn.request(P.PushTask(*fields))
    except ConnectionLost:
        return  # the worker died: its node reports PROCESS_DIED, the head decides again
    if isinstance(reply, P.TaskDone) and reply.returns and reply.returns[0][1] != P.ERROR:
        nm.kept_actors[msg.actor_id] = conn  # the lease's owner: held while it lives
        _report(nm, msg, "ALIVE", granted.address, reply.worker_pid)
        return
    error = "no answer"
    if isinstance(reply, P.TaskDone) and reply.returns:
        error = str(loads_inline(reply.returns[0][2]))
    conn.close()
    _report(nm, msg, "DEAD", cause=f"The actor {msg.class_name} died in its constructor: {error}")


def _report(
    nm: NodeManager, msg: P.StartActor, state: str, address: str = "", pid: int = 0, cause: str = ""
) -> None:
    log.info("detached actor %s restarted by the head: %s", msg.actor_id.hex()[:12], state)
    restarts_left = msg.restarts_left if state == "ALIVE" else 0
    nm.to_head(
        P.ActorStateChanged(msg.actor_id, state, msg.class_name, address, pid, cause, restarts_left)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="raylite-node-manager")
    parser.add_argument("--session-dir", required=True)
    parser.add_argument("--store-dir", required=True)
    parser.add_argument("--resources", required=True, help="JSON: resource -> units")
    parser.add_argument("--num-gpus", type=int, default=0)
    parser.add_argument("--prestart", type=int, default=0)
    parser.add_argument("--max-spill-bytes", type=int, default=None)
    parser.add_argument("--cluster", action="store_true", help="started by `raylite start`")
    parser.add_argument("--ip", default="127.0.0.1", help="address to listen on (TCP)")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--head-address", default=None, help="tcp:HOST:PORT of the head")
    parser.add_argument("--storage", default=None, help="head storage URL")
    parser.add_argument("--node-timeout-s", type=float, default=None)
    parser.add_argument("--dashboard-port", type=int, default=None, help="head: serve it (0: any)")
    parser.add_argument("--dashboard-host", default="127.0.0.1", help="address it listens on")
    parser.add_argument("--head-only", action="store_true", help="the head alone: no node")
    parser.add_argument("--head-node", action="store_true", help="the node beside the head")
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
        ip=args.ip,
        port=args.port,
        head_address=args.head_address,
        storage=args.storage,
        cluster=args.cluster,
        node_timeout_s=args.node_timeout_s,
        dashboard_port=args.dashboard_port,
        dashboard_host=args.dashboard_host,
        head_only=args.head_only,
        head_node=args.head_node,
    )
    try:
        asyncio.run(nm.serve())
    finally:
        nm.remove_files()


if __name__ == "__main__":
    main()
