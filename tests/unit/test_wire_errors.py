"""A peer that breaks the protocol after the handshake, in-process: the frame limit is
checked before a body is read, every malformed body is a ProtocolError that says what is
wrong, and both transports close that one connection with one log line naming the peer
(a handler that raises on a message too), while other connections go on."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from typing import Any

import msgpack
import pytest

from raylite import codec
from raylite import protocol as P
from raylite.exceptions import ProtocolError
from raylite.transport import Connection
from raylite.transport_async import AsyncConnection


def _body(items: Any) -> bytes:
    return msgpack.packb(items, use_bin_type=True, default=codec.nested)


def _frame(body: bytes) -> bytes:
    return codec.HEADER.pack(len(body), P.PROTOCOL_VERSION) + body


# --- the frame limit ---------------------------------------------------------------------
def test_a_header_over_the_limit_is_refused_before_its_body_arrives(monkeypatch):
    monkeypatch.setattr(codec, "MAX_FRAME", 1000)
    reader = codec.FrameReader()
    assert reader.feed(codec.HEADER.pack(1000, P.PROTOCOL_VERSION) + b"x" * 1000) == [b"x" * 1000]
    with pytest.raises(ProtocolError, match="1001 bytes is too large"):
        reader.feed(codec.HEADER.pack(1001, P.PROTOCOL_VERSION))  # no body sent at all
    monkeypatch.undo()
    with pytest.raises(ProtocolError, match="too large"):  # the u32 maximum, by default
        codec.FrameReader().feed(codec.HEADER.pack((1 << 32) - 1, P.PROTOCOL_VERSION))


def test_the_default_limit_admits_the_largest_real_frames():
    """A remote driver's PushChunk and a task's inline arguments (half the limit) fit."""
    from raylite.core.remote_driver import PUSH_CHUNK
    from raylite.core.submission import MAX_ARGS_SIZE

    chunk = P.PushChunk(b"o" * 16, 0, b"x" * PUSH_CHUNK, False)
    (body,) = codec.FrameReader().feed(P.encode(chunk, 1))
    assert P.decode(body) == (chunk, 1)
    assert MAX_ARGS_SIZE * 2 <= codec.MAX_FRAME < 1 << 32


# --- malformed bodies --------------------------------------------------------------------
GET = P.GetObject.TAG
DONE = P.TaskDone.TAG
MALFORMED = {
    "not msgpack": (b"\xc1", "malformed"),
    "trailing bytes": (_body([GET, 1, b"o" * 16]) + b"\x00", "malformed GetObject"),
    "a map": (_body({"tag": GET}), "not a known message"),
    "an int": (_body(5), "not a known message"),
    "a map whose first key is a tag": (_body({GET: b"o" * 16}), "malformed GetObject"),
    "a tag as a uint8 that is no tag": (_body([200, 1]), "not a known message"),
    "an empty array": (_body([]), "not a known message"),
    "an unknown tag": (_body([127, 1]), "not a known message"),
    "a tag over 255": (_body([99999, 1, b"o"]), "not a known message"),
    "a tag as a string": (_body(["GetObject", 1, b"o"]), "not a known message"),
    "a request id as a string": (_body([GET, "1", b"o"]), "malformed GetObject"),
    "a field of the wrong type": (_body([GET, 1, "o"]), r"GetObject\.object_id"),
    "a field missing": (_body([GET, 1]), "malformed GetObject"),
    "a field extra": (_body([GET, 1, b"o", b"extra"]), "malformed GetObject"),
    "a record's field of the wrong type": (
        _body([DONE, 1, [[7, P.INLINE, b"v", {}]], 5, False]),
        r"TaskDone\.returns",
    ),
    "a record too short": (_body([DONE, 1, [[b"o", P.INLINE, b"v"]], 5, False]), "TaskDone"),
    "a stored value's size as a string": (
        _body([DONE, 1, [[b"o", P.IN_STORE, ["big", "tcp:h:1"], {}]], 5, False]),
        r"StoredAt\.size should be int",
    ),
    "a stored value that is bytes": (
        _body([DONE, 1, [[b"o", P.IN_STORE, b"x", {}]], 5, False]),
        "StoredAt should be a list",
    ),
    "an object value's stored node as bytes": (
        _body([P.ObjectValue.TAG, 1, P.IN_STORE, [10, b"h"]]),
        r"StoredAt\.node should be str",
    ),
    "a bool where an int goes": (_body([DONE, 1, [], True, False]), r"TaskDone\.worker_pid"),
    "a message inside a message of the wrong shape": (
        _body([P.StartActor.TAG, 1, b"a", "A", [b"t"], {}, 0, None]),
        r"StartActor\.push",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=str)
def test_a_malformed_body_is_a_protocol_error_saying_what_is_wrong(case):
    body, match = MALFORMED[case]
    with pytest.raises(ProtocolError, match=match):
        P.decode(body)


# --- the blocking transport --------------------------------------------------------------
def _pair(handler: Any) -> tuple[Connection, socket.socket, threading.Event]:
    ours, theirs = socket.socketpair()
    closed = threading.Event()
    conn = Connection(ours, handler, name="test-peer", on_close=lambda c: closed.set())
    return conn.start(), theirs, closed


def _protocol_errors(caplog: Any) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "protocol error from" in r.getMessage()]


def test_a_malformed_frame_closes_only_that_connection_and_names_the_peer(caplog):
    got: list[Any] = []
    more = threading.Event()
    conn, peer, closed = _pair(lambda c, m, r: got.append(m))
    other, other_peer, other_closed = _pair(lambda c, m, r: more.set())
    try:
        with caplog.at_level(logging.WARNING, logger="raylite.transport"):
            peer.sendall(P.encode(P.GetObject(b"a" * 16)) + _frame(_body([GET, 1, "o"])))
            assert closed.wait(5)
            assert peer.recv(10) == b""  # closed on its end too
        assert got == [P.GetObject(b"a" * 16)]  # what came before was handled
        (record,) = _protocol_errors(caplog)
        assert record.levelno == logging.WARNING
        assert f"protocol error from test-peer (pid {os.getpid()})" in record.getMessage()
        assert "GetObject.object_id" in record.getMessage()
        other_peer.sendall(P.encode(P.Ok()))  # the other connection still serves
        assert more.wait(5)
        assert not other_closed.is_set()
    finally:
        for c, s in ((conn, peer), (other, other_peer)):
            c.close()
            s.close()


def test_a_handler_that_raises_closes_that_connection_with_an_error_line(caplog):
    def handler(conn: Connection, msg: Any, rid: int) -> None:
        raise KeyError(msg.object_id)

    conn, peer, closed = _pair(handler)
    try:
        with caplog.at_level(logging.WARNING, logger="raylite.transport"):
            peer.sendall(P.encode(P.GetObject(b"a" * 16), 3))
            assert closed.wait(5)
        (record,) = _protocol_errors(caplog)
        assert record.levelno == logging.ERROR
        assert "handling GetObject raised KeyError" in record.getMessage()
        assert record.exc_info is not None  # the traceback: it may be a bug of ours
    finally:
        conn.close()
        peer.close()


# --- the asyncio transport ---------------------------------------------------------------
def _read_async(data: bytes, handler: Any) -> tuple[AsyncConnection, socket.socket]:
    """Run an AsyncConnection's read loop over `data` (then EOF from the peer)."""
    ours, theirs = socket.socketpair()
    theirs.sendall(data)
    theirs.shutdown(socket.SHUT_WR)

    async def main() -> AsyncConnection:
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        conn = AsyncConnection(reader, writer)
        conn.peer = "driver"
        await asyncio.wait_for(conn.read_loop(handler), 5)  # returns: never raises
        return conn

    return asyncio.run(main()), theirs


def test_the_async_loop_closes_on_a_malformed_frame_and_names_the_peer(caplog):
    got: list[Any] = []
    with caplog.at_level(logging.WARNING, logger="raylite.transport"):
        conn, peer = _read_async(
            P.encode(P.Ok()) + _frame(_body([999, 1])) + P.encode(P.Ok()),
            lambda c, m, r: got.append(m),
        )
    try:
        assert conn.closed
        assert got == [P.Ok()]  # nothing after the bad frame was read
        (record,) = _protocol_errors(caplog)
        assert record.levelno == logging.WARNING
        assert f"protocol error from driver (pid {os.getpid()})" in record.getMessage()
        assert "not a known message" in record.getMessage()
    finally:
        peer.close()


def test_the_async_loop_survives_a_handler_that_raises(caplog):
    """It used to raise out of read_loop: the node manager then skipped its disconnect
    (a worker's or driver's close went unnoticed) and asyncio logged an unhandled error."""

    def handler(conn: AsyncConnection, msg: Any, rid: int) -> None:
        raise ProtocolError("a GetObject is no message for this test")

    with caplog.at_level(logging.WARNING, logger="raylite.transport"):
        conn, peer = _read_async(P.encode(P.GetObject(b"a" * 16)), handler)
    try:
        assert conn.closed
        (record,) = _protocol_errors(caplog)
        assert record.levelno == logging.WARNING  # a ProtocolError: the peer's fault
        assert "no message for this test" in record.getMessage()
    finally:
        peer.close()
    with caplog.at_level(logging.WARNING, logger="raylite.transport"):
        caplog.clear()
        conn, peer = _read_async(P.encode(P.Ok()), lambda c, m, r: 1 / 0)
    try:
        (record,) = _protocol_errors(caplog)
        assert record.levelno == logging.ERROR
        assert "handling Ok raised ZeroDivisionError" in record.getMessage()
    finally:
        peer.close()
