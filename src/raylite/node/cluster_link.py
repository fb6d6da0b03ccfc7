"""This node's link to the head and to the other node managers.

Owns the node's cluster addresses (`ip`, `port`, `tcp_address`), the head: the Head
itself where it runs in this process (`head`), else the connection to it
(`head_conn`, `head_ready`), the heartbeat (`beat_now`), the last cluster view
(`others`), connections to other node managers (`nm_peers`) and those
kept for detached actors this node started again (`kept_actors`, node/detached.py).
Not the head's tables (head/), not placement (leases.py, scheduling.py).

    node ──RegisterNode──▶ head ──NodeRegistered(view)──▶ node             join_head
                                (or Failed NODE_MARKED_DEAD: join as a new node)
    node ──Heartbeat(available, pending)──▶ head ──ClusterView──▶ node     heartbeat_loop
    head ──NodeDied, ClientDied, LogLines──▶ node ──▶ its clients          on_head_event
    client ──head request──▶ node ──▶ head ──reply──▶ node ──▶ client      forward_to_head
    client ──CreatePlacementGroup──▶ node (names the creator) ──▶ head

A message for the head is a call where the head runs in this process and a message
elsewhere (to_head, head_request). A node the head gave up (it missed heartbeats:
a partition) kills its workers and joins again as a new node (marked_dead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import msgspec

from .. import protocol as P
from .. import scheduling
from ..config import CONFIG
from ..exceptions import ConnectionLost
from ..head import Head, open_storage
from ..object_ref import new_id
from ..transport_async import AsyncConnection, async_connect
from .detached import start_actor

log = logging.getLogger(__name__)

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
    P.CreateDetached,
    P.RemovePlacementGroup,
    P.WaitPlacementGroup,
    P.GetPlacementGroups,
)

# Head requests that only read its tables: sent again after the connection dropped
# mid-request (a restarted head answers them from its storage).
HEAD_READS = (
    P.GetClusterInfo,
    P.GetNodeStatus,
    P.GetActorInfo,
    P.GetNamedActor,
    P.WaitPlacementGroup,
    P.GetPlacementGroups,
)


class ClusterLinkMixin:
    """NodeManager's link to the head and to its peers; the state below is set by
    _init_cluster_link (`tcp_address` by serve, once it listens)."""

    ip: str
    port: int | None
    tcp_address: str
    lease_book: Any  # leases.py's: node_info sends its labels
    metrics_export_port: int | None
    head_address: str | None
    node_timeout_s: float
    head: Head | None
    head_conn: AsyncConnection | None
    head_ready: asyncio.Event | None
    beat_now: asyncio.Event | None  # set: heartbeat now (joined nodes)
    others: dict[bytes, scheduling.NodeView]  # other live nodes, last view
    nm_peers: dict[str, AsyncConnection]  # other node managers, by address
    kept_actors: dict[bytes, Any]  # node/detached.py's connections to actors it started
    store_book: Any  # store.py's StoreBook: segments a client that died owned
    free_segment: Callable[..., None]

    def _init_cluster_link(
        self,
        ip: str,
        port: int | None,
        head_address: str | None,
        storage: str | None,
        node_timeout_s: float | None,
    ) -> None:
        # The head runs in this process unless `head_address` names another node's.
        self.ip = ip
        self.port = port
        self.kept_actors = {}
        self.tcp_address = ""
        self.head_address = head_address
        self.node_timeout_s = node_timeout_s or CONFIG.node_timeout_s
        self.head = None
        if head_address is None:
            self.head = Head(self, open_storage(storage), self.node_timeout_s)
        self.head_conn = None
        self.head_ready = None
        self.beat_now = None
        self.others = {}
        self.nm_peers = {}

    def resources_changed(self) -> None:
        """Tell the head soon (not at the next period): others place work by our numbers."""
        if self.beat_now is not None:
            self.beat_now.set()
        elif self.head is not None:  # placement groups that wait may fit now
            self.head.pgs.kick()

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
                old.node_id, old.address, old.total, available, old.alive, old.labels
            )

    def node_info(self) -> dict[str, Any]:
        return {
            "hostname": socket.gethostname(),
            "store_dir": self.store_dir,
            "session_dir": self.session_dir,
            "pid": os.getpid(),
            "start_time": self.started_at,
            "unix_address": self.address,
            "head_node": self.head_node or (self.head is not None and not self.head_only),
            "labels": self.lease_book.labels,
            "metrics_export_port": self.metrics_export_port,
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
            "Labels": dict(rec.info.get("labels") or {}),
            "MetricsExportPort": rec.info.get("metrics_export_port") or 0,
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
        """Send to the head once it is reachable; its reply, or Failed.

        While the head is away (killed and started again) a request waits for it, up
        to CONFIG.head_wait_s, as Ray's clients wait for a restarted GCS; a read that
        was in flight when the connection dropped is sent again to the new head (a
        write is not: the old head may have applied it)."""
        assert self.head_ready is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(CONFIG.head_wait_s, self.node_timeout_s)
        while True:
            conn = None
            try:
                await asyncio.wait_for(self.head_ready.wait(), max(deadline - loop.time(), 0))
                conn = self.head_conn
                assert conn is not None
                if not reply:
                    conn.send(msg)
                    return None
                return await conn.request(msg)
            except (ConnectionLost, TimeoutError) as exc:
                if conn is not None and conn.closed and self.head_conn is conn:
                    self.head_ready.clear()  # the heartbeat loop rejoins; wait for it
                if isinstance(msg, HEAD_READS) and conn is not None and loop.time() < deadline:
                    continue
                return P.Failed(
                    P.FailCode.UNREACHABLE,
                    f"the head at {self.head_address} is unreachable ({exc!r})",
                )

    def forward_to_head(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        async def forward() -> None:
            reply = await self.head_request(msg, reply=rid > 0)
            if rid > 0:
                conn.reply(rid, reply)

        self.spawn(forward())

    def on_create_placement_group(
        self, conn: AsyncConnection, msg: P.CreatePlacementGroup, rid: int
    ) -> None:
        """A client creates a placement group: this node names its creator (the group
        goes with it unless detached), then the head decides."""
        peer = conn.peer
        # A driver's group goes with it, a detached actor's with that actor; any other
        # worker's with its job (""), as Ray scopes them. Another node that forwards
        # named the creator already.
        if hasattr(peer, "worker_id"):  # a worker (pool.WorkerRec)
            lease = self.lease_book.leases.get(peer.lease_id or b"")
            owner = peer.address if lease is not None and lease.detached else ""
        else:
            owner = self.driver_addresses.get(conn, "")
        if owner and not msg.owner:
            msg = msgspec.structs.replace(msg, owner=owner)
        if self.head is not None:
            self.head.pgs.on_create(conn, msg, rid)
        else:
            self.forward_to_head(conn, msg, rid)

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
            # Its segments here go too: task returns it owned, that a worker of this
            # node wrote (its own node freed what it wrote there itself). It has no
            # view of them here: readers on this node pin what they map.
            for oid in self.store_book.owned_by(msg.address):
                self.free_segment(oid)
            self.tell_clients(msg)
        elif isinstance(msg, P.NodeDied):
            self.others.pop(msg.node_id, None)
            peer = self.nm_peers.pop(msg.address, None)
            if peer is not None:
                peer.close()  # pulls from it fail now, not at a TCP timeout
            self.tell_clients(msg)

    def on_cluster_view(self, rows: list[dict[str, Any]]) -> None:
        self.others = {
            r["node_id"]: scheduling.NodeView(
                r["node_id"],
                r["address"],
                r["total"],
                r["available"],
                r["alive"],
                (r.get("info") or {}).get("labels") or {},
            )
            for r in rows
            if r["alive"] and r["node_id"] != self.node_id
        }
        self.view_refreshed()  # waiting requests may fit elsewhere now

    async def join_head(self) -> None:
        assert self.head_address is not None
        assert self.head_ready is not None
        conn = await async_connect(self.head_address, self.token, cluster=True)
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
                )
            ),
            self.node_timeout_s,
        )
        if isinstance(reply, P.Failed):
            conn.close()
            if reply.code == P.FailCode.NODE_MARKED_DEAD:
                self.marked_dead(reply.reason)  # join again, as a new node, next beat
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
            # per heartbeat_min_s.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.beat_now.wait(), period)
            self.beat_now.clear()
            await asyncio.sleep(CONFIG.heartbeat_min_s)
            conn = self.head_conn
            if conn is None or conn.closed:
                self.head_ready.clear()
                try:
                    await self.join_head()
                    log.warning("rejoined the head at %s", self.head_address)
                except (ConnectionLost, OSError, TimeoutError):
                    pass  # unreachable, or refused (join_head saw to that): try again
                continue
            beat = P.Heartbeat(self.node_id, dict(self.available), self.pending_shapes())
            try:
                reply = await asyncio.wait_for(conn.request(beat), self.node_timeout_s)
            except (ConnectionLost, TimeoutError):
                continue
            if isinstance(reply, P.ClusterView):
                self.on_cluster_view(reply.nodes)
            elif isinstance(reply, P.Failed) and reply.code == P.FailCode.NODE_MARKED_DEAD:
                self.marked_dead(reply.reason)

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

    async def tell_node(self, address: str, msg: Any) -> None:
        with contextlib.suppress(ConnectionLost, OSError):
            (await self.connect_nm(address)).send(msg)

    async def connect_nm(self, address: str) -> AsyncConnection:
        conn = self.nm_peers.get(address)
        if conn is None or conn.closed:
            try:
                conn = await async_connect(address, self.token)
            except ValueError as exc:  # no address at all (a peer's message named it)
                raise ConnectionLost(f"cannot reach {address!r}: {exc}") from exc
            self.nm_peers[address] = conn
            self.spawn(self.read_peer(conn))
        return conn

    def on_start_actor(self, conn: AsyncConnection, msg: P.StartActor, rid: int) -> None:
        self.start_detached_actor(msg)

    def start_detached_actor(self, msg: P.StartActor) -> None:
        self.spawn(start_actor(self, msg))
