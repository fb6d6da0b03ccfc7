"""`raylite.init` as a program calls it: a new local session's node manager starts
before the driver's own modules load, and boots while they do.

A driver's modules (api.py, the core worker, the wire protocol: ~35 ms) and its node
manager's start (~100 ms: an interpreter, its modules, the fork server) used to run
one after the other. When `init()` is the program's first use of the API and starts a
local session with plain arguments (resources, logging, namespace), this starts the
node manager first (node_start.StartingNode), then loads api.py, whose init() adopts
that node if it was started for the same arguments (node_start.LocalNodeArgs) and
otherwise starts its own; a node not adopted, whatever happened, is stopped here.
Any other call, or one after the API is loaded (a `ray.get` or `ray.put` before
`init()`, or a session before: nothing is left to overlap), goes to api.init as it
is. `@ray.remote` does not load it (decorator.py), so the usual program, with its
remote functions and actors declared before `init()`, takes this path.

    init() ──▶ StartingNode (Popen, token) ──▶ import api ──▶ api.init(_early_node=...)
                       └── the node boots ──────────────────────▶ READY ──▶ adopted
"""

from __future__ import annotations

import os
import sys
from typing import Any

# init()'s arguments that a node started early can be started for; any other goes the
# usual way (its options: dashboard, labels, _system_config, _temp_dir ...).
_PLAIN = frozenset(
    {
        "num_cpus",
        "num_gpus",
        "resources",
        "object_store_memory",
        "ignore_reinit_error",
        "logging_level",
        "log_to_driver",
        "namespace",
    }
)


def init(address: str | None = None, **kwargs: Any) -> Any:
    """Start raylite on this machine, or connect to a cluster (api.init: its arguments)."""
    node = _node_first(address, kwargs)
    if node is None:
        from . import api

        return api.init(address, **kwargs)
    try:
        from . import api

        return api.init(address, _early_node=node, **kwargs)
    finally:
        node.abandon()  # unless init() adopted it: stopped, its directories gone


def _node_first(address: str | None, kwargs: dict[str, Any]) -> Any:
    """The node manager of the local session this call starts, started now; None when
    there is nothing to gain or the call is not a plain local start."""
    if "raylite.api" in sys.modules:
        return None  # loaded already (by a get or put, or a session before): no overlap
    given = address if address is not None else os.environ.get("RAYLITE_ADDRESS") or None
    if given not in (None, "local") or not set(kwargs) <= _PLAIN:
        return None
    from .node_start import LocalNodeArgs, StartingNode

    return StartingNode(
        LocalNodeArgs(
            num_cpus=kwargs.get("num_cpus"),
            num_gpus=kwargs.get("num_gpus"),
            resources=kwargs.get("resources"),
            object_store_memory=kwargs.get("object_store_memory"),
        )
    )
