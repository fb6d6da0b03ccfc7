"""Pool: Python's `multiprocessing.Pool` on raylite actors (Ray's `ray.util.multiprocessing`).

Owns the pool's actors (one `PoolActor` per process, each running chunks of items one
after another), how work is cut into chunks and dealt out to them, and the pool's
life: running, closed, terminated. Not the results (results.py: AsyncResult, the imap
iterators and the thread that collects chunk results).

    Pool.map(f, items) ──chunks──▶ actor[i % n].run_batch(f, chunk) ──▶ [f(x) ...]
                                                        │ a raise becomes PoolTaskError
                                  results.AsyncResult ◀─┘

Behaviour follows Ray 2.60's pool (tests/compat/test_util_multiprocessing.py runs on
both engines):

* Starting: a pool started before `init()` starts raylite, with `num_cpus=processes`;
  with `ray_address=...` (or `RAYLITE_ADDRESS` set) it connects instead, as `init()`
  would ("local": starts one, with `num_cpus=processes`). `processes` defaults to the
  cluster's CPUs; more processes than the cluster has CPUs is a `ValueError`, and so is
  `processes <= 0`. Pool actors take no CPU (`num_cpus=0`, so a pool inside a task does
  not deadlock) unless `ray_remote_args` says otherwise; every actor runs
  `initializer(*initargs)` first, and the pool waits for all of them before returning.
* Chunks: `map`/`starmap` cut the items into chunks of `chunksize` (default: enough for
  about four chunks per process) and give chunk i to actor i mod processes; `apply`
  goes to the next actor in turn. `imap`/`imap_unordered` (chunksize 1 by default)
  keep one chunk per actor in flight and submit another as each result is taken.
  `maxtasksperchild=n`: an actor that has been given n chunks is stopped (after its
  work) and replaced by a new one.
* An item whose function raises does not stop its chunk: the error is kept in place of
  its result, and `get()` raises it in the caller as the function's own exception.
* `close()`: no new work (`ValueError("Pool not running")`), the actors end once their
  queued chunks are done; `terminate()`: close and kill the actors now (unfinished
  results then raise `ActorDiedError`); `join()` (after either, else `ValueError("Pool
  is still running")`) waits for the actors to end and the results to come in. `with
  Pool() as p:` terminates the pool on exit, as `multiprocessing` does.
* `context` is accepted and ignored with a warning, as Ray does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

import raylite

from .results import (
    AsyncResult,
    IMapIterator,
    OrderedIMapIterator,
    PoolTaskError,
    UnorderedIMapIterator,
    _Collector,
)

log = logging.getLogger(__name__)

ADDRESS_ENV = "RAYLITE_ADDRESS"


class PoolActor:
    """One process of a pool: runs the initializer, then chunks of items."""

    def __init__(self, initializer: Callable[..., Any] | None = None, initargs: Any = None):
        if initializer:
            initializer(*(initargs or ()))

    def ping(self) -> None:
        """Answers once the initializer has run."""

    def run_batch(self, func: Callable[..., Any], batch: list[tuple[Any, Any]]) -> list[Any]:
        results: list[Any] = []
        for args, kwargs in batch:
            try:
                results.append(func(*(args or ()), **(kwargs or {})))
            except Exception as exc:
                results.append(PoolTaskError(exc))
        return results

    def stop(self) -> None:
        """End this actor once the chunks queued before this call are done."""
        raylite.actor.exit_actor()


_PoolActor = raylite.remote(num_cpus=0)(PoolActor)


def _chunksize_for(count: int, processes: int) -> int:
    """About four chunks per process (Ray's and multiprocessing's rule)."""
    chunksize, extra = divmod(count, processes * 4)
    return chunksize + 1 if extra else chunksize


def _check_chunksize(chunksize: int | None) -> None:
    if chunksize is not None and chunksize < 1:
        raise ValueError(f"Chunksize must be 1+, not {chunksize}")


class Pool:
    """A pool of actor processes that run functions on items in parallel.

    Arguments:
        processes: how many actors; by default the cluster's CPUs.
        initializer: called with `*initargs` in each actor when it starts.
        initargs: arguments of `initializer`.
        maxtasksperchild: chunks an actor runs before it is replaced (default: no limit).
        context: accepted for `multiprocessing.Pool`'s API, and ignored.
        ray_address: the cluster to connect to if raylite is not running yet
            (`init(address=...)`); by default `RAYLITE_ADDRESS`, else a new local one.
        ray_remote_args: options of the pool's actors (`num_cpus`, `resources`, ...).

    Example:
        >>> with Pool(processes=2) as pool:
        ...     pool.map(abs, [-1, -2, 3])
        [1, 2, 3]
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] | None = None,
        maxtasksperchild: int | None = None,
        context: Any = None,
        ray_address: str | None = None,
        ray_remote_args: dict[str, Any] | None = None,
    ) -> None:
        self._closed = False
        self._initializer = initializer
        self._initargs = initargs
        self._maxtasksperchild = maxtasksperchild or -1
        self._stopping: list[Any] = []  # refs of stop() calls: ready once the actor ended
        self._current_index = 0
        self._actor_class = _PoolActor.options(**(ray_remote_args or {}))
        self._collector = _Collector()
        if context:
            log.warning(
                "The 'context' argument is not supported by raylite's Pool and is ignored: "
                "the pool's processes are raylite actors."
            )
        processes = self._init_raylite(processes, ray_address)
        self._actors: list[tuple[Any, int]] = [self._new_actor() for _ in range(processes)]
        raylite.get([actor.ping.remote() for actor, _ in self._actors])

    @staticmethod
    def _init_raylite(processes: int | None, ray_address: str | None) -> int:
        if not raylite.is_initialized():
            address = ray_address if ray_address is not None else os.environ.get(ADDRESS_ENV)
            if address and address != "local":
                raylite.init(address=address)
            else:
                raylite.init(num_cpus=processes)
        cpus = int(raylite.cluster_resources().get("CPU", 0))
        if processes is None:
            processes = cpus
        if processes <= 0:
            raise ValueError("Processes in the pool must be >0.")
        if cpus < processes:
            raise ValueError(
                f"Tried to start a pool with {processes} processes on an existing raylite "
                f"cluster, but there are only {cpus} CPUs in the cluster."
            )
        return processes

    # -- the actors ------------------------------------------------------------------

    def _new_actor(self) -> tuple[Any, int]:
        return self._actor_class.remote(self._initializer, self._initargs), 0

    def _stop_actor(self, actor: Any) -> None:
        # Forget actors that have ended already, so the list stays short.
        if self._stopping:
            _, self._stopping = raylite.wait(
                self._stopping, num_returns=len(self._stopping), timeout=0
            )
        self._stopping.append(actor.stop.remote())

    def _next_actor_index(self) -> int:
        self._current_index = (self._current_index + 1) % len(self._actors)
        return self._current_index

    def _run_batch(
        self, actor_index: int, func: Callable[..., Any], batch: list[tuple[Any, Any]]
    ) -> Any:
        actor, count = self._actors[actor_index]
        ref = actor.run_batch.remote(func, batch)
        count += 1
        if count == self._maxtasksperchild:
            self._stop_actor(actor)
            actor, count = self._new_actor()
        self._actors[actor_index] = (actor, count)
        return ref

    def _check_running(self) -> None:
        if self._closed:
            raise ValueError("Pool not running")

    # -- one call --------------------------------------------------------------------

    def apply(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """`func(*args, **kwargs)` on one of the pool's actors; its result."""
        return self.apply_async(func, args, kwargs).get()

    def apply_async(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[Any], Any] | None = None,
    ) -> AsyncResult:
        """Like apply(), returning an AsyncResult at once."""
        self._check_running()
        ref = self._run_batch(self._next_actor_index(), func, [(args, kwargs)])
        return AsyncResult(self._collector, [ref], callback, error_callback, single_result=True)

    # -- many items ------------------------------------------------------------------

    def _chunk_and_run(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None, star: bool
    ) -> list[Any]:
        _check_chunksize(chunksize)
        items = list(iterable)
        if chunksize is None:
            chunksize = max(1, _chunksize_for(len(items), len(self._actors)))
        refs: list[Any] = []
        for start in range(0, len(items), chunksize):
            chunk = [(tuple(x) if star else (x,), None) for x in items[start : start + chunksize]]
            refs.append(self._run_batch(len(refs) % len(self._actors), func, chunk))
        return refs

    def _map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        star: bool = False,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[Any], Any] | None = None,
    ) -> AsyncResult:
        self._check_running()
        refs = self._chunk_and_run(func, iterable, chunksize, star)
        return AsyncResult(self._collector, refs, callback, error_callback)

    def map(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None
    ) -> list[Any]:
        """`[func(x) for x in iterable]`, computed by the pool's actors."""
        results: list[Any] = self._map_async(func, iterable, chunksize).get()
        return results

    def map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[list[Any]], Any] | None = None,
        error_callback: Callable[[Any], Any] | None = None,
    ) -> AsyncResult:
        """Like map(), returning an AsyncResult at once."""
        return self._map_async(func, iterable, chunksize, False, callback, error_callback)

    def starmap(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None
    ) -> list[Any]:
        """`[func(*args) for args in iterable]`, computed by the pool's actors."""
        results: list[Any] = self._map_async(func, iterable, chunksize, star=True).get()
        return results

    def starmap_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        callback: Callable[[list[Any]], Any] | None = None,
        error_callback: Callable[[Any], Any] | None = None,
    ) -> AsyncResult:
        """Like starmap(), returning an AsyncResult at once (Ray's signature: no chunksize)."""
        return self._map_async(func, iterable, None, True, callback, error_callback)

    def _imap(
        self,
        kind: type[IMapIterator],
        func: Callable[..., Any],
        iterable: Any,
        chunksize: int | None,
    ) -> IMapIterator:
        self._check_running()
        _check_chunksize(chunksize)
        if chunksize is None:
            sized = hasattr(iterable, "__len__") and not hasattr(iterable, "__next__")
            chunksize = _chunksize_for(len(iterable), len(self._actors)) if sized else 1
        chunksize = max(chunksize, 1)

        def submit(items: list[Any], actor_index: int) -> Any:
            return self._run_batch(actor_index, func, [((x,), None) for x in items])

        return kind(self._collector, submit, iterable, chunksize, len(self._actors))

    def imap(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = 1
    ) -> IMapIterator:
        """Results of `func` over `iterable` in order, submitting as they are taken."""
        return self._imap(OrderedIMapIterator, func, iterable, chunksize)

    def imap_unordered(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = 1
    ) -> IMapIterator:
        """Like imap(), but results in the order their chunks finish."""
        return self._imap(UnorderedIMapIterator, func, iterable, chunksize)

    # -- the pool's life -------------------------------------------------------------

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()

    def close(self) -> None:
        """Take no more work; the actors end once the work given to them is done."""
        if self._closed:
            return
        for actor, _ in self._actors:
            self._stop_actor(actor)
        self._closed = True

    def terminate(self) -> None:
        """Take no more work and kill the actors now; unfinished results fail."""
        self.close()
        for actor, _ in self._actors:
            raylite.kill(actor)

    def join(self) -> None:
        """Wait for a closed pool's actors to end and its results to come in."""
        if not self._closed:
            raise ValueError("Pool is still running")
        if self._stopping:
            raylite.wait(self._stopping, num_returns=len(self._stopping))
            self._stopping = []
        self._collector.join()
