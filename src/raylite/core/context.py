"""The process's execution context: its live core worker and the task being run.

Owns `_global` (the live core worker, set by api.init and cleared by shutdown),
`_auto_init` (how to start one on first use, as Ray's implicit init does) and
CURRENT_TASK. Not the worker itself (core_worker). Imports nothing of raylite, so
object_ref and every layer above can reach the core worker without importing it."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, Protocol

# The task this thread or asyncio task runs (a context variable: threaded and async
# actors run several calls at once).
CURRENT_TASK: contextvars.ContextVar[bytes | None] = contextvars.ContextVar(
    "raylite_current_task", default=None
)


class Worker(Protocol):
    """What this module needs of the core worker (core_worker.Worker): naming the
    class here would make object_ref, which imports this module, import the core."""

    closed: bool

    def when_ready_future(self, ref: Any) -> Any: ...


# The process's live core worker, and how to start one on first use (set by api).
_global: Worker | None = None
_auto_init: Callable[[], Worker] | None = None


def live_worker() -> Worker | None:
    """The live core worker, or None: never starts raylite (for tools that only look)."""
    cw = _global
    return cw if cw is not None and not cw.closed else None


def global_worker() -> Worker:
    """The live core worker, starting raylite (init()) on first use, as Ray does."""
    cw = _global
    if cw is None or cw.closed:
        if _auto_init is None:
            raise RuntimeError("raylite is not initialised; call raylite.init()")
        cw = _auto_init()
    return cw
