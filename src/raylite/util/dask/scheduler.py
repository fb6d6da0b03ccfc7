"""The Dask scheduler on raylite: each node of a Dask graph a task, its inputs the
refs of the nodes it depends on (resolved to values in the worker, zero-copy for
arrays), so intermediate results stay in the object store and never pass through
the driver.

Owns the walk of the graph: the nodes the asked keys need, in dependency order; data
nodes put once, aliases as the ref of their target, tasks submitted as `_run`. Not
Dask's graph optimisation (dask.compute does it before calling us), not the tasks.

    dask.compute ─▶ raylite_dask_get(dsk, keys) ─▶ convert_legacy_graph
        ─▶ for each needed node, deps first: Task ─▶ _run.remote(node, deps, *dep refs)
                                             DataNode ─▶ put;  Alias ─▶ its target's ref
        ─▶ get(all asked refs at once) ─▶ results in the shape of `keys`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dask._task_spec import Alias, DataNode, GraphNode, convert_legacy_graph

from ... import api


def _run(node: GraphNode, dep_keys: list[Any], *dep_values: Any) -> Any:
    """In a worker: the node's value from its dependencies' values."""
    return node(dict(zip(dep_keys, dep_values, strict=True)))


def raylite_dask_get(
    dsk: Any,
    keys: Any,
    *,
    ray_remote_args: dict[str, Any] | None = None,
    ray_persist: bool = False,
    **kwargs: Any,
) -> Any:
    """Run `dsk` for `keys` (a key, or nested lists of keys): their values, in the same
    shape; with `ray_persist`, their ObjectRefs instead. `ray_remote_args` go to every
    task (`num_cpus=`, `resources=`, ...)."""
    if kwargs:
        raise TypeError(
            f"raylite_dask_get() got unexpected keyword argument(s) {sorted(kwargs)}: it "
            "takes ray_remote_args and ray_persist."
        )
    if not api.is_initialized():
        api.init()
    run = api.remote(_run)
    if ray_remote_args:
        run = run.options(**ray_remote_args)
    if not isinstance(dsk, Mapping):  # an expression (dask >= 2025): its graph
        dsk = dsk.__dask_graph__()
    graph = convert_legacy_graph(dsk)
    refs: dict[Any, Any] = {}
    for key in _needed_in_order(graph, _flatten(keys)):
        node = graph[key]
        if isinstance(node, Alias):
            refs[key] = refs[node.target]
        elif isinstance(node, DataNode):
            refs[key] = api.put(node({}))
        else:
            deps = list(node.dependencies)
            refs[key] = run.remote(node, deps, *[refs[d] for d in deps])
    wanted = _flatten(keys)
    if ray_persist:
        return _shaped(keys, dict(zip(wanted, (refs[k] for k in wanted), strict=True)))
    values = api.get([refs[k] for k in wanted])
    return _shaped(keys, dict(zip(wanted, values, strict=True)))


def _needed_in_order(graph: dict[Any, GraphNode], wanted: list[Any]) -> list[Any]:
    """The keys `wanted` needs, each after its dependencies (iterative: graphs are deep)."""
    order: list[Any] = []
    state: dict[Any, int] = {}  # 1: being visited, 2: done
    for root in wanted:
        if state.get(root) == 2:
            continue
        stack: list[tuple[Any, bool]] = [(root, False)]
        while stack:
            key, deps_done = stack.pop()
            if deps_done:
                if state.get(key) != 2:
                    state[key] = 2
                    order.append(key)
                continue
            if state.get(key) is not None:
                if state[key] == 1:
                    raise ValueError(f"The Dask graph has a cycle through {key!r}")
                continue
            if key not in graph:
                raise KeyError(f"The Dask graph has no key {key!r}")
            state[key] = 1
            stack.append((key, True))
            node = graph[key]
            deps = [node.target] if isinstance(node, Alias) else list(node.dependencies)
            stack.extend((dep, False) for dep in deps if state.get(dep) != 2)
    return order


def _flatten(keys: Any) -> list[Any]:
    if isinstance(keys, list):
        out: list[Any] = []
        for k in keys:
            out.extend(_flatten(k))
        return out
    return [keys]


def _shaped(keys: Any, values: dict[Any, Any]) -> Any:
    if isinstance(keys, list):
        return [_shaped(k, values) for k in keys]
    return values[keys]
