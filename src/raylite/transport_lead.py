"""A connection that a waiting thread can read itself (leader/follower).

Owns how two threads share one connection's reading: its reader thread, and a thread
that would otherwise sleep until the reader thread hands it something (a worker's main
thread between tasks). Not what the messages mean (the handler's, as on any
Connection) nor when a thread leads (worker.py).

Why: a sync round trip, `get(f.remote())`, used to wake two threads in the worker
(the reader thread took the push off the socket and woke the main thread to run it).
Each wake-up costs a futex call, a context switch and a hand-over of the GIL: 35% of
the round trip on a 2-core machine. A leader is woken by the kernel itself.

How: each thread waits in an epoll instance of its own, the socket registered in both
edge-triggered: the reader thread in the connection's, a leader in the leader's (made
at the first lead), beside its doorbell (an eventfd: other threads ring it when they
queue work for the leader). While a thread leads, the socket is disarmed in the
reader thread's epoll, and armed again when the lead ends (bytes that came after the
leader's last read are then an event there at once): what comes meanwhile wakes the
leader alone, and no thread at all while the leader polls (below). Either thread
reads everything that has come (MSG_DONTWAIT, until a short read) under one lock, so
frames stay in order and are handled one read at a time, as before.

A leader whose last wait on the connection was short (at most CONFIG.lead_spin_s: a
sync call's reply, the next call of a caller that waits for each) polls its epoll
for that long before it sleeps there. Waking a sleeping thread costs both sides
(the kernel's wake-up of another CPU, that CPU's way out of idle): on a 2-vCPU VM a
socket ping-pong takes 15.7 us a round trip sleeping and 5 us polling, and 20,000
sync actor calls take ~25% less time. A wait that was longer (a task that runs, an
idle worker) sleeps at once: polling costs at most lead_spin_s of CPU after a short
wait, and none while a program computes. The poll is a system call, so the GIL is
free for the process's other threads most of that time.

Only plain sockets: an SSL socket keeps decrypted bytes of its own that epoll cannot
see, so a TLS connection stays a Connection.
"""

from __future__ import annotations

import _signal
import _thread
import contextlib
import os
import select
import signal
import socket
import threading
from collections.abc import Callable
from time import monotonic
from typing import Any

from .config import CONFIG
from .protocol import FrameReader
from .transport import Connection

_EDGE = select.EPOLLIN | select.EPOLLET
_SOCKET = _EDGE | select.EPOLLRDHUP
# A socket event with any of these (the peer closed, an error): read until the end.
_ENDING = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
_READ_SIZE = 1 << 18
# The signals a program may set a Python handler for. Python runs such a handler in the
# main thread between any two bytecodes (whichever thread the signal came to, so
# blocking it in one thread does not help), and one that raises would cut a read's
# handling short: the main thread leads only while none has a handler that may raise
# (worker.py, core/blocking.py decide; SIGINT's is set aside: _DeferredSigint).
CATCHABLE = tuple(sorted(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}))


def python_handled() -> set[signal.Signals]:
    """The signals a Python handler is set for now: ~1.6 us for all 60 (_signal's
    getsignal: signal.getsignal makes an enum of each default handler, ~2 us each)."""
    return {s for s in CATCHABLE if callable(_signal.getsignal(s))}


class _DeferredSigint:
    """SIGINT's handler is set aside meanwhile (main thread only): a SIGINT that comes
    runs it after, where it may raise. A class, not a generator context manager: it
    wraps every read the main thread leads (~1.2 against ~2.9 us)."""

    __slots__ = ("came", "previous")

    def __enter__(self) -> None:
        self.previous = previous = _signal.getsignal(signal.SIGINT)
        if previous is not None:  # None: set outside Python, left alone
            self.came = False
            _signal.signal(signal.SIGINT, self._note)

    def _note(self, signum: int, frame: Any) -> None:
        self.came = True

    def __exit__(self, *exc: object) -> None:
        previous = self.previous
        if previous is None:
            return
        _signal.signal(signal.SIGINT, previous)
        if self.came:
            if callable(previous):
                previous(signal.SIGINT, None)
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)  # its default action, now


class Doorbell:
    """An eventfd a leader waits on beside its connection: threads that queue work for
    it ring it. Watched by one connection's epoll at a time (lead() moves it): an
    eventfd registered in two epoll instances was seen to lose a wake-up."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._on: LeadableConnection | None = None  # the connection whose epoll has it

    def ring(self) -> None:
        ring(self.fd)

    def watch_on(self, conn: LeadableConnection) -> None:
        """Be watched by `conn`'s epoll, and by no other (leader's lock held)."""
        if self._on is not conn:
            if self._on is not None:
                self._on.forget_doorbell()
            conn.watch_doorbell(self.fd)
            self._on = conn

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def ring(doorbell: int) -> None:
    with contextlib.suppress(OSError):
        os.eventfd_write(doorbell, 1)


def _hush(doorbell: int) -> None:
    with contextlib.suppress(OSError):  # BlockingIOError: another reader hushed it
        os.eventfd_read(doorbell)


class LeadableConnection(Connection):
    """A Connection whose reads another thread can take over while it waits: lead()."""

    def __init__(self, sock: socket.socket, handler: Any, **kwargs: Any) -> None:
        super().__init__(sock, handler, **kwargs)
        self._ep = select.epoll(2)  # the reader thread's
        self._ep.register(sock.fileno(), _SOCKET)
        self._lead_ep: select.epoll | None = None  # a leader's, made at the first lead
        self._reading = _thread.allocate_lock()  # one thread reads and handles at a time
        self._frames = FrameReader()
        self._leading = _thread.allocate_lock()  # held by the leader while it leads
        self._doorbell = -1  # the leader's doorbell, registered in _lead_ep
        self._spin = 0.0  # a leader polls this long before it sleeps: the last wait was short
        # Reading is over (the end, or a failure, seen by either thread): nothing more
        # read is handled, and no thread leads any more.
        self._ended = False

    # --- the reader thread ---------------------------------------------------------
    def _read_loop(self) -> None:
        try:
            while True:
                events = self._ep.poll()
                with self._reading:
                    if self._ended or not self._drain(self._ending(events)):
                        break
        except Exception as exc:
            self._read_failed(exc)
        finally:
            self._ended = True
            if self._doorbell >= 0:  # a leader asleep in the epoll: it leaves now
                ring(self._doorbell)
            # Under both locks, in lead()'s order: no leader waits in the epoll or reads
            # the socket while their fds close (a number reused at once by a new
            # connection would otherwise be waited on or read by mistake).
            with self._leading, self._reading:
                self._close_epolls()
                self._closed_by_peer()

    def _close_epolls(self) -> None:
        for ep in (self._ep, self._lead_ep):
            if ep is not None:
                with contextlib.suppress(OSError):
                    ep.close()

    def _ending(self, events: list[tuple[int, int]]) -> bool:
        fd = self.sock.fileno()
        return any(f == fd and flags & _ENDING for f, flags in events)

    def _drain(self, ending: bool) -> bool:
        """Read and handle all that has come (edge-triggered: whoever was woken reads it
        all); False when the peer has closed the connection. `ending`: the event said
        the peer closed (or failed), which comes as no bytes: read until that."""
        sock = self.sock
        while not self._ended:
            try:
                data = sock.recv(_READ_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return True
            if not data:
                return False
            self._dispatch(self._frames, data)
            if len(data) < _READ_SIZE and not ending:
                return True  # nothing was left: what comes later wakes someone
        return False

    # --- a leader ------------------------------------------------------------------
    def lead(
        self,
        bell: Doorbell,
        timeout: float,
        ready: Callable[[], bool] | None = None,
        defer_sigint: bool = False,
        poll: bool = True,
    ) -> bool:
        """Wait in this thread until something comes (then handle it here), the doorbell
        rings, or `timeout` passes; False at once if another thread leads it now, or its
        reading is over. A read that ends the connection, or a handler that fails, ends
        it as its reader thread would (which then reports the close).

        `ready()`: whether what the doorbell announces is there already; looked at
        once this thread counts as the leader and its doorbell is watched here, so a
        ring from before then (no leader yet, or one of another connection) is not
        waited for.
        `defer_sigint`: a SIGINT that comes while this (main) thread handles what it
        read is handled once that is done (its handler may raise, as
        KeyboardInterrupt); for any other signal with a Python handler, the caller
        does not lead (python_handled).
        `poll`: False where other threads of the process do the work this one waits for
        (a threaded or async actor's calls): polling would take the GIL from them."""
        if self._ended or not self._leading.acquire(False):
            return False
        try:
            if self._ended:
                return False
            if self._lead_ep is None:
                lead_ep = select.epoll(2)
                lead_ep.register(self.sock.fileno(), _SOCKET)
                self._lead_ep = lead_ep
            bell.watch_on(self)
            if ready is not None and ready():
                return True
            sock_fd = self.sock.fileno()
            try:
                self._ep.modify(sock_fd, select.EPOLLET)  # disarmed: see the module docstring
            except (OSError, ValueError):
                return True
            try:
                try:
                    events = self._wait(self._lead_ep, timeout, poll)
                except (OSError, ValueError):
                    return True
                if not events:
                    return True
                if any(fd == bell.fd for fd, _ in events):
                    _hush(bell.fd)
                with self._reading:
                    if defer_sigint:
                        with _DeferredSigint():
                            self._drain_as_leader(events)
                    else:
                        self._drain_as_leader(events)
                return True
            finally:  # armed again: what comes after this lead wakes the reader thread
                with contextlib.suppress(OSError, ValueError):
                    self._ep.modify(sock_fd, _SOCKET)
        finally:
            self._leading.release()

    def _wait(self, ep: select.epoll, timeout: float, poll: bool) -> list[tuple[int, int]]:
        """The leader's wait: a poll first, for lead_spin_s, if the last wait was that
        short (see the module docstring) and `poll`; then asleep."""
        start = monotonic()
        spin = self._spin if poll else 0.0
        if spin:
            end = start + min(spin, timeout)
            poll = ep.poll
            while True:
                events = poll(0)
                if events:
                    return events
                if monotonic() >= end:
                    break
        events = ep.poll(timeout)
        limit = CONFIG.lead_spin_s
        self._spin = limit if events and monotonic() - start <= limit else 0.0
        return events

    def _drain_as_leader(self, events: list[tuple[int, int]]) -> None:
        alive = False
        try:
            alive = self._drain(self._ending(events))
        except Exception as exc:
            self._read_failed(exc)
        finally:
            if not alive:
                self._end_from_leader()

    def watch_doorbell(self, doorbell: int) -> None:
        """Watch a leader's doorbell in this connection's leader epoll (Doorbell.watch_on;
        the leader's lock held, the epoll made)."""
        if self._doorbell != doorbell:
            self.forget_doorbell()
            assert self._lead_ep is not None
            self._lead_ep.register(doorbell, _EDGE)
            self._doorbell = doorbell

    def forget_doorbell(self) -> None:
        """Stop watching the doorbell (its leader moved to another connection)."""
        if self._doorbell >= 0 and self._lead_ep is not None:
            with contextlib.suppress(OSError, ValueError):
                self._lead_ep.unregister(self._doorbell)
        self._doorbell = -1

    def close(self, join: bool = True) -> None:
        """As Connection.close, but the socket is closed by its reader thread, once it
        has seen the shutdown: a socket closed first would leave the epoll instance,
        and the reader thread asleep in it for good."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        thread = self._thread
        if not thread.is_alive() and thread.ident is None:  # never started
            self._ended = True
            with contextlib.suppress(OSError):
                self.sock.close()
            self._close_epolls()
        elif join and thread.is_alive() and threading.current_thread() is not thread:
            thread.join(timeout=CONFIG.thread_join_timeout_s)

    def _end_from_leader(self) -> None:
        """The leader read the end (or a failure): the reader thread, asleep in
        epoll_wait, must see it to end the connection (pending replies, on_close), as it
        does when it reads the end itself."""
        if not self.closed:  # not our own close(): a close by the peer, for on_close
            self._broken = True
        self.closed = True
        self._ended = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError, ValueError):
            self._ep.modify(self.sock.fileno(), _SOCKET)  # re-arms: the reader is woken
