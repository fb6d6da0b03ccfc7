"""What a node manager shows of itself: a frozen snapshot of its tables.

Owns NodeStatistics and its rows (WorkerStat, StoreStat, SegmentStat). The node
manager builds one with `statistics()`, copying out of its mixins' tables (each
mixin copies its own: `_worker_stats`, `_lease_stats`, `_store_stats`), on its event
loop, so the copy is consistent. The dashboard, the state listings (node/listings.py)
and the replies the CLI reads are built from these, never from the live tables.
Not the tables themselves (pool, leases, store), not the cluster's view (head/).

    dashboard, ListState, GetStoreStats ──nm.statistics()──▶ NodeStatistics (copied)

Resources are in the node's units (config.RESOURCE_UNIT per CPU, per byte...).
Building one costs a copy of the worker table and the counters; the segment table
(one row per object in the store) is copied only when asked for (`objects=True`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import msgspec


class WorkerStat(msgspec.Struct, frozen=True):
    """A worker process of this node (alive, or exited and still listed)."""

    worker_id: bytes
    pid: int
    state: str  # starting | idle | leased | dead
    address: str  # where it accepts pushed tasks ("" until it registered)
    lease_id: bytes | None
    actor_id: bytes | None  # the actor it hosts
    log_lines: int  # recent output lines kept for `raylite logs`

    @property
    def alive(self) -> bool:
        return self.state != "dead"


class StoreStat(msgspec.Struct, frozen=True):
    """The object store's byte budget and counters."""

    used_bytes: int
    capacity_bytes: int
    spilled_bytes: int
    num_objects: int
    spilled_objects: int  # objects ever spilled
    restored_objects: int  # reads served from the spill dir
    recycled_bytes: int  # freed shared memory kept for the next put or pull
    store_dir: str
    spill_dir: str


class SegmentStat(msgspec.Struct, frozen=True):
    """An object in this node's store."""

    object_id: bytes
    size: int
    owner: str  # the owner's address
    spilled: bool
    readers: int  # processes that map it now
    copies: int  # other nodes that pulled a copy


class NodeStatistics(msgspec.Struct, frozen=True):
    node_id: bytes
    address: str  # unix:... (this machine's processes)
    tcp_address: str  # tcp:HOST:PORT on a cluster, else ""
    ip: str
    started_at: float  # unix seconds
    runs_head: bool  # the head lives in this process
    total: Mapping[str, int]
    available: Mapping[str, int]
    pending: tuple[Mapping[str, int], ...]  # shapes of the lease requests waiting here
    leases: int  # granted, not returned
    workers: tuple[WorkerStat, ...]  # oldest first
    clients: Mapping[str, int]  # address -> pid of every process that registered
    drivers: tuple[str, ...]  # addresses of the drivers connected now
    store: StoreStat
    # The store's objects, least recently used first; None unless asked for.
    objects: tuple[SegmentStat, ...] | None
    task_states: Mapping[str, int]  # task records by state (counts outlive the records)
    tasks_recorded: int
    tasks_evicted: int

    def worker_by_pid(self, pid: int) -> WorkerStat | None:
        """The newest worker with that pid (pids are reused), or None."""
        for w in reversed(self.workers):
            if w.pid == pid:
                return w
        return None


def frozen_map(d: Mapping[str, int]) -> Mapping[str, int]:
    """A read-only copy of a resource dict."""
    return MappingProxyType(dict(d))
