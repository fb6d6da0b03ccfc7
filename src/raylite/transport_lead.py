"""A connection that a waiting thread can read itself (leader/follower).

Owns how two threads share one connection's reading: its reader thread, and a thread
that would otherwise sleep until the reader thread hands it something (a worker's main
thread between tasks). Not what the messages mean (the handler's, as on any
Connection) nor when a thread leads (worker.py).

Why: a sync round trip, `get(f.remote())`, used to wake two threads in the worker
(the reader thread took the push off the socket and woke the main thread to run it).
Each wake-up costs a futex call, a context switch and a hand-over of the GIL: 35% of
the round trip on a 2-core machine. A leader is woken by the kernel itself.

How: both threads wait in epoll_wait on the connection's own epoll instance, the
socket registered edge-triggered. Linux wakes exactly one waiter of an epoll instance
per event, the one that began waiting last (exclusive waits go to the head of the
queue), so a leader that waits gets what comes and the reader thread sleeps on. Either
thread reads everything that has come (MSG_DONTWAIT, until a short read) under one
lock, so frames stay in order and are handled one read at a time, as before.

The leader also waits for a doorbell (an eventfd of its own): other threads ring it
when they queue work for the leader. If the reader thread is woken by the doorbell
instead (it began waiting after the leader), it rings again and steps aside until the
leader has left, so the leader gets it.

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
        self._ep = select.epoll(2)
        self._ep.register(sock.fileno(), _SOCKET)
        self._reading = _thread.allocate_lock()  # one thread reads and handles at a time
        self._frames = FrameReader()
        self._leading = _thread.allocate_lock()  # held by the leader while it leads
        self._doorbell = -1  # the leader's doorbell, registered in _ep
        # Reading is over (the end, or a failure, seen by either thread): nothing more
        # read is handled, and no thread leads any more.
        self._ended = False

    # --- the reader thread ---------------------------------------------------------
    def _read_loop(self) -> None:
        try:
            while True:
                events = self._ep.poll()
                doorbell = self._doorbell
                if doorbell >= 0 and any(fd == doorbell for fd, _ in events):
                    self._pass_doorbell(doorbell)
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
                with contextlib.suppress(OSError):
                    self._ep.close()
                self._closed_by_peer()

    def _pass_doorbell(self, doorbell: int) -> None:
        """The leader's doorbell woke this thread instead: ring it again while this
        thread does not wait, and wait (without reading) until the leader has left."""
        if not self._leading.locked():
            # No leader (yet): one that comes looks at ready() before it waits. Left
            # unread (a read here could take a newer ring meant for a leader of another
            # connection); at worst a later leader wakes once for nothing.
            return
        ring(doorbell)
        with self._leading:
            pass

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
    ) -> bool:
        """Wait in this thread until something comes (then handle it here), the doorbell
        rings, or `timeout` passes; False at once if another thread leads it now, or its
        reading is over. A read
        that ends the connection, or a handler that fails, ends it as its reader thread
        would (which then reports the close).

        `ready()`: whether what the doorbell announces is there already; looked at
        once this thread counts as the leader, so a ring the reader thread dropped
        before then (no leader yet: _pass_doorbell) is not waited for.
        `defer_sigint`: a SIGINT that comes while this (main) thread handles what it
        read is handled once that is done (its handler may raise, as
        KeyboardInterrupt); for any other signal with a Python handler, the caller
        does not lead (python_handled)."""
        if self._ended or not self._leading.acquire(False):
            return False
        try:
            if self._ended:
                return False
            bell.watch_on(self)
            if ready is not None and ready():
                return True
            try:
                events = self._ep.poll(timeout)
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
        finally:
            self._leading.release()

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
        """Watch a leader's doorbell in this connection's epoll (Doorbell.watch_on)."""
        if self._doorbell != doorbell:
            self.forget_doorbell()
            self._ep.register(doorbell, _EDGE)
            self._doorbell = doorbell

    def forget_doorbell(self) -> None:
        """Stop watching the doorbell (its leader moved to another connection)."""
        if self._doorbell >= 0:
            with contextlib.suppress(OSError, ValueError):
                self._ep.unregister(self._doorbell)
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
            with contextlib.suppress(OSError):
                self._ep.close()
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
