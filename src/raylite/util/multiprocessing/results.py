"""What a Pool hands back: AsyncResult, the imap iterators, and the thread that feeds them.

Owns the results side of `raylite.util.multiprocessing.Pool`: which chunk results have
arrived, the user's `callback` / `error_callback`, and the order `imap` yields in. Not
the actors or how work is cut into chunks (pool.py).

    pool actor ──run_batch ref──▶ ref.future() ──done──▶ _Collector queue
                                                              │ (its own thread)
          AsyncResult / IMap iterator ◀──deliver(index, batch)┘ ──▶ callbacks

A chunk's result is a list: one value per item, or a `PoolTaskError` where the item's
function raised. A chunk whose task failed (its actor died or was killed) counts as
`[the error]`. The collector thread exists only while some chunk is outstanding: it is
started by the first one and ends when none is left, so a pool with nothing in flight
holds no thread. User callbacks run on that thread, never on raylite's own threads.

Behaviour follows Ray 2.60's pool (checked against it in tests/compat):

* `AsyncResult.get(timeout)` raises `multiprocessing.TimeoutError` when not ready, the
  function's own exception (not a task error) when an item raised, the raylite error
  (e.g. `ActorDiedError`) when a chunk's task failed; `successful()` raises
  `ValueError("... not ready")` before `ready()`.
* `error_callback` is called once, with the first failed item in arrival order: a
  `PoolTaskError` (its `underlying` is the function's exception), or the task's error.
  `callback` is called once, after the last chunk, only if nothing failed, with the list
  of results (`apply_async`: the one result). The result is `ready()` only once the
  callbacks have returned. Unlike Ray, whose list is in completion order, the list is
  in submission order, like `multiprocessing`'s.
* The imap iterators yield a failed item as its `PoolTaskError` (a value, not raised);
  `next(timeout)` raises `multiprocessing.TimeoutError`. They submit the next chunk as
  each result is taken, so at most one chunk per actor is ahead of the caller.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing import TimeoutError as PoolTimeoutError
from typing import Any

log = logging.getLogger(__name__)


class PoolTaskError(Exception):
    """An item's function raised `underlying` (kept inside a chunk's list of results)."""

    def __init__(self, underlying: BaseException) -> None:
        super().__init__(underlying)
        self.underlying = underlying


class _Sink:
    """Something that receives chunk results: an AsyncResult or an imap iterator."""

    def deliver(self, index: int, batch: list[Any]) -> None:
        raise NotImplementedError


class _Collector:
    """Hands each chunk's result, once its ref is ready, to the sink waiting for it.

    `watch` is called from the pool's caller; the ref's future calls back on a raylite
    thread, which only queues the result; this collector's own thread takes it from
    the queue, reads it and runs the sink's callbacks.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrived: queue.SimpleQueue[tuple[_Sink, int, Any]] = queue.SimpleQueue()
        self._outstanding = 0
        self._thread: threading.Thread | None = None

    def watch(self, ref: Any, sink: _Sink, index: int) -> None:
        future = ref.future()
        with self._lock:
            self._outstanding += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="raylite-pool-results", daemon=True
                )
                self._thread.start()
        # May call back at once (the ref is ready): the queue takes it either way.
        future.add_done_callback(lambda f: self._arrived.put((sink, index, f)))

    def join(self, timeout: float | None = None) -> None:
        """Wait until no chunk is outstanding and the thread has ended."""
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._outstanding == 0:
                    self._thread = None
                    return
            sink, index, future = self._arrived.get()
            try:
                batch = future.result()
            except Exception as exc:  # the chunk's task failed: a RayError
                batch = [exc]
            try:
                sink.deliver(index, batch)
            except Exception:  # a user callback raised: the pool carries on
                log.exception("a raylite.util.multiprocessing.Pool callback raised")
            finally:
                with self._lock:
                    self._outstanding -= 1


class AsyncResult(_Sink):
    """The results of `apply_async`, `map_async` or `starmap_async`, when they come.

    Not built by users: the pool returns one.
    """

    def __init__(
        self,
        collector: _Collector,
        refs: list[Any],
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[Any], Any] | None = None,
        single_result: bool = False,
    ) -> None:
        self._single_result = single_result
        self._callback = callback
        self._error_callback = error_callback
        self._batches: list[list[Any] | None] = [None] * len(refs)
        self._missing = len(refs)
        self._got_error = False
        self._done = threading.Event()
        self._lock = threading.Lock()
        if not refs:
            self._finish()
        for index, ref in enumerate(refs):
            collector.watch(ref, self, index)

    def deliver(self, index: int, batch: list[Any]) -> None:
        with self._lock:
            self._batches[index] = batch
            self._missing -= 1
            last = self._missing == 0
            first_error = None
            if not self._got_error:
                first_error = next((r for r in batch if isinstance(r, Exception)), None)
                self._got_error = first_error is not None
        try:
            if first_error is not None and self._error_callback is not None:
                self._error_callback(first_error)
        finally:
            if last:
                self._finish()

    def _finish(self) -> None:
        try:
            if not self._got_error and self._callback is not None:
                values = [v for batch in self._batches for v in batch or ()]
                self._callback(values[0] if self._single_result else values)
        finally:
            self._done.set()

    def wait(self, timeout: float | None = None) -> None:
        """Return once the result is ready or `timeout` seconds have passed."""
        self._done.wait(timeout)

    def get(self, timeout: float | None = None) -> Any:
        """The result; raises what an item raised, or TimeoutError after `timeout`."""
        if not self._done.wait(timeout):
            raise PoolTimeoutError
        results: list[Any] = []
        for batch in self._batches:
            for value in batch or ():
                if isinstance(value, PoolTaskError):
                    raise value.underlying
                if isinstance(value, Exception):
                    raise value
            results.extend(batch or ())
        return results[0] if self._single_result else results

    def ready(self) -> bool:
        """Whether every chunk has come back (and the callbacks have run)."""
        return self._done.is_set()

    def successful(self) -> bool:
        """Whether no item failed; ValueError if the result is not ready yet."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return not self._got_error


class IMapIterator(_Sink, Iterator[Any]):
    """Base of the imap iterators: submits chunks as results are taken.

    `submit(items, actor_index)` runs one chunk and returns its ref (the pool's).
    """

    def __init__(
        self,
        collector: _Collector,
        submit: Callable[[list[Any], int], Any],
        iterable: Any,
        chunksize: int,
        processes: int,
    ) -> None:
        self._collector = collector
        self._submit = submit
        self._processes = processes
        self._iterator = iter(iterable)
        self._chunksize = chunksize
        self._finished_iterating = False
        self._submitted = 0  # chunks submitted
        self._taken_chunks = 0  # chunks whose results were handed on (or queued to be)
        self._taken: list[bool] = []  # per chunk: its ready index was taken off the queue
        self._batches: dict[int, list[Any]] = {}
        self._ready_indices: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._ready_values: collections.deque[Any] = collections.deque()
        for _ in range(processes):
            self._submit_next_chunk()

    def deliver(self, index: int, batch: list[Any]) -> None:
        self._batches[index] = batch
        self._ready_indices.put(index)

    def _submit_next_chunk(self) -> None:
        if self._finished_iterating:
            return
        chunk = []
        for item in self._iterator:
            chunk.append(item)
            if len(chunk) == self._chunksize:
                break
        if len(chunk) < self._chunksize:
            self._finished_iterating = True
            if not chunk:
                return
        ref = self._submit(chunk, self._submitted % self._processes)
        index = self._submitted
        self._submitted += 1
        self._taken.append(False)
        self._collector.watch(ref, self, index)

    def _next_ready_index(self, timeout: float | None) -> int:
        try:
            return self._ready_indices.get(timeout=timeout)
        except queue.Empty:
            raise PoolTimeoutError from None

    def _exhausted(self) -> bool:
        return self._finished_iterating and self._taken_chunks == self._submitted

    def __iter__(self) -> IMapIterator:
        return self

    def __next__(self) -> Any:
        return self.next()

    def next(self, timeout: float | None = None) -> Any:
        raise NotImplementedError


class OrderedIMapIterator(IMapIterator):
    """`imap`: results in the order of the items, whatever order they finish in."""

    def next(self, timeout: float | None = None) -> Any:
        if not self._ready_values:
            if self._exhausted():
                raise StopIteration
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._taken[self._taken_chunks]:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                index = self._next_ready_index(left)
                self._submit_next_chunk()
                self._taken[index] = True
            while self._taken_chunks < self._submitted and self._taken[self._taken_chunks]:
                self._ready_values.extend(self._batches.pop(self._taken_chunks))
                self._taken_chunks += 1
        return self._ready_values.popleft()


class UnorderedIMapIterator(IMapIterator):
    """`imap_unordered`: results chunk by chunk, as the chunks finish."""

    def next(self, timeout: float | None = None) -> Any:
        if not self._ready_values:
            if self._exhausted():
                raise StopIteration
            index = self._next_ready_index(timeout)
            self._submit_next_chunk()
            self._ready_values.extend(self._batches.pop(index))
            self._taken_chunks += 1
        return self._ready_values.popleft()
