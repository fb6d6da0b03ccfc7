"""Placement policy only: (demand, cluster view) -> the node that should run it.

Pure functions over a snapshot of the cluster; no I/O, no state beyond what the
caller passes in, so they are tested without processes (tests/unit).

    owner ──RequestLease──▶ local node manager ──place()──▶ "here" | another node
                                                             (LeaseSpillback)

The policy is Ray's hybrid one, simplified:
- A request the local node can serve now runs here (data and workers are local),
  unless this node has a GPU or custom resource the request does not need and a plain
  node has room: those nodes are kept for the requests that need them.
- Else a node that has the resources free now (by the last view) gets it, the one
  with the most CPU free first, so busy nodes spill work to idle ones.
- Else, if this node has the resources at all, the request waits here.
- Else it goes to any node that has them in total (it waits there).
- SPREAD picks round-robin among the nodes that have the resources (free or not).
- Node affinity sends it to that node; `soft` falls back to the hybrid policy when
  the node is dead or lacks the resources, hard affinity fails instead.
"""

from __future__ import annotations

import msgspec

from .protocol import NodeAffinity

HERE = "here"


class NodeView(msgspec.Struct, frozen=True):
    node_id: bytes
    address: str
    total: dict[str, int]
    available: dict[str, int]
    alive: bool = True
    labels: dict[str, str] = msgspec.field(default_factory=dict)  # labels.py's selectors read them


class Placement(msgspec.Struct, frozen=True):
    """Where a request goes: HERE, another node, or nowhere (with the reason)."""

    node: NodeView | None  # None: here (kind HERE) or nowhere (kind "fail" / "infeasible")
    kind: str  # HERE | "spill" | "infeasible" | "fail"
    reason: str = ""


def fits(shape: dict[str, int], resources: dict[str, int]) -> bool:
    return all(resources.get(k, 0) >= v for k, v in shape.items())


def place(
    shape: dict[str, int],
    strategy: str | NodeAffinity | None,
    local: NodeView,
    others: list[NodeView],
    spread_seq: int = 0,
) -> Placement:
    """Decide where a lease request should be served. `others` excludes the local node."""
    alive = [n for n in others if n.alive and n.node_id != local.node_id]
    if isinstance(strategy, NodeAffinity):
        return _affinity(shape, strategy, local, alive)
    if strategy == "SPREAD":
        # Round-robin over every node that has the resources, busy or not: a node's
        # momentary load (an owner's lingering idle lease) must not skew the spread.
        candidates = [
            n for n in sorted([local, *alive], key=lambda n: n.node_id) if fits(shape, n.total)
        ]
        if not candidates:
            return Placement(None, "infeasible")
        chosen = candidates[spread_seq % len(candidates)]
        if chosen.node_id == local.node_id:
            return Placement(None, HERE)
        return Placement(chosen, "spill")
    return _hybrid(shape, local, alive)


COMMON = ("CPU", "memory", "object_store_memory")


def special(node: NodeView, shape: dict[str, int]) -> bool:
    """The node has a resource (GPU, custom) this request does not use: keep it for those
    that do (Ray: scheduler_avoid_gpu_nodes, here for every such resource)."""
    return any(
        k not in shape and v > 0 and k not in COMMON and not k.startswith("node:")
        for k, v in node.total.items()
    )


def _hybrid(shape: dict[str, int], local: NodeView, alive: list[NodeView]) -> Placement:
    local_fits = fits(shape, local.available)
    if local_fits and not special(local, shape):
        return Placement(None, HERE)
    free = [n for n in alive if fits(shape, n.available)] + ([local] if local_fits else [])
    if free:
        # Plain nodes first, then the most CPU free (this node on a tie), so what the
        # special nodes hold stays usable by the requests that need it.
        best = max(
            free,
            key=lambda n: (
                not special(n, shape),
                n.available.get("CPU", 0),
                n.node_id == local.node_id,
                n.node_id,
            ),
        )
        return Placement(None, HERE) if best.node_id == local.node_id else Placement(best, "spill")
    if fits(shape, local.total):
        return Placement(None, HERE)
    able = [n for n in alive if fits(shape, n.total)]
    if able:
        best = max(able, key=lambda n: (n.available.get("CPU", 0), n.node_id))
        return Placement(best, "spill")
    return Placement(None, "infeasible")


def _affinity(
    shape: dict[str, int], strategy: NodeAffinity, local: NodeView, alive: list[NodeView]
) -> Placement:
    node_hex = strategy.node_id
    target = None
    if local.node_id.hex() == node_hex:
        target = local
    else:
        target = next((n for n in alive if n.node_id.hex() == node_hex), None)
    if target is not None and fits(shape, target.total):
        return Placement(None, HERE) if target is local else Placement(target, "spill")
    if strategy.soft:
        return _hybrid(shape, local, alive)
    why = "is not alive" if target is None else "does not have the resources"
    return Placement(
        None,
        "fail",
        f"The task or actor has hard node affinity to node {node_hex}, which {why} "
        f"(requested {shape}). Use soft=True to allow other nodes.",
    )
