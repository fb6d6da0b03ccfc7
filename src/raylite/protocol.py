"""Every wire message type and the frame codec.

A frame is: u32 body length | u8 PROTOCOL_VERSION | body, where body is the msgpack
array [tag, request_id, field...]. request_id > 0 asks for a reply, < 0 is the reply
to request -request_id, 0 is one-way. Object payloads are msgpack `bin` fields
holding pickled bytes; they are unpickled by the receiver's serialization layer, and
only ever after the token handshake (transport.py).

Fields are named all the way down: a part of a message is a record (a NamedTuple:
Dep, TaskReturn, ...), sent as a plain msgpack array and rebuilt by one `_make` call;
a message inside a message (a detached actor's PushTask) is sent as its fields. The
decoder learns which fields need that from the type hints, once, at registration:
a record where one may come (`str | NodeAffinity | None`) is one if it came as a list;
a value's data (Dep, TaskReturn, ObjectValue) is a StoredAt where its kind is IN_STORE.
A failed request is answered Failed(code, reason): receivers decide on the FailCode,
the reason is for people.

    owner ──PushTask──▶ worker            borrower ──GetObject──▶ owner
    owner ◀──TaskDone── worker            borrower ◀─ObjectValue── owner
    any   ──RequestLease, ReturnLease, ...──▶ node manager (also the head)
"""

from __future__ import annotations

import enum
import operator
import struct
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple

import msgpack
import msgspec

from .exceptions import ProtocolError

# 2: FailCode, named records, dropped fields. 3: NodeAffinity, StoredAt: a node of 2 would
# read a NodeAffinity as no strategy at all (the default policy). An older node is refused.
PROTOCOL_VERSION = 3
HEADER = struct.Struct("<IB")
MAX_FRAME = 1 << 31

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


_BY_TAG: dict[int, Any] = {}  # tag -> message class (with the codec's attributes)

# A field's decoder: turns what msgpack gives (lists, ints) back into the field's type.
Decoder = Callable[[Any], Any]


def message(tag: int, hint_source: type | None = None) -> Callable[[type], type]:
    """Registers a msgspec.Struct as a wire message under `tag`; its field types are
    read from `hint_source` (the class it was made from) if given."""

    def register(cls: type) -> type:
        if tag in _BY_TAG:
            raise ValueError(f"duplicate message tag {tag}")
        names = list(cls.__struct_fields__)  # type: ignore[attr-defined]
        hints = typing.get_type_hints(hint_source or cls, vars(sys.modules[__name__]))
        decoders = []
        for i, name in enumerate(names):
            decoder = _decoder(hints[name])
            if decoder is not None:
                decoders.append((i, decoder))
        wire: Any = cls  # the codec's class attributes, set here for every message
        wire.TAG = tag
        wire._getter = operator.attrgetter(*names) if len(names) > 1 else None
        wire._names = tuple(names)
        # Only fields of a record, enum or message type are decoded further; the rest
        # go to the constructor as msgpack gives them.
        wire._decoders = tuple(decoders)
        _BY_TAG[tag] = cls
        return cls

    return register


def _decoder(hint: Any) -> Decoder | None:
    """How to rebuild a field of type `hint` from its msgpack form, if it needs it:
    a record (NamedTuple) is one `_make` call, an enum one constructor call, a list of
    records a `map`, a record or a scalar (`str | NodeAffinity | None`) a `_make` if it
    came as a list; plain types (bytes, str, int, dict, list of plain) need nothing."""
    origin = typing.get_origin(hint)
    if origin is types.UnionType or origin is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        records = [a for a in args if _is_record(a)]
        if len(records) == 1 and len(args) > 1:
            # A record or plain scalars (str | NodeAffinity | None): only the record
            # arrives as a list. Not with a list among them: which is which is unknown.
            if any(typing.get_origin(a) is list or a is list for a in args):
                return None
            make_one = records[0]._make
            return lambda v: make_one(v) if type(v) is list else v
        optional = _decoder(args[0]) if len(args) == 1 else None
        if optional is None:
            return None
        return lambda v: None if v is None else optional(v)
    if origin is list:
        (item,) = typing.get_args(hint)
        if _is_record(item):
            return _records_decoder(item)
        inner = _decoder(item)
        if inner is None:
            return None
        return lambda v: [inner(x) for x in v]
    if _is_record(hint):
        if _stored_at(hint) is None:
            return typing.cast(Decoder, hint._make)
        many = _records_decoder(hint)
        return lambda v: many([v])[0]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint
    if isinstance(hint, type) and hasattr(hint, "TAG"):  # a message inside a message
        message_type: type = hint
        return lambda v: from_fields(message_type, v)
    return None


def _records_decoder(record: Any) -> Decoder:
    """A list of `record`s: one `_make` each; for a record holding a value (Dep,
    TaskReturn), an IN_STORE one's data becomes its StoredAt first."""
    make = record._make
    stored = _stored_at(record)
    if stored is None:
        return lambda v: list(map(make, v))
    kind_at, data_at = stored

    def values(v: list[Any]) -> list[Any]:
        for x in v:
            if x[kind_at] == IN_STORE:
                x[data_at] = StoredAt._make(x[data_at])
        return list(map(make, v))

    return values


def _is_record(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, tuple) and hasattr(hint, "_fields")


def _stored_at(record: Any) -> tuple[int, int] | None:
    """(index of `kind`, index of `data`) of a record whose data is a StoredAt where its
    kind is IN_STORE (Dep, TaskReturn): its decoder makes that one StoredAt first."""
    hints = typing.get_type_hints(record, vars(sys.modules[__name__]))
    if "kind" in hints and StoredAt in typing.get_args(hints.get("data")):
        return record._fields.index("kind"), record._fields.index("data")
    return None


def _msg(tag: int) -> Callable[[type], Any]:
    """Class decorator: the class body's annotated fields become a frozen
    msgspec.Struct (built in C: cheap to define, and to construct on the hot path),
    registered under `tag`. The class's docstring and functions (__post_init__) stay."""

    def wrap(cls: type) -> type:
        body = vars(cls)
        spec = []
        annotations = body.get("__annotations__", {})
        for name, hint in annotations.items():
            spec.append((name, hint, body[name]) if name in body else (name, hint))
        methods = {
            name: value
            for name, value in body.items()
            if isinstance(value, types.FunctionType) and name not in annotations
        }
        struct = msgspec.defstruct(
            cls.__name__, spec, frozen=True, module=__name__, namespace=methods
        )
        struct.__doc__ = cls.__doc__
        struct.__qualname__ = cls.__qualname__
        return message(tag, hint_source=cls)(struct)

    return wrap


# --- records: the named parts of messages -----------------------------------------------
# NamedTuples: on the wire a plain msgpack array (the field order below), decoded by one
# `_make` call each (no per-field work; a value's IN_STORE data is one more); read by name.
class StoredAt(NamedTuple):
    """The data of an IN_STORE value (Dep, TaskReturn, ObjectValue): where it is."""

    size: int  # the segment's size in bytes
    node: str  # the node manager that holds it (its TCP address); "": one node, no cluster


# A value's data, by its kind: INLINE (bytes, or the pickle then its out-of-band buffers),
# ERROR (bytes), IN_STORE (StoredAt). A record or message with `kind` and `data` gets
# its StoredAt rebuilt where kind is IN_STORE (`_stored_at`, ObjectValue).
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
    methods: dict[str, int]


@_msg(27)
class GetNamedActor:
    name: str
    namespace: str


@_msg(28)
class NamedActor:
    found: bool  # RegisterActorName: the name was taken already; GetNamedActor: it exists
    actor_id: bytes
    class_name: str
    methods: dict[str, int]
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
    args_blob: bytes
    deps: list[Dep]
    return_ids: list[bytes]
    owner: str
    actor_id: bytes | None
    actor_creation: bool
    gpu_ids: list[int]
    job_id: bytes
    parent_task_id: bytes | None
    actor_options: dict[str, Any] | None  # actor creation: max_concurrency etc.


@_msg(41)
class TaskDone:
    returns: list[TaskReturn]
    worker_pid: int


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
            msgspec.structs.force_setattr(self, "data", StoredAt._make(self.data))  # type: ignore[arg-type]


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


@_msg(65)
class ObjectRestored:
    object_id: bytes


@_msg(66)
class ObjectMapped:
    object_id: bytes


@_msg(67)
class ObjectUnmapped:
    object_id: bytes


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


@_msg(116)
class StartActor:
    """Head -> a node: start a life of a detached actor whose owner is gone."""

    actor_id: bytes
    class_name: str
    push: PushTask  # the creation task: the node sets owner and gpu_ids of its lease
    shape: dict[str, int]
    restarts_left: int


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


def fields_of(msg: Any) -> list[Any]:
    """A message's fields in wire order: a message inside a message travels as this
    (msgpack's `default` hook), and the head stores a detached actor's push so."""
    return [getattr(msg, name) for name in type(msg)._names]


def nested(obj: Any) -> Any:
    """msgpack's `default` hook: a message inside other data packs as its fields."""
    if hasattr(type(obj), "TAG"):
        return fields_of(obj)
    raise TypeError(f"cannot send a {type(obj).__name__} on the wire")


def encode(msg: Any, request_id: int = 0) -> bytes:
    """Frame bytes for `msg`."""
    cls = type(msg)
    getter = cls._getter
    if getter is not None:
        items = [cls.TAG, request_id, *getter(msg)]
    elif cls._names:
        items = [cls.TAG, request_id, getattr(msg, cls._names[0])]
    else:
        items = [cls.TAG, request_id]
    body: bytes = msgpack.packb(items, use_bin_type=True, default=nested)
    return HEADER.pack(len(body), PROTOCOL_VERSION) + body


def from_fields(cls: type, items: list[Any]) -> Any:
    """The message of type `cls` from its fields as msgpack decoded them (fields_of)."""
    wire: Any = cls
    for i, decoder in wire._decoders:
        items[i] = decoder(items[i])
    return wire(*items)


def decode(body: bytes | memoryview) -> tuple[Any, int]:
    """(message, request_id) from one frame body; ProtocolError on anything malformed."""
    try:
        items = msgpack.unpackb(body, raw=False, strict_map_key=False, use_list=True)
        tag, request_id = items[0], items[1]
        cls = _BY_TAG[tag]
        decoders = cls._decoders
        if decoders:
            for i, decoder in decoders:
                items[i + 2] = decoder(items[i + 2])
        return cls(*items[2:]), request_id
    except Exception as exc:
        raise ProtocolError(f"malformed frame: {exc}") from exc


def message_types() -> dict[int, type]:
    return dict(_BY_TAG)


class FrameReader:
    """Splits a byte stream into frame bodies."""

    __slots__ = ("buf",)
    _EMPTY: ClassVar[bytes] = b""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.buf
        buf += data
        out = []
        pos = 0
        n = len(buf)
        while n - pos >= 5:
            length, version = HEADER.unpack_from(buf, pos)
            if version != PROTOCOL_VERSION:
                raise ProtocolError(f"peer speaks protocol {version}, we speak {PROTOCOL_VERSION}")
            if length > MAX_FRAME:
                raise ProtocolError(f"frame of {length} bytes is too large")
            end = pos + 5 + length
            if end > n:
                break
            out.append(bytes(buf[pos + 5 : end]))
            pos = end
        if pos:
            del buf[:pos]
        return out


@_msg(113)
class RegisterJob:
    pass


@_msg(114)
class JobRegistered:
    job_id: bytes
