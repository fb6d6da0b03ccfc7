"""The frame codec: every message type round-trips, and every type has a receiver."""

from __future__ import annotations

import dataclasses

import pytest

from raylite import protocol as P
from raylite.exceptions import ProtocolError

SAMPLES = {
    bytes: b"\x01\x02",
    "bytes | None": b"\x03",
    str: "text",
    int: 7,
    bool: True,
    float: 1.5,
}


def _sample(field: dataclasses.Field) -> object:
    t = str(field.type)
    if "list" in t:
        return [[1, "a", b"b"]]
    if "dict" in t:
        return {"CPU": 10000}
    if "bytes" in t:
        return b"\x00\xff" * 8
    if t == "str":
        return "hello"
    if t == "int":
        return 42
    if t == "float":
        return 3.25
    if t == "bool":
        return True
    return None


@pytest.mark.parametrize("cls", sorted(P.message_types().values(), key=lambda c: c.TAG))
def test_every_message_round_trips(cls):
    values = {f.name: _sample(f) for f in dataclasses.fields(cls)}
    msg = cls(**values)
    frame = P.encode(msg, 5)
    reader = P.FrameReader()
    bodies = reader.feed(frame[:3]) + reader.feed(frame[3:])
    assert len(bodies) == 1
    decoded, rid = P.decode(bodies[0])
    assert rid == 5
    assert decoded == msg


def test_frames_split_anywhere_are_reassembled():
    msgs = [P.GetObject(bytes([i]) * 16) for i in range(50)]
    stream = b"".join(P.encode(m, i + 1) for i, m in enumerate(msgs))
    reader = P.FrameReader()
    out = []
    for i in range(0, len(stream), 7):
        out += reader.feed(stream[i : i + 7])
    assert [P.decode(b)[0] for b in out] == msgs


def test_wrong_protocol_version_is_refused():
    frame = bytearray(P.encode(P.Ok()))
    frame[4] = P.PROTOCOL_VERSION + 1
    with pytest.raises(ProtocolError, match="protocol"):
        P.FrameReader().feed(bytes(frame))


@pytest.mark.parametrize("junk", [b"\xc1", b"\x92\x7f\x01", b"\x93\xcc\xff\x00\x00", b""])
def test_malformed_bodies_raise_protocol_error(junk):
    with pytest.raises(ProtocolError):
        P.decode(junk)


def test_every_message_type_has_a_receiver():
    from raylite.node.manager import NodeManager

    nm = NodeManager.__new__(NodeManager)
    NodeManager.__init__(nm, "/nonexistent", "/nonexistent", b"t" * 32, {}, 0, 0)
    handled_by_node_manager = set(nm.handlers)
    # Sent by the node manager or peers to core workers, or replies to requests.
    handled_by_core_worker = {
        P.LogLines,
        P.ClientDied,
        P.LeaseInfeasible,
        P.FlushEvents,
        P.Exit,
        P.PushTask,
        P.CancelTask,
        P.GetObject,
        P.AddBorrower,
        P.RemoveBorrower,
        P.NodeDied,
    }
    replies = {
        P.ClientRegistered,
        P.Ok,
        P.Failed,
        P.LeaseGranted,
        P.ClusterInfo,
        P.ActorInfo,
        P.Timeline,
        P.TaskDone,
        P.ObjectValue,
        P.ObjectReserved,
        P.StoreStats,
        P.NamedActor,
        P.LeaseSpillback,
        P.ObjectStream,
        P.NodeRegistered,
        P.ClusterView,
        P.NodeStatus,
        P.JobRegistered,
        P.StateList,
        P.TaskSummary,
        P.Logs,
    }
    all_types = set(P.message_types().values())
    assert all_types == handled_by_node_manager | handled_by_core_worker | replies
