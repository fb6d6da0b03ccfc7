"""Ray's scheduling strategy classes (`ray.util.scheduling_strategies`).

A strategy travels to node managers in its wire form (`to_wire`, RequestLease.strategy):
None for the default hybrid policy, "SPREAD", or a NodeAffinity record; a placement
group's is None too, its bundle being in the task's resource shape (bundles.py). The
policy itself is in raylite.scheduling.
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
    """Run in a placement group: in bundle `placement_group_bundle_index` (-1: any of
    its bundles), on that bundle's resources only; `placement_group_capture_child_tasks`:
    the tasks and actors it starts run in the group too (remote_function.placement_of)."""

    def __init__(
        self,
        placement_group: Any,
        placement_group_bundle_index: int = -1,
        placement_group_capture_child_tasks: bool | None = None,
    ) -> None:
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks

    def __repr__(self) -> str:
        return (
            f"PlacementGroupSchedulingStrategy({self.placement_group!r}, "
            f"{self.placement_group_bundle_index}, {self.placement_group_capture_child_tasks})"
        )


def to_wire(strategy: Any) -> str | NodeAffinity | None:
    """The strategy as node managers read it; TypeError for what is not a strategy."""
    if strategy in (None, "DEFAULT"):
        return None
    if strategy == "SPREAD":
        return "SPREAD"
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        return NodeAffinity(strategy.node_id, strategy.soft)
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        return None  # its task's shape names the bundle's resources (bundles.py)
    raise TypeError(
        f"scheduling_strategy={strategy!r}: use 'DEFAULT', 'SPREAD' or "
        "NodeAffinitySchedulingStrategy(node_id, soft)."
    )


__all__ = ["NodeAffinitySchedulingStrategy", "PlacementGroupSchedulingStrategy", "to_wire"]
