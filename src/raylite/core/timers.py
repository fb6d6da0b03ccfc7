"""One thread that runs the core worker's delayed callbacks.

Owns the timer heap and its thread: idle lease returns, event flushes, the
release loop. Not what the callbacks do (they take the core worker's lock)."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

from ..config import CONFIG

log = logging.getLogger("raylite")


class Timers:
    """One thread running delayed callbacks (idle lease return, event flushes)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="raylite-timers", daemon=True)
        self._thread.start()

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        entry = (time.monotonic() + delay, next(self._seq), fn)
        with self._cond:
            heapq.heappush(self._heap, entry)
            # The thread sleeps until the earliest deadline: wake it only when that moved.
            if self._heap[0] is entry:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception:
                log.exception("timer callback failed")

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=CONFIG.thread_join_timeout_s)
