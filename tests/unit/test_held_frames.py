"""Connection.hold and the reader thread's batched writes (transport.py): frames held
go out before any later frame, in the order written, and a read's replies leave in one
send."""

from __future__ import annotations

import queue
import socket

from raylite import protocol as P
from raylite.protocol import FrameReader, decode, encode
from raylite.transport import Connection


def _frames(sock: socket.socket, n: int) -> list[tuple[object, int]]:
    reader = FrameReader()
    out: list[tuple[object, int]] = []
    sock.settimeout(10)
    while len(out) < n:
        data = sock.recv(1 << 16)
        assert data, "closed early"
        out.extend(decode(body) for body in reader.feed(data))
    return out


def test_held_frames_go_first_in_order_with_the_next_send():
    a, b = socket.socketpair()
    conn = Connection(a, lambda c, m, r: None, name="t").start()
    try:
        conn.hold(P.Ok(), 1)
        conn.hold(P.Ok(), 2)
        b.setblocking(False)
        try:
            assert b.recv(1) == b""  # nothing sent yet
            raise AssertionError("a held frame was sent")
        except BlockingIOError:
            pass
        conn.reply(3, P.Ok())
        assert [rid for _, rid in _frames(b, 3)] == [-1, -2, -3]
        conn.hold(P.Ok(), 4)
        conn.flush()
        assert [rid for _, rid in _frames(b, 1)] == [-4]
    finally:
        conn.close()
        b.close()


def test_replies_to_one_reads_requests_leave_together_and_in_order():
    a, b = socket.socketpair()
    seen: queue.Queue[int] = queue.Queue()

    def handler(conn: Connection, msg: object, rid: int) -> None:
        conn.reply(rid, P.Ok())  # on the reader thread: held until the read is handled
        seen.put(rid)

    conn = Connection(a, handler, name="t").start()
    try:
        b.sendall(b"".join(encode(P.Ok(), rid) for rid in (1, 2, 3)))
        assert [rid for _, rid in _frames(b, 3)] == [-1, -2, -3]
        assert [seen.get(timeout=10) for _ in range(3)] == [1, 2, 3]
    finally:
        conn.close()
        b.close()
