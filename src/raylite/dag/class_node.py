"""ClassNode and ClassMethodNode: actors and their method calls in a DAG.

Owns two things Ray's DAGs promise about actors. A ClassNode makes a new actor on
each execute() (one per run, however many method nodes use it). Method calls bound
on one ClassNode run in the order they were bound, even those the output does not
use: each ClassMethodNode depends on the call bound before it on the same actor.

    a = Actor.bind(10)           ClassNode            -> Actor.remote(10)
    a.inc.bind(2)                ClassMethodNode #1   -> handle.inc.remote(2)
    dag = a.get.bind()           ClassMethodNode #2   -> handle.get.remote(), after #1

Method nodes bound on a live handle (`handle.m.bind(x)`) call that actor and keep
no order between themselves beyond the actor's own. Not actor creation or method
submission themselves (actors.py).
"""

from __future__ import annotations

from typing import Any

from .dag_node import (
    IS_CLASS_METHOD_OUTPUT_KEY,
    PARENT_CLASS_NODE_KEY,
    PREV_CLASS_METHOD_CALL_KEY,
    DAGNode,
)
from .input_node import InputNode


class ClassNode(DAGNode):
    """An actor in a DAG: `Actor.bind(...)`; its execute() returns an ActorHandle."""

    def __init__(
        self,
        cls: Any,
        cls_args: Any,
        cls_kwargs: dict[str, Any],
        cls_options: dict[str, Any],
        other_args_to_resolve: dict[str, Any] | None = None,
        *,
        _submitter: Any = None,
    ) -> None:
        # cls: the user's class, as in Ray (its methods are checked by name).
        # _submitter: the ActorClass or its .options(...), whose .remote() makes one.
        if _submitter is None:
            raise NotImplementedError(
                "raylite builds a ClassNode only from an actor class: use "
                "Actor.bind(...) or Actor.options(...).bind(...)."
            )
        self._body = cls
        self._submitter = _submitter
        self._last_call: ClassMethodNode | None = None
        super().__init__(cls_args, cls_kwargs, cls_options, other_args_to_resolve)
        if any(isinstance(child, InputNode) for child in self._upstream_nodes):
            raise ValueError(
                "InputNode handles user dynamic input the DAG, and cannot be used as "
                "args, kwargs, or other_args_to_resolve in ClassNode constructor because "
                "it is not available at class construction or binding time."
            )

    def _execute_impl(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        other: dict[str, Any],
        dag_args: tuple[Any, ...],
        dag_kwargs: dict[str, Any],
    ) -> Any:
        return self._submitter.remote(*args, **kwargs)

    def __getattr__(self, method_name: str) -> Any:
        if method_name.startswith("__") or "_body" not in self.__dict__:
            raise AttributeError(method_name)
        if method_name == "bind" and not hasattr(self._body, "bind"):
            raise AttributeError(f".bind() cannot be used again on {type(self)} ")
        getattr(self._body, method_name)  # AttributeError for a method it lacks
        return _UnboundClassMethodNode(self, method_name, {})

    def _body_str(self) -> str:
        return str(self._body)


class _UnboundClassMethodNode:
    """`actor_node.method`: waits for `.bind(...)` (or `.options(...)` first)."""

    def __init__(self, actor: ClassNode, method_name: str, options: dict[str, Any]) -> None:
        self._actor = actor
        self._method_name = method_name
        self._options = options

    def bind(self, *args: Any, **kwargs: Any) -> ClassMethodNode:
        node = ClassMethodNode(
            self._method_name,
            args,
            kwargs,
            self._options,
            other_args_to_resolve={
                PARENT_CLASS_NODE_KEY: self._actor,
                PREV_CLASS_METHOD_CALL_KEY: self._actor._last_call,
            },
        )
        self._actor._last_call = node
        return node

    def options(self, **options: Any) -> _UnboundClassMethodNode:
        self._options = options
        return self

    def __getattr__(self, attr: str) -> Any:
        if attr == "remote":
            raise AttributeError(
                ".remote() cannot be used on ClassMethodNodes. Use .bind() instead "
                "to express an symbolic actor call."
            )
        raise AttributeError(attr)


class ClassMethodNode(DAGNode):
    """An actor method call in a DAG; its execute() returns the call's ObjectRef.

    A method with num_returns=N > 1 bound on a live handle gives N output nodes
    instead, one per return, as in Ray.
    """

    def __init__(
        self,
        method_name: str,
        method_args: Any,
        method_kwargs: dict[str, Any],
        method_options: dict[str, Any],
        other_args_to_resolve: dict[str, Any],
    ) -> None:
        self._method_name = method_name
        self._parent_class_node = other_args_to_resolve.get(PARENT_CLASS_NODE_KEY)
        self._prev_class_method_call = other_args_to_resolve.get(PREV_CLASS_METHOD_CALL_KEY)
        self._is_class_method_output = bool(other_args_to_resolve.get(IS_CLASS_METHOD_OUTPUT_KEY))
        super().__init__(method_args, method_kwargs, method_options, other_args_to_resolve)

    def _execute_impl(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        other: dict[str, Any],
        dag_args: tuple[Any, ...],
        dag_kwargs: dict[str, Any],
    ) -> Any:
        if self._is_class_method_output:
            return args[0][args[1]]  # (the call's refs, this output's index)
        method = getattr(other[PARENT_CLASS_NODE_KEY], self._method_name)
        # Ray's options of a bound call list unset ones too (None, ""): pass the set ones.
        options = {k: v for k, v in self._bound_options.items() if v is not None and v != ""}
        if options:
            method = method.options(**options)
        return method.remote(*args, **kwargs)

    def get_method_name(self) -> str:
        return self._method_name

    @property
    def is_class_method_call(self) -> bool:
        return not self._is_class_method_output

    @property
    def is_class_method_output(self) -> bool:
        return self._is_class_method_output

    @property
    def class_method_call(self) -> ClassMethodNode | None:
        return self._bound_args[0] if self._is_class_method_output else None

    @property
    def output_idx(self) -> int | None:
        return self._bound_args[1] if self._is_class_method_output else None

    def _body_str(self) -> str:
        return f"{self._method_name}()"


def bind_actor_method(
    handle: Any,
    method_name: str,
    num_returns: int,
    args: Any,
    kwargs: dict[str, Any],
    options: dict[str, Any],
) -> ClassMethodNode | tuple[ClassMethodNode, ...]:
    """`handle.method.bind(...)`: one node, or one per return when num_returns > 1 (a
    generator method's stream counts as one). `options`: the call's, in Ray's shape for
    a call bound on a handle, unset ones included (actors.ActorMethod.bind)."""
    node = ClassMethodNode(
        method_name,
        args,
        kwargs,
        options,
        other_args_to_resolve={PARENT_CLASS_NODE_KEY: handle, PREV_CLASS_METHOD_CALL_KEY: None},
    )
    if num_returns <= 1:
        return node
    return tuple(
        ClassMethodNode(
            f"return_idx_{i}",
            (node, i),
            {},
            {},
            {IS_CLASS_METHOD_OUTPUT_KEY: True, PARENT_CLASS_NODE_KEY: handle},
        )
        for i in range(num_returns)
    )


__all__ = ["ClassMethodNode", "ClassNode", "bind_actor_method"]
