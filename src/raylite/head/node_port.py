"""NodePort: what the head uses of the node manager whose event loop it runs in.

Owns nothing; it is the whole interface between the head package and the node it
lives in, so the head imports no node code (and the node package may import the
head without a cycle). NodeManager satisfies it structurally.

    node manager ──Head(node, storage)──▶ Head ──NodePort calls──▶ that node manager

Everything here is read or called on the head's own node only; other nodes are
reached over their connections (NodeRec.conn).
"""

from __future__ import annotations

from collections.abc import Sized
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .. import protocol as P
    from ..scheduling import NodeView, Placement
    from ..task_events import WorkerLogs


class NodePort(Protocol):
    """The head's view of its own node. The head reads these, never sets them."""

    @property
    def node_id(self) -> bytes: ...

    @property
    def tcp_address(self) -> str: ...

    @property
    def ip(self) -> str: ...

    @property
    def total(self) -> dict[str, int]: ...

    @property
    def available(self) -> dict[str, int]: ...

    @property
    def pending(self) -> Sized:
        """Lease requests waiting here (the head asks only whether there are any)."""
        ...

    @property
    def head_only(self) -> bool:
        """The head's own process (`raylite start --head`): it runs no work."""
        ...

    @property
    def worker_logs(self) -> WorkerLogs:
        """Recent worker output, where the head keeps other nodes' for `raylite logs`."""
        ...

    def node_info(self) -> dict[str, Any]:
        """Hostname, directories, pid, ...: the `info` of the node's own NodeRec."""
        ...

    def pending_shapes(self) -> list[dict[str, int]]:
        """Resource shapes of the lease requests waiting here (the demand)."""
        ...

    def node_dict(self, rec: Any) -> dict[str, Any]:
        """A node record as Ray's `nodes()` shows it."""
        ...

    def on_cluster_view(self, rows: list[dict[str, Any]]) -> None:
        """The cluster view changed (a node joined): place waiting work by it."""
        ...

    def view_refreshed(self) -> None:
        """A node reported: try the waiting lease requests again (it may have room now)."""
        ...

    def on_head_event(self, msg: Any) -> None:
        """News for this node's clients: NodeDied, ClientDied, LogLines."""
        ...

    def kill_actor_worker(self, actor_id: bytes) -> None:
        """Kill the worker process hosting the actor, if it runs here."""
        ...

    def other_nodes(self) -> list[NodeView]:
        """The other live nodes, as placement sees them."""
        ...

    def place_shape(self, shape: dict[str, int], actor_id: bytes) -> Placement:
        """Where the node would place a lease of `shape` for the actor (here, spill...)."""
        ...

    def spawn(self, coro: Any) -> None:
        """Run `coro` in the background, owned by the node."""
        ...

    def prepare_bundles(
        self, pg_id: bytes, attempt: int, bundles: dict[int, dict[str, int]]
    ) -> bool:
        """Reserve a placement group's bundles here, all or none (node/bundle_book.py)."""
        ...

    def commit_bundles(self, pg_id: bytes, indices: list[int]) -> None:
        """The reserved bundles become the group's resources here."""
        ...

    def cancel_bundles(self, pg_id: bytes, indices: list[int], attempt: int, removed: bool) -> None:
        """Give back bundles reserved or committed here (removed: all of the group's)."""
        ...

    def start_detached_actor(self, msg: P.StartActor) -> None:
        """Start a new life of a detached actor on this node (in the background)."""
        ...
