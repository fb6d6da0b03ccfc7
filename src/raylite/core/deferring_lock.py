"""The core worker's lock: work queued under it runs once it is let go.

Owns DeferringLock, the one lock of a CoreWorker, and the check that nothing slow
or foreign runs under it. Not what the lock guards (core_worker.py says).

Code that holds the lock and must run a user callback (an object's waiters) or
dial a connection defers it instead: `lock.defer(fn, *args)` runs fn at once if
this thread does not hold the lock, else queues it; the thread's outermost
release runs the queue, in order, without the lock. A deferred action may take
the lock again and defer more; those run next, in the same drain (a loop, so a
long chain of them does not recurse).

    with lock:                    # depth 1
        with lock:                # depth 2 (reentrant)
            lock.defer(callback)  # queued
        ...                       # still held: nothing runs
    # released: callback() runs here, in this thread, lock not held

`check_unlocked(what)` marks the places that must never run under the lock
(dialling a peer, running waiters). With `RAYLITE_LOCK_CHECKS=1` a breach is
recorded in `breaches` and raises AssertionError; the test suite turns it on
and fails a test that leaves a breach. Off, it costs one attribute read.
"""

from __future__ import annotations

import _thread
import collections
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

log = logging.getLogger("raylite")

# Breaches seen in this process (lock checks on): (what, thread name).
breaches: list[tuple[str, str]] = []


class DeferringLock(_thread.RLock):  # type: ignore[misc]  # typeshed: final; CPython: not
    """A reentrant lock whose holder can queue work for after its outermost release.

    A subclass of the C RLock: taking it (`with lock:`, `acquire`) is the C code's,
    with no Python frame; only the release looks at the queue."""

    __slots__ = ("_checks", "_deferred", "_local")

    if TYPE_CHECKING:  # the C type has them; typeshed does not say so

        def _is_owned(self) -> bool: ...
        def _recursion_count(self) -> int: ...

    def __init__(self, checks: bool = False) -> None:
        super().__init__()
        self._deferred: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._checks = checks
        self._local = threading.local()  # .draining: this thread runs deferred actions

    def __exit__(self, *exc: object) -> None:
        # Only the holder touches _deferred, so reading it here needs no other lock.
        # A deferred action that takes the lock leaves what it defers to the drain
        # that runs it (a loop), not to a nested one (recursion).
        if (
            self._deferred
            and self._recursion_count() == 1
            and not getattr(self._local, "draining", False)
        ):
            self._drain()
        else:
            self.release()

    def _drain(self) -> None:
        """Let go (outermost release) and run what was deferred, until none is left."""
        self._local.draining = True
        try:
            actions = collections.deque(self._deferred)
            self._deferred = []
            self.release()
            while True:
                while actions:
                    fn, args = actions.popleft()
                    try:
                        fn(*args)
                    except Exception:
                        log.exception("deferred action %r failed", fn)
                    if self._deferred:  # what it deferred runs next, before the rest
                        self.acquire()
                        more, self._deferred = self._deferred, []
                        self.release()
                        actions.extendleft(reversed(more))
                self.acquire()
                if not self._deferred:
                    self.release()
                    return
                actions = collections.deque(self._deferred)
                self._deferred = []
                self.release()
        finally:
            self._local.draining = False

    def held(self) -> bool:
        """Whether this thread holds the lock."""
        return self._is_owned()

    def defer(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) now if this thread does not hold the lock, else at its release."""
        if self._is_owned():
            self._deferred.append((fn, args))
        else:
            fn(*args)

    def check_unlocked(self, what: str) -> None:
        """Mark a place that must not run under the lock (see the module docstring)."""
        if self._checks and self._is_owned():
            breaches.append((what, threading.current_thread().name))
            raise AssertionError(f"{what} under the core worker lock")
