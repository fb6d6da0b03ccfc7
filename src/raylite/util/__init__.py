"""Utilities on top of the core API (Ray's `ray.util`): ActorPool, Executor (raylite's
concurrent.futures executor), as_completed,
map_unordered, list_named_actors, get_node_ip_address, inspect_serializability, the
accelerator names, custom serializers, a progress bar; state listings in util.state,
metrics in util.metrics, and Pool in util.multiprocessing (imported on its own, as in Ray).

The names load on first use (PEP 562), as raylite's own do: the CLI and a node import
util.state or util.scheduling_strategies, which runs this file, and must not pull in
the driver's API with it.
"""

from typing import TYPE_CHECKING, Any

_WHERE = {
    "ActorPool": "actor_pool",
    "Executor": "executor",
    "as_completed": "helpers",
    "get_node_ip_address": "cluster_info",
    "inspect_serializability": "check_serialize",
    "list_named_actors": "cluster_info",
    "map_unordered": "helpers",
    "progress": "progress_bar",
    "register_serializer": "serialization",
    "deregister_serializer": "serialization",
}
_SUBMODULES = ("accelerators", "metrics", "multiprocessing", "state")

if TYPE_CHECKING:
    from . import accelerators as accelerators
    from . import metrics as metrics
    from . import multiprocessing as multiprocessing
    from . import state as state
    from .actor_pool import ActorPool
    from .check_serialize import inspect_serializability
    from .cluster_info import get_node_ip_address, list_named_actors
    from .executor import Executor
    from .helpers import as_completed, map_unordered
    from .progress_bar import progress
    from .serialization import deregister_serializer, register_serializer


# Eager, as Ray's: `raylite.util.placement_group` is the function, not its module (a
# lazy load would leave the submodule bound under that name). The module imports
# only light parts of raylite at the top.
from .placement_group import (  # noqa: E402
    PlacementGroup,
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)


def __getattr__(name: str) -> Any:
    import importlib

    if name in _SUBMODULES:
        value: Any = importlib.import_module(f".{name}", __name__)
    elif name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'raylite.util' has no attribute {name!r}")
    globals()[name] = value  # the next lookup is a plain one
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "ActorPool",
    "Executor",
    "PlacementGroup",
    "accelerators",
    "as_completed",
    "deregister_serializer",
    "get_current_placement_group",
    "get_node_ip_address",
    "get_placement_group",
    "inspect_serializability",
    "list_named_actors",
    "map_unordered",
    "metrics",
    "placement_group",
    "placement_group_table",
    "progress",
    "register_serializer",
    "remove_placement_group",
]
