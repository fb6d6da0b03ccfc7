"""DAGNode: a bound call that runs later, and the one walk that runs a DAG.

Owns what every node shares: its bound args, kwargs and options, the nodes it
depends on (found once, at bind time) and `execute()`, which submits every node of
the DAG once, children first, and returns what the root node made. Not how one
kind of node runs (function_node, class_node, input_node, output_node) and not
submission itself: a node calls `.remote()` on the remote function, actor class or
actor method it was bound from, as a user would.

    f.bind(x, g.bind(y))           builds   FunctionNode(f) <- FunctionNode(g)
    dag.execute(1)                 walks    g.remote(y) -> ref; f.remote(x, ref)

As in Ray, a node found inside a container argument (a list, a dict, any object that
pickles) is replaced by its value there too; a ref in a container is passed on as a
ref, not resolved (DESIGN.md).
"""

from __future__ import annotations

import io
import pickle
import uuid
from collections.abc import Callable
from typing import Any

import cloudpickle

# Keys of a ClassMethodNode's other_args_to_resolve, as Ray names them.
PARENT_CLASS_NODE_KEY = "parent_class_node"
PREV_CLASS_METHOD_CALL_KEY = "prev_class_method_call"
BIND_INDEX_KEY = "bind_index"
IS_CLASS_METHOD_OUTPUT_KEY = "is_class_method_output"

# Values that never hold a node: nothing to look inside.
_ATOMS = (int, float, complex, str, bytes, bool, type(None), bytearray, range)
_CONTAINERS = (list, tuple, set, frozenset)


class _Scanner(cloudpickle.CloudPickler):
    """Pickles a value to find the DAG nodes inside it, wherever they are.

    raylite's own objects (refs, handles, remote functions) are kept as they are:
    they hold no node, and pickling a ref would count it as borrowed.
    """

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=5)
        self.nodes: list[DAGNode] = []
        self.kept: list[Any] = []

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, DAGNode):
            self.nodes.append(obj)
            return ("node", len(self.nodes) - 1)
        if type(obj).__module__.startswith("raylite."):
            self.kept.append(obj)
            return ("kept", len(self.kept) - 1)
        return None


class _Rebuilder(pickle.Unpickler):
    def __init__(self, data: bytes, nodes: list[Any], kept: list[Any]) -> None:
        super().__init__(io.BytesIO(data))
        self._nodes = nodes
        self._kept = kept

    def persistent_load(self, pid: Any) -> Any:
        kind, index = pid
        return self._nodes[index] if kind == "node" else self._kept[index]


def _find(value: Any, found: list[DAGNode]) -> None:
    """Append the nodes inside `value` (not `value` itself) to `found`."""
    kind = type(value)
    if kind in _ATOMS:
        return
    if isinstance(value, DAGNode):
        found.append(value)
    elif kind in _CONTAINERS:
        for item in value:
            _find(item, found)
    elif kind is dict:
        for key, item in value.items():
            _find(key, found)
            _find(item, found)
    elif getattr(getattr(value, "dtype", None), "hasobject", True) is False:
        return  # an array of numbers (numpy): nothing inside, and not worth pickling
    elif not kind.__module__.startswith("raylite."):
        scanner = _Scanner(io.BytesIO())
        try:
            scanner.dump(value)
        except Exception:  # unpicklable: no node to find here, and .remote() says why
            return
        found.extend(scanner.nodes)


def _replace(value: Any, values: dict[int, Any]) -> Any:
    """`value` with every node inside it replaced by what it made in this run."""
    kind = type(value)
    if isinstance(value, DAGNode):
        return values[id(value)]
    if kind in _CONTAINERS:
        return kind(_replace(item, values) for item in value)
    if kind is dict:
        return {_replace(k, values): _replace(v, values) for k, v in value.items()}
    if kind in _ATOMS or kind.__module__.startswith("raylite."):
        return value
    buffer = io.BytesIO()
    scanner = _Scanner(buffer)
    scanner.dump(value)
    if not scanner.nodes:
        return value
    made = [values[id(node)] for node in scanner.nodes]
    return _Rebuilder(buffer.getvalue(), made, scanner.kept).load()


def _value(bound: Any, nested: bool, values: dict[int, Any]) -> Any:
    """What a bound value is in this run: a node's result, rebuilt, or itself."""
    if isinstance(bound, DAGNode):
        return values[id(bound)]
    return _replace(bound, values) if nested else bound


def _scan(value: Any, upstream: list[DAGNode]) -> bool:
    """Add the nodes `value` is or holds to `upstream`; True if it holds some inside."""
    if isinstance(value, DAGNode):
        upstream.append(value)
        return False
    before = len(upstream)
    _find(value, upstream)
    return len(upstream) > before


class DAGNode:
    """A node of a Ray DAG: a bound call, run by `execute()`.

    Nodes are immutable once bound, so what each depends on is worked out here,
    once; `execute()` then only walks and submits.
    """

    _is_dag_input = False  # InputNode: at most one per DAG, built in a `with` block

    def _check_in_context(self) -> None:
        pass

    def __init__(
        self,
        args: Any,
        kwargs: dict[str, Any] | None,
        options: dict[str, Any] | None,
        other_args_to_resolve: dict[str, Any] | None,
    ) -> None:
        self._bound_args: Any = args or []
        self._bound_kwargs: dict[str, Any] = kwargs or {}
        self._bound_options: dict[str, Any] = options or {}
        self._bound_other_args_to_resolve: dict[str, Any] = other_args_to_resolve or {}
        self._stable_uuid = uuid.uuid4().hex
        self.cache_from_last_execute: dict[str, Any] = {}
        # The nodes this one uses, and which bound values hold nodes inside them:
        # only those values are rebuilt on each execute().
        upstream: list[DAGNode] = []
        self._nested_args = tuple(_scan(a, upstream) for a in self._bound_args)
        self._nested_keys = {
            (where, key)
            for where, table in (("kw", self._bound_kwargs), ("other", self._bound_other_args_to_resolve))
            for key, v in table.items()
            if _scan(v, upstream)
        }  # fmt: skip
        self._upstream_nodes: list[DAGNode] = list({id(n): n for n in upstream}.values())

    # -- what Ray's DAGNode offers for inspection ------------------------------------

    def get_args(self) -> Any:
        """The bound positional arguments."""
        return self._bound_args

    def get_kwargs(self) -> dict[str, Any]:
        """The bound keyword arguments (a copy)."""
        return self._bound_kwargs.copy()

    def get_options(self) -> dict[str, Any]:
        """The options the node runs with (a copy)."""
        return self._bound_options.copy()

    def get_other_args_to_resolve(self) -> dict[str, Any]:
        """Node-kind specific bound values, resolved like arguments (a copy)."""
        return self._bound_other_args_to_resolve.copy()

    def get_stable_uuid(self) -> str:
        return self._stable_uuid

    def clear_cache(self) -> None:
        self.cache_from_last_execute = {}

    async def get_object_refs_from_last_execute(self) -> dict[str, Any]:
        """What each node made in the last `execute(_ray_cache_refs=True)`, by uuid."""
        return dict(self.cache_from_last_execute)

    def _get_toplevel_child_nodes(self) -> list[DAGNode]:
        children: list[DAGNode] = []
        for value in (
            *self._bound_args,
            *self._bound_kwargs.values(),
            *self._bound_other_args_to_resolve.values(),
        ):
            if isinstance(value, DAGNode) and value not in children:
                children.append(value)
        return children

    def _get_all_child_nodes(self) -> list[DAGNode]:
        return list(self._upstream_nodes)

    # -- running --------------------------------------------------------------------

    def execute(self, *args: Any, _ray_cache_refs: bool = False, **kwargs: Any) -> Any:
        """Run the DAG that ends at this node; `args`, `kwargs` feed its InputNode.

        Each node runs once per call, however many nodes use it. Returns what this
        node made: an ObjectRef for a task or method, an ActorHandle for a class, a
        list for a MultiOutputNode.
        """
        order = self._walk_order()
        values: dict[int, Any] = {}
        for node in order:
            values[id(node)] = node._execute_impl(
                tuple(
                    _value(a, nested, values)
                    for a, nested in zip(node._bound_args, node._nested_args, strict=True)
                ),
                node._resolved("kw", node._bound_kwargs, values),
                node._resolved("other", node._bound_other_args_to_resolve, values),
                args,
                kwargs,
            )
        if _ray_cache_refs:
            self.cache_from_last_execute = {n._stable_uuid: values[id(n)] for n in order}
        return values[id(self)]

    def _resolved(
        self, where: str, table: dict[str, Any], values: dict[int, Any]
    ) -> dict[str, Any]:
        if not table:
            return table
        nested = self._nested_keys
        return {key: _value(v, (where, key) in nested, values) for key, v in table.items()}

    def _walk_order(self) -> list[DAGNode]:
        """Every node of the DAG, each after the nodes it uses (in argument order).

        The whole DAG is checked before anything is submitted: a bad InputNode
        fails the call with no task started.
        """
        order: list[DAGNode] = []
        done: set[int] = set()
        stack: list[tuple[DAGNode, bool]] = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if id(node) in done:
                continue
            if expanded:
                done.add(id(node))
                order.append(node)
                continue
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(node._upstream_nodes))
        inputs = [node for node in order if node._is_dag_input]
        if len(inputs) > 1:
            raise AssertionError("Each DAG should only have one unique InputNode.")
        for node in inputs:
            node._check_in_context()
        return order

    def _execute_impl(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        other: dict[str, Any],
        dag_args: tuple[Any, ...],
        dag_kwargs: dict[str, Any],
    ) -> Any:
        """Run this node with its nodes replaced by their values; the kinds say how."""
        raise NotImplementedError

    # -- what raylite does not offer ------------------------------------------------

    def experimental_compile(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "Ray Compiled Graphs (experimental_compile) are not supported by raylite; "
            "run the DAG with .execute() instead."
        )

    def with_tensor_transport(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "Tensor transports belong to Ray Compiled Graphs, which raylite does not support."
        )

    def apply_recursive(self, fn: Callable[[DAGNode], Any]) -> Any:
        raise NotImplementedError(
            "DAGNode.apply_recursive (DAG rewriting for libraries) is not supported by raylite."
        )

    def __getattr__(self, attr: str) -> Any:
        if attr == "bind":
            raise AttributeError(f".bind() cannot be used again on {type(self)} ")
        if attr == "remote":
            raise AttributeError(
                f".remote() cannot be used on {type(self)}. To execute the task "
                "graph for this node, use .execute()."
            )
        return self.__getattribute__(attr)

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _body_str(self) -> str:
        return ""

    def __str__(self) -> str:
        return (
            f"({type(self).__name__}, {self._stable_uuid})(body={self._body_str()}, "
            f"args={list(self._bound_args)}, kwargs={self._bound_kwargs}, "
            f"options={self._bound_options})"
        )

    def __repr__(self) -> str:
        return self.__str__()


__all__ = [
    "BIND_INDEX_KEY",
    "IS_CLASS_METHOD_OUTPUT_KEY",
    "PARENT_CLASS_NODE_KEY",
    "PREV_CLASS_METHOD_CALL_KEY",
    "DAGNode",
]
