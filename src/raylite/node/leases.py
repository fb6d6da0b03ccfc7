"""Resources and leases of one node: what is free, who holds a worker, who waits.

Owns the node's resources (`total`, `available`, `free_gpus`), the lease requests
waiting here (`pending`, LeaseReq), the granted leases (`leases`, Lease) and where a
request goes: here, another node (spillback) or nowhere (infeasible). Not the
placement policy (scheduling.py), not the workers (pool.py), not the view of the
other nodes (cluster_link.py).

    owner ──RequestLease──▶ place ──here──▶ pending ──schedule──▶ grant ──LeaseGranted──▶
                                 └─elsewhere──▶ LeaseSpillback(node) | LeaseInfeasible
    owner ──ReturnLease──▶ end_lease: the worker is idle again (an actor's is killed)
    worker ──NotifyBlocked / NotifyUnblocked──▶ its lease's CPUs given back / taken again

Lease lifecycle: REQUESTED -> GRANTED -> (BLOCKED <-> GRANTED) -> RETURNED.
A blocked lease (its task waits in get/wait) gives its CPUs back to the node. A
request for an actor gets a worker started for it (`reserved` meanwhile); others
take an idle one. A request is sent on at most MAX_HOPS times, then waits where it is.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from .. import protocol as P
from .. import scheduling
from ..config import RESOURCE_UNIT
from ..exceptions import ConnectionLost
from ..transport import AsyncConnection
from .pool import WorkerRec


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


MAX_HOPS = 3  # a lease request is sent on (spillback) at most this many times


class LeasesMixin:
    """NodeManager's resources and leases; the state below is set by _init_leases."""

    total: dict[str, int]
    available: dict[str, int]
    free_gpus: list[int]
    pending: list[LeaseReq]
    leases: dict[bytes, Lease]
    spread_seq: int  # SPREAD requests placed so far (round-robin)

    def _init_leases(self, total: dict[str, int], num_gpus: int) -> None:
        self.total = dict(total)
        self.available = dict(total)
        self.free_gpus = list(range(num_gpus))
        self.pending = []
        self.leases = {}
        self.spread_seq = 0

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

    def unreserve(self, req: LeaseReq) -> bool:
        if req.reserved:
            self.release(req.shape, req.gpu_ids)
            req.reserved = False
        return False

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
                conn.send(P.LeaseInfeasible(msg.shape, missing))
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

    def place_shape(self, shape: dict[str, int], actor_id: bytes) -> scheduling.Placement:
        """Where a lease of `shape` for the actor would go (the head's detached restarts)."""
        return self.place(LeaseReq(b"", shape, actor_id, None, 0))  # type: ignore[arg-type]

    def redirect(self, req: LeaseReq, where: scheduling.Placement) -> None:
        """Answer a lease request with another node (spillback) or a failure."""
        if where.kind == "fail" or where.node is None:
            req.conn.reply(req.rid, P.Failed(P.FailCode.AFFINITY_UNAVAILABLE, where.reason))
            return
        node = where.node
        # Count the resources as taken until the next view, so a burst of requests
        # spreads over the free nodes instead of all landing on the first.
        avail = dict(node.available)
        for k, v in req.shape.items():
            avail[k] = avail.get(k, 0) - v
        self.update_view(node.node_id, avail)
        req.conn.reply(req.rid, P.LeaseSpillback(node.address))

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
                conn.reply(req.rid, P.Failed(P.FailCode.CANCELLED, "cancelled"))
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

    def display(self, res: dict[str, int]) -> dict[str, float]:
        return {k: v / RESOURCE_UNIT for k, v in res.items()}
