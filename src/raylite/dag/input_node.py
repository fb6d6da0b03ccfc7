"""InputNode: where the values given to `dag.execute(...)` enter a DAG.

Owns the input's three shapes, as in Ray: one positional value is the input itself;
anything else (several values, keywords, none) is a DAGInputData. `inp[0]`,
`inp["key"]` and `inp.attr` are InputAttributeNodes that pick a part of it. Not the
walk (dag_node) and not what the nodes downstream do with the value.

    with InputNode() as inp:            dag.execute(5)          inp -> 5
        dag = f.bind(inp[0], inp.x)     dag.execute(1, x=2)     inp[0] -> 1, inp.x -> 2
                                        dag.execute({"x": 2})   inp["x"] -> 2
"""

from __future__ import annotations

from typing import Any

from .dag_node import DAGNode

IN_CONTEXT_MANAGER = "__in_context_manager__"
_KEY_ERROR = "Please only use int index or str as first-level key to access fields of dag input."


class InputNode(DAGNode):
    """The input of a DAG; build the DAG inside `with InputNode() as inp:`."""

    _is_dag_input = True

    def __init__(
        self,
        *args: Any,
        input_type: Any = None,
        _other_args_to_resolve: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if args or kwargs:
            raise ValueError("InputNode should not take any args or kwargs.")
        self.input_attribute_nodes: dict[Any, InputAttributeNode] = {}
        # Ray reads input_type only to pick Gradio widgets; kept for callers who read it.
        self.input_type = input_type
        super().__init__([], {}, {}, dict(_other_args_to_resolve or {}))

    def __enter__(self) -> InputNode:
        self._bound_other_args_to_resolve[IN_CONTEXT_MANAGER] = True
        return self

    def __exit__(self, *args: Any) -> None:
        pass

    def _check_in_context(self) -> None:
        if not self._bound_other_args_to_resolve.get(IN_CONTEXT_MANAGER):
            raise AssertionError(
                "InputNode is a singleton instance that should be only used in context "
                "manager for dag building and execution. See the docstring of class "
                "InputNode for examples."
            )

    def _execute_impl(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        other: dict[str, Any],
        dag_args: tuple[Any, ...],
        dag_kwargs: dict[str, Any],
    ) -> Any:
        if len(dag_args) == 1 and not dag_kwargs:
            return dag_args[0]
        return DAGInputData(*dag_args, **dag_kwargs)

    def _attribute(self, key: Any, accessor: str) -> InputAttributeNode:
        if key not in self.input_attribute_nodes:
            self.input_attribute_nodes[key] = InputAttributeNode(self, key, accessor)
        return self.input_attribute_nodes[key]

    def __getattr__(self, key: str) -> Any:
        # Python and pickle probe for dunders, and a half-built node has no table yet.
        if key.startswith("__") or "input_attribute_nodes" not in self.__dict__:
            raise AttributeError(key)
        return self._attribute(key, "__getattr__")

    def __getitem__(self, key: int | str) -> InputAttributeNode:
        assert isinstance(key, (str, int)), _KEY_ERROR
        return self._attribute(key, "__getitem__")

    def _body_str(self) -> str:
        return "__InputNode__"


class InputAttributeNode(DAGNode):
    """One part of the DAG's input: `inp[0]`, `inp["key"]` or `inp.attr`."""

    def __init__(self, dag_input_node: InputNode, key: int | str, accessor_method: str) -> None:
        self._dag_input_node = dag_input_node
        self._key = key
        self._accessor_method = accessor_method
        super().__init__(
            [],
            {},
            {},
            {"dag_input_node": dag_input_node, "key": key, "accessor_method": accessor_method},
        )

    @property
    def key(self) -> int | str:
        return self._key

    def _execute_impl(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        other: dict[str, Any],
        dag_args: tuple[Any, ...],
        dag_kwargs: dict[str, Any],
    ) -> Any:
        value = other["dag_input_node"]
        if isinstance(value, DAGInputData):
            return value[self._key]
        if isinstance(self._key, str) and self._accessor_method == "__getattr__":
            return getattr(value, self._key)
        return value[self._key]

    def _body_str(self) -> str:
        return f'["{self._key}"]'


class DAGInputData:
    """Several values given to `execute()`: positions by index, keywords by name."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = list(args)
        self._kwargs = kwargs

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, int):
            return self._args[key]
        if isinstance(key, str):
            return self._kwargs[key]
        raise ValueError(_KEY_ERROR)


__all__ = ["DAGInputData", "InputAttributeNode", "InputNode"]
