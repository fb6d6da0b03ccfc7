"""Resources and leases of one node, the shell: messages to lease book events, actions run.

Owns the node's LeaseBook (`lease_book`, lease_book.py: resources, requests, leases,
idle workers and their lifecycles) and the running of its actions: forking a worker
(pool.py), replies to owners, the view of another node a spillback debits, the
early heartbeat. Not the decisions (the book's), not the placement policy
(scheduling.py), not the view of the other nodes (cluster_link.py).

    owner ──RequestLease──▶ book.request ──▶ Grant ──LeaseGranted──▶ owner
                                         ├──▶ Spillback ──LeaseSpillback(node)──▶ owner
                                         ├──▶ Infeasible ──LeaseInfeasible──▶ owner
                                         └──▶ StartWorker ──fork──▶ (registers) book.worker_started
    owner ──ReturnLease──▶ book.lease_returned: the worker is idle again (an actor's killed)
    owner ──CancelLease──▶ book.cancel ──Failed("cancelled")──▶ owner
    worker ──NotifyBlocked / NotifyUnblocked──▶ its lease's CPUs lent back / taken again
    head ──PrepareBundles / CommitBundles / CancelBundles──▶ the BundleBook
                                        (`bundle_book`, bundle_book.py: placement groups)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from .. import protocol as P
from .. import scheduling
from ..config import CONFIG, RESOURCE_UNIT
from ..exceptions import ConnectionLost
from ..runtime_env.spec import env_key
from ..transport_async import AsyncConnection
from .bundle_book import BundleBook
from .lease_book import (
    Grant,
    Infeasible,
    KillWorker,
    Lease,
    LeaseAction,
    LeaseBook,
    Reject,
    ResourcesChanged,
    Spillback,
    StartWorker,
)
from .pool import WorkerRec
from .statistics import frozen_map
from .worker_cap import default_max_workers, waiting_on_cap


class LeasesMixin:
    """NodeManager's resources and leases; the book is set by _init_leases."""

    lease_book: LeaseBook

    def _init_leases(self, total: dict[str, int], num_gpus: int, max_workers: int = 0) -> None:
        """`max_workers`: the cap on worker processes (0: CONFIG.max_workers, else the
        default from this machine's memory, CPUs and fds: worker_cap.py)."""
        max_workers = max_workers or CONFIG.max_workers or _default_cap(total)
        self.lease_book = LeaseBook(
            total,
            num_gpus,
            self,  # type: ignore[arg-type]
            cluster=self.cluster,
            max_workers=max_workers,
        )
        self.bundle_book = BundleBook(self.lease_book)  # placement groups' bundles here

    # What the head (head/node_port.py), the heartbeat and the state views read.
    @property
    def total(self) -> dict[str, int]:
        return self.lease_book.total

    @property
    def available(self) -> dict[str, int]:
        return self.lease_book.available

    @property
    def pending(self) -> list[Lease]:
        return self.lease_book.pending

    def run_lease_actions(self, actions: list[LeaseAction]) -> None:
        for action in actions:
            if isinstance(action, Grant):
                lease, rec = action.lease, action.worker
                lease.owner.reply(
                    lease.rid,
                    P.LeaseGranted(
                        lease.lease_id, rec.worker_id, rec.address, rec.pid, lease.gpu_ids,
                        self.node_id,
                    ),
                )  # fmt: skip
            elif isinstance(action, ResourcesChanged):
                self.resources_changed()
            elif isinstance(action, StartWorker):
                if action.env_key or (action.lease is not None and action.lease.env_key):
                    self.start_env_worker(action)  # its env is built first
                else:
                    self.start_worker(for_request=action.lease)
            elif isinstance(action, KillWorker):
                self.kill_worker(action.worker)
            elif isinstance(action, Spillback):
                lease, node = action.lease, action.node
                self.update_view(node.node_id, action.available)
                lease.owner.reply(lease.rid, P.LeaseSpillback(node.address))
            elif isinstance(action, Reject):
                action.lease.owner.reply(action.lease.rid, P.Failed(action.code, action.reason))
            elif isinstance(action, Infeasible):
                lease = action.lease
                lease.owner.send(
                    P.LeaseInfeasible(lease.shape, action.missing, lease.label_selector)
                )

    def on_request_lease(self, conn: AsyncConnection, msg: P.RequestLease, rid: int) -> None:
        lease = Lease(
            msg.lease_id,
            msg.shape,
            msg.actor_id,
            conn,
            rid,
            strategy=msg.strategy,
            spilled=int(msg.spilled),
            detached=msg.detached,
            waiting_since=time.monotonic(),
            label_selector=msg.label_selector,
        )
        if not msg.retriable:  # for the memory monitor (memory_policy.py)
            lease.retriable = False
        if msg.runtime_env is not None:
            lease.runtime_env = msg.runtime_env
            lease.env_key = env_key(msg.runtime_env)
        self.run_lease_actions(self.lease_book.request(lease))

    def request_lease_here(self, lease: Lease) -> None:
        """A lease this node asks of itself (node/detached.py): placed here, never sent on."""
        lease.pinned = True
        self.run_lease_actions(self.lease_book.request(lease))

    def schedule(self) -> None:
        """Try the waiting lease requests again (an owner went away)."""
        self.run_lease_actions(self.lease_book.schedule())

    def view_refreshed(self) -> None:
        """Fresh numbers from the other nodes: waiting requests may move to room there."""
        self.run_lease_actions(self.lease_book.view_refreshed())

    def place_shape(self, shape: dict[str, int], actor_id: bytes) -> scheduling.Placement:
        """Where a lease of `shape` for the actor would go (the head's detached restarts)."""
        return self.lease_book.place_shape(shape, actor_id)

    def pending_shapes(self) -> list[dict[str, int]]:
        return self.lease_book.pending_shapes(CONFIG.max_demand_shapes)

    def on_return_lease(self, conn: AsyncConnection, msg: P.ReturnLease, rid: int) -> None:
        if not msg.via or msg.via == self.tcp_address:
            self.run_lease_actions(self.lease_book.lease_returned(msg.lease_id, msg.kill))
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

    # Placement groups: the head's two phases (head/pg_service.py), this node's half.
    def prepare_bundles(
        self, pg_id: bytes, attempt: int, bundles: dict[int, dict[str, int]]
    ) -> bool:
        ok = self.bundle_book.prepare(pg_id, attempt, bundles)
        if ok:
            self.resources_changed()
        return ok

    def commit_bundles(self, pg_id: bytes, indices: list[int]) -> None:
        self.run_lease_actions(self.bundle_book.commit(pg_id, indices))
        self.resources_changed()

    def cancel_bundles(self, pg_id: bytes, indices: list[int], attempt: int, removed: bool) -> None:
        self.run_lease_actions(self.bundle_book.cancel(pg_id, indices, attempt, removed))

    def on_prepare_bundles(self, conn: AsyncConnection, msg: P.PrepareBundles, rid: int) -> None:
        ok = self.prepare_bundles(msg.pg_id, msg.attempt, msg.bundles)
        conn.reply(rid, P.Ok() if ok else P.Failed(P.FailCode.BAD_REQUEST, "no room now"))

    def on_commit_bundles(self, conn: AsyncConnection, msg: P.CommitBundles, rid: int) -> None:
        self.commit_bundles(msg.pg_id, msg.indices)

    def on_cancel_bundles(self, conn: AsyncConnection, msg: P.CancelBundles, rid: int) -> None:
        self.cancel_bundles(msg.pg_id, msg.indices, msg.attempt, msg.removed)

    def on_cancel_lease(self, conn: AsyncConnection, msg: P.CancelLease, rid: int) -> None:
        self.run_lease_actions(self.lease_book.cancel(msg.lease_id))

    def on_blocked(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        rec = conn.peer
        if isinstance(rec, WorkerRec) and rec.lease_id:
            self.run_lease_actions(self.lease_book.worker_blocked(rec.lease_id))

    def on_unblocked(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        rec = conn.peer
        if isinstance(rec, WorkerRec) and rec.lease_id:
            self.lease_book.worker_unblocked(rec.lease_id)

    async def waiting_watch_loop(self) -> None:
        """Once a second: tell the owners of requests that wait long on resources held
        here (LeaseWaiting), once each."""
        after = CONFIG.pending_warn_s
        while True:
            await asyncio.sleep(min(1.0, after))
            now = time.monotonic()
            for lease, holders in self.lease_book.waiting_long(now, after):
                with contextlib.suppress(ConnectionLost, OSError):
                    lease.owner.send(P.LeaseWaiting(lease.shape, self.display(self.total), holders))
            book = self.lease_book
            cap = book.cap
            for lease, holders in waiting_on_cap(
                cap, book.pending, book.leases.values(), book.available, now, after
            ):
                with contextlib.suppress(ConnectionLost, OSError):
                    lease.owner.send(
                        P.LeaseWaiting(lease.shape, self.display(self.total), holders, cap.limit)
                    )

    def display(self, res: dict[str, int]) -> dict[str, float]:
        return {k: v / RESOURCE_UNIT for k, v in res.items()}

    def _lease_stats(self) -> tuple[Any, Any, tuple[Any, ...], int]:
        """(total, available, waiting shapes, granted leases), copied (for statistics)."""
        shapes = tuple(frozen_map(s) for s in self.pending_shapes())
        return (
            frozen_map(self.total),
            frozen_map(self.available),
            shapes,
            len(self.lease_book.leases),
        )


def _default_cap(total: dict[str, int]) -> int:
    """The default worker cap of this machine (worker_cap.default_max_workers)."""
    import resource

    from ..node_start import available_memory  # /proc/meminfo: no psutil to import

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = soft if soft != resource.RLIM_INFINITY else 1 << 20
    cpus = total.get("CPU", 0) / RESOURCE_UNIT
    return default_max_workers(cpus, available_memory(), nofile)
