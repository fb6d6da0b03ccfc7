"""The process's execution context: its live core worker and the task being run.

Owns `_global` (the live core worker, set by api.init and cleared by shutdown),
`_auto_init` (how to start one on first use, as Ray's implicit init does),
CURRENT_TASK, whether local mode is on (LOCAL_MODE), whether this process is a child
forked from a driver (FORKED_FROM: then every call raises at once), and what remains of the sessions this process ended
(PAST_OWNERS: a ref they owned is refused with Ray's ValueError, not looked for), and
what a driver says of itself when it registers (driver_registration). Not
the worker itself (core_worker). Imports nothing of raylite, so object_ref and every
layer above can reach the core worker without importing it."""

from __future__ import annotations

import contextvars
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
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

# init(local_mode=True): tasks and actors run in this process (local_mode.py starts and
# stops it; the submitters look here, without loading local_mode until it is on).
LOCAL_MODE = False


# The driver's pid if this process was forked from it after init(): the session is the
# parent's (its connections and threads did not come along), so every call here is
# refused at once instead of hanging on sockets only the parent reads.
FORKED_FROM: int | None = None


def forked_from(parent_pid: int) -> None:
    """In a child just forked from a driver: drop the parent's core worker (marked
    closed in this copy, so nothing here sends on the parent's connections)."""
    global _global, FORKED_FROM
    if _global is not None:
        _global.closed = True
    _global = None
    FORKED_FROM = parent_pid


def fork_error() -> RuntimeError:
    return RuntimeError(
        f"This process (pid {os.getpid()}) was forked from a raylite driver (pid "
        f"{FORKED_FROM}) after init(): the session's connections and threads belong to "
        "the parent and do not survive fork(), so raylite cannot be used here. Start such "
        "children with the 'spawn' or 'forkserver' start method (or fork before init()), "
        "or run the work as tasks."
    )


def live_worker() -> Worker | None:
    """The live core worker, or None: never starts raylite (for tools that only look)."""
    cw = _global
    return cw if cw is not None and not cw.closed else None


def global_worker() -> Worker:
    """The live core worker, starting raylite (init()) on first use, as Ray does."""
    cw = _global
    if cw is None or cw.closed:
        if FORKED_FROM is not None:
            raise fork_error()
        if _auto_init is None:
            raise RuntimeError("raylite is not initialised; call raylite.init()")
        cw = _auto_init()
    return cw


# Owners of this process's earlier sessions (ended by shutdown()): the driver's own
# address, and the session directory of a session it started ("unix:DIR/", which every
# process of that session listened under). Empty unless init() followed a shutdown(),
# so the check costs a truth test otherwise.
PAST_OWNERS: set[str] = set()
_past_prefixes: tuple[str, ...] = ()


def session_ended(address: str, session_dir: str | None) -> None:
    """shutdown() ended the session of the core worker at `address` (and every process
    under `session_dir`, if this driver started that session)."""
    global _past_prefixes
    PAST_OWNERS.add(address)
    if session_dir:
        _past_prefixes = (*_past_prefixes, f"unix:{session_dir.rstrip('/')}/")
    _verdicts.clear()


# owner address -> from an ended session? (a get of 100,000 refs has a few owners)
_verdicts: dict[str, bool] = {}


def _stale(owner: str) -> bool:
    verdict = _verdicts.get(owner)
    if verdict is None:
        verdict = owner in PAST_OWNERS or owner.startswith(_past_prefixes)
        if len(_verdicts) < 4096:
            _verdicts[owner] = verdict
    return verdict


def check_session(refs: Iterable[Any], what: str) -> None:
    """ValueError for a ref of a session this process ended, as Ray raises (call it
    only while PAST_OWNERS is not empty)."""
    for ref in refs:
        owner = ref.owner
        if _stale(owner):
            raise ValueError(
                f"{what}: object {ref.hex()} is not part of the current session: its owner "
                f"({owner}) belonged to a session that shutdown() ended, and objects do "
                "not outlive their session. Please make sure that all objects you are "
                "trying to access are part of the current session (compute or put them "
                "again after init())."
            )


SUBMISSION_ENV = "RAYLITE_JOB_SUBMISSION_ID"  # set for a submitted job's driver


def driver_registration() -> dict[str, str]:
    """What a driver tells the cluster about itself when it registers (the head's row
    of its job, listed as Ray's job table is): its command line, as Ray's
    get_entrypoint_name, and the submission it runs for ("": none, a DRIVER job)."""
    # sys.orig_argv: the command line as psutil.Process().cmdline() reads it from
    # /proc, without importing psutil on every driver's start-up.
    entrypoint = subprocess.list2cmdline(sys.orig_argv) if sys.orig_argv else "unknown"
    if hasattr(sys, "ps1"):
        entrypoint = "(interactive_shell) " + entrypoint
    return {"entrypoint": entrypoint, "submission_id": os.environ.get(SUBMISSION_ENV, "")}
