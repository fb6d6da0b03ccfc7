"""Blocking for values: `get`, `get_raw` and `wait` of the CoreWorker (a mixin).

Owns waiting in the caller's thread until refs are ready (or the timeout), telling the
node manager while a task blocks (its CPUs are lent back: NotifyBlocked/Unblocked),
and rebuilding a lost value on the way (lineage). Not where values come from
(core_worker._when_ready, _value) nor the object table.
"""

from __future__ import annotations

import _thread
import heapq
import itertools
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import protocol as P
from ..config import CONFIG
from ..exceptions import GetTimeoutError, ObjectLostError
from ..object_ref import ObjectRef
from ..transport_lead import Doorbell, LeadableConnection, python_handled
from .objects import PENDING


class _Gate:
    """A one-shot threading.Event for the get path: one raw lock, held until set()
    (an Event builds a Condition and a lock and runs Python code to wait: ~2 us more
    per get). wait() is interruptible, as Event.wait, so cancel() reaches a task
    blocked in get. A thread that waits by leading a connection is told by its
    doorbell when another thread sets it."""

    __slots__ = ("_lock", "doorbell", "leader")

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()
        self.leader = 0  # the thread that waits by leading a connection (_lead_until)
        self.doorbell: Doorbell | None = None  # its doorbell: rung when another sets this

    def set(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:  # set already
            return
        leader, bell = self.leader, self.doorbell  # read after the release: _lead_until
        if leader and bell is not None and leader != _thread.get_ident():
            bell.ring()

    def is_set(self) -> bool:
        return not self._lock.locked()

    def wait(self, timeout: float | None) -> bool:
        if self._lock.acquire(True, -1 if timeout is None else max(timeout, 0)):
            self._lock.release()  # stays set for a later wait
            return True
        return False


_FINAL = frozenset((P.INLINE, P.IN_STORE, P.ERROR))  # kinds of a value that is there


class BlockingMixin:
    """CoreWorker's get/wait; the attributes below are the CoreWorker's."""

    address: str
    mode: str
    nm: Any
    lock: Any
    doorbell: Doorbell  # the main thread's, as a leader (transport_lead)
    running: dict[bytes, Any]
    actors: dict[bytes, Any]
    peers: dict[str, Any]
    objects: dict[bytes, Any]
    _released: Any  # refs dropped, and mappings gone, not yet processed (refs.py)
    _unmapped: Any
    current_task_id: bytes | None
    store: Any
    _when_ready: Callable[..., int]
    _value: Callable[..., Any]

    def get(self, refs: list[ObjectRef], timeout: float | None) -> list[Any]:
        if self._released or self._unmapped:  # (most gets: nothing; a call less, cold)
            self._process_released()
        if len(refs) == 1:  # one value there already: no waiter, no event
            ref = refs[0]  # (one of the two asked, not both: a first get runs cold)
            if type(ref) is ObjectRef and ref.owner == self.address:
                ready = self._ready_owned(ref)
            else:
                ready = self._in_local_store(ref)
            if ready is not None:
                return [self._value_or_rebuild(ref, ready, timeout)]
        n = len(refs)
        results: list[Any] = [None] * n
        done = [False] * n
        remaining = [n]
        event = _Gate()
        lock = threading.Lock()

        def make_cb(i: int) -> Callable[[int, Any], None]:
            def cb(kind: int, data: Any) -> None:
                with lock:
                    if done[i]:
                        return
                    done[i] = True
                    results[i] = (kind, data)
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        event.set()

            return cb

        address = self.address
        for i, ref in enumerate(refs):
            if not isinstance(ref, ObjectRef):
                raise TypeError(
                    f"get() expects an ObjectRef or a list of ObjectRefs, got {type(ref).__name__}"
                )
            here = self._in_local_store(ref) if ref.owner != address else None
            if here is not None:
                make_cb(i)(*here)
            else:
                self._when_ready(ref, make_cb(i))
        if remaining[0]:
            pending = [ref for i, ref in enumerate(refs) if not done[i]]
            self._wait_blocking(event, timeout, n, self._reply_connection(pending))
        return [self._value_or_rebuild(refs[i], results[i], timeout) for i in range(n)]

    def _reply_connection(self, refs: list[ObjectRef]) -> LeadableConnection | None:
        """The connection all of `refs` will come on, if the main thread may wait by
        reading it (transport_lead): each is the return of a task of ours pushed to
        the same worker or actor, and no Python signal handler but SIGINT's (deferred
        while it handles a read) may raise in it meanwhile."""
        if _thread.get_ident() != threading.main_thread().ident:
            return None  # one leader a process: the main thread (its doorbell is one)
        if python_handled() - {signal.SIGINT}:
            return None
        found = None
        with self.lock:
            for ref in refs:
                spec = self.running.get(ref.id)
                if spec is None or not spec.pushed:
                    return None
                if spec.actor_id is not None:
                    client = self.actors.get(spec.actor_id)
                    conn = client.conn if client is not None else None
                else:
                    conn = self.peers.get(spec.lease.address) if spec.lease else None
                if type(conn) is not LeadableConnection or (found and conn is not found):
                    return None
                found = conn
        return found

    def _ready_owned(self, ref: ObjectRef) -> tuple[int, Any] | None:
        """(kind, data) of a value this process owns and holds now (inline or stored);
        None for anything else (pending, released, an error, another owner's): the
        general path (_when_ready) takes those."""
        if type(ref) is not ObjectRef or ref.owner != self.address or self.lock.held():
            return None
        with self.lock:
            entry = self.objects.get(ref.id)
            if entry is None or (entry.kind != P.INLINE and entry.kind != P.IN_STORE):
                return None
            return entry.kind, entry.data

    def _in_local_store(self, ref: ObjectRef) -> tuple[int, Any] | None:
        """(IN_STORE, its mapping) of a borrowed ref whose object is sealed in this
        node's store: read there, without asking its owner (as Ray's plasma does). Safe
        because the reader holds the ref (its owner keeps the object while a borrower
        does) and a segment's file is there only once sealed. Mapped (and pinned) now:
        the file cannot go between this look and the read."""
        if type(ref) is not ObjectRef or ref.owner == self.address or not ref.owner:
            return None
        mm = self.store.map_here(ref.id)
        return (P.IN_STORE, mm) if mm is not None else None

    def _value_or_rebuild(
        self, ref: ObjectRef, result: tuple[int, Any], timeout: float | None
    ) -> Any:
        """The value; if its only copy turns out lost and we own it, rebuild it (lineage).

        The owner hears of a dead node from the head, but a reader may find the copy
        gone first (its fetch fails): then the rebuild starts here.
        """
        for _ in range(3):
            try:
                return self._value(ref.id, *result)
            except ObjectLostError:
                if result[0] == P.IN_STORE and type(result[1]) is not P.StoredAt:
                    # mapped here (_in_local_store), and unreadable: ask the owner
                    result = self.get_raw(ref, timeout)
                    continue
                if ref.owner != self.address or result[0] != P.IN_STORE:
                    raise
                with self.lock:
                    entry = self.objects.get(ref.id)
                    rebuildable = entry is not None and (
                        entry.kind is PENDING or entry.lineage is not None
                    )
                if not rebuildable:
                    raise
                self._object_lost(ref.id, "its copy could not be fetched")
                result = self.get_raw(ref, timeout)
        return self._value(ref.id, *result)

    def get_raw(self, ref: ObjectRef, timeout: float | None) -> tuple[int, Any]:
        """(kind, data) of one ref once it is there."""
        box: list[tuple[int, Any]] = []
        event = _Gate()

        def cb(kind: int, data: Any) -> None:
            box.append((kind, data))
            event.set()

        self._when_ready(ref, cb)
        if not box:
            self._wait_blocking(event, timeout, 1)
        return box[0]

    def _wait_blocking(
        self,
        event: _Gate | threading.Event,
        timeout: float | None,
        n: int,
        conn: LeadableConnection | None = None,
    ) -> None:
        """Wait for `event`; reading `conn` meanwhile, if given (what sets it comes on it)."""
        self._notify_blocked()
        try:
            if conn is not None and isinstance(event, _Gate):
                ready = self._lead_until(event, timeout, conn)
            else:
                ready = event.wait(timeout)
            if not ready:
                raise GetTimeoutError(
                    f"Get timed out: some of the {n} object(s) were not ready after {timeout} s."
                )
        finally:
            self._notify_unblocked()

    def _lead_until(self, gate: _Gate, timeout: float | None, conn: LeadableConnection) -> bool:
        """Wait for `gate` by reading `conn` in this thread (the replies come on it: no
        reader thread to wake); another thread that sets it rings our doorbell."""
        deadline = None if timeout is None else time.monotonic() + timeout
        gate.doorbell = self.doorbell
        gate.leader = _thread.get_ident()  # before is_set() is looked at: see _Gate.set
        try:
            while not gate.is_set() and not conn.closed:
                wait = CONFIG.lead_wait_s
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        return False
                if not conn.lead(self.doorbell, wait, gate.is_set, defer_sigint=True):
                    break  # another thread leads it: wait as any thread does
        finally:
            gate.leader = 0
        if deadline is None:
            return gate.wait(None)
        return gate.wait(max(deadline - time.monotonic(), 0))

    def _notify_blocked(self) -> None:
        # A task that waits gives its CPU back, so nested tasks can run.
        if self.mode == "worker" and self.current_task_id is not None:
            self.blocked_depth += 1
            if self.blocked_depth == 1:
                self.nm.send(P.NotifyBlocked())
                if self.on_blocked is not None:  # the worker: send back what waits behind
                    self.on_blocked()

    def _notify_unblocked(self) -> None:
        if self.mode == "worker" and self.current_task_id is not None:
            self.blocked_depth -= 1
            if self.blocked_depth == 0:
                self.nm.send(P.NotifyUnblocked())

    def wait(
        self,
        refs: list[Any],
        num_returns: int,
        timeout: float | None,
        when_ready: Callable[[Any, Callable[[int, Any], None]], int] | None = None,
    ) -> tuple[list[Any], list[Any]]:
        """The first `num_returns` of `refs` to be ready (in the order they became
        ready), and the rest; each list in the order of `refs`, as Ray's.

        Values of ours that are there already are seen without a waiter (their entry
        read without the lock: one dict read); waiters are
        set on the rest only if those are not enough, and taken off again at the end,
        so a loop of waits over n refs costs O(n) a call, not a waiter per ref per call.
        `when_ready`: _when_ready for what is not an ObjectRef (a generator)."""
        self._process_released()
        when_ready = when_ready or self._when_ready
        ready: dict[int, int] = {}  # index -> when it was ready (a value's seq)
        if not self.lock.held():  # else each goes by _when_ready, which defers
            address, objects, final = self.address, self.objects, _FINAL
            for i, ref in enumerate(refs):  # ours, there now: no waiter (one dict read)
                if type(ref) is ObjectRef and ref.owner == address:
                    entry = objects.get(ref.id)
                    if entry is not None and entry.kind in final:
                        ready[i] = entry.seq or 1
        if len(ready) < num_returns:
            self._wait_for_more(refs, ready, num_returns, timeout, when_ready)
        if len(ready) == num_returns:
            chosen = set(ready)
        else:  # the first to be ready
            chosen = set(heapq.nsmallest(num_returns, ready, key=ready.__getitem__))
        return [r for i, r in enumerate(refs) if i in chosen], [
            r for i, r in enumerate(refs) if i not in chosen
        ]

    def _wait_for_more(
        self,
        refs: list[Any],
        ready: dict[int, int],
        num_returns: int,
        timeout: float | None,
        when_ready: Callable[[Any, Callable[[int, Any], None]], int],
    ) -> None:
        """Add to `ready` as more of `refs` are ready, until `num_returns` are or the
        timeout passes."""
        cond = threading.Condition()
        arrivals = itertools.count(1 << 40)  # after anything ready at call time
        over = False
        waiting: list[tuple[bytes, Callable[[int, Any], None]]] = []  # on our PENDING values

        def make_cb(i: int) -> Callable[[int, Any], None]:
            def cb(kind: int, data: Any) -> None:
                with cond:
                    if not over and i not in ready:
                        ready[i] = next(arrivals)
                        cond.notify_all()

            return cb

        for i, ref in enumerate(refs):
            if i in ready:
                continue
            cb = make_cb(i)
            seq = when_ready(ref, cb)
            if seq:
                with cond:
                    ready[i] = seq
            elif type(ref) is ObjectRef and ref.owner == self.address:
                waiting.append((ref.id, cb))
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with cond:
                if len(ready) < num_returns:
                    self._notify_blocked()
                    try:
                        while len(ready) < num_returns:
                            left = None if deadline is None else deadline - time.monotonic()
                            if left is not None and left <= 0:
                                break
                            cond.wait(left)
                    finally:
                        self._notify_unblocked()
                over = True
        finally:
            self._forget_waiters(waiting)

    def _forget_waiters(self, waiting: list[tuple[bytes, Callable[[int, Any], None]]]) -> None:
        """Take a finished wait's callbacks off the values that are still pending."""
        if not waiting or self.lock.held():
            return
        with self.lock:
            for oid, cb in waiting:
                entry = self.objects.get(oid)
                if entry is not None and entry.kind is PENDING and cb in entry.waiters:
                    entry.waiters.remove(cb)
