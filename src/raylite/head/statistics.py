"""What the head shows of the cluster: a frozen snapshot of its tables.

Owns HeadStatistics and its rows (NodeEntry, ActorEntry). `Head.statistics()`
copies them out of the node table, the actor table, the names and the job counter,
on the head's event loop. The dashboard, the state listings (node/listings.py) and
the reply to `raylite status` (GetNodeStatus) are built from these. Not the tables
(head.py), not any one node's workers or store (node/statistics.py).

    dashboard, ListState, GetNodeStatus ──head.statistics()──▶ HeadStatistics (copied)

Resources are in the node's units (config.RESOURCE_UNIT per CPU, per byte...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from ..core.lifecycle import ActorState


class NodeEntry(msgspec.Struct, frozen=True):
    """A node as the head knows it (its field names are NodeRec's)."""

    node_id: bytes
    address: str  # tcp:HOST:PORT ("" for a node without TCP: the head's own, on one machine)
    ip: str
    total: Mapping[str, int]
    available: Mapping[str, int]
    alive: bool
    is_head: bool
    cause: str  # why it is dead
    info: Mapping[str, Any]  # hostname, store_dir, unix_address, ...
    pending: tuple[Mapping[str, int], ...]  # shapes of the lease requests waiting there

    def row(self) -> dict[str, Any]:
        """The wire form (ClusterView, NodeStatus rows)."""
        return {
            "node_id": self.node_id,
            "address": self.address,
            "ip": self.ip,
            "total": dict(self.total),
            "available": dict(self.available),
            "alive": self.alive,
            "info": dict(self.info),
            "pending": [dict(p) for p in self.pending],
            "cause": self.cause,
            "is_head": self.is_head,
        }


class ActorEntry(msgspec.Struct, frozen=True):
    """An actor in the head's table, in creation order (the first word about it)."""

    actor_id: bytes
    state: ActorState
    class_name: str
    name: str | None  # a named actor's name, and its namespace
    namespace: str | None
    address: str
    pid: int
    node_id: bytes
    restarts: int
    restarts_left: int
    cause: str
    detached: bool

    @property
    def created(self) -> bool:
        """Created somewhere (or dead), not only asked about (GetActorInfo)."""
        return bool(self.class_name or self.pid or self.state is ActorState.DEAD)


class HeadStatistics(msgspec.Struct, frozen=True):
    node_id: bytes  # the head's own node
    address: str  # the head's tcp:HOST:PORT ("" on one machine)
    storage: str  # the storage backend's URL
    started: float  # unix seconds
    jobs: int
    nodes: tuple[NodeEntry, ...]
    actors: tuple[ActorEntry, ...]
    named_actors: Mapping[tuple[str, str], bytes]  # (namespace, name) -> actor id
    total: Mapping[str, int]  # summed over live nodes
    available: Mapping[str, int]
    # Placement groups: PGRec.row() each (head/placement_groups.py).
    placement_groups: tuple[Mapping[str, Any], ...] = ()
    # Drivers' jobs (Head.new_job's rows): job_id (hex), entrypoint, submission_id
    # ("": a DRIVER job), pid, ip, start_time and end_time (ms; None: running).
    driver_jobs: tuple[Mapping[str, Any], ...] = ()

    def actor_classes(self) -> dict[bytes, str]:
        return {a.actor_id: a.class_name for a in self.actors}
