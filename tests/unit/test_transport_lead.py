"""LeadableConnection (transport_lead.py): a waiting thread reads the connection itself
(leader/follower). What comes while it leads is handled in it, in order; otherwise the
reader thread handles it; a doorbell wakes the leader; the end of the connection, or a
failing handler, seen by the leader ends the connection as the reader thread would; a
signal that comes while the main thread handles a read waits until the read is done."""

from __future__ import annotations

import queue
import signal
import socket
import threading
import time

import pytest

from raylite import protocol as P
from raylite.config import CONFIG
from raylite.protocol import encode
from raylite.transport_lead import Doorbell, LeadableConnection, python_handled

pytestmark = pytest.mark.timeout(60)


class Pair:
    """A leadable connection on one end of a socketpair; `peer` is the other end."""

    def __init__(self, handler=None) -> None:
        a, self.peer = socket.socketpair()
        self.seen: queue.Queue[tuple[int, int]] = queue.Queue()  # (request id, thread)
        self.closed = threading.Event()
        self.conn = LeadableConnection(
            a, handler or self.record, name="t", on_close=lambda c: self.closed.set()
        ).start()
        self.doorbell = Doorbell()

    def record(self, conn: object, msg: object, rid: int) -> None:
        self.seen.put((rid, threading.get_ident()))

    def send(self, *rids: int) -> None:
        self.peer.sendall(b"".join(encode(P.Ok(), rid) for rid in rids))

    def close(self) -> None:
        self.conn.close()
        self.peer.close()
        self.doorbell.close()


@pytest.fixture
def pair():
    p = Pair()
    yield p
    p.close()


def test_without_a_leader_the_reader_thread_handles_what_comes(pair: Pair):
    pair.send(1, 2)
    got = [pair.seen.get(timeout=10) for _ in range(2)]
    assert [rid for rid, _ in got] == [1, 2]
    assert all(thread != threading.get_ident() for _, thread in got)


def test_a_leader_handles_what_comes_while_it_waits(pair: Pair):
    me = threading.get_ident()
    for round_ in range(20):  # each time the leader, not the reader thread, is woken
        sender = threading.Timer(0.01, pair.send, args=(2 * round_ + 1, 2 * round_ + 2))
        sender.start()
        while pair.seen.qsize() < 2:
            pair.conn.lead(pair.doorbell, 10)
        sender.join()
        got = [pair.seen.get_nowait() for _ in range(2)]
        assert got == [(2 * round_ + 1, me), (2 * round_ + 2, me)]


def test_the_doorbell_wakes_a_leader_with_nothing_to_read(pair: Pair):
    threading.Timer(0.05, pair.doorbell.ring).start()
    done = threading.Event()

    def watchdog() -> None:  # a missed doorbell would leave lead() waiting its 30 s
        if not done.wait(20):
            pair.send(99)

    threading.Thread(target=watchdog, daemon=True).start()
    pair.conn.lead(pair.doorbell, 30)
    done.set()
    assert pair.seen.empty()


def test_a_doorbell_rung_while_the_reader_thread_waits_too_reaches_the_leader(pair: Pair):
    """The reader thread began waiting after the leader (it handled a message while the
    leader was getting ready): the doorbell still wakes the leader, the only thread
    whose epoll watches it."""
    leader_ready = threading.Event()

    def slow(conn: object, msg: object, rid: int) -> None:
        pair.record(conn, msg, rid)
        if rid == 1:
            leader_ready.wait(10)  # the leader waits before this thread waits again

    pair.conn.handler = slow
    pair.send(1)

    def ring_soon() -> None:
        leader_ready.set()
        threading.Event().wait(0.05)  # the reader thread is back in epoll_wait by now
        pair.doorbell.ring()

    for _ in range(5):
        threading.Timer(0.01, ring_soon).start()
        pair.conn.lead(pair.doorbell, 30)  # returns on the doorbell, not after 30 s
        leader_ready.clear()
    pair.send(2)  # and the reader thread still reads
    got = {pair.seen.get(timeout=10)[0] for _ in range(2)}
    assert got == {1, 2}


def spin(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """CONFIG.lead_spin_s (RAYLITE_LEAD_SPIN_S) for this test."""
    config = CONFIG.replace(lead_spin_s=seconds)
    monkeypatch.setattr("raylite.transport_lead.CONFIG", config)


def test_a_polling_leader_gets_what_comes_and_the_reader_thread_sleeps_on(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
):
    """While a leader polls (its last wait was short), the socket is not armed in the
    reader thread's epoll: what comes is the leader's. (Both in one epoll instance,
    a message that came while the leader polled woke the reader thread instead.)"""
    spin(monkeypatch, 5.0)
    me = threading.get_ident()
    for round_ in range(5):
        pair.conn._spin = 5.0  # as after a short wait: it polls, never sleeps, meanwhile
        sender = threading.Timer(0.02, pair.send, args=(round_ + 1,))
        sender.start()
        while pair.seen.empty():
            pair.conn.lead(pair.doorbell, 10)
        sender.join()
        assert pair.seen.get_nowait() == (round_ + 1, me)
    pair.send(9)  # no leader now: the reader thread's again
    rid, thread = pair.seen.get(timeout=10)
    assert (rid, thread != me) == (9, True)


def test_a_leader_polls_after_a_short_wait_and_sleeps_after_a_long_one(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
):
    spin(monkeypatch, 0.5)
    assert pair.conn._spin == 0.0  # a new connection: no wait seen yet
    threading.Timer(0.05, pair.send, args=(1,)).start()  # comes while it leads: short
    while pair.seen.qsize() < 1:
        pair.conn.lead(pair.doorbell, 10)
    assert pair.conn._spin == 0.5
    threading.Timer(1.0, pair.send, args=(2,)).start()  # longer than it polls
    while pair.seen.qsize() < 2:
        pair.conn.lead(pair.doorbell, 10)
    assert pair.conn._spin == 0.0
    spin(monkeypatch, 0.0)  # RAYLITE_LEAD_SPIN_S=0: never
    threading.Timer(0.05, pair.send, args=(3,)).start()
    while pair.seen.qsize() < 3:
        pair.conn.lead(pair.doorbell, 10)
    assert pair.conn._spin == 0.0


@pytest.mark.parametrize("poll", [True, False])
def test_a_leader_told_not_to_poll_sleeps_at_once(
    pair: Pair, monkeypatch: pytest.MonkeyPatch, poll: bool
):
    """poll=False (a threaded or async actor's main thread: its calls run on other
    threads, whose GIL a polling thread would take) sleeps even after a short wait."""
    spin(monkeypatch, 5.0)
    pair.conn._spin = 5.0  # the last wait was short
    threading.Timer(0.3, pair.send, args=(1,)).start()
    cpu = time.thread_time()
    while pair.seen.empty():
        pair.conn.lead(pair.doorbell, 10, poll=poll)
    used = time.thread_time() - cpu
    assert (used > 0.05) is poll  # polled through the 0.3 s (CPU time), or slept


def test_a_doorbell_with_no_leader_is_dropped_by_the_reader_thread(pair: Pair):
    pair.doorbell.ring()
    pair.conn.lead(pair.doorbell, 0.001)  # registers it, and leaves at once
    pair.doorbell.ring()  # nobody leads: the reader thread takes it and goes on
    pair.send(7)
    rid, thread = pair.seen.get(timeout=10)
    assert rid == 7
    assert thread != threading.get_ident()


def test_a_doorbell_is_watched_by_the_connection_last_led_only():
    """A leader moving to another connection takes its doorbell along: a ring then
    wakes it there (watched by two epoll instances, a ring was seen to be lost)."""
    first, second = Pair(), Pair()
    try:
        bell = first.doorbell
        first.conn.lead(bell, 0.001)
        assert first.conn._doorbell == bell.fd
        for _ in range(10):
            threading.Timer(0.02, bell.ring).start()
            second.conn.lead(bell, 30)  # returns on the ring, not after 30 s
            assert second.conn._doorbell == bell.fd
            assert first.conn._doorbell == -1
    finally:
        first.close()
        second.close()


def test_the_end_read_by_a_leader_ends_the_connection_once(pair: Pair):
    pair.peer.shutdown(socket.SHUT_WR)
    while not pair.conn.closed:
        pair.conn.lead(pair.doorbell, 10)
    assert pair.closed.wait(10)  # the reader thread reported it (on_close)
    pair.conn._thread.join(10)
    assert not pair.conn._thread.is_alive()


def test_a_handler_failing_under_a_leader_drops_the_connection(caplog):
    def fails(conn: object, msg: object, rid: int) -> None:
        raise RuntimeError("handler broke")

    p = Pair(fails)
    try:
        p.send(1)
        while not p.conn.closed:
            p.conn.lead(p.doorbell, 10)
        assert p.closed.wait(10)
        assert "handler broke" in caplog.text
    finally:
        p.close()


def test_python_handled_lists_the_signals_a_python_handler_is_set_for():
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: None)
    try:
        assert signal.SIGUSR1 in python_handled()
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert signal.SIGUSR1 not in python_handled()  # the default: no Python code runs
