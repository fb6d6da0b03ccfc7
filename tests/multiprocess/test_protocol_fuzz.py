"""Structured fuzzing of the wire after the handshake, against a live node manager (the
head's handlers included: init() runs the head in the node manager), a pooled worker and
the driver's own listener: every message type with a field of the wrong type, frames of
the wrong shape, unknown tags, corrupt bytes, huge and truncated length prefixes.

Each case opens an authenticated connection (transport.Connection.connect, as any peer
does) and asserts that the peer closes it; at the end the processes are the same ones and
the cluster still runs tasks. Hypothesis is derandomized (the same cases on every run)
and bounded so that the file runs in well under a minute.
"""

from __future__ import annotations

import collections.abc
import enum
import os
import socket
import struct
import threading
import types
import typing
from typing import Any

import msgpack
import pytest

from tests._engine import AGAINST_RAY, ray

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = pytest.mark.skipif(AGAINST_RAY, reason="raylite's own wire protocol")

CLOSE_WAIT_S = 10.0
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@ray.remote
def add(a, b):
    return a + b


def _pid_of(path: str) -> int:
    """The process listening on a Unix socket (SO_PEERCRED), without a handshake."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        cred = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", cred)[0]
    finally:
        s.close()


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2)
    cw = ray.api._runtime.cw
    assert ray.get(add.remote(1, 2)) == 3  # a worker is up
    session = os.path.dirname(cw.address[5:])
    workers = sorted(f for f in os.listdir(session) if f.startswith("w-"))
    assert workers
    targets = {
        "node_manager": cw.node_address,
        "worker": f"unix:{session}/{workers[0]}",
        "driver": cw.address,
    }
    pids = {name: _pid_of(address[5:]) for name, address in targets.items()}
    yield cw, targets
    # Nothing else broke: the same processes serve, and the cluster runs tasks.
    assert {name: _pid_of(address[5:]) for name, address in targets.items()} == pids
    assert ray.get([add.remote(i, 1) for i in range(20)]) == list(range(1, 21))
    ray.shutdown()


TARGETS = ["node_manager", "worker", "driver"]


# --- sending a case and seeing the connection closed -------------------------------------
def _closed_after(cw: Any, address: str, data: bytes, shut_write: bool = False) -> bool:
    """Send `data` on a fresh authenticated connection: True if the peer closes it."""
    from raylite.transport import Connection

    closed = threading.Event()
    conn = Connection.connect(
        address, cw.token, lambda c, m, r: None, name="fuzz", on_close=lambda c: closed.set()
    )
    try:
        try:
            conn.sock.sendall(data)
            if shut_write:  # what a peer that dies in the middle of a frame looks like
                conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # it closed before reading all of it: what we wait for below
        return closed.wait(CLOSE_WAIT_S)
    finally:
        conn.close()


def _frame(body: bytes, version: int | None = None, length: int | None = None) -> bytes:
    from raylite import codec

    return (
        codec.HEADER.pack(
            len(body) if length is None else length,
            codec.PROTOCOL_VERSION if version is None else version,
        )
        + body
    )


def _pack(items: Any) -> bytes:
    from raylite import codec

    return msgpack.packb(items, use_bin_type=True, default=codec.nested)


# --- the message types and what their fields accept --------------------------------------
def _messages() -> list[type]:
    from raylite import protocol as P

    return sorted(P.message_types().values(), key=lambda c: c.TAG)


def _hints(cls: type) -> list[Any]:
    hints = typing.get_type_hints(cls)
    return [hints[name] for name in cls._names]  # type: ignore[attr-defined]


def _kinds(hint: Any) -> set[type] | None:
    """The Python types (as msgpack gives them back) a field of type `hint` may hold at
    its top level; None: anything (Any). A value of another type is certainly wrong."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return None
    if origin is types.UnionType or origin is typing.Union:
        out: set[type] = set()
        for arg in typing.get_args(hint):
            kinds = _kinds(arg)
            if kinds is None:
                return None
            out |= kinds
        return out
    if hint is type(None):
        return {type(None)}
    if origin in (list, collections.abc.Sequence) or origin is tuple:
        return {list}
    if isinstance(hint, type) and (issubclass(hint, tuple) or hasattr(hint, "TAG")):
        return {list}  # a record, or a message inside a message: an array of its fields
    if origin is dict:
        return {dict}
    if isinstance(hint, type) and issubclass(hint, enum.IntEnum):
        return {int}
    if hint is float:
        return {int, float}
    return {hint}


def _sample(hint: Any) -> Any:
    """A valid value of type `hint` (records and messages as their fields)."""
    from raylite import protocol as P

    origin = typing.get_origin(hint)
    if origin is types.UnionType or origin is typing.Union:
        return _sample(next(a for a in typing.get_args(hint) if a is not type(None)))
    if origin in (list, collections.abc.Sequence):
        return [_sample(typing.get_args(hint)[0])]
    if origin is dict:
        key, value = typing.get_args(hint)
        return {_sample(key): _sample(value)}
    if hint is Any:
        return [1, "a"]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return next(iter(hint))
    if isinstance(hint, type) and issubclass(hint, tuple):  # a record
        hints = typing.get_type_hints(hint)
        if "kind" in hint._fields:  # a value: INLINE, its data bytes
            return [_sample(hints[f]) if f != "kind" else P.INLINE for f in hint._fields]
        return [_sample(hints[f]) for f in hint._fields]
    if isinstance(hint, type) and hasattr(hint, "TAG"):
        return [_sample(h) for h in _hints(hint)]
    return {bytes: b"\x01" * 16, str: "fuzz", int: 3, float: 1.5, bool: True}[hint]


WRONG = [None, True, -7, 2.5, "text", b"bytes", [1, "x"], {"k": 1}, 1 << 63]


def _wrong_values(hint: Any) -> list[Any]:
    kinds = _kinds(hint)
    if kinds is None:
        return []
    return [v for v in WRONG if type(v) not in kinds]


def _checkable(cls: type) -> list[int]:
    """The fields a wrong top-level type can be given to (not those typed Any)."""
    return [i for i, hint in enumerate(_hints(cls)) if _wrong_values(hint)]


# --- every message type, every field, once ------------------------------------------------
@pytest.mark.parametrize("target", TARGETS)
def test_every_message_type_with_a_wrong_field_type_is_closed(cluster, target):
    """Each field of each message type in turn gets a value of a type it never takes,
    the others valid: the peer closes the connection (it decodes nothing of the wrong
    type). A type without fields gets an extra one."""
    cw, targets = cluster
    address = targets[target]
    cases = 0
    for cls in _messages():
        fields = [_sample(h) for h in _hints(cls)]
        if not fields:
            body = _pack([cls.TAG, 1, "extra"])
            assert _closed_after(cw, address, _frame(body)), f"{cls.__name__} + a field"
            cases += 1
            continue
        for i in _checkable(cls):
            wrong = _wrong_values(_hints(cls)[i])
            bad = list(fields)
            bad[i] = wrong[(cls.TAG + i) % len(wrong)]
            body = _pack([cls.TAG, 1, *bad])
            name = f"{cls.__name__}.{cls._names[i]} = {bad[i]!r}"
            assert _closed_after(cw, address, _frame(body)), name
            cases += 1
    assert cases > 200


# --- hypothesis: fields, shapes, framing --------------------------------------------------
ANY_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def wrong_field_frames(draw: Any) -> tuple[str, bytes]:
    """A message type, its fields valid but one of a type it never takes (any value)."""
    cls = draw(st.sampled_from([c for c in _messages() if _checkable(c)]))
    i = draw(st.sampled_from(_checkable(cls)))
    kinds = _kinds(_hints(cls)[i])
    assert kinds is not None
    value = draw(ANY_VALUE.filter(lambda v: type(v) not in kinds))
    fields = [_sample(h) for h in _hints(cls)]
    fields[i] = value
    rid = draw(st.integers(min_value=-(1 << 31), max_value=1 << 31))
    return f"{cls.__name__}.{cls._names[i]} = {value!r}", _frame(_pack([cls.TAG, rid, *fields]))


@st.composite
def wrong_shape_frames(draw: Any) -> tuple[str, bytes]:
    """Valid msgpack that is not [tag, request_id, field...] of a known message: another
    type of body, an unknown tag, a request id that is no int, a field missing or extra."""
    known = {c.TAG for c in _messages()}
    cls = draw(st.sampled_from(_messages()))
    fields = [_sample(h) for h in _hints(cls)]
    kind = draw(st.sampled_from(["body", "tag", "rid", "missing", "extra"]))
    if kind == "body":
        items = draw(ANY_VALUE.filter(lambda v: not isinstance(v, list) or len(v) < 2))
    elif kind == "tag":
        tag = draw(
            st.integers(min_value=-(1 << 40), max_value=1 << 40).filter(lambda t: t not in known)
            | st.text(max_size=4)
            | st.none()
            | st.binary(max_size=2)
        )
        items = [tag, 1, *fields]
    elif kind == "rid":
        items = [
            cls.TAG,
            draw(st.text(max_size=3) | st.none() | st.floats() | st.binary()),
            *fields,
        ]
    elif kind == "missing":
        if not fields:
            items = [cls.TAG]
        else:
            items = [cls.TAG, 1, *fields[: draw(st.integers(0, len(fields) - 1))]]
    else:
        items = [cls.TAG, 1, *fields, *draw(st.lists(ANY_VALUE, min_size=1, max_size=3))]
    return f"{kind}: {items!r}"[:300], _frame(_pack(items))


@st.composite
def bad_framing(draw: Any) -> tuple[str, bytes, bool]:
    """Bytes that break the framing: corrupt bodies, a wrong version, a length over the
    limit, a frame cut short (the peer then shuts its side: EOF in mid-frame)."""
    from raylite import codec

    kind = draw(st.sampled_from(["junk body", "version", "huge", "truncated", "flipped"]))
    if kind == "junk body":
        body = draw(st.binary(min_size=1, max_size=64))
        return kind, _frame(body), False
    if kind == "version":
        version = draw(st.integers(0, 255).filter(lambda v: v != codec.PROTOCOL_VERSION))
        return kind, _frame(_pack([3, 1]), version=version), False
    if kind == "huge":
        length = draw(st.integers(min_value=codec.MAX_FRAME + 1, max_value=(1 << 32) - 1))
        return f"length {length}", _frame(b"", length=length), False
    if kind == "truncated":
        cls = next(c for c in _messages() if c.__name__ == "PushTask")
        frame = _frame(_pack([cls.TAG, 1, *[_sample(h) for h in _hints(cls)]]))
        cut = draw(st.integers(1, len(frame) - 1))
        return f"cut at {cut}", frame[:cut], True
    # A valid frame of a message with fields, with some of its body's bytes changed.
    cls = draw(st.sampled_from([c for c in _messages() if _hints(c)]))
    body = bytearray(_pack([cls.TAG, 1, *[_sample(h) for h in _hints(cls)]]))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(body) - 1))
        body[at] = draw(st.integers(0, 255))
    return f"{cls.__name__} flipped", _frame(bytes(body)), False


@pytest.mark.parametrize("target", TARGETS)
@FUZZ
@given(case=wrong_field_frames())
def test_fuzzed_field_types_close_the_connection(cluster, target, case):
    cw, targets = cluster
    what, frame = case
    assert _closed_after(cw, targets[target], frame), what


@pytest.mark.parametrize("target", TARGETS)
@FUZZ
@given(case=wrong_shape_frames())
def test_fuzzed_shapes_and_unknown_tags_close_the_connection(cluster, target, case):
    cw, targets = cluster
    what, frame = case
    assert _closed_after(cw, targets[target], frame), what


@pytest.mark.parametrize("target", TARGETS)
@FUZZ
@given(case=bad_framing())
def test_fuzzed_framing_closes_the_connection(cluster, target, case):
    """Corrupt bytes that still decode as a valid message (a flipped byte in a string)
    are not sent: a valid message may do what it says (free an object, stop a node)."""
    from raylite import codec
    from raylite.exceptions import ProtocolError

    cw, targets = cluster
    what, frame, shut_write = case
    valid = False
    if not shut_write and len(frame) > 5:
        try:
            for body in codec.FrameReader().feed(frame):
                codec.decode(body)
                valid = True
        except ProtocolError:
            pass
    hypothesis.assume(not valid)
    assert _closed_after(cw, targets[target], frame, shut_write), what


def test_the_cluster_still_runs_tasks_after_the_fuzzing(cluster):
    assert ray.get([add.remote(i, i) for i in range(10)]) == [2 * i for i in range(10)]


# --- valid messages that the peer does not take, or with values it cannot serve ----------
def _not_taken(target: str) -> list[Any]:
    """Valid one-way messages that `target` serves no handler for (replies, and another
    role's requests)."""
    from raylite import protocol as P

    replies = [
        P.TaskDone([], 1),
        P.ClientRegistered(b"n" * 16, b"j" * 4, "/nowhere", {}),
        P.ObjectValue(P.ERROR, b"x"),
        P.ClusterInfo({}, {}, []),
    ]
    if target == "node_manager":
        return [*replies, P.LeaseGranted(b"l" * 16, b"w" * 16, "unix:/nowhere", 1, [])]
    return [*replies, P.RequestLease(b"l" * 16, {"CPU": 10000}, None), P.GetClusterInfo()]


@pytest.mark.parametrize("target", TARGETS)
def test_a_valid_message_the_peer_does_not_take_is_closed(cluster, target):
    from raylite import protocol as P

    cw, targets = cluster
    for msg in _not_taken(target):
        assert _closed_after(cw, targets[target], P.encode(msg)), type(msg).__name__


@FUZZ
@given(kind=st.text(max_size=8).filter(lambda k: k not in ("driver", "worker", "cli")))
def test_a_client_of_an_unknown_kind_is_closed_and_not_taken_for_a_driver(cluster, kind):
    """It was registered as a driver: its close then stopped init()'s node manager."""
    from raylite import protocol as P

    cw, targets = cluster
    hello = P.RegisterClient(kind, b"w" * 16, 1, "unix:/nowhere", {})
    assert _closed_after(cw, targets["node_manager"], P.encode(hello, 1)), kind


def _answered_or_closed(cw: Any, address: str, msg: Any, ping: Any, *, reply: bool = True) -> str:
    """Send `msg` (a request if `reply`, else one-way), then `ping` (a request always
    answered): "answered" once the peer answered them, "closed" if it closes the
    connection instead; fails if it does neither (a hung or dead peer)."""
    from raylite.exceptions import ConnectionLost
    from raylite.transport import Connection

    need = 2 if reply else 1
    got: list[Any] = []
    done = threading.Event()

    def on_reply(answer: Any) -> None:
        got.append(answer)
        if len(got) == need:
            done.set()

    conn = Connection.connect(
        address, cw.token, lambda c, m, r: None, name="fuzz", on_close=lambda c: done.set()
    )
    try:
        try:
            if reply:
                conn.request_async(msg, on_reply)
            else:
                conn.send(msg)
            conn.request_async(ping, on_reply)
        except ConnectionLost:  # closed on the first already
            return "closed"
        assert done.wait(CLOSE_WAIT_S), f"no answer to {msg!r}"
        lost = len(got) < need or any(isinstance(r, ConnectionLost) for r in got)
        return "closed" if lost else "answered"
    finally:
        conn.close()


TEXT = st.text(max_size=16)
BLOB = st.binary(max_size=24)
INT = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)


def _queries() -> st.SearchStrategy[Any]:
    """Requests a node manager answers without changing anything, with any values of
    the right types: each must be answered (an error reply is fine), never crash it."""
    from raylite import protocol as P

    # Not GetActorInfo: of an actor the head does not know, it waits for the actor to
    # be reported (a borrower may ask before its owner registers it), by design.
    return st.one_of(
        st.builds(P.GetNamedActor, TEXT, TEXT),
        st.builds(
            P.ListState,
            st.sampled_from(["tasks", "actors", "objects", "nodes", "workers", "jobs"]) | TEXT,
            st.lists(
                st.builds(P.Filter, TEXT, st.sampled_from(["=", "!="]) | TEXT, ANY_VALUE),
                max_size=2,
            ),
            INT,
            st.booleans(),
        ),
        st.builds(P.GetLogs, INT, st.none() | BLOB, st.none() | BLOB, INT, INT),
        st.builds(P.GetAssignedResources, BLOB),
        # A pull from a node that is none: a malformed address stopped the node (the
        # pull's ValueError crashed its background task), a negative size was taken.
        st.builds(
            P.FetchObject,
            BLOB,
            TEXT | st.sampled_from(["tcp:127.0.0.1:1", "unix:/nowhere", "tcp:x", "tcp:h:port"]),
            st.integers(min_value=-(1 << 40), max_value=1 << 40),
            TEXT,
        ),
        st.builds(P.GetStoreStats),
        st.builds(P.SummarizeTasks),
        st.builds(P.GetNodeStatus),
    )


@settings(FUZZ, max_examples=60)
@given(msg=st.deferred(_queries))
def test_queries_with_any_values_are_answered(cluster, msg):
    from raylite import protocol as P

    cw, targets = cluster
    outcome = _answered_or_closed(cw, targets["node_manager"], msg, P.GetClusterInfo())
    assert outcome == "answered", msg


def _owner_requests() -> st.SearchStrategy[Any]:
    """What a borrower asks an owner (a worker or a driver), any values of the right types."""
    from raylite import protocol as P

    return st.builds(P.GetObject, BLOB) | st.builds(P.AddBorrower, BLOB, TEXT)


@pytest.mark.parametrize("target", ["worker", "driver"])
@settings(FUZZ, max_examples=30)
@given(msg=st.deferred(_owner_requests))
def test_owner_requests_with_any_values_are_answered(cluster, target, msg):
    from raylite import protocol as P

    cw, targets = cluster
    ping = P.GetObject(b"\xff" * 16)
    assert _answered_or_closed(cw, targets[target], msg, ping) == "answered", msg


# --- every message type with any values of the right types --------------------------------
# Not sent: what stops the node or names other processes' lives by design (a valid one does
# what it says), and what registers a node, a driver, a lease or an actor that would stay.
NOT_SENT = {
    "ShutdownNode",
    "RegisterClient",
    "RegisterNode",
    "Heartbeat",
    "NodeDied",
    "ClientDied",
    "RequestLease",
    "CreateDetached",
    "RegisterDetached",
    "StartActor",
    "CreatePlacementGroup",
    "RemovePlacementGroup",
    "PrepareBundles",
    "CommitBundles",
}


def _values(hint: Any) -> st.SearchStrategy[Any]:
    """Any value of type `hint`, records and messages included."""
    origin = typing.get_origin(hint)
    if origin is types.UnionType or origin is typing.Union:
        return st.one_of([_values(a) for a in typing.get_args(hint)])
    if hint is type(None):
        return st.none()
    if origin in (list, collections.abc.Sequence):
        return st.lists(_values(typing.get_args(hint)[0]), max_size=3)
    if origin is dict:
        key, value = typing.get_args(hint)
        return st.dictionaries(_values(key), _values(value), max_size=3)
    if hint is Any:
        return ANY_VALUE
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from(list(hint))
    if isinstance(hint, type) and issubclass(hint, tuple):  # a record
        hints = typing.get_type_hints(hint)
        return st.tuples(*[_values(hints[f]) for f in hint._fields]).map(lambda t: hint(*t))
    if isinstance(hint, type) and hasattr(hint, "TAG"):
        return st.tuples(*[_values(h) for h in _hints(hint)]).map(lambda t: hint(*t))
    return {bytes: BLOB, str: TEXT, int: INT, float: st.floats(), bool: st.booleans()}[hint]


@pytest.mark.parametrize(
    "cls", [c for c in _messages() if c.__name__ not in NOT_SENT], ids=lambda c: c.__name__
)
@settings(FUZZ, max_examples=4)
@given(data=st.data())
def test_every_message_type_with_any_values_leaves_the_node_serving(cluster, cls, data):
    """Well-typed, any values: the node manager handles it or closes the connection (a
    handler that raises on them: logged with its traceback), and goes on serving; a
    value it could not take stopped it (a FetchObject's or ReturnLease's address that
    is none crashed a background task)."""
    from raylite import protocol as P

    cw, targets = cluster
    msg = data.draw(_values(cls), label="msg")
    _answered_or_closed(cw, targets["node_manager"], msg, P.GetClusterInfo(), reply=False)
