"""A submitted task as its owner sees it, and the rules on its arguments and retries.

Owns TaskSpec (what to send, what it holds, where it is), the placeholder for a
top-level ref argument, which exceptions are retried, and the error for
arguments that do not pickle. Not submission or completion (submission), not
leases (leasing)."""

from __future__ import annotations

import logging
import pickle
import reprlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import protocol as P
from ..object_ref import ObjectRef
from ..serialization import dumps_inline, loads_inline
from ..transitions import TRACE
from .lifecycle import (
    FAILED,
    QUEUED,
    TASK_TRANSITIONS,
    WAITING_ARGS,
    TaskState,
    spend_retry,
    transition,
)

log = logging.getLogger("raylite")


class Dep:
    """Placeholder for a top-level ObjectRef argument, filled in by the worker."""

    __slots__ = ()

    def __reduce__(self) -> Any:
        return (Dep, ())


DEP = Dep()


@dataclass(eq=False, slots=True)
class TaskSpec:
    task_id: bytes
    name: str
    function_id: bytes
    # The pickled function, or what pickles it (an actor class's, once), or None (a
    # call to an actor already created): blob_of() reads it.
    function_blob: bytes | Callable[[], bytes] | None
    args_blob: bytes | list[bytes]
    return_ids: list[bytes]
    shape: dict[str, int]
    shape_key: tuple[tuple[str, int], ...]
    max_retries: int
    retry_exceptions: Any  # bool, or a tuple of exception classes to retry
    actor_id: bytes | None = None
    actor_creation: bool = False
    # The per-task sequences that most tasks leave empty are an empty tuple until set
    # (a list each would be ~6 more objects a task for the cyclic collector: tens of
    # thousands in flight in a batch); deps and held become lists when it has ref
    # arguments (submission.submit_task, lineage._resubmit).
    deps: list[P.Dep] | tuple[()] = ()  # ref arguments, resolved
    unresolved: int = 0
    held: list[bytes] | tuple[()] = ()
    arg_refs: Sequence[ObjectRef] = ()  # pinned until the task ends
    # An actor creation's options; another task's or call's own, where it has any
    # ({"task_events": False}: task_events_off); None for most.
    actor_options: dict[str, Any] | None = None
    state: TaskState = WAITING_ARGS  # lifecycle.py's table; move it with task_transition
    cancelled: bool = False  # raylite.cancel() asked for it: it is not retried
    incarnation: int = 0  # which life of its actor the call was sent to
    lease: Any = None  # the lease it was pushed on, while it runs
    strategy: str | P.NodeAffinity | None = None  # scheduling_strategy as sent to node managers
    rebuildable: bool = False  # rerunning it rebuilds its value (see submit_task)
    dep_ids: Sequence[tuple[Any, bytes, str]] = ()  # ref args: (position, id, owner)
    lineage_pinned: bool = False  # counted in its arguments' lineage_refs
    lineage_holders: int = 0  # its return entries that keep it as their lineage
    nested_ids: Sequence[bytes] = ()  # refs inside its arguments
    kept_refs: Sequence[ObjectRef] = ()  # borrowed args, kept for a rerun
    rerunning: bool = False  # rerun to rebuild a lost return: the others come with it
    pushed: bool = False  # sent to a worker at least once (its worker reports it from then)
    submitted: float = 0.0  # time.time() at submission
    parent: bytes | None = None  # the task that submitted it
    generator: int = 0  # PushTask.generator: how its worker runs a generator function
    backpressure: int = -1  # PushTask.backpressure (streaming generators)
    runtime_env: dict[str, Any] | None = None  # resolved (core/runtime_envs.py); None: default
    # May be pushed behind a running task of its lease (lease_queue.pipeline): not a
    # function with max_calls (its worker exits after a call, dropping what it queued).
    pipelinable: bool = True
    oom_kills: int = 0  # times a node's memory monitor killed its worker (the backoff)
    oom_retriable: bool = False  # killed for memory before: retried as such again


def blob_of(spec: TaskSpec) -> bytes | None:
    """The task's pickled function, pickling it now if it is given as what pickles it."""
    blob = spec.function_blob
    return blob if blob is None or type(blob) is bytes else blob()  # type: ignore[operator]


def task_events_off(options: dict[str, Any] | None) -> bool:
    """enable_task_events=False: a task (or actor call, or creation) whose TaskSpec and
    PushTask carry {"task_events": False} in their options (None for most tasks) makes
    no task event, at its owner or its worker: it is in no listing or timeline."""
    return options is not None and options.get("task_events") is False


def task_transition(spec: TaskSpec, new: TaskState, cause: str) -> None:
    """transition() for a task, with the allowed move inlined: it runs up to three
    times per task on the submission path."""
    if new in TASK_TRANSITIONS[spec.state] and not TRACE.on:
        spec.state = new
        return
    transition(spec, new, TASK_TRANSITIONS, cause=cause, who=spec.task_id)  # logs or raises


def retry_task(spec: TaskSpec, cause: str, closing: bool) -> bool:
    """An attempt failed: spend a retry and queue the task again (FAILED, then QUEUED;
    the caller enqueues it), or False if it fails for good: cancelled, the process is
    closing, or no retry is left."""
    if spec.cancelled or closing or not spend_retry(spec):
        return False
    task_transition(spec, FAILED, cause)
    task_transition(spec, QUEUED, "retry")
    return True


def lineage_args(spec: TaskSpec) -> list[bytes]:
    """The owned objects a kept lineage needs to run its task again."""
    return [*(dep for _, dep, _ in spec.dep_ids), *spec.nested_ids]


def retryable(retry: Any, error_blob: bytes) -> bool:
    """retry_exceptions=True retries any application error; a tuple, those classes."""
    if retry is True:
        return True
    err = loads_inline(error_blob)
    cause = getattr(err, "cause", err)
    return isinstance(cause, retry)


def unserializable_argument(args: tuple, kwargs: dict, name: str, exc: Exception) -> Exception:
    """The error `.remote()` raises for arguments that do not pickle: of the pickling
    error's class (TypeError for most objects, PicklingError for one nested too deep,
    as `put` raises), naming the call and the first culprit in a bounded repr (a
    value nested thousands deep would make repr() itself raise RecursionError)."""
    culprit = None
    for i, a in enumerate(args):
        try:
            dumps_inline(a)
        except Exception:
            culprit = f"argument {i} ({short_repr(a)})"
            break
    else:
        for k, v in kwargs.items():
            try:
                dumps_inline(v)
            except Exception:
                culprit = f"keyword argument {k!r} ({short_repr(v)})"
                break
    what = culprit or "the arguments"
    text = (
        f"Could not serialize {what} for a call to {name}: {type(exc).__name__}: "
        f"{str(exc).rstrip('.')}. "
        "Pass a value that pickles (or create it inside the task)."
    )
    if isinstance(exc, (pickle.PicklingError, RecursionError)):
        return pickle.PicklingError(text)
    return TypeError(text)


_REPR = reprlib.Repr()
_REPR.maxlevel = 4
_REPR.maxstring = _REPR.maxother = 80


def short_repr(value: Any) -> str:
    """repr() for error messages: bounded in depth and length, and never raising."""
    try:
        return _REPR.repr(value)
    except Exception:  # a __repr__ that raises (or recurses) itself
        return f"<{type(value).__name__} object>"
