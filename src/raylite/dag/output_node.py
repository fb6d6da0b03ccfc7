"""MultiOutputNode: several nodes as one DAG output; execute() returns their list.

Owns only the output's shape (a list, in the order given). Not the walk (dag_node).
"""

from __future__ import annotations

from typing import Any

from .dag_node import DAGNode


class MultiOutputNode(DAGNode):
    """The end of a DAG with several outputs: `MultiOutputNode([a, b])`."""

    def __init__(self, args: Any, other_args_to_resolve: dict[str, Any] | None = None) -> None:
        if isinstance(args, tuple):
            args = list(args)
        if not isinstance(args, list):
            raise ValueError(f"Invalid input type for `args`, {type(args)}.")
        super().__init__(args, {}, {}, other_args_to_resolve or {})

    def _execute_impl(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        other: dict[str, Any],
        dag_args: tuple[Any, ...],
        dag_kwargs: dict[str, Any],
    ) -> Any:
        return list(args)

    def _body_str(self) -> str:
        return "__MultiOutputNode__"


__all__ = ["MultiOutputNode"]
