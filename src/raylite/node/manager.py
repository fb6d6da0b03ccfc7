"""The node manager: one per machine, the daemon that serves the node's processes.

Owns the serving: the Unix listener (and TCP, on a cluster), the handler table (by
message type), the registration of clients (drivers, workers, CLI tools), the
background tasks (spawn: a task that crashes stops the node), `statistics()` (a
frozen NodeStatistics: what the dashboard, the state listings (listings.py) and the
store's reply to the CLI read), routing state and timeline queries, shutdown, and main(), which
`python -m raylite.node` runs. NodeManager is one object made of mixins, each in
a module that says which state it owns: the worker pool (pool.py), resources and
leases (leases.py), the store's accounting (store.py), objects between nodes
(transfer.py) and the link to the head and other nodes (cluster_link.py). On its
node the head (head/) runs in this process too; on one machine, always. The head of a
`raylite start` cluster also runs submitted jobs' drivers (job_supervisor.py).

    driver / workers ──RequestLease──▶ NodeManager ──start──▶ fork server ──fork──▶ worker
                     ◀─LeaseGranted──                ◀───────RegisterClient─────────────
    worker fd 1, 2 ──pipe──▶ NodeManager ──LogLines──▶ drivers

Threads. The node's work runs on one asyncio event loop. The loop's default
executor adds threads: asyncio.to_thread copies segments to the spill dir (store.py)
and receives pulled objects into their files (transfer.py), and aiohttp, serving the
dashboard in this loop, reads static files in it. So this process never forks a
worker: a fork while one of those threads held a lock (malloc's, an import lock, one
in a C library) could leave the child waiting on it for ever. Workers come from the
fork server (forkserver.py), which `python -m raylite.node` (__main__.py) forks
before this module loads, and so before any thread or event loop exists, and which stays single-threaded; the pool (pool.py) asks it for
each worker over a socketpair and hears from it when one exits. This process's only
child is the fork server: its SIGCHLD means the fork server died, and stops the node.

Started by `init()` with the driver holding its stdin: when the driver dies, stdin
hits EOF and the node stops all its workers and removes its sockets and shared
memory. Started by `raylite start` (--cluster), it lives until stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from types import MappingProxyType
from typing import Any

from .. import protocol as P
from .. import transport
from ..config import CONFIG
from ..exceptions import ConnectionLost, ProtocolError
from ..head.statistics import HeadStatistics
from ..labels import NODE_ID_LABEL
from ..metric_values import MetricsTable
from ..node_start import raise_nofile_limit
from ..object_ref import new_id
from ..object_store import drop_pins
from ..task_events import TaskEventStore
from ..transport_async import AsyncConnection, async_handshake
from . import forkserver
from .cluster_link import HEAD_REQUESTS, ClusterLinkMixin
from .leases import LeasesMixin
from .listings import Listings
from .memory_monitor import MemoryMonitor
from .pool import PoolMixin, WorkerRec
from .runtime_envs import RuntimeEnvsMixin
from .statistics import NodeStatistics
from .store import StoreMixin
from .transfer import TransferMixin

log = logging.getLogger(__name__)


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


class NodeManager(
    PoolMixin, LeasesMixin, StoreMixin, TransferMixin, ClusterLinkMixin, RuntimeEnvsMixin
):
    """The node's daemon: one object, its state spread over the mixins by concern."""

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
        forks: forkserver.ForkServer | None = None,
        labels: dict[str, str] | None = None,
        metrics_export_port: int | None = None,
        proxy_server_url: str | None = None,
        max_workers: int = 0,
    ) -> None:
        # head_only: the head's own process (`raylite start --head`): it runs no work
        # and is no node, so killing it kills no actor. head_node: the node beside it.
        self.head_only = head_only
        self.head_node = head_node
        # `cluster`: started by `raylite start`, lives until stopped (not with a
        # driver) and listens on TCP.
        self.cluster = cluster
        self.session_dir = session_dir
        self.token = token
        self.node_id = new_id()
        self.address = f"unix:{session_dir}/node.sock"
        self.client_pids: dict[str, int] = {}
        self.drivers: set[AsyncConnection] = set()
        self.driver_addresses: dict[AsyncConnection, str] = {}
        self._init_leases(total, num_gpus, max_workers)  # 0: the default cap
        # Ray's default label, then the user's (init(labels=...), raylite start --labels).
        self.lease_book.labels = {NODE_ID_LABEL: self.node_id.hex(), **(labels or {})}
        self.metrics_export_port = metrics_export_port  # init(_metrics_export_port=): /metrics
        self.metrics_server: Any = None
        self.proxy_server_url = proxy_server_url  # the dashboard asks it first
        self._init_store(session_dir, store_dir, total, max_spill_bytes)
        self._init_pool(prestart, forks)
        self._init_runtime_envs()
        self._init_transfer()
        # Task records and timeline, recent worker output, the state API (task_events.py).
        self.task_events = TaskEventStore(CONFIG.max_task_events, self.node_id)
        self.metrics = MetricsTable()  # util.metrics of every process (the head's: cluster)
        self.listings = Listings(self)
        self.memory_monitor = MemoryMonitor(self)  # kills workers when memory runs low
        self._init_cluster_link(ip, port, head_address, storage, node_timeout_s)
        # The web dashboard (dashboard/), served by the head only; None: off.
        self.dashboard_port = dashboard_port
        self.dashboard_host = dashboard_host
        self.dashboard: Any = None
        self.dashboard_url = ""  # http://HOST:PORT once it listens (also <session>/dashboard_url)
        # Submitted jobs (job_supervisor.py): the head of a `raylite start` cluster runs
        # their drivers; None elsewhere (the job API then says so).
        self.jobs: Any = None
        self.started_at = 0.0
        self.stopping = False
        self.stopped: asyncio.Event | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.crashed: BaseException | None = None  # what the first crashed task raised
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
            P.DropReturn: self.on_drop_return,
            P.GetStoreStats: self.on_get_store_stats,
            P.GetAssignedResources: self.on_get_assigned_resources,
            P.ObjectRestored: self.on_object_restored,
            P.ObjectMapped: self.on_object_mapped,
            P.ObjectUnmapped: self.on_object_unmapped,
            P.PullObject: self.on_pull_object,
            P.FetchObject: self.on_fetch_object,
            P.PushObject: self.on_push_object,
            P.PushChunk: self.on_push_chunk,
            P.KillActorWorker: self.on_kill_actor_worker,
            P.StartActor: self.on_start_actor,
            P.PrepareBundles: self.on_prepare_bundles,
            P.CommitBundles: self.on_commit_bundles,
            P.CancelBundles: self.on_cancel_bundles,
            P.NodeDied: self.on_head_message,
            P.ClusterView: self.on_head_view,
            P.UploadPackage: self.on_upload_package,
            P.FetchPackage: self.on_fetch_package,
            P.PrepareRuntimeEnv: self.on_prepare_runtime_env,
            P.GetWorkerFailureCause: self.memory_monitor.on_get_worker_failure_cause,
        }
        # Head requests: served here on the head node, forwarded to it elsewhere.
        for kind in HEAD_REQUESTS:
            self.handlers[kind] = self.forward_to_head
        if self.head is not None:
            self.handlers.update(self.head.handlers)
        # Its creator is named here, where the connection is known (then the head's).
        self.handlers[P.CreatePlacementGroup] = self.on_create_placement_group
        if self.head is None:  # what the head sends us
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
        self._start_store()
        self._start_pool()
        self.started_at = time.time()
        server = await asyncio.start_unix_server(self.on_client, path=self.address[5:])
        tcp_server = None
        if self.cluster:
            tls = transport.TLS  # --tls: set up by _main before the loop (tls.py)
            tcp_server = await asyncio.start_server(
                self.on_client,
                host=self.ip,
                port=self.port or 0,
                reuse_address=True,
                ssl=tls.node_server if tls is not None else None,
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
                await self.join_head()
            except Exception as exc:
                sys.stdout.write(f"FAILED cannot join the head at {self.head_address}: {exc}\n")
                sys.stdout.flush()
                return
            self.spawn(self.heartbeat_loop())
        if not self.head_only:
            self.spawn(self.waiting_watch_loop())
            if self.memory_monitor.enabled:
                self.spawn(self.memory_monitor.memory_monitor_loop())
        if self.head is not None and self.cluster:
            self.start_jobs()
        if self.head is not None and self.dashboard_port is not None:
            try:
                from ..dashboard.server import start_dashboard
            except ImportError as exc:  # a broken install must not stop the node
                log.warning("the dashboard cannot start (%s); reinstall raylite to get it", exc)
            else:
                self.dashboard = await start_dashboard(
                    self, self.dashboard_host, self.dashboard_port, self.proxy_server_url
                )
            self.dashboard_url = self.dashboard.url if self.dashboard is not None else ""
        if self.metrics_export_port is not None:
            from ..dashboard.server import start_metrics_server

            self.metrics_server = await start_metrics_server(
                self, self.ip, self.metrics_export_port
            )
        gc.freeze()  # what start-up made lives as long as the node: no collector rescans
        self.run_lease_actions(self.lease_book.prestart(self.prestart))
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
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        server.close()
        if tcp_server is not None:
            tcp_server.close()

    def start_jobs(self) -> None:
        """The job table on the head's storage, and its supervisor (jobs of a head that
        ran before on this storage are read back; leftover drivers are ended)."""
        from ..head.jobs import JobTable
        from .job_supervisor import JobSupervisor

        assert self.head is not None
        storage = self.head.storage
        logs_dir = os.path.join(self.session_dir, "logs")
        if storage.url != "memory":  # kept with the storage, for a head started again
            key = hashlib.sha256(storage.url.encode()).hexdigest()[:16]
            logs_dir = os.path.join(tempfile.gettempdir(), "raylite", "job_logs", key)
        self.jobs = JobSupervisor(
            JobTable(storage),
            logs_dir=logs_dir,
            head_address=self.tcp_address[4:],
            node_id=self.node_id.hex(),
            spawn=self.spawn,
            pgs=self.head.pgs,
        )
        self.jobs.recover()

    def spawn(self, coro: Any) -> None:
        """Run `coro` in the background, owned by this node until it ends."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.task_done)

    def task_done(self, task: asyncio.Task[Any]) -> None:
        """A background task ended. One that raised is a bug: say so and stop the node
        (a loop that died silently would leave it half-working, e.g. no heartbeats)."""
        self.tasks.discard(task)
        if task.cancelled():  # the loop is ending, or whoever owned it stopped it
            return
        exc = task.exception()
        if exc is None:
            return
        name = getattr(task.get_coro(), "__qualname__", repr(task))
        if self.stopping:  # going anyway; what it used (files, connections) may be gone
            log.debug("background task %s failed during shutdown", name, exc_info=exc)
            return
        log.error("background task %s crashed: stopping the node", name, exc_info=exc)
        if self.crashed is None:
            self.crashed = exc
        self.begin_shutdown()

    def on_parent_stdin(self) -> None:
        try:
            data = os.read(0, 4096)
        except OSError:
            data = b""
        if not data:  # the driver that started us is gone
            asyncio.get_running_loop().remove_reader(0)
            self.begin_shutdown()

    async def on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = writer.get_extra_info("ssl_object")  # None: a unix socket, or no --tls
        if tls is not None and tls.getpeercert(binary_form=True) is None:
            # No client certificate: only the head's port lets one in, to enrol (tls.py).
            await self.serve_enrolment(reader, writer)
            return
        if not await async_handshake(reader, writer, self.token):
            return
        conn = AsyncConnection(reader, writer)
        try:
            await conn.read_loop(self.dispatch)
        except asyncio.CancelledError:  # the loop is ending: nothing to report
            conn.close()
            return
        self.on_disconnect(conn)

    async def serve_enrolment(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        from .. import tls

        if self.head is None or transport.TLS is None or not transport.TLS.enrols:
            writer.close()
            return
        await tls.serve_enrolment(reader, writer, self.token, transport.TLS.dir)

    def dispatch(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        handler = self.handlers.get(type(msg))
        if handler is None:  # the read loop closes the connection and logs it
            raise ProtocolError(f"a {type(msg).__name__} is no message for a node manager")
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
        elif msg.kind != "driver":  # else it would count as a driver, whose close ends init's node
            raise ProtocolError(
                f"a RegisterClient of kind {msg.kind!r}: not a driver, worker or cli"
            )
        else:
            self.drivers.add(conn)
            conn.peer = "driver"
            self.driver_addresses[conn] = msg.address
            if self.head is None:  # job ids are the cluster's: the head hands them out
                self.spawn(self.register_driver(conn, msg, rid))
                return
            job_id = self.head.new_job(msg.address, self.driver_row(msg))
        self.registered(conn, msg, rid, job_id)

    def driver_row(self, msg: P.RegisterClient) -> dict[str, Any]:
        """The head's row of a driver's job (list_jobs shows it): what it said of itself."""
        return {**msg.info, "pid": msg.pid, "ip": self.ip}

    async def register_driver(self, conn: AsyncConnection, msg: P.RegisterClient, rid: int) -> None:
        reply = await self.head_request(P.RegisterJob(msg.address, self.driver_row(msg)))
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
        conn.reply(rid, P.ClientRegistered(self.node_id, job_id, self.store_dir, info))
        if msg.kind == "worker":  # idle now, or its actor's lease is granted
            self.run_lease_actions(self.lease_book.worker_started(conn.peer))

    def on_disconnect(self, conn: AsyncConnection) -> None:
        peer = conn.peer
        if isinstance(peer, WorkerRec):
            self.worker_gone(peer, "its process exited")
        elif peer == "driver":
            self.drivers.discard(conn)
            address = self.driver_addresses.pop(conn, "")
            if address in self.client_pids:  # its mappings went with it
                drop_pins(self.store_dir, self.client_pids[address])
            if not self.cluster:
                self.begin_shutdown()  # init()'s node lives as long as its driver
            elif address:  # the node outlives drivers: drop what this one owned
                if self.pushes:
                    self.drop_pushes(conn)
                for oid in self.store_book.owned_by(address):
                    # Its process may live on, with views of them (after shutdown()).
                    self.free_segment(oid, views_unknown=True)
                self.tell_clients(P.ClientDied(address))
                self.to_head(P.ClientDied(address))
        elif self.head is not None and peer is not None and not isinstance(peer, str):
            self.head.on_node_disconnect(conn)
        for address, peer_conn in list(self.nm_peers.items()):
            if peer_conn is conn:
                del self.nm_peers[address]
        self.run_lease_actions(self.lease_book.owner_gone(conn))

    def tell_clients(self, msg: Any, skip: AsyncConnection | None = None) -> None:
        for conn in [*self.drivers, *(w.conn for w in self.workers.values() if w.conn)]:
            if conn is not skip and not conn.closed:
                conn.send(msg)

    # ----------------------------------------------------- state and timeline
    def on_task_events(self, conn: AsyncConnection, msg: P.TaskEvents, rid: int) -> None:
        if self.head is None and self.cluster:
            self.to_head(msg)  # the head keeps the cluster's task table (events say the node)
        else:
            self.task_events.add_events(msg.events)
            if msg.metrics:
                self.metrics.merge(msg.metrics)

    def on_task_query(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        """Task and actor listings, summaries and the timeline: the head's, on a cluster."""
        if self.head is None and self.cluster:
            self.forward_to_head(conn, msg, rid)
        elif isinstance(msg, P.ListState):
            self.listings.on_list_state(conn, msg, rid)
        elif isinstance(msg, P.SummarizeTasks):
            self.listings.on_summarize_tasks(conn, msg, rid)
        else:
            self.on_get_timeline(conn, msg, rid)

    def on_get_logs(self, conn: AsyncConnection, msg: P.GetLogs, rid: int) -> None:
        if self.head is None and self.cluster:  # the head keeps every node's output
            self.forward_to_head(conn, msg, rid)
        else:
            self.listings.on_get_logs(conn, msg, rid)

    def on_list_state(self, conn: AsyncConnection, msg: P.ListState, rid: int) -> None:
        if msg.kind in ("tasks", "actors", "nodes", "placement_groups"):  # at the head
            self.on_task_query(conn, msg, rid)
        elif msg.local or not self.cluster:  # this node's own workers and store
            self.listings.on_list_state(conn, msg, rid)
        else:
            self.spawn(self.list_everywhere(conn, msg, rid))

    async def list_everywhere(self, conn: AsyncConnection, msg: P.ListState, rid: int) -> None:
        """Objects or workers of every live node: each answers for its own, merged here."""
        mine: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        local = P.ListState(msg.kind, msg.filters, msg.limit, True)
        self.listings.on_list_state(_Capture(mine), local, 1)

        async def ask(address: str) -> Any:
            try:
                peer = await self.connect_nm(address)
                return await asyncio.wait_for(peer.request(local), CONFIG.node_answer_timeout_s)
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
        await self.flush_workers()
        conn.reply(rid, P.Timeline(self.task_events.timeline_events()))

    async def flush_workers(self) -> None:
        """Ask every live worker for the task events it has not sent yet."""
        flushes = [
            asyncio.wait_for(w.conn.request(P.FlushEvents()), CONFIG.node_answer_timeout_s)
            for w in self.workers.values()
            if w.conn is not None and not w.conn.closed and w.state != "dead"
        ]
        await asyncio.gather(*flushes, return_exceptions=True)

    # --------------------------------------------------------------- statistics
    def statistics(self, objects: bool = False) -> NodeStatistics:
        """A frozen copy of this node's tables; the store's segments only if `objects`."""
        total, available, pending, leases = self._lease_stats()
        store, segments = self._store_stats(objects)
        te = self.task_events
        return NodeStatistics(
            node_id=self.node_id,
            address=self.address,
            tcp_address=self.tcp_address,
            ip=self.ip,
            started_at=self.started_at,
            runs_head=self.head is not None,
            total=total,
            available=available,
            pending=pending,
            leases=leases,
            workers=self._worker_stats(),
            clients=MappingProxyType(dict(self.client_pids)),
            drivers=tuple(self.driver_addresses.values()),
            store=store,
            objects=segments,
            task_states=MappingProxyType(te.state_totals()),
            tasks_recorded=te.recorded(),
            tasks_evicted=te.evicted,
        )

    def metrics_text(self) -> str:
        """util.metrics values reported here, in Prometheus text (the dashboard's /metrics)."""
        return self.metrics.prometheus_text()

    def head_statistics(self) -> HeadStatistics | None:
        """The head's snapshot where it runs in this process, else None."""
        return self.head.statistics() if self.head is not None else None

    def on_get_assigned_resources(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        """A worker's RuntimeContext.get_assigned_resources(): its lease's shape."""
        worker = self.workers.get(msg.worker_id)
        lease_id = worker.lease_id if worker is not None else None
        lease = self.lease_book.leases.get(lease_id) if lease_id is not None else None
        conn.reply(rid, P.AssignedResources(dict(lease.shape) if lease is not None else {}))

    def on_get_store_stats(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        """`raylite memory`, util.state: the store's numbers and objects, from a snapshot."""
        stats = self.statistics(objects=True)
        s = stats.store
        numbers = {
            "used_bytes": s.used_bytes,
            "capacity_bytes": s.capacity_bytes,
            "spilled_bytes": s.spilled_bytes,
            "spilled_objects": s.spilled_objects,
            "num_objects": s.num_objects,
            "store_dir": s.store_dir,
            "spill_dir": s.spill_dir,
            "restored_objects": s.restored_objects,
            "recycled_bytes": s.recycled_bytes,
            "clients": dict(stats.clients),
        }
        objects = [
            {
                "object_id": seg.object_id.hex(),
                "size": seg.size,
                "owner": seg.owner,
                "owner_pid": stats.clients.get(seg.owner, 0),
                "spilled": seg.spilled,
            }
            for seg in stats.objects or ()
        ]
        conn.reply(rid, P.StoreStats(numbers, objects))

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
        self.lease_book.stop()
        try:
            if self.jobs is not None:  # jobs end with their head, as on Ray
                await self.jobs.close()
            self.close_runtime_envs()  # builds in progress stop (pip processes killed)
            await self.stop_workers()
            self.remove_files()
            if conn is not None:
                conn.reply(rid, P.Ok())
                with contextlib.suppress(Exception):
                    await conn.writer.drain()
        finally:  # stopped even if something above raised: serve returns
            self.stopped.set()  # type: ignore[union-attr]

    def remove_files(self) -> None:
        shutil.rmtree(self.store_dir, ignore_errors=True)
        shutil.rmtree(self.session_dir, ignore_errors=True)


def _start_tls(args: argparse.Namespace, token: bytes) -> bool:
    """--tls on the head: a new cluster CA in its session dir (with --storage, one kept
    for the storage, reused when the head restarts on it). A joining node: enrol if
    the head speaks TLS (required with --tls). Workers and local drivers find the
    node's tls/ by themselves (tls.activate_for). False (said on stdout) if it failed."""
    from .. import tls

    tls_dir = os.path.join(args.session_dir, tls.DIR)
    try:
        if args.head_address is None:
            if args.tls:
                tls_dir = tls.head_dir(args.session_dir, args.storage)
                if not tls.has_ca(tls_dir):
                    tls.make_cluster_ca(tls_dir)
                tls.activate(tls_dir, enrols=True)
        else:
            tls.join(args.head_address, token, tls_dir, require=args.tls)
    except Exception as exc:
        sys.stdout.write(f"FAILED cannot set up TLS with the head at {args.head_address}: {exc}\n")
        sys.stdout.flush()
        return False
    return True


def main(argv: list[str] | None = None, forks: forkserver.ForkServer | None = None) -> None:
    # First, while this process has no thread: every worker is forked from it.
    if forks is None:
        forks = forkserver.start()
    try:
        _main(forks, argv)
    finally:
        forks.close()  # it stops what workers it still has, and exits


def _main(forks: forkserver.ForkServer, argv: list[str] | None) -> None:
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
    parser.add_argument("--labels", default=None, help="JSON: the node's labels")
    parser.add_argument("--metrics-export-port", type=int, default=None, help="serve /metrics")
    parser.add_argument("--proxy-server-url", default=None, help="the dashboard asks it first")
    parser.add_argument("--max-workers", type=int, default=0, help="worker process cap (0: auto)")
    parser.add_argument("--tls", action="store_true", help="head: make a CA; node: need TLS")
    args = parser.parse_args(argv)
    forks.remove_at_exit(args.store_dir, args.session_dir)  # also if this process is killed
    token = bytes.fromhex(sys.stdin.readline().strip())
    logging.basicConfig(level=logging.WARNING, format="(raylite node manager) %(message)s")
    raise_nofile_limit()  # before the worker cap's default reads it
    if args.cluster and not _start_tls(args, token):
        return
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
        forks=forks,
        labels=json.loads(args.labels) if args.labels else None,
        metrics_export_port=args.metrics_export_port,
        proxy_server_url=args.proxy_server_url,
        max_workers=args.max_workers,
    )
    try:
        asyncio.run(nm.serve())
    finally:
        nm.remove_files()
        if nm.head is not None:  # its storage closed: a SQLite file keeps no -wal beside it
            nm.head.close()
    if nm.crashed is not None:
        sys.exit(1)  # a background task crashed (logged above)
