"""Cluster metadata: nodes, actors, actor names, jobs; node liveness.

Owns the node table (addresses, resources, liveness), the actor table and its
names, and the job counter, and writes them through to a HeadStorage so a head
started again on the same storage finds the cluster as it was; placement groups
through its PlacementGroupService (`pgs`, pg_service.py), made when the first
group is asked for (`_GroupsOnDemand` until then: a program without placement
groups never loads their code). Not leases or workers (node/), not placement
(scheduling), not objects (their owners).

    node manager ──RegisterNode, Heartbeat──▶ Head ──ClusterView──▶ node manager
    node manager ──ActorStateChanged, GetActorInfo, RegisterActorName...──▶ Head
    Head ──NodeDied, ClientDied, LogLines──▶ every node manager ──▶ its clients

The head lives in the event loop of one node manager (its own node), which calls
it directly and which it reaches only through NodePort (node_port.py); other node
managers talk to it over TCP. A node that misses
heartbeats for `node_timeout_s` is marked dead; if it comes back (a partition
healed) its heartbeats are refused, so it kills its workers and joins again as a
new node: an actor that was restarted elsewhere never runs twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import msgpack

from .. import protocol as P
from ..core.lifecycle import ACTOR_TRANSITIONS, ALIVE, DEAD, PENDING, RESTARTING, ActorState
from ..core.lifecycle import transition as _transition
from ..exceptions import InvalidTransition
from ..scheduling import NodeView
from . import detached
from .statistics import ActorEntry, HeadStatistics, NodeEntry
from .storage import HeadStorage

if TYPE_CHECKING:
    from ..transport_async import AsyncConnection
    from .node_port import NodePort
    from .pg_service import PlacementGroupService

log = logging.getLogger("raylite.head")
KEEP_ENDED_DRIVERS = 1000  # ended drivers' jobs list_jobs still shows (oldest dropped)


@dataclass(eq=False)
class NodeRec:
    node_id: bytes
    address: str
    ip: str
    total: dict[str, int]
    available: dict[str, int]
    info: dict[str, Any]
    alive: bool = True
    last_seen: float = 0.0
    conn: AsyncConnection | None = None  # None: the head's own node
    pending: list[dict[str, int]] = field(default_factory=list)
    cause: str = ""

    def row(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "address": self.address,
            "ip": self.ip,
            "total": self.total,
            "available": self.available,
            "alive": self.alive,
            "info": self.info,
            "cause": self.cause,
        }


@dataclass(eq=False)
class ActorRec:
    actor_id: bytes
    state: ActorState = PENDING  # core/lifecycle.py's table; a process death is an event
    class_name: str = ""
    address: str = ""
    pid: int = 0
    cause: str = ""
    waiters: list[tuple[AsyncConnection, int]] = field(default_factory=list)
    name: tuple[str, str] | None = None  # (namespace, name) for a named actor
    restarts_left: int = 0
    methods: dict[str, Any] = field(default_factory=dict)
    node_id: bytes = b""
    restarts: int = 0  # times its process died and its owner was to restart it
    owner: str = ""  # a detached actor's owner (RegisterDetached)
    owner_gone: bool = False  # then the head restarts it (detached.py)
    owner_node: bytes = b""  # the node its owner ran on: the owner is gone if it dies
    restart: dict[str, Any] | None = None  # {"push": the creation PushTask, "shape": ...}

    def row(self) -> dict[str, Any]:
        return {
            "actor_id": self.actor_id,
            "state": self.state,
            "class_name": self.class_name,
            "address": self.address,
            "pid": self.pid,
            "cause": self.cause,
            "name": list(self.name) if self.name else None,
            "restarts_left": self.restarts_left,
            "methods": self.methods,
            "node_id": self.node_id,
            "restarts": self.restarts,
            "owner": self.owner,
            "owner_gone": self.owner_gone,
            "owner_node": self.owner_node,
            "restart": self.restart,
        }


def _pack(row: dict[str, Any]) -> bytes:
    return msgpack.packb(row, use_bin_type=True, default=P.nested)


def _unpack(blob: bytes) -> dict[str, Any]:
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)


class Head:
    def __init__(self, nm: NodePort, storage: HeadStorage, node_timeout_s: float) -> None:
        self.nm = nm
        self.storage = storage
        self.node_timeout_s = node_timeout_s
        self.nodes: dict[bytes, NodeRec] = {}
        self.actors: dict[bytes, ActorRec] = {}
        self.names: dict[tuple[str, str], ActorRec] = {}
        self.jobs = 0
        self.job_drivers: dict[str, bytes] = {}  # a driver's address -> its job id
        # A driver's job -> its row (new_job): what list_jobs shows, kept in memory only
        # (a head started again lists the drivers that join it since).
        self.driver_jobs: dict[bytes, dict[str, Any]] = {}
        self.started = time.time()
        self.handlers: dict[type, Any] = {
            P.RegisterNode: self.on_register_node,
            P.Heartbeat: self.on_heartbeat,
            P.RegisterJob: self.on_register_job,
            P.GetClusterInfo: self.on_cluster_info,
            P.GetNodeStatus: self.on_node_status,
            P.ActorStateChanged: self.on_actor_state,
            P.GetActorInfo: self.on_get_actor,
            P.KillActor: self.on_kill_actor,
            P.RegisterActorName: self.on_register_name,
            P.GetNamedActor: self.on_get_named,
            P.ClientDied: self.on_client_died,
            P.RegisterDetached: self.on_register_detached,
            P.CreateDetached: self.on_create_detached,
            P.LogLines: self.on_log_lines,
        }
        # Placement groups (pg_service.py), loaded with the first message about them.
        self.pgs: Any = _GroupsOnDemand(self)
        self.handlers.update(
            {
                P.CreatePlacementGroup: lambda c, m, r: self.pgs.on_create(c, m, r),
                P.RemovePlacementGroup: lambda c, m, r: self.pgs.on_remove(c, m, r),
                P.WaitPlacementGroup: lambda c, m, r: self.pgs.on_wait(c, m, r),
                P.GetPlacementGroups: lambda c, m, r: self.pgs.on_get(c, m, r),
            }
        )
        self.load()

    def placement_groups(self) -> PlacementGroupService:
        """The placement group service, made now if no group was asked for before."""
        from .pg_service import PlacementGroupService

        if not isinstance(self.pgs, PlacementGroupService):
            self.pgs = PlacementGroupService(self)
        return self.pgs

    # ------------------------------------------------------------------ storage
    def load(self) -> None:
        """Rebuild the tables from storage (empty for a new cluster)."""
        meta = self.storage.get("meta", "jobs")
        self.jobs = int(meta.decode()) if meta else 0
        now = time.monotonic()
        for blob in self.storage.scan("nodes").values():
            row = _unpack(blob)
            if row["node_id"] == self.nm.node_id:
                continue
            rec = NodeRec(
                row["node_id"],
                row["address"],
                row["ip"],
                row["total"],
                row["available"],
                row["info"],
                alive=row["alive"],
                cause=row.get("cause", ""),
            )
            rec.last_seen = now  # it gets node_timeout_s to find the new head
            self.nodes[rec.node_id] = rec
        for blob in self.storage.scan("actors").values():
            row = _unpack(blob)
            actor = ActorRec(
                row["actor_id"],
                ActorState(row["state"]),
                row["class_name"],
                row["address"],
                row["pid"],
                row["cause"],
                name=tuple(row["name"]) if row["name"] else None,  # type: ignore[arg-type]
                restarts_left=row["restarts_left"],
                methods=row["methods"],
                node_id=row["node_id"],
                restarts=row.get("restarts", 0),
                owner=row.get("owner", ""),
                owner_gone=row.get("owner_gone", False),
                owner_node=row.get("owner_node", b""),
                restart=detached.restored(row.get("restart")),
            )
            self.actors[actor.actor_id] = actor
            if actor.name is not None and actor.state is not DEAD:
                self.names[actor.name] = actor
        groups = self.placement_groups().load() if self.storage.scan("placement_groups") else 0
        if self.nodes or self.actors or groups:
            log.warning(
                "head: restored %d node(s), %d actor(s), %d job(s), %d placement group(s) from %s",
                len(self.nodes),
                len(self.actors),
                self.jobs,
                groups,
                self.storage.url,
            )

    def save_node(self, rec: NodeRec) -> None:
        self.storage.put("nodes", rec.node_id, _pack(rec.row()))

    def save_actor(self, actor: ActorRec) -> None:
        self.storage.put("actors", actor.actor_id, _pack(actor.row()))

    def add_own_node(self) -> None:
        nm = self.nm
        rec = NodeRec(nm.node_id, nm.tcp_address, nm.ip, nm.total, nm.available, nm.node_info())
        rec.last_seen = time.monotonic()
        self.nodes[nm.node_id] = rec
        self.save_node(rec)

    # ------------------------------------------------------------------ nodes
    def view(self) -> list[dict[str, Any]]:
        own = self.nodes.get(self.nm.node_id)
        if own is not None:
            own.available = dict(self.nm.available)
            own.pending = self.nm.pending_shapes()
        return [
            {
                "node_id": r.node_id,
                "address": r.address,
                "ip": r.ip,
                "total": r.total,
                "available": r.available,
                "alive": r.alive,
                "info": r.info,
                "pending": r.pending,
                "cause": r.cause,
                "is_head": r.node_id == self.nm.node_id or bool(r.info.get("head_node")),
            }
            for r in self.nodes.values()
        ]

    def node_views(self) -> list[NodeView]:
        return [
            NodeView(
                r.node_id, r.address, r.total, r.available, r.alive, r.info.get("labels") or {}
            )
            for r in self.nodes.values()
        ]

    def on_register_node(self, conn: AsyncConnection, msg: P.RegisterNode, rid: int) -> None:
        rec = self.nodes.get(msg.node_id)
        if rec is not None and not rec.alive:
            # Marked dead (missed heartbeats): its actors may run elsewhere by now.
            conn.reply(
                rid, P.Failed(P.FailCode.NODE_MARKED_DEAD, f"node was marked dead: {rec.cause}")
            )
            return
        rec = NodeRec(msg.node_id, msg.address, msg.ip, msg.total, msg.available, msg.info)
        rec.conn = conn
        rec.last_seen = time.monotonic()
        self.nodes[msg.node_id] = rec
        conn.peer = rec
        self.save_node(rec)
        log.info("head: node %s joined at %s", msg.node_id.hex()[:8], msg.address)
        view = self.view()
        conn.reply(rid, P.NodeRegistered(view))
        # The others hear of it now, not at their next heartbeat: a driver that starts
        # right after a join places work on the new node at once.
        self.broadcast(P.ClusterView(view), skip=conn, local=False)
        self.nm.on_cluster_view(view)
        self.pgs.kick()  # waiting placement groups may fit on it

    def on_heartbeat(self, conn: AsyncConnection, msg: P.Heartbeat, rid: int) -> None:
        rec = self.nodes.get(msg.node_id)
        if rec is None or not rec.alive:
            why = rec.cause if rec is not None else "unknown node"
            conn.reply(rid, P.Failed(P.FailCode.NODE_MARKED_DEAD, f"node was marked dead: {why}"))
            return
        rec.last_seen = time.monotonic()
        rec.available = msg.available
        rec.pending = msg.pending
        rec.conn = conn
        conn.reply(rid, P.ClusterView(self.view()))
        self.pgs.kick()  # (only when a group waits)
        if self.nm.pending:  # requests waiting here may fit on that node now
            self.nm.view_refreshed()

    def on_node_disconnect(self, conn: AsyncConnection) -> None:
        """A node manager's connection closed: its process is gone (or unreachable)."""
        rec = conn.peer
        if isinstance(rec, NodeRec) and rec.conn is conn and rec.alive:
            self.mark_dead(rec, "its node manager's connection to the head closed")

    async def monitor_loop(self) -> None:
        while True:
            await asyncio.sleep(min(0.5, self.node_timeout_s / 4))
            now = time.monotonic()
            for rec in list(self.nodes.values()):
                if rec.node_id == self.nm.node_id or not rec.alive:
                    continue
                if now - rec.last_seen > self.node_timeout_s:
                    self.mark_dead(rec, f"no heartbeat for {self.node_timeout_s:g} s")

    def mark_dead(self, rec: NodeRec, cause: str) -> None:
        rec.alive = False
        rec.cause = cause
        rec.available = {}
        self.save_node(rec)
        log.warning("head: node %s (%s) is dead: %s", rec.node_id.hex()[:8], rec.address, cause)
        detached.owner_gone(self, node_id=rec.node_id)  # owners there died with it
        for actor in self.actors.values():
            if actor.node_id == rec.node_id and actor.state in (ALIVE, PENDING):
                self.actor_process_died(actor, f"its node {rec.address} died ({cause})")
        self.broadcast(P.NodeDied(rec.node_id, rec.address, rec.ip, cause))
        self.pgs.node_died(rec.node_id)  # its bundles are placed again
        if rec.conn is not None:
            rec.conn.close()

    def broadcast(
        self, msg: Any, *, skip: AsyncConnection | None = None, local: bool = True
    ) -> None:
        """Send to every live node manager, this one included (through a call) unless
        `local` is False: news that came from this node was told here already."""
        for rec in self.nodes.values():
            if rec.alive and rec.conn is not None and rec.conn is not skip and not rec.conn.closed:
                rec.conn.send(msg)
        if local:
            self.nm.on_head_event(msg)

    def on_client_died(self, conn: AsyncConnection, msg: P.ClientDied, rid: int) -> None:
        self.broadcast(msg, skip=conn, local=conn is not None)
        detached.owner_gone(self, msg.address)
        self.pgs.client_died(msg.address)  # its placement groups go with it
        job = self.job_drivers.pop(msg.address, None)
        if job is not None:  # a driver: its job ended, and its groups with it
            self.pgs.job_finished(job)
            self.driver_ended(job)

    def on_log_lines(self, conn: AsyncConnection, msg: P.LogLines, rid: int) -> None:
        if conn is not None and msg.pid:  # another node's worker: keep it for `raylite logs`
            for line in msg.lines:
                self.nm.worker_logs.add(msg.pid, line.stream, line.text.rstrip("\n"))
        self.broadcast(msg, skip=conn, local=conn is not None)

    def on_register_job(self, conn: AsyncConnection, msg: P.RegisterJob, rid: int) -> None:
        conn.reply(rid, P.JobRegistered(self.new_job(msg.driver, msg.info)))

    def new_job(self, driver: str = "", info: dict[str, Any] | None = None) -> bytes:
        self.jobs += 1
        self.storage.put("meta", "jobs", str(self.jobs).encode())
        job_id = self.jobs.to_bytes(4, "little")
        if driver:
            self.job_drivers[driver] = job_id
        if info is not None:  # a driver's job: its row for list_jobs (Ray's job table)
            self.driver_jobs[job_id] = {
                "job_id": job_id.hex(),
                "entrypoint": str(info.get("entrypoint", "")),
                "submission_id": str(info.get("submission_id", "")),
                "pid": int(info.get("pid", 0)),
                "ip": str(info.get("ip", "")),
                "start_time": int(time.time() * 1000),
                "end_time": None,
            }
        return job_id

    def driver_ended(self, job_id: bytes) -> None:
        row = self.driver_jobs.get(job_id)
        if row is not None:
            row["end_time"] = int(time.time() * 1000)
            ended = [j for j, r in self.driver_jobs.items() if r["end_time"]]
            for old in ended[: max(0, len(ended) - KEEP_ENDED_DRIVERS)]:  # oldest first
                del self.driver_jobs[old]

    def cluster_totals(self) -> tuple[dict[str, int], dict[str, int]]:
        total: dict[str, int] = {}
        avail: dict[str, int] = {}
        self.view()  # refreshes the own node's numbers
        for rec in self.nodes.values():
            if not rec.alive:
                continue
            for k, v in rec.total.items():
                total[k] = total.get(k, 0) + v
            for k, v in rec.available.items():
                avail[k] = avail.get(k, 0) + max(v, 0)
        return total, avail

    def on_cluster_info(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        """`nodes()`, `cluster_resources()`: from a snapshot."""
        stats = self.statistics()
        nodes = [self.nm.node_dict(n) for n in stats.nodes]
        conn.reply(rid, P.ClusterInfo(dict(stats.total), dict(stats.available), nodes))

    def on_node_status(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        """`raylite status`: the nodes and the head's own numbers, from a snapshot."""
        stats = self.statistics()
        head = {
            "node_id": stats.node_id.hex(),
            "address": stats.address,
            "storage": stats.storage,
            "uptime_s": time.time() - stats.started,
            "actors": sum(1 for a in stats.actors if a.state is not DEAD),
            "jobs": stats.jobs,
            "placement_groups": [
                {
                    "pg_id": pg["pg_id"].hex(),
                    "name": pg["name"],
                    "state": pg["state"],
                    "strategy": pg["strategy"],
                    "bundles": pg["bundles"],
                }
                for pg in stats.placement_groups
            ],
        }
        conn.reply(rid, P.NodeStatus([n.row() for n in stats.nodes], head))

    def statistics(self) -> HeadStatistics:
        """A frozen copy of the node table, the actor table, the names and the jobs."""
        own_id = self.nm.node_id
        nodes = []
        total: dict[str, int] = {}
        avail: dict[str, int] = {}
        for r in self.nodes.values():
            own = r.node_id == own_id
            # The own node's numbers are the node manager's now (view() refreshes them).
            available = self.nm.available if own else r.available
            pending = self.nm.pending_shapes() if own else r.pending
            nodes.append(
                NodeEntry(
                    r.node_id,
                    r.address,
                    r.ip,
                    MappingProxyType(dict(r.total)),
                    MappingProxyType(dict(available)),
                    r.alive,
                    own or bool(r.info.get("head_node")),
                    r.cause,
                    MappingProxyType(dict(r.info)),
                    tuple(MappingProxyType(dict(p)) for p in pending),
                )
            )
            if r.alive:
                for k, v in r.total.items():
                    total[k] = total.get(k, 0) + v
                for k, v in available.items():
                    avail[k] = avail.get(k, 0) + max(v, 0)
        actors = tuple(
            ActorEntry(
                a.actor_id,
                a.state,
                a.class_name,
                a.name[1] if a.name else None,
                a.name[0] if a.name else None,
                a.address,
                a.pid,
                a.node_id,
                a.restarts,
                a.restarts_left,
                a.cause,
                bool(a.owner),
            )
            for a in self.actors.values()
        )
        return HeadStatistics(
            node_id=own_id,
            address=self.nm.tcp_address,
            storage=self.storage.url,
            started=self.started,
            jobs=self.jobs,
            nodes=tuple(nodes),
            actors=actors,
            named_actors=MappingProxyType({k: a.actor_id for k, a in self.names.items()}),
            total=MappingProxyType(total),
            available=MappingProxyType(avail),
            placement_groups=self.pgs.statistics(),
            driver_jobs=tuple(MappingProxyType(dict(r)) for r in self.driver_jobs.values()),
        )

    # ------------------------------------------------------------------ actors
    def set_actor(self, actor: ActorRec, state: ActorState, cause: str = "") -> bool:
        """Move an actor along its lifecycle; False (and logged) for a move its table
        lacks: reports from owners and nodes can arrive late, never to go backwards."""
        try:
            _transition(actor, state, ACTOR_TRANSITIONS, cause=cause, who=actor.actor_id)
        except InvalidTransition as exc:
            log.info("head: report ignored: %s", exc)
            return False
        if cause:
            actor.cause = cause
        if state is DEAD and actor.name is not None and self.names.get(actor.name) is actor:
            del self.names[actor.name]  # a dead actor's name can be taken again
        self.save_actor(actor)
        if state in (ALIVE, DEAD):
            for conn, rid in actor.waiters:
                if not conn.closed:
                    conn.reply(rid, P.ActorInfo(actor.state, actor.address, actor.cause))
            actor.waiters.clear()

    def on_register_detached(
        self, conn: AsyncConnection, msg: P.RegisterDetached, rid: int
    ) -> None:
        actor = self.actors.setdefault(msg.actor_id, ActorRec(msg.actor_id))
        actor.owner = msg.owner
        node = conn.peer if conn is not None else None  # forwarded by a node, or ours
        actor.owner_node = node.node_id if isinstance(node, NodeRec) else self.nm.node_id
        actor.restart = (
            {"push": msg.push, "shape": msg.shape, "runtime_env": msg.runtime_env}
            if msg.push
            else None
        )
        self.save_actor(actor)

    def on_create_detached(self, conn: AsyncConnection, msg: P.CreateDetached, rid: int) -> None:
        actor = self.actors.setdefault(msg.actor_id, ActorRec(msg.actor_id))
        node = conn.peer if conn is not None else None  # forwarded by a node, or ours
        owner_node = node.node_id if isinstance(node, NodeRec) else self.nm.node_id
        detached.create(self, actor, msg, owner_node)
        if conn is not None and rid:
            conn.reply(rid, P.Ok())

    def actor_process_died(self, actor: ActorRec, cause: str) -> None:
        """The event: the process of the actor's current life died (from its node, or
        its node died). The head restarts a detached actor whose owner is gone; else
        its owner restarts it if it may, and askers wait for the new address."""
        if actor.state is DEAD or detached.process_died(self, actor, cause):
            return
        if actor.restarts_left:
            actor.restarts += 1
        self.set_actor(actor, RESTARTING if actor.restarts_left else DEAD, cause)

    def on_actor_state(self, conn: AsyncConnection, msg: P.ActorStateChanged, rid: int) -> None:
        actor = self.actors.setdefault(msg.actor_id, ActorRec(msg.actor_id))
        if actor.state is DEAD:
            if msg.state == "ALIVE":  # killed while a node started it: end that life too
                self.kill_worker_of(actor, self.node_of(msg.address))
            return
        if msg.state == P.PROCESS_DIED:  # an event from the node that hosted it
            if msg.pid and actor.pid and msg.pid != actor.pid:
                return  # an earlier life's process: the actor has moved on since
            if actor.state is RESTARTING and not actor.owner_gone:
                # Its owner saw the death first and restarts it (its report spent the
                # restart): this is the life that ended, not one more death to count.
                return
            self.actor_process_died(actor, msg.cause)
            return
        actor.class_name = msg.class_name or actor.class_name
        actor.address = msg.address or actor.address
        actor.pid = msg.pid or actor.pid
        actor.restarts_left = msg.restarts_left
        state = ActorState(msg.state)
        if state is ALIVE:
            actor.node_id = self.node_of(actor.address)
        self.set_actor(actor, state, msg.cause)

    def node_of(self, address: str) -> bytes:
        """The node a worker address is on (by its host part; the own node for unix:)."""
        if not address.startswith("tcp:"):
            return self.nm.node_id
        host = address[4:].rpartition(":")[0]
        for rec in self.nodes.values():
            if rec.alive and rec.ip == host:
                return rec.node_id
        return b""

    def on_kill_actor(self, conn: AsyncConnection, msg: P.KillActor, rid: int) -> None:
        actor = self.actors.setdefault(msg.actor_id, ActorRec(msg.actor_id))
        if msg.no_restart:
            actor.restarts_left = 0
            if actor.state is not DEAD:
                self.set_actor(actor, DEAD, msg.cause)
        self.kill_worker_of(actor, actor.node_id)
        conn.reply(rid, P.Ok())

    def kill_worker_of(self, actor: ActorRec, node_id: bytes) -> None:
        """Kill the worker process hosting the actor on its node (all nodes if unknown)."""
        if not node_id or node_id == self.nm.node_id:
            self.nm.kill_actor_worker(actor.actor_id)
        kill = P.KillActorWorker(actor.actor_id)
        for rec in self.nodes.values():
            if rec.node_id == self.nm.node_id or (node_id and rec.node_id != node_id):
                continue
            if rec.alive and rec.conn is not None and not rec.conn.closed:
                rec.conn.send(kill)

    def on_get_actor(self, conn: AsyncConnection, msg: P.GetActorInfo, rid: int) -> None:
        actor = self.actors.setdefault(msg.actor_id, ActorRec(msg.actor_id))
        if actor.state in (ALIVE, DEAD):
            conn.reply(rid, P.ActorInfo(actor.state, actor.address, actor.cause))
        else:
            actor.waiters.append((conn, rid))

    def on_register_name(self, conn: AsyncConnection, msg: P.RegisterActorName, rid: int) -> None:
        key = (msg.namespace, msg.name)
        taken = self.names.get(key)
        if taken is not None and taken.state is not DEAD:
            conn.reply(
                rid,
                P.NamedActor(True, taken.actor_id, taken.class_name, taken.methods, taken.address),
            )
            return
        actor = self.actors.setdefault(msg.actor_id, ActorRec(msg.actor_id))
        actor.name, actor.class_name, actor.methods = key, msg.class_name, msg.methods
        self.names[key] = actor
        self.save_actor(actor)
        conn.reply(rid, P.NamedActor(False, msg.actor_id, msg.class_name, msg.methods, ""))

    def on_get_named(self, conn: AsyncConnection, msg: P.GetNamedActor, rid: int) -> None:
        actor = self.names.get((msg.namespace, msg.name))
        if actor is None or actor.state is DEAD:
            conn.reply(rid, P.NamedActor(False, b"", "", {}, ""))
        else:
            conn.reply(
                rid,
                P.NamedActor(True, actor.actor_id, actor.class_name, actor.methods, actor.address),
            )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.storage.close()


class _GroupsOnDemand:
    """The head's placement groups before any was asked for (or restored).

    With no group, the cluster's events (a node joined, died; a client or job ended)
    change nothing and the statistics list none; anything else (a request, the jobs'
    reserve and release) makes the real service (Head.placement_groups) and goes to it.
    """

    def __init__(self, head: Head) -> None:
        self._head = head

    def _made(self) -> Any:
        """The real service if one was made since (someone kept this stand-in)."""
        pgs = self._head.pgs
        return None if pgs is self else pgs

    def kick(self) -> None:
        if (pgs := self._made()) is not None:
            pgs.kick()

    def node_died(self, node_id: bytes) -> None:
        if (pgs := self._made()) is not None:
            pgs.node_died(node_id)

    def client_died(self, address: str) -> None:
        if (pgs := self._made()) is not None:
            pgs.client_died(address)

    def job_finished(self, job_id: bytes) -> None:
        if (pgs := self._made()) is not None:
            pgs.job_finished(job_id)

    def statistics(self) -> tuple[dict[str, Any], ...]:
        pgs = self._made()
        return pgs.statistics() if pgs is not None else ()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._head.placement_groups(), name)
