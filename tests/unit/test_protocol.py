"""The frame codec: every message type round-trips with its fields' types (records,
enums, messages inside messages), and every type has a receiver that finds it by type."""

from __future__ import annotations

import ast
import collections.abc
import enum
import inspect
import textwrap
import types
import typing
from typing import Any

import msgpack
import msgspec
import pytest

from raylite import codec
from raylite import protocol as P
from raylite.exceptions import ProtocolError

MESSAGES = sorted(P.message_types().values(), key=lambda c: c.TAG)
RECORDS = [
    P.Dep,
    P.TaskReturn,
    P.StoredAt,
    P.TaskEvent,
    P.NodeAffinity,
    P.LogLine,
    P.NumberedLine,
    P.Filter,
]


def _sample(hint: Any, name: str = "") -> Any:
    """A value of type `hint` that is not its type's zero (so a dropped field shows); of
    a union, its record if it has one. A value's `kind` is IN_STORE: its data a StoredAt."""
    origin = typing.get_origin(hint)
    if origin is types.UnionType or origin is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _sample(next((a for a in args if a in RECORDS), args[0]))
    if name == "kind" and hint is int:
        return P.IN_STORE
    if origin is list or origin is collections.abc.Sequence:
        return [_sample(typing.get_args(hint)[0]), _sample(typing.get_args(hint)[0])]
    if origin is dict:
        key, value = typing.get_args(hint)
        return {_sample(key): _sample(value)}
    if hint is Any:
        return [1, "a", b"b"]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return list(hint)[-1]
    if isinstance(hint, type) and issubclass(hint, tuple):  # a record
        hints = typing.get_type_hints(hint)
        return hint(*(_sample(hints[f], f) for f in hint._fields))
    if isinstance(hint, type) and hasattr(hint, "TAG"):
        return _message(hint)
    return {bytes: b"\x00\xff" * 8, str: "hello", int: 42, float: 3.25, bool: True}[hint]


def _message(cls: type) -> Any:
    hints = typing.get_type_hints(cls)
    return cls(**{name: _sample(hints[name], name) for name in cls._names})


def _same_types(a: Any, b: Any, where: str) -> None:
    """`b` (decoded) has the types of `a` (sent) all the way down."""
    assert type(a) is type(b), f"{where}: {type(b).__name__}, sent {type(a).__name__}"
    if hasattr(type(a), "TAG"):  # a message
        for name in type(a)._names:
            _same_types(getattr(a, name), getattr(b, name), f"{where}.{name}")
    elif isinstance(a, list | tuple):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same_types(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        for k in a:
            _same_types(a[k], b[k], f"{where}[{k!r}]")


def _round_trip(msg: Any, rid: int = 5) -> Any:
    frame = P.encode(msg, rid)
    reader = P.FrameReader()
    bodies = reader.feed(frame[:3]) + reader.feed(frame[3:])
    assert len(bodies) == 1
    decoded, got_rid = P.decode(bodies[0])
    assert got_rid == rid
    return decoded


@pytest.mark.parametrize("cls", MESSAGES, ids=lambda c: c.__name__)
def test_every_message_round_trips_with_its_types(cls):
    msg = _message(cls)
    decoded = _round_trip(msg)
    assert decoded == msg
    _same_types(msg, decoded, cls.__name__)


def test_a_message_types_decoder_is_made_at_its_first_decode(monkeypatch):
    """Decoders are made when first needed (codec._Unprepared: a process decodes few of
    the types); the first decode makes it and decodes as it would; prepare_all() (a
    fork server's) makes every one."""
    cls = P.PushTask
    monkeypatch.setattr(cls, "_typed", codec._Unprepared(cls))
    monkeypatch.setattr(cls, "_build", None)
    msg = _message(cls)
    assert P.decode(P.encode(msg, 7)[P.HEADER.size :]) == (msg, 7)
    assert isinstance(cls._typed, msgspec.msgpack.Decoder)
    assert cls._build is not None  # PushTask rebuilds its deps' data
    monkeypatch.setattr(P.Ok, "_typed", codec._Unprepared(P.Ok))
    codec.prepare_all()
    assert not [c for c in MESSAGES if type(c._typed) is codec._Unprepared]


def test_records_decode_as_records_and_read_by_name():
    push = _message(P.PushTask)
    dep = _round_trip(push).deps[0]
    assert isinstance(dep, P.Dep)
    assert (dep.position, dep.kind, dep.object_id) == (42, P.IN_STORE, b"\x00\xff" * 8)
    assert isinstance(dep.data, P.StoredAt)
    assert (dep.data.size, dep.data.node) == (42, "hello")
    done = _round_trip(P.TaskDone([P.TaskReturn(b"o" * 16, P.ERROR, b"e", {b"c": "x"})], 7))
    (ret,) = done.returns
    assert (ret.object_id, ret.kind, ret.data, ret.contained) == (
        b"o" * 16,
        P.ERROR,
        b"e",
        {b"c": "x"},
    )


def test_a_values_data_is_a_stored_at_only_where_its_kind_is_in_store():
    """IN_STORE data reads by name; INLINE data with out-of-band buffers (a list of
    bytes, the same msgpack shape) stays a list, ERROR data bytes."""
    at = P.StoredAt(1 << 20, "tcp:10.0.0.2:7000")
    buffers = [b"pickle", b"buffer"]
    done = _round_trip(
        P.TaskDone(
            [
                P.TaskReturn(b"a" * 16, P.IN_STORE, at, {}),
                P.TaskReturn(b"b" * 16, P.INLINE, buffers, {}),
                P.TaskReturn(b"c" * 16, P.ERROR, b"error", {}),
            ],
            7,
        )
    )
    stored, inline, error = (r.data for r in done.returns)
    assert isinstance(stored, P.StoredAt)
    assert (stored.size, stored.node) == (1 << 20, "tcp:10.0.0.2:7000")
    assert (type(inline), inline) == (list, buffers)
    assert error == b"error"
    push = msgspec.structs.replace(
        _message(P.PushTask),
        deps=[
            P.Dep(0, P.IN_STORE, P.StoredAt(9, ""), b"d" * 16),
            P.Dep("k", P.INLINE, buffers, b"e" * 16),
        ],
    )
    dep, inline_dep = _round_trip(push).deps
    assert (dep.data.size, dep.data.node) == (9, "")
    assert inline_dep.data == buffers
    value = _round_trip(P.ObjectValue(P.IN_STORE, at)).data
    assert isinstance(value, P.StoredAt)
    assert value.node == "tcp:10.0.0.2:7000"
    assert _round_trip(P.ObjectValue(P.INLINE, buffers)).data == buffers


@pytest.mark.parametrize(
    "strategy", [None, "SPREAD", P.NodeAffinity("ab" * 16, soft=True)], ids=repr
)
def test_a_lease_requests_strategy_decodes_as_sent(strategy):
    lease = _round_trip(P.RequestLease(b"l" * 16, {"CPU": 10000}, None, strategy))
    assert lease.strategy == strategy
    assert type(lease.strategy) is type(strategy)
    if strategy is not None and strategy != "SPREAD":
        assert (lease.strategy.node_id, lease.strategy.soft) == ("ab" * 16, True)


def test_task_events_decode_as_task_events_and_read_by_name():
    event = P.TaskEvent("f", b"t" * 16, 1.5, None, 7, b"w" * 16, "task", None, [b"d" * 16],
                        [b"r" * 16], None, b"j" * 4, ["WORKER_DIED", "gone"], "f", b"n" * 16)  # fmt: skip
    (got,) = _round_trip(P.TaskEvents([event])).events
    assert isinstance(got, P.TaskEvent)
    assert got == event
    assert (got.task_id, got.end, got.pid, got.deps, got.error) == (
        b"t" * 16,
        None,
        7,
        [b"d" * 16],
        ["WORKER_DIED", "gone"],
    )
    assert _round_trip(P.Timeline([event])).events == [event]


def test_a_message_inside_a_message_decodes_as_that_message():
    push = _message(P.PushTask)
    start = _round_trip(P.StartActor(b"a" * 16, "A", push, {"CPU": 10000}, 2))
    assert isinstance(start.push, P.PushTask)
    assert isinstance(start.push.deps[0], P.Dep)
    assert start.push == push
    # A detached actor that cannot be restarted registers no push.
    assert _round_trip(P.RegisterDetached(b"a" * 16, "unix:/o", None, {})).push is None
    create = _round_trip(P.CreateDetached(b"a" * 16, "unix:/o", "A", push, {"CPU": 10000}, -1))
    assert create.push == push
    assert create.restarts_left == -1


@pytest.mark.parametrize("code", list(P.FailCode), ids=lambda c: c.name)
def test_failed_round_trips_with_its_code(code):
    decoded = _round_trip(P.Failed(code, "what failed, and what to do"))
    assert decoded.code is code
    assert decoded.reason == "what failed, and what to do"


def test_an_unknown_fail_code_is_a_protocol_error():
    body = P.encode(P.Failed(P.FailCode.TIMEOUT, "x"))[5:].replace(
        bytes([P.FailCode.TIMEOUT]), bytes([0x7F]), 1
    )
    with pytest.raises(ProtocolError, match=r"enum value 127 .*\(Failed\.code\)"):
        P.decode(body)


@pytest.mark.parametrize("rec", RECORDS, ids=lambda c: c.__name__)
def test_a_record_of_the_wrong_length_is_a_protocol_error(rec):
    """A record decodes with one `_make` call, which still checks its length."""
    cls = next(c for c in MESSAGES if any(rec in _records_in(h) for h in _hints(c)))
    msg = _message(cls)
    items = msgpack.unpackb(P.encode(msg)[5:], raw=False, strict_map_key=False)
    for i, hint in enumerate(_hints(cls)):
        if rec in _records_in(hint):
            value = items[i + 2]
            if typing.get_origin(hint) is list:
                value[0] = value[0][:-1]  # the first record loses its last field
            else:
                del value[-1]  # the record loses its last field
    with pytest.raises(ProtocolError):
        P.decode(msgpack.packb(items, use_bin_type=True))


def _hints(cls: type) -> list[Any]:
    hints = typing.get_type_hints(cls)
    return [hints[name] for name in cls._names]


def _records_in(hint: Any) -> list[Any]:
    return [a for a in (hint, *typing.get_args(hint)) if a in RECORDS]


def test_frames_split_anywhere_are_reassembled():
    msgs = [P.GetObject(bytes([i]) * 16) for i in range(50)]
    stream = b"".join(P.encode(m, i + 1) for i, m in enumerate(msgs))
    reader = P.FrameReader()
    out = []
    for i in range(0, len(stream), 7):
        out += reader.feed(stream[i : i + 7])
    assert [P.decode(b)[0] for b in out] == msgs


def test_reads_of_one_whole_frame_and_of_more_than_one():
    msgs = [P.Ok(), P.GetObject(b"x" * 16), P.Ok()]
    frames = [P.encode(m) for m in msgs]
    reader = P.FrameReader()
    assert [P.decode(b)[0] for f in frames for b in reader.feed(f)] == msgs  # one a read
    stream = b"".join(frames)
    cut = len(frames[0]) + 3  # a whole frame and the start of the next
    got = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
    assert [P.decode(b)[0] for b in got] == msgs


def test_wrong_protocol_version_is_refused():
    frame = bytearray(P.encode(P.Ok()))
    frame[4] = P.PROTOCOL_VERSION + 1
    with pytest.raises(ProtocolError, match="protocol"):
        P.FrameReader().feed(bytes(frame))


def test_a_message_over_the_frame_limit_is_refused_by_its_sender(monkeypatch):
    """The receiver drops a peer that sends a frame over MAX_FRAME (it did, and the
    owner retried the task, sending it again): the sender refuses it instead, so only
    the call that made it fails. A ValueError too, as the caller passed too much."""
    from raylite import codec
    from raylite.exceptions import MessageTooLargeError

    monkeypatch.setattr(codec, "MAX_FRAME", 1000)
    P.encode(P.GetObject(b"x" * 16))  # small ones pass
    with pytest.raises(MessageTooLargeError, match="GetObject message of") as info:
        P.encode(P.GetObject(b"x" * 2000))
    assert isinstance(info.value, ValueError)
    header = codec.HEADER.pack(2000, P.PROTOCOL_VERSION)
    with pytest.raises(ProtocolError, match="too large"):  # and a receiver refuses one
        P.FrameReader().feed(header + b"\0" * 10)
    with pytest.raises(ProtocolError, match="too large"):  # whole, in one read
        P.FrameReader().feed(header + b"\0" * 2000)


@pytest.mark.parametrize("junk", [b"\xc1", b"\x92\x7f\x01", b"\x93\xcc\xff\x00\x00", b""])
def test_malformed_bodies_raise_protocol_error(junk):
    with pytest.raises(ProtocolError):
        P.decode(junk)


# --- every type has a receiver ------------------------------------------------------------
def _isinstance_dispatch(fn: Any) -> set[type]:
    """The message types a core-worker handler tells apart (`isinstance(msg, P.X)`)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    found = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "isinstance"
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id == "msg"
            and isinstance(node.args[1], ast.Attribute)
        ):
            found.add(getattr(P, node.args[1].attr))
    return found


class _NoStorage:
    url = "memory"

    def get(self, table: str, key: Any) -> None:
        return None

    def scan(self, table: str) -> dict[Any, Any]:
        return {}


def test_every_message_type_has_a_receiver():
    """Each type is found by type in a handler table: the node manager's and the head's
    (dicts keyed by message type), or a core worker's (its node manager's messages, and
    calls from owners and borrowers). What is only ever a reply needs none: the
    requester's pending request takes it."""
    from raylite.core.core_worker import CoreWorker
    from raylite.head.head import Head
    from raylite.node.manager import NodeManager
    from raylite.worker import Worker

    nm = NodeManager.__new__(NodeManager)
    NodeManager.__init__(nm, "/nonexistent", "/nonexistent", b"t" * 32, {}, 0, 0)
    head = Head(nm, _NoStorage(), 10.0)  # type: ignore[arg-type]
    by_node_manager = set(nm.handlers) | set(head.handlers)
    by_core_worker = (
        _isinstance_dispatch(CoreWorker._handle_nm)
        | _isinstance_dispatch(CoreWorker._handle_inbound)
        | _isinstance_dispatch(Worker._nm_message)
    )
    only_replies = {
        P.ClientRegistered,
        P.Ok,
        P.Failed,
        P.LeaseGranted,
        P.ClusterInfo,
        P.ActorInfo,
        P.Timeline,
        P.TaskDone,
        P.TaskBounced,
        P.ObjectValue,
        P.ObjectReserved,
        P.StoreStats,
        P.AssignedResources,
        P.NamedActor,
        P.LeaseSpillback,
        P.ObjectStream,
        P.NodeRegistered,
        P.NodeStatus,
        P.JobRegistered,
        P.StateList,
        P.TaskSummary,
        P.Logs,
        P.PlacementGroupCreated,
        P.PlacementGroupReady,
        P.PlacementGroupRows,
        P.PackageData,
        P.WorkerFailureCause,
    }
    handled = by_node_manager | by_core_worker
    assert not only_replies & handled, "a reply with a handler: take it out of only_replies"
    all_types = set(P.message_types().values())
    assert all_types - handled - only_replies == set(), "a message type nobody receives"
    assert handled | only_replies <= all_types
