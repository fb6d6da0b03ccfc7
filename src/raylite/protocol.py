"""Every wire message type: the records, the messages and the failure codes.

Owns what travels (each message's tag and named fields, the records inside them, the
value kinds, FailCode). Not how it travels: the frame codec (codec.py) registers,
frames and decodes them, and this module re-exports what its callers use from there
(encode, decode, FrameReader, PROTOCOL_VERSION, HEADER). Object payloads are msgpack
`bin` fields holding pickled bytes; they are unpickled by the receiver's
serialization layer, and only ever after the token handshake (transport.py).

request_id > 0 asks for a reply, < 0 is the reply to request -request_id, 0 is
one-way. A failed request is answered Failed(code, reason): receivers decide on the
FailCode, the reason is for people. A value's data (Dep, TaskReturn, ObjectValue) is a
StoredAt where its kind is IN_STORE.

    owner ──PushTask──▶ worker            borrower ──GetObject──▶ owner
    owner ◀──TaskDone── worker            borrower ◀─ObjectValue── owner
    owner ◀─GeneratorItem─ worker (each yield of a generator task, before its TaskDone)
    any   ──RequestLease, ReturnLease, ...──▶ node manager (also the head)
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec

from .codec import HEADER as HEADER
from .codec import MAX_FRAME as MAX_FRAME
from .codec import PROTOCOL_VERSION as PROTOCOL_VERSION
from .codec import FrameReader as FrameReader
from .codec import _msg, checked_record, data_by_kind
from .codec import decode as decode
from .codec import encode as encode
from .codec import fields_of as fields_of
from .codec import from_fields as from_fields
from .codec import message_types as message_types
from .codec import nested as nested

# PushTask.generator: how the worker runs a generator function's body (0: not a
# generator task), as decided where the function is made remote (core/return_modes.py).
from .core.return_modes import GENERATOR_DYNAMIC as GENERATOR_DYNAMIC
from .core.return_modes import GENERATOR_FIXED as GENERATOR_FIXED
from .core.return_modes import GENERATOR_STREAMING as GENERATOR_STREAMING

# The cluster-wide services' messages (runtime envs, placement groups) live in
# protocol_services.py: imported so that decoding knows them and `P.X` names them.
from .protocol_services import *  # noqa: F403

# Value kinds in TaskReturn / ObjectValue / Dep.
INLINE = 0  # data: pickled bytes (a list: the pickle, then its out-of-band buffers)
IN_STORE = 1  # data: StoredAt: the value is in a node's shared-memory store
ERROR = 2  # data: pickled exception

# ActorStateChanged.state from the node that hosted the actor: its process (of life
# `pid`) died. An event for the head's actor table to decide on, not a state.
PROCESS_DIED = "PROCESS_DIED"


class FailCode(enum.IntEnum):
    """Why a request failed (`Failed.code`): what a receiver decides on. The reason
    text beside it is for people (error messages, logs), never matched."""

    INTERNAL = 1  # the answering side hit an unexpected error (a bug: see its log)
    BAD_REQUEST = 2  # the request itself is wrong: an unknown listing, a bad filter
    NOT_FOUND = 3  # what it names is not there: an object on that node, a worker's logs
    CANCELLED = 4  # the requester cancelled it (a lease request)
    TIMEOUT = 5  # it did not happen in time (a restarted detached actor's worker)
    UNREACHABLE = 6  # the process that would answer is unreachable (the head, a node)
    NODE_MARKED_DEAD = 7  # the head gave the node up (missed heartbeats): join as a new one
    AFFINITY_UNAVAILABLE = 8  # hard node affinity: that node is dead or lacks the resources
    WORKER_DIED = 9  # the worker leased for it died before it could run it
    STORE_FULL = 10  # the object does not fit in the store plus the free spill space
    NOT_A_WORKER = 11  # a task pushed to a process that runs none (a driver)
    PG_REMOVED = 12  # the placement group the request is for was removed
    RUNTIME_ENV_SETUP_FAILED = 13  # the lease's runtime env could not be built (reason: the log)


# --- records: the named parts of messages -----------------------------------------------
# NamedTuples: on the wire a plain msgpack array (the field order below), decoded by one
# `_make` call each (no per-field work; a value's IN_STORE data is one more); read by name.
class StoredAt(NamedTuple):
    """The data of an IN_STORE value (Dep, TaskReturn, ObjectValue): where it is."""

    size: int  # the segment's size in bytes
    node: str  # the node manager that holds it (its TCP address); "": one node, no cluster


# A value's data, by its kind: INLINE (bytes, or the pickle then its out-of-band buffers),
# ERROR (bytes), IN_STORE (StoredAt). A record or message with `kind` and `data` gets
# its StoredAt rebuilt where kind is IN_STORE (data_by_kind below, ObjectValue).
ValueData = bytes | list[bytes] | StoredAt


class Dep(NamedTuple):
    """PushTask: an argument that was an ObjectRef, resolved by the owner."""

    position: int | str  # the index in args, or the keyword's name
    kind: int  # INLINE | IN_STORE
    data: ValueData
    object_id: bytes


class TaskReturn(NamedTuple):
    """TaskDone: one return value of the task."""

    object_id: bytes
    kind: int  # INLINE | IN_STORE | ERROR
    data: ValueData
    contained: dict[bytes, str]  # refs inside the value: object id -> its owner's address


data_by_kind(Dep, IN_STORE, StoredAt)
data_by_kind(TaskReturn, IN_STORE, StoredAt)
_stored_at = checked_record(StoredAt)  # ObjectValue's data, where its kind is IN_STORE


class TaskEvent(NamedTuple):
    """TaskEvents, Timeline: one attempt of a task as its worker saw it (task_events.py
    keeps it as the task's record). A worker sends one per finished attempt and, at a
    flush, one with end None per task still running; an owner one (pid 0) for a task
    waiting for a worker, or ended before any worker ran it."""

    name: str  # the task's name (`.options(name=...)`)
    task_id: bytes
    start: float  # the owner's event: when it was submitted
    end: float | None  # None: running (or waiting for a worker, pid 0)
    pid: int  # the worker's; 0: no worker yet
    worker_id: bytes
    kind: str  # "task" | "actor_task" | "actor_creation"
    parent: bytes | None  # the task that submitted it
    deps: Sequence[bytes]  # the objects its ref arguments name
    returns: list[bytes]
    actor_id: bytes | None
    job_id: bytes
    error: list[str] | None  # [Ray's error type, message] (task_events.error_info)
    func: str  # its function's name, or "Class.method": summaries group by it
    node: bytes  # the node the worker runs on (the head keeps every node's tasks)


class NodeAffinity(NamedTuple):
    """RequestLease.strategy: run on this node (NodeAffinitySchedulingStrategy)."""

    node_id: str  # hex
    soft: bool  # that node dead or without the resources: elsewhere (else fail)


class LogLine(NamedTuple):
    """LogLines: one line a worker printed."""

    stream: str  # "out" | "err"
    text: str


class NumberedLine(NamedTuple):
    """Logs: one line of a worker's output, numbered from its first."""

    number: int
    stream: str  # "out" | "err"
    text: str


class Filter(NamedTuple):
    """ListState: keep the rows whose `column` compares so with `value`."""

    column: str
    op: str  # "=" | "!="; strings compare case-insensitively
    value: Any


# --- client registration (any process -> node manager) ---------------------------
@_msg(1)
class RegisterClient:
    kind: str  # "driver" | "worker"
    worker_id: bytes
    pid: int
    address: str  # where this process accepts owner/borrower connections
    # A driver's own account of itself (job_submission.common.driver_registration): its
    # command line and submission id, for the head's row of its job (list_jobs).
    info: dict[str, str] = {}


@_msg(2)
class ClientRegistered:
    node_id: bytes
    job_id: bytes
    store_dir: str
    info: dict[str, Any]


@_msg(3)
class Ok:
    pass


@_msg(4)
class Failed:
    code: FailCode  # what the receiver decides on
    reason: str  # for people: what failed and what to do


# --- leases -------------------------------------------------------------------------
@_msg(10)
class RequestLease:
    lease_id: bytes
    shape: dict[str, int]  # resource -> units of 1/10000
    actor_id: bytes | None  # set: a dedicated worker for this actor
    # None (hybrid: local first, then nodes with room), "SPREAD", or node affinity.
    strategy: str | NodeAffinity | None = None
    spilled: int = 0  # how many nodes sent it on before (spillbacks the owner followed)
    detached: bool = False  # a detached actor: it outlives the owner's connection
    # Ray's label_selector (labels.py): only nodes whose labels match may serve it.
    label_selector: dict[str, str] | None = None
    # The resolved runtime env (runtime_env/: packages as URIs): only a worker of that
    # env serves it. None for nearly every request: the default workers.
    runtime_env: dict[str, Any] | None = None
    # The memory monitor kills retriable workers first (node/memory_policy.py): False
    # for a class whose tasks have max_retries=0, an actor with max_restarts=0.
    retriable: bool = True


@_msg(11)
class LeaseGranted:
    lease_id: bytes
    worker_id: bytes
    address: str
    pid: int
    gpu_ids: list[int]
    node_id: bytes = b""


@_msg(12)
class LeaseInfeasible:
    """Node manager -> owner, while its request waits: no node has `shape` in total."""

    shape: dict[str, int]
    missing: dict[str, int]
    label_selector: dict[str, str] | None = None  # set: no node's labels match it


@_msg(122)
class LeaseWaiting:
    """Node manager -> owner, once: its request has waited pending_warn_s for resources
    that granted leases hold (`holders`, described); `total`: the node's, for display.
    `worker_cap` set: it waits for a worker process instead, the node has that many
    (node/worker_cap.py), and `holders` says what holds them."""

    shape: dict[str, int]
    total: dict[str, float]
    holders: str
    worker_cap: int = 0


@_msg(13)
class CancelLease:
    lease_id: bytes


@_msg(14)
class ReturnLease:
    lease_id: bytes
    kill: bool
    # Set for a lease of another node, returned through our own node manager: it
    # forwards the message there and counts `shape` as free on that node at once
    # (its next heartbeat would say so only later).
    via: str = ""
    shape: dict[str, int] | None = None


@_msg(15)
class NotifyBlocked:
    pass


@_msg(16)
class NotifyUnblocked:
    pass


# --- head metadata ------------------------------------------------------------------
@_msg(20)
class GetClusterInfo:
    pass


@_msg(21)
class ClusterInfo:
    total: dict[str, int]
    available: dict[str, int]
    nodes: list[dict[str, Any]]


@_msg(22)
class ActorStateChanged:
    actor_id: bytes
    state: str  # an owner's ActorState name, or PROCESS_DIED from the actor's node
    class_name: str
    address: str
    pid: int
    cause: str
    restarts_left: int  # -1: unlimited; the head keeps waiters waiting while > 0


@_msg(23)
class GetActorInfo:
    actor_id: bytes


@_msg(26)
class RegisterActorName:
    name: str
    namespace: str
    actor_id: bytes
    class_name: str
    methods: dict[str, Any]  # actors.MethodTable: num_returns, or [n, retries, retry_exceptions]


@_msg(27)
class GetNamedActor:
    name: str
    namespace: str


@_msg(28)
class NamedActor:
    found: bool  # RegisterActorName: the name was taken already; GetNamedActor: it exists
    actor_id: bytes
    class_name: str
    methods: dict[str, Any]  # actors.MethodTable: num_returns, or [n, retries, retry_exceptions]
    address: str


@_msg(25)
class KillActor:
    actor_id: bytes
    cause: str
    no_restart: bool


@_msg(24)
class ActorInfo:
    state: str
    address: str
    cause: str


# --- events, logs, shutdown -----------------------------------------------------------
@_msg(30)
class TaskEvents:
    events: list[TaskEvent]
    metrics: list[Any] | None = None  # metric_values records changed since the last report


@_msg(31)
class GetTimeline:
    pass


@_msg(32)
class Timeline:
    events: list[TaskEvent]  # the finished ones, oldest first


@_msg(33)
class FlushEvents:
    pass


@_msg(34)
class LogLines:
    lines: list[LogLine]
    pid: int = 0  # the worker that printed them (the head keeps every node's recent output)


@_msg(35)
class ShutdownNode:
    pass


@_msg(37)
class ClientDied:
    address: str  # a process of this node is gone: drop its borrows


# --- owner <-> worker -------------------------------------------------------------------
@_msg(40)
class PushTask:
    task_id: bytes
    name: str
    function_id: bytes
    function_blob: bytes | None  # sent once per connection, then cached by the worker
    args_blob: bytes | list[bytes]  # a list: the pickle, then its out-of-band buffers
    deps: list[Dep]
    return_ids: list[bytes]
    owner: str
    actor_id: bytes | None
    actor_creation: bool
    gpu_ids: list[int]
    job_id: bytes
    parent_task_id: bytes | None
    # An actor creation's: max_concurrency etc.; another task's own options, if any
    # ({"task_events": False}: enable_task_events=False); None for most.
    actor_options: dict[str, Any] | None
    namespace: str | None = None  # the job's (init's namespace=); None: its anonymous one
    generator: int = 0  # GENERATOR_FIXED | _STREAMING | _DYNAMIC; 0: a plain function
    # Streaming: the worker waits, after a yield, while this many items are unread
    # (each item is then a request, answered once it may go on); <= 0: it never waits.
    backpressure: int = -1


@_msg(41)
class TaskDone:
    returns: list[TaskReturn]
    worker_pid: int
    # The worker exits after this reply (a function's max_calls): its owner gives the
    # lease back with kill, so the node never hands the worker out again.
    worker_exiting: bool = False


@_msg(46)
class TaskBounced:
    """Worker -> owner, the reply to a PushTask it never began: pipelined behind a task
    that then blocked in get() or wait() (core/lease_queue.pipeline), it would wait
    for that task, which may be waiting for it. The owner runs it on another lease."""

    worker_pid: int


@_msg(45)
class GeneratorItem:
    """Worker -> owner, on the connection its PushTask came on, before its TaskDone:
    the value a generator task yielded `index`-th (streaming, dynamic). A request
    (answered Ok) when the task has backpressure: the worker waits for the answer."""

    generator_id: bytes  # the task's generator ref (its one return id): the owner's Stream
    index: int
    item: TaskReturn  # its object id is item_id(task_id, index) (core/generators.py)


@_msg(44)
class CancelTask:
    task_id: bytes
    recursive: bool = False  # also cancel the tasks it submitted


@_msg(42)
class GetObject:
    object_id: bytes


@_msg(43)
class ObjectValue:
    kind: int
    data: ValueData

    def __post_init__(self) -> None:
        # As in Dep and TaskReturn: an IN_STORE value's data arrives as a list.
        if self.kind == IN_STORE and type(self.data) is list:
            msgspec.structs.force_setattr(self, "data", _stored_at(self.data))  # type: ignore[arg-type]


# --- distributed reference counting (borrower -> owner) ------------------------------
@_msg(50)
class AddBorrower:
    object_id: bytes
    borrower: str  # the borrowing process's address


@_msg(51)
class RemoveBorrower:
    object_id: bytes
    borrower: str


# --- the node's object store (owners and readers -> node manager) ----------------------
@_msg(60)
class ReserveObject:
    object_id: bytes
    size: int
    owner: str


@_msg(61)
class ObjectReserved:
    directory: str  # where to write the segment: the shared-memory store or the spill dir
    prealloc: str  # a file with its memory already allocated to write into, or ""


@_msg(62)
class FreeObject:
    object_id: bytes


@_msg(123)
class DropReturn:
    """Worker -> its node manager: a task's return it stored whose caller never heard
    of it (the reply could not be sent: the caller is gone). Freed if this worker's
    reservation still holds it; deleted if it is freed already (its file was sealed
    after its owner's death freed it); left alone if reserved again since (the task
    rerun elsewhere)."""

    object_id: bytes


@_msg(65)
class ObjectRestored:
    object_id: bytes


@_msg(66)
class ObjectMapped:
    object_id: bytes


@_msg(67)
class ObjectUnmapped:
    object_id: bytes


@_msg(68)
class PushObject:
    """A remote driver (no store on its machine) -> its node: make room for a segment
    it then sends in PushChunk frames. Answered Ok, or Failed (STORE_FULL)."""

    object_id: bytes
    size: int
    owner: str


@_msg(69)
class PushChunk:
    """The bytes of a PushObject segment from `offset`; the `last` one is a request,
    answered Ok once the segment is sealed (readers see all of it or nothing)."""

    object_id: bytes
    offset: int
    data: bytes
    last: bool


@_msg(120)
class GetAssignedResources:
    """Worker -> its node manager: the resources of the lease it runs under
    (RuntimeContext.get_assigned_resources; asked only then, never per task)."""

    worker_id: bytes


@_msg(121)
class AssignedResources:
    shape: dict[str, int]  # in units of 1/10000; {} when the worker holds no lease


@_msg(63)
class GetStoreStats:
    pass


@_msg(64)
class StoreStats:
    stats: dict[str, Any]
    objects: list[dict[str, Any]]


# --- the cluster: node managers <-> head, node managers <-> node managers ---------------
@_msg(100)
class LeaseSpillback:
    """Reply to RequestLease: ask the node manager at `address` instead."""

    address: str


@_msg(101)
class RegisterNode:
    node_id: bytes
    address: str  # the node manager's TCP address
    ip: str
    total: dict[str, int]
    available: dict[str, int]
    info: dict[str, Any]  # hostname, store dir, pid, start time


@_msg(102)
class NodeRegistered:
    """The head took the node in (a node it marked dead is refused: Failed,
    NODE_MARKED_DEAD); `view` is every node, as in ClusterView."""

    view: list[dict[str, Any]]


@_msg(103)
class Heartbeat:
    node_id: bytes
    available: dict[str, int]
    pending: list[dict[str, int]]  # shapes waiting for resources (for `raylite status`)


@_msg(104)
class ClusterView:
    """The head's reply to a heartbeat, and its news: every node, alive or dead."""

    nodes: list[dict[str, Any]]  # node_id, address, ip, total, available, alive, ...


@_msg(105)
class NodeDied:
    node_id: bytes
    address: str  # its node manager
    ip: str
    cause: str


@_msg(106)
class PullObject:
    """Node manager -> the node manager holding an object, on a connection of its own:
    answer ObjectStream, then the segment's bytes raw, then close."""

    object_id: bytes
    requester: str  # the puller's node manager: told when the object is freed


@_msg(107)
class ObjectStream:
    size: int  # this many raw bytes follow the frame


@_msg(108)
class FetchObject:
    """Reader -> its node manager: copy an object held by another node here."""

    object_id: bytes
    address: str  # the node manager that holds it
    size: int
    owner: str


@_msg(109)
class GetNodeStatus:
    pass


@_msg(110)
class NodeStatus:
    nodes: list[dict[str, Any]]
    head: dict[str, Any]


@_msg(111)
class KillActorWorker:
    """Head -> the node hosting an actor: kill its worker process."""

    actor_id: bytes


@_msg(115)
class RegisterDetached:
    """Owner -> head, when it creates a detached actor that may restart: what it takes
    to start it again once the owner is gone (head/detached.py)."""

    actor_id: bytes
    owner: str  # the owner's address: the head restarts the actor once it is gone
    # The creation task, the class's code included; None if its constructor took refs,
    # which go with the owner: it cannot be restarted then.
    push: PushTask | None
    shape: dict[str, int]
    runtime_env: dict[str, Any] | None = None  # its resolved env (core/runtime_envs.py)


@_msg(119)
class CreateDetached:
    """Creator -> head (request, Ok): create this detached actor, whose constructor
    takes no refs, and restart it as its owner (head/detached.py), so that it does not
    depend on its creator staying alive, as on Ray. The creator then finds it through
    the head, as a borrower does."""

    actor_id: bytes
    creator: str  # the creating process's address (for the record)
    class_name: str
    push: PushTask  # the creation task, the class's code included
    shape: dict[str, int]
    restarts_left: int  # max_restarts (-1: unlimited)
    runtime_env: dict[str, Any] | None = None  # its resolved env (core/runtime_envs.py)


@_msg(116)
class StartActor:
    """Head -> a node: start a life of a detached actor: its creation (CreateDetached),
    or a restart once its owner is gone."""

    actor_id: bytes
    class_name: str
    # The creation task as the node runs it (actor_options' "reconstructed" set for a
    # restart): the node sets owner and gpu_ids of its lease.
    push: PushTask
    shape: dict[str, int]
    restarts_left: int
    runtime_env: dict[str, Any] | None = None  # the actor's env: its worker is of that env


# --- state listings, task summary, worker output (cli, util.state -> node manager) ----
# Tags 90-99: the state API's range (the cluster's messages count up from 100).
@_msg(90)
class ListState:
    kind: str  # "tasks" | "actors" | "objects" | "nodes" | "workers"
    filters: list[Filter]
    limit: int
    local: bool = False  # objects, workers: this node's only (else every node's, merged)


@_msg(91)
class StateList:
    rows: list[dict[str, Any]]
    total: int  # rows that pass the filters, before the limit


@_msg(92)
class SummarizeTasks:
    pass


@_msg(93)
class TaskSummary:
    summary: dict[str, Any]  # Ray's summarize_tasks() shape


@_msg(94)
class GetLogs:
    pid: int  # the worker, unless actor_id or task_id names it
    actor_id: bytes | None
    task_id: bytes | None
    after: int  # > 0: the lines numbered `after` and later (to follow); else the last `tail`
    tail: int


@_msg(95)
class Logs:
    pid: int
    lines: list[NumberedLine]
    next_line: int  # the number the next line of this worker will get
    alive: bool


Message = Any  # one of the classes above


@_msg(113)
class RegisterJob:
    driver: str = ""  # the driver's address: the job ends when it goes (placement groups)
    info: dict[str, Any] = {}  # RegisterClient.info, with the driver's pid and node's ip


@_msg(114)
class JobRegistered:
    job_id: bytes
