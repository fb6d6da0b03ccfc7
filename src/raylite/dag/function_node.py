"""FunctionNode: a remote function bound to its arguments, `f.bind(...)`.

Owns the node's run: `.remote()` on the function (with the options it was bound
with) once the arguments' nodes have their values. Not the options' checks (done
by `f.options()` before binding) and not submission (remote_function).
"""

from __future__ import annotations

from typing import Any

from .dag_node import DAGNode


class FunctionNode(DAGNode):
    """A task in a DAG: runs `f.remote(*args, **kwargs)` on each execute()."""

    def __init__(
        self,
        func_body: Any,
        func_args: Any,
        func_kwargs: dict[str, Any],
        func_options: dict[str, Any],
        other_args_to_resolve: dict[str, Any] | None = None,
        *,
        _submitter: Any = None,
    ) -> None:
        # func_body: the plain function, as in Ray. _submitter: what .remote() is
        # called on, the RemoteFunction or its .options(...) (raylite binds these).
        if _submitter is None:
            raise NotImplementedError(
                "raylite builds a FunctionNode only from a remote function: use "
                "f.bind(...) or f.options(...).bind(...)."
            )
        self._body = func_body
        self._submitter = _submitter
        super().__init__(func_args, func_kwargs, func_options, other_args_to_resolve)

    def _execute_impl(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        other: dict[str, Any],
        dag_args: tuple[Any, ...],
        dag_kwargs: dict[str, Any],
    ) -> Any:
        return self._submitter.remote(*args, **kwargs)

    def _body_str(self) -> str:
        return str(self._body)


__all__ = ["FunctionNode"]
