"""`raylite.util.Executor`: a `concurrent.futures.Executor` whose calls run as tasks.

Owns the executor: its queue of calls not yet submitted (at most `max_workers` run
at once), its futures (a task's value or its error, as `get` raises it), `map` with
`timeout` and `chunksize`, and `shutdown(wait, cancel_futures)`. The futures are
plain `concurrent.futures.Future`s, so `concurrent.futures.wait`, `as_completed` and
`asyncio.wrap_future` take them. Not the tasks themselves (the core), not
`multiprocessing.Pool` (util/multiprocessing).

    submit ─▶ queued ─(a slot is free)─▶ .remote() ─▶ ref ─▶ future resolved
       cancel(): queued ─▶ cancelled;  running ─▶ raylite.cancel(ref)
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import api
from ..remote_function import RemoteFunction


class _Future(concurrent.futures.Future):  # type: ignore[type-arg]
    """A future whose cancel() also cancels its task once it was submitted: the call
    is running then, so cancel() says False (as for a thread pool's running call) and
    the future ends with the task's TaskCancelledError."""

    def __init__(self) -> None:
        super().__init__()
        self.ref: Any = None

    def cancel(self) -> bool:
        ref = self.ref
        if ref is None:
            return super().cancel()
        if self.done():
            return False
        api.cancel(ref)  # get raises TaskCancelledError: the future ends with it
        return False  # running: as a thread pool says of a running call


def _run_chunk(fn: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> list[Any]:
    return [fn(*args) for args in chunk]


class Executor(concurrent.futures.Executor):
    """Run callables as raylite tasks (`fn` or a `@remote` function).

    `max_workers`: at most this many tasks submitted at once (None: as many as the
    cluster takes; its CPUs bound what runs). `address`: the cluster to use if this
    process has not called `init()` (None: a local one, as `init()` makes).
    `**remote_options` go to every task (`num_cpus=`, `resources=`, ...).
    """

    def __init__(
        self, max_workers: int | None = None, *, address: str | None = None, **remote_options: Any
    ) -> None:
        if max_workers is not None and (isinstance(max_workers, bool) or max_workers <= 0):
            raise ValueError("max_workers must be greater than 0")
        if not api.is_initialized():
            api.init(address=address)
        self._max = max_workers
        self._options = remote_options
        self._remotes: dict[Any, RemoteFunction] = {}
        self._lock = threading.Lock()
        self._queue: collections.deque[tuple[_Future, RemoteFunction, tuple, dict]] = (
            collections.deque()
        )
        self._running = 0
        self._futures: set[_Future] = set()
        self._shutdown = False

    # ------------------------------------------------------------------ the API
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> _Future:
        remote = self._remote(fn)
        future = _Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._futures.add(future)
            self._queue.append((future, remote, args, kwargs))
        future.add_done_callback(self._forget)
        self._dispatch()
        return future

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """As `concurrent.futures.Executor.map`; `chunksize` calls run in one task."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        calls = zip(*iterables, strict=False)
        chunks = iter(lambda: list(itertools.islice(calls, chunksize)), [])
        results = super().map(_run_chunk, itertools.repeat(fn), chunks, timeout=timeout)
        return itertools.chain.from_iterable(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls; `cancel_futures`: the calls not submitted yet are cancelled;
        `wait`: return once every call has ended. The cluster goes on."""
        with self._lock:
            self._shutdown = True
            dropped = list(self._queue) if cancel_futures else []
            if cancel_futures:
                self._queue.clear()
        for future, *_ in dropped:
            future.cancel()
        if wait:
            while True:
                with self._lock:
                    pending = [f for f in self._futures if not f.done()]
                if not pending:
                    return
                concurrent.futures.wait(pending)

    # ------------------------------------------------------------------ inside
    def _remote(self, fn: Callable[..., Any]) -> RemoteFunction:
        if isinstance(fn, RemoteFunction):
            return fn.options(**self._options) if self._options else fn
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        remote = self._remotes.get(fn)
        if remote is None:
            remote = api.remote(fn)
            if self._options:
                remote = remote.options(**self._options)
            self._remotes[fn] = remote
        return remote

    def _dispatch(self) -> None:
        """Submit queued calls while slots are free."""
        while True:
            with self._lock:
                if not self._queue or (self._max is not None and self._running >= self._max):
                    return
                future, remote, args, kwargs = self._queue.popleft()
                if not future.set_running_or_notify_cancel():
                    continue  # cancelled while it waited
                self._running += 1
            try:
                ref = remote.remote(*args, **kwargs)
            except BaseException as exc:  # bad arguments, a lost session: this call's error
                future.set_exception(exc)
                self._slot_freed()
                continue
            future.ref = ref
            ref.future().add_done_callback(lambda f, future=future: self._resolve(future, f))

    def _resolve(self, future: _Future, done: concurrent.futures.Future) -> None:  # type: ignore[type-arg]
        exc = done.exception()
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(done.result())
        self._slot_freed()

    def _slot_freed(self) -> None:
        with self._lock:
            self._running -= 1
        self._dispatch()

    def _forget(self, future: concurrent.futures.Future) -> None:  # type: ignore[type-arg]
        with self._lock:
            self._futures.discard(future)  # type: ignore[arg-type]
