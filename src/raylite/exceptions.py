"""The one error hierarchy, with Ray's public names.

    RayError
    ├── RayTaskError          also an instance of the user's exception class
    ├── RayActorError ── ActorDiedError, ActorUnavailableError
    ├── TaskCancelledError
    ├── WorkerCrashedError
    ├── ObjectStoreFullError
    ├── TaskUnschedulableError, ActorUnschedulableError   no node can ever run it
    ├── NodeDiedError
    ├── GetTimeoutError       also a TimeoutError
    ├── ObjectLostError ── OwnerDiedError, ObjectFreedError, ObjectFetchTimedOutError,
    │                      ObjectReconstructionFailedError, ReferenceCountingAssertionError
    ├── ActorAlreadyExistsError, ActorHandleNotFoundError   also ValueErrors
    ├── PendingCallsLimitExceeded   an actor handle's max_pending_calls is reached
    ├── CollectiveError ── CollectiveTimeoutError, PeerGoneError, MismatchError
    │                      util.collective's; also RuntimeErrors, as Ray's are
    ├── the rest of Ray 2.60's public names (below the line "Ray's other names")
    └── RaySystemError ── RayliteInternalError ── ProtocolError, ConnectionLost,
                      │                           InvalidTransition, AuthenticationError
                      │        ProtocolError ── MessageTooLargeError   also a ValueError
                      └── RayChannelError ── RayChannelTimeoutError, and Ray's other
                          system errors

Every error pickles (the worker sends them to owners). Imports nothing from raylite.
Some of Ray's names stand for conditions raylite does not have (out of disk, the
compiled-graph channels, cross-language calls): they exist so that `except` clauses
written for Ray import and mean the same here.
"""

from __future__ import annotations

from typing import Any


class RayError(Exception):
    """Base of every error raylite raises."""


class RayTaskError(RayError):
    """A task or actor method raised; carries the remote traceback.

    `get` raises `as_instanceof_cause()`, an object whose class derives from both
    RayTaskError and the user's exception class, so `except ValueError` still works.
    """

    def __init__(
        self,
        function_name: str = "",
        traceback_str: str = "",
        cause: BaseException | None = None,
        pid: int | None = None,
    ) -> None:
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.pid = pid
        # Not super().__init__: in the dual class that would be the user's __init__.
        Exception.__init__(self, function_name, traceback_str, cause, pid)

    def __reduce__(self) -> Any:
        return (RayTaskError, (self.function_name, self.traceback_str, self.cause, self.pid))

    def __str__(self) -> str:
        where = f" (pid={self.pid})" if self.pid is not None else ""
        head = f"{type(self.cause).__name__ if self.cause else 'Error'} in {self.function_name}(){where}"
        return f"{head}\n{self.traceback_str.rstrip()}"

    def argument_failed(self, function_name: str) -> RayTaskError:
        """This error as the error of a task it was an argument of (Ray's wrapper)."""
        tb = f"At least one of the input arguments for this task could not be computed:\n{self}"
        return RayTaskError(function_name, tb, self.cause, self.pid)

    def as_instanceof_cause(self) -> RayTaskError:
        """This error, re-typed to also be an instance of the cause's class."""
        cause_cls = type(self.cause) if self.cause is not None else None
        if cause_cls is None or issubclass(cause_cls, (RayTaskError, UnserializableException)):
            return self
        if not issubclass(cause_cls, Exception):
            return self
        try:
            cls = _dual_class(cause_cls)
            err = cls.__new__(cls)
            RayTaskError.__init__(err, self.function_name, self.traceback_str, self.cause, self.pid)
            err.args = getattr(self.cause, "args", ())
            if hasattr(self.cause, "__dict__"):
                for k, v in self.cause.__dict__.items():
                    err.__dict__.setdefault(k, v)
            err.__cause__ = self.cause
            return err
        except TypeError:  # e.g. a cause class with an incompatible layout
            return self


_DUAL_CLASSES: dict[type, type[RayTaskError]] = {}


def _dual_class(cause_cls: type) -> type[RayTaskError]:
    cls = _DUAL_CLASSES.get(cause_cls)
    if cls is None:

        def __reduce__(self: Any) -> Any:
            return (_rebuild_dual, (self.function_name, self.traceback_str, self.cause, self.pid))

        cls = type(  # a RayTaskError that is also a cause_cls
            f"RayTaskError({cause_cls.__name__})",
            (RayTaskError, cause_cls),
            {
                "__reduce__": __reduce__,
                "__str__": RayTaskError.__str__,
                "__init__": RayTaskError.__init__,
                "__module__": __name__,
            },
        )
        _DUAL_CLASSES[cause_cls] = cls
    return cls


def _rebuild_dual(name: str, tb: str, cause: BaseException | None, pid: int | None) -> Any:
    return RayTaskError(name, tb, cause, pid).as_instanceof_cause()


class RayActorError(RayError):
    """The actor is unusable: dead, or its process is gone."""

    def __init__(self, message: str = "The actor died unexpectedly.", cause: Any = None) -> None:
        self.message = message
        self.cause = cause
        super().__init__(message)

    def __reduce__(self) -> Any:
        return (type(self), (self.message, self.cause))

    def __str__(self) -> str:
        if self.cause is not None and str(self.cause) not in self.message:
            return f"{self.message}\nCause: {self.cause}"
        return self.message


class ActorDiedError(RayActorError):
    """The actor died (crash, kill or constructor error); `cause` says which."""


class TaskCancelledError(RayError):
    def __init__(self, task_id: str = "") -> None:
        self.task_id = task_id
        super().__init__(task_id)

    def __str__(self) -> str:
        return f"Task {self.task_id} was cancelled."


class WorkerCrashedError(RayError):
    def __str__(self) -> str:
        msg = self.args[0] if self.args else ""
        return msg or "The worker died unexpectedly while executing this task."


class ObjectStoreFullError(RayError):
    pass


class TaskUnschedulableError(RayError):
    """The task can never be scheduled (e.g. hard node affinity to a dead node)."""


class ActorUnschedulableError(RayError):
    """The actor can never be scheduled (e.g. hard node affinity to a dead node)."""


class NodeDiedError(RayError):
    """The node running the task or holding the object died."""


class GetTimeoutError(RayError, TimeoutError):
    """`get` or `wait` ran past its timeout."""


class ObjectLostError(RayError):
    def __init__(self, object_ref_hex: str = "", message: str = "") -> None:
        self.object_ref_hex = object_ref_hex
        self.message = message
        super().__init__(object_ref_hex, message)

    def __str__(self) -> str:
        return self.message or (
            f"Object {self.object_ref_hex} is lost and cannot be reconstructed."
        )


class OwnerDiedError(ObjectLostError):
    def __str__(self) -> str:
        return self.message or (
            f"Object {self.object_ref_hex} is lost: the process that owned it has died."
        )


class ObjectFreedError(ObjectLostError):
    """The object's owner freed it (its refs were gone) before this read."""

    def __str__(self) -> str:
        return self.message or f"Object {self.object_ref_hex} was freed by its owner."


class ObjectFetchTimedOutError(ObjectLostError):
    """Fetching a copy of the object from another node timed out."""


class ObjectReconstructionFailedError(ObjectLostError):
    """The object was lost and rebuilding it from its lineage failed."""


class ReferenceCountingAssertionError(ObjectLostError, AssertionError):
    """The object was read after reference counting let it go (a bug)."""


class ActorUnavailableError(RayActorError):
    """The actor cannot answer now (it is restarting or unreachable); it may later."""


class ActorAlreadyExistsError(ValueError, RayError):
    """An actor with this name already exists in the namespace."""


class ActorHandleNotFoundError(ValueError, RayError):
    """The actor handle cannot be found (it was never created or has gone)."""


class PendingCallsLimitExceeded(RayError):
    """An actor handle already has `max_pending_calls` calls waiting for results."""


class RaySystemError(RayError):
    pass


class RayliteInternalError(RaySystemError):
    pass


class ProtocolError(RayliteInternalError):
    pass


class ConnectionLost(RayliteInternalError):
    pass


class MessageTooLargeError(ProtocolError, ValueError):
    """A message over the frame limit (2 GiB): its sender refuses it, so the call that
    made it fails and the connection stays up (the receiver would drop it)."""


class InvalidTransition(RayliteInternalError):
    pass


class AuthenticationError(RayliteInternalError):
    pass


# --- Ray's other names ----------------------------------------------------------------
class RayChannelError(RaySystemError):
    """A compiled graph's channel failed (Ray's compiled graphs; not in raylite)."""


class RayChannelTimeoutError(RayChannelError, TimeoutError):
    """A compiled graph's channel timed out (Ray's compiled graphs; not in raylite)."""


class RayCgraphCapacityExceeded(RaySystemError):
    """A compiled graph has too many executions in flight (not in raylite)."""


class RayDirectTransportError(RaySystemError):
    """A direct tensor transport failed (not in raylite)."""


class StreamingGeneratorReplayInconsistentError(RaySystemError):
    """A retried streaming generator yielded other values than its first run."""


class ObjectRefStreamEndOfStreamError(RayError):
    """A streaming generator has no more values."""


class AsyncioActorExit(RayError):
    """Raised inside an async actor to exit it."""


class ActorPlacementGroupRemoved(RayError):
    """The placement group of the actor was removed."""

    def __str__(self) -> str:
        return "The placement group corresponding to this Actor has been removed."


class TaskPlacementGroupRemoved(RayError):
    """The placement group of the task was removed."""

    def __str__(self) -> str:
        return "The placement group corresponding to this task has been removed."


class CrossLanguageError(RayError):
    """A call across languages failed (Ray's Java/C++ workers; not in raylite)."""


class LocalRayletDiedError(RayError):
    """The node manager of this process died."""


class OutOfDiskError(RayError):
    """The node ran out of disk for spilled objects."""


class OutOfMemoryError(RayError):
    """The node ran out of memory and killed the worker (Ray's memory monitor)."""


class PlasmaObjectNotAvailable(RayError):
    """The object is not in the local store yet (Ray internal; kept for its name)."""


class RpcError(RayError):
    """A remote call between Ray's processes failed."""


class RuntimeEnvSetupError(RayError):
    """The task's or actor's runtime environment could not be set up."""


class UnserializableException(RayError):
    """A task raised an exception that could not be pickled; carries its traceback."""

    def __init__(self, original_stack_trace: str = "") -> None:
        self.original_stack_trace = original_stack_trace
        super().__init__(original_stack_trace)

    def __str__(self) -> str:
        return (
            "The task raised an exception that could not be serialized; its traceback:\n"
            f"{self.original_stack_trace}"
        )


class UserCodeException(RayError):
    """Raised from user code in Ray's internals (kept for its name)."""


class OufOfBandObjectRefSerializationException(RayError):  # sic: Ray's spelling
    """An ObjectRef was pickled out of band, where its owner cannot track it."""


# --- raylite.util.collective's (Ray's collective calls raise RuntimeError: these are
# RuntimeErrors too, and RayErrors) -------------------------------------------------------
class CollectiveError(RayError, RuntimeError):
    """A collective call failed; the group is broken until destroyed and made again."""


class CollectiveTimeoutError(CollectiveError):
    """A peer sent or took nothing within the group's timeout. (Not also a TimeoutError:
    an OSError's layout beside RuntimeError's does not unpickle safely everywhere.)"""


class PeerGoneError(CollectiveError):
    """A peer's connection closed (its process exited, or it broke the group)."""


class MismatchError(CollectiveError):
    """Ranks passed arrays of different sizes or dtypes, or called different ops."""


__all__ = [
    "ActorAlreadyExistsError",
    "ActorDiedError",
    "ActorHandleNotFoundError",
    "ActorPlacementGroupRemoved",
    "ActorUnavailableError",
    "ActorUnschedulableError",
    "AsyncioActorExit",
    "AuthenticationError",
    "ConnectionLost",
    "CrossLanguageError",
    "GetTimeoutError",
    "InvalidTransition",
    "LocalRayletDiedError",
    "NodeDiedError",
    "ObjectFetchTimedOutError",
    "ObjectFreedError",
    "ObjectLostError",
    "ObjectReconstructionFailedError",
    "ObjectRefStreamEndOfStreamError",
    "ObjectStoreFullError",
    "OufOfBandObjectRefSerializationException",
    "OutOfDiskError",
    "OutOfMemoryError",
    "OwnerDiedError",
    "PendingCallsLimitExceeded",
    "PlasmaObjectNotAvailable",
    "ProtocolError",
    "RayActorError",
    "RayCgraphCapacityExceeded",
    "RayChannelError",
    "RayChannelTimeoutError",
    "RayDirectTransportError",
    "RayError",
    "RaySystemError",
    "RayTaskError",
    "RayliteInternalError",
    "ReferenceCountingAssertionError",
    "RpcError",
    "RuntimeEnvSetupError",
    "StreamingGeneratorReplayInconsistentError",
    "TaskCancelledError",
    "TaskPlacementGroupRemoved",
    "TaskUnschedulableError",
    "UnserializableException",
    "UserCodeException",
    "WorkerCrashedError",
]
