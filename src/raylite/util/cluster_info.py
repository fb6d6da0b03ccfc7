"""list_named_actors and get_node_ip_address: what a process can ask about its cluster.

Owns these two questions (Ray's `ray.util.list_named_actors` and
`ray.util.get_node_ip_address`); the answers come from the head's actor table, read
through the state listing (util/state.py), and from what the node told this process
when it registered.

    list_named_actors() ──ListState("actors")──▶ node ──▶ head ──▶ live named actors
    get_node_ip_address() ── this process's node (registration info) ── no request

As Ray's: `list_named_actors()` starts raylite if it is not running; it lists the names
of actors not dead (starting, alive or restarting; detached or not) in this job's
namespace, or with `all_namespaces=True` every one as `{"name": ..., "namespace": ...}`.
`get_node_ip_address()` is the IP of the node this process runs on (raylite's local
node: 127.0.0.1); before `init()` it starts nothing and answers the IP a local
`init()` would give.
"""

from __future__ import annotations

from typing import Any

from .. import api  # noqa: F401  (sets context's auto-init: list_named_actors may start raylite)
from ..core import context
from . import state

_ALL = 1 << 62  # every actor: the listing's limit is a count, not a page


def list_named_actors(all_namespaces: bool = False) -> list[Any]:
    """Names of the live named actors in this namespace (or, with `all_namespaces`,
    `{"name", "namespace"}` of every one in the cluster)."""
    cw: Any = context.global_worker()  # starts raylite, as any API call would
    rows = state.list_actors(filters=[("state", "!=", "DEAD")], limit=_ALL)
    named = [(r.ray_namespace or "", r.name) for r in rows if r.name]
    if all_namespaces:
        return [{"name": name, "namespace": ns} for ns, name in named]
    namespace = cw.default_namespace()
    return [name for ns, name in named if ns == namespace]


def get_node_ip_address() -> str:
    """The IP address of the node this process runs on."""
    cw: Any = context.live_worker()
    if cw is None:
        return "127.0.0.1"  # what init() here would start: a node on loopback
    return str(cw.node_info.get("ip") or "127.0.0.1")
