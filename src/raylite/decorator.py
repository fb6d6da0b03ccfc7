"""`@ray.remote`: a function becomes a RemoteFunction (a task), a class an ActorClass.

Loads only the caller's side of tasks (remote_function.py; actors.py at the first
class), not the driver's modules, nor inspect: most programs decorate before they call
init(), and driver_start.py starts the node only while api.py has not loaded yet, and
only once what loads before it has.
"""

from __future__ import annotations

from typing import Any

from .remote_function import RemoteFunction


def remote(*args: Any, **kwargs: Any) -> Any:
    """@remote on a function (a task) or a class (an actor), with or without options."""
    if len(args) == 1 and not kwargs and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("The @remote decorator takes a function or class, or only keyword options.")

    def decorate(target: Any) -> Any:
        return _make_remote(target, kwargs)

    return decorate


def _make_remote(target: Any, options: dict[str, Any]) -> Any:
    if isinstance(target, type):
        from .actors import ActorClass  # here: inspect's import, for classes only

        return ActorClass(target, options)
    if callable(target):
        return RemoteFunction(target, options)
    raise TypeError("@remote must decorate a function or a class.")
