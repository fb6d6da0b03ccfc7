"""list_named_actors and get_node_ip_address: what a process can ask about its cluster.

Owns these two questions (Ray's `ray.util.list_named_actors` and
`ray.util.get_node_ip_address`); the answers come from the head: its actor table, read
through the state listing (util/state.py), and its node table.

    list_named_actors() ──ListState("actors")──▶ node ──▶ head ──▶ live named actors
    get_node_ip_address() ──GetClusterInfo──▶ node ──▶ head ──▶ this node's address

As Ray's: `list_named_actors()` starts raylite if it is not running; it lists the names
of actors not dead (starting, alive or restarting; detached or not) in this job's
namespace, or with `all_namespaces=True` every one as `{"name": ..., "namespace": ...}`.
`get_node_ip_address()` is the IP of the node this process runs on (raylite's local
node: 127.0.0.1); before `init()` it starts nothing and answers the IP a local
`init()` would give.
"""

from __future__ import annotations

from typing import Any

from .. import api
from .. import protocol as P
from ..config import CONFIG
from ..core import context
from . import state

_ALL = 1 << 62  # every actor: the listing's limit is a count, not a page
_LOCAL_IP = "127.0.0.1"  # where init() on this machine starts its node


def list_named_actors(all_namespaces: bool = False) -> list[Any]:
    """Names of the live named actors in this namespace (or, with `all_namespaces`,
    `{"name", "namespace"}` of every one in the cluster)."""
    namespace = api.get_runtime_context().namespace  # starts raylite, as Ray's does
    rows = state.list_actors(filters=[("state", "!=", "DEAD")], limit=_ALL)
    named = [(r.ray_namespace or "", r.name) for r in rows if r.name]
    if all_namespaces:
        return [{"name": name, "namespace": ns} for ns, name in named]
    return [name for ns, name in named if ns == namespace]


def get_node_ip_address() -> str:
    """The IP address of the node this process runs on."""
    cw: Any = context.live_worker()
    if cw is None:
        return _LOCAL_IP
    node_id = api.get_runtime_context().get_node_id()
    info = cw.ask_node(P.GetClusterInfo(), CONFIG.request_timeout_s)
    for node in info.nodes:
        if node["NodeID"] == node_id:
            return str(node["NodeManagerAddress"])
    return _LOCAL_IP
