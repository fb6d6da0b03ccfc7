"""Ray's scheduling strategy classes (`ray.util.scheduling_strategies`).

A strategy travels to node managers in its wire form (`to_wire`, RequestLease.strategy):
None for the default hybrid policy, "SPREAD", or a NodeAffinity record. The policy
itself is in raylite.scheduling.
"""

from __future__ import annotations

from typing import Any

from ..protocol import NodeAffinity


class NodeAffinitySchedulingStrategy:
    """Run on the node `node_id` (hex, as `get_runtime_context().get_node_id()` gives).

    soft=False: fail with TaskUnschedulableError if that node is dead or lacks the
    resources; soft=True: run elsewhere then.
    """

    def __init__(
        self,
        node_id: str,
        soft: bool,
        _spill_on_unavailable: bool = False,
        _fail_on_unavailable: bool = False,
    ) -> None:
        if not isinstance(node_id, str):
            node_id = getattr(node_id, "hex", lambda: str(node_id))()
        self.node_id = node_id
        self.soft = bool(soft)

    def __repr__(self) -> str:
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id!r}, soft={self.soft})"


class PlacementGroupSchedulingStrategy:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("Placement groups are not supported by raylite yet.")


def to_wire(strategy: Any) -> str | NodeAffinity | None:
    """The strategy as node managers read it; TypeError for what is not a strategy."""
    if strategy in (None, "DEFAULT"):
        return None
    if strategy == "SPREAD":
        return "SPREAD"
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        return NodeAffinity(strategy.node_id, strategy.soft)
    raise TypeError(
        f"scheduling_strategy={strategy!r}: use 'DEFAULT', 'SPREAD' or "
        "NodeAffinitySchedulingStrategy(node_id, soft)."
    )


__all__ = ["NodeAffinitySchedulingStrategy", "PlacementGroupSchedulingStrategy", "to_wire"]
