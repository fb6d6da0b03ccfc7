"""Connection.hold: a frame written now and sent with the next send or flush. What it
was told to run should the frame never be sent (on_lost) runs exactly once when a send
that carried it fails or the connection closes first, and never once it went out (a
worker's held task reply: its stored returns are dropped, DropReturn)."""

from __future__ import annotations

import socket
import threading

import pytest

from raylite import protocol as P
from raylite.exceptions import ConnectionLost
from raylite.protocol import FrameReader, decode
from raylite.transport import Connection

pytestmark = pytest.mark.timeout(60)


class Held:
    def __init__(self) -> None:
        a, self.peer = socket.socketpair()
        self.closed = threading.Event()
        self.conn = Connection(
            a, lambda c, m, r: None, name="held", on_close=lambda c: self.closed.set()
        ).start()
        self.lost: list[str] = []

    def hold(self, name: str, rid: int) -> None:
        self.conn.hold(P.Ok(), rid, on_lost=lambda: self.lost.append(name))

    def received(self) -> list[int]:
        """The request ids of the replies the peer has got."""
        self.peer.settimeout(10)
        reader, rids = FrameReader(), []
        while len(rids) < 3:
            rids += [-decode(body)[1] for body in reader.feed(self.peer.recv(1 << 16))]
        return rids


@pytest.fixture
def held():
    h = Held()
    yield h
    h.conn.close()
    h.peer.close()


def test_held_frames_sent_by_a_flush_or_a_send_never_count_as_lost(held: Held):
    held.hold("a", 1)
    held.hold("b", 2)
    held.conn.flush()
    held.hold("c", 3)
    held.conn.send(P.Ok())  # carries c first
    assert held.received()[:3] == [1, 2, 3]
    held.conn.close()  # (joins the reader thread: its end has run)
    assert held.lost == []


def test_held_frames_a_failed_send_carried_are_lost_once(held: Held):
    held.hold("a", 1)
    held.hold("b", 2)
    held.peer.shutdown(socket.SHUT_RD)  # it reads no more: our sends fail, our reads wait
    with pytest.raises(ConnectionLost):
        held.conn.send(P.Ok())  # carries a and b
    assert held.lost == ["a", "b"]  # run by the failed send, on this thread
    assert held.closed.wait(10)  # the reader thread's end runs none of them again
    assert held.lost == ["a", "b"]


def test_frames_held_when_the_connection_closes_are_lost(held: Held):
    held.hold("a", 1)
    held.hold("b", 2)
    held.peer.close()  # the reader thread sees the end
    assert held.closed.wait(10)
    assert held.lost == ["a", "b"]
    with pytest.raises(ConnectionLost):
        held.hold("x", 3)  # nothing is held on a closed connection
