"""raylite: Ray's programming model and public API on a small, fast engine.

import raylite as ray
"""

from typing import TYPE_CHECKING, Any

# The public names, loaded on first use (PEP 562): a process that only runs a node
# (`python -m raylite.node`) imports the package without the driver's API, which
# halves its start-up. `import raylite as ray; ray.get` loads it then.
_WHERE = {
    "ActorClass": "actors",
    "ActorHandle": "actors",
    "DynamicObjectRefGenerator": "object_ref_generator",
    "LoggingConfig": "logging_config",
    "install_as_ray": "ray_alias",  # raylite's own: `import ray` gives raylite from then on
    "init": "driver_start",  # starts a local session's node before api.py loads
    "method": "actors",
    "ObjectID": "object_ref",
    "ObjectRef": "object_ref",
    "ObjectRefGenerator": "object_ref_generator",
    "RemoteFunction": "remote_function",
    "remote": "decorator",  # without the driver's modules: driver_start.py
    **{
        name: "api"
        for name in (
            "available_resources", "cancel", "cluster_resources", "get", "get_actor",
            "get_gpu_ids", "get_runtime_context", "is_initialized", "kill", "nodes",
            "put", "shutdown", "timeline", "wait",
        )
    },
}  # fmt: skip
# `ray.util.as_completed` and `ray.dag` work after `import ray`: loaded on first use too.
_SUBMODULES = ("_raylet", "actor", "dag", "exceptions", "job_config", "util")

if TYPE_CHECKING:
    from . import actor, exceptions, job_config
    from . import dag as dag  # `raylite.dag`, as `import ray.dag` (not in __all__: nor in Ray's)
    from .actors import ActorClass, ActorHandle, method
    from .api import (
        available_resources,
        cancel,
        cluster_resources,
        get,
        get_actor,
        get_gpu_ids,
        get_runtime_context,
        init,
        is_initialized,
        kill,
        nodes,
        put,
        shutdown,
        timeline,
        wait,
    )
    from .decorator import remote
    from .logging_config import LoggingConfig
    from .object_ref import ObjectID, ObjectRef
    from .object_ref_generator import DynamicObjectRefGenerator, ObjectRefGenerator
    from .ray_alias import install_as_ray as install_as_ray  # raylite's own: not in __all__
    from .remote_function import RemoteFunction


def __getattr__(name: str) -> Any:
    import importlib

    if name in _SUBMODULES:
        value: Any = importlib.import_module(f".{name}", __name__)
    elif name == "cloudpickle":  # Ray re-exports the cloudpickle it uses
        value = importlib.import_module("cloudpickle")
    elif name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'raylite' has no attribute {name!r}")
    globals()[name] = value  # the next lookup is a plain one
    return value


def load_all() -> None:
    """Load every public name now (a worker's fork server: each fork has them)."""
    for name in __all__:
        if name not in globals():
            __getattr__(name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"

__all__ = [
    "ActorClass",
    "ActorHandle",
    "DynamicObjectRefGenerator",
    "LoggingConfig",
    "ObjectID",
    "ObjectRef",
    "ObjectRefGenerator",
    "RemoteFunction",
    "__version__",
    "actor",
    "available_resources",
    "cancel",
    "cloudpickle",
    "cluster_resources",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "job_config",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "timeline",
    "wait",
]
