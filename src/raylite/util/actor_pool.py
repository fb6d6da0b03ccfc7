"""ActorPool: spread calls over a fixed set of actors (Ray's `ray.util.ActorPool`).

This module owns the pool's bookkeeping and nothing else: which actors are idle,
which call is running on which actor, the calls waiting for an actor, and the order
in which results are handed back. Everything it does goes through raylite's public
API (`raylite.get`, `raylite.wait`); it starts no process and holds no lock, so a pool
is meant to be driven from one thread, like Ray's.

The behaviour follows Ray's:

* `submit(fn, value)` calls `fn(actor, value)` (typically
  `lambda a, v: a.method.remote(v)`) on an idle actor at once, or queues the value
  until an actor comes back. The actor counts as busy until its result is taken with
  `get_next()` / `get_next_unordered()`; the queue is served first-in, first-out.
* `get_next()` returns results in submission order, `get_next_unordered()` whichever
  finishes first; both raise `StopIteration("No more results to get")` when nothing is
  in flight, and `raylite.exceptions.GetTimeoutError` (a `TimeoutError`) when a
  `timeout` passes. With `ignore_if_timedout=True` the timed-out call is dropped, its
  actor is handed back to the pool, and the error still raises.
* `map()` / `map_unordered()` submit every value immediately and return an iterator
  over the results; results still pending from earlier calls are dropped first
  (`map`) or waited for and discarded (`map_unordered`).
* An actor whose call raised `ActorDiedError` is not returned to the pool.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import raylite
from raylite.exceptions import ActorDiedError, GetTimeoutError

_TIMEOUT_MSG = "Timed out waiting for result"

SubmitFn = Callable[[Any, Any], Any]


def _refs_of(future: Any) -> list[Any]:
    """The ObjectRefs behind what `fn` returned: one ref, or a list of them."""
    refs = list(future) if isinstance(future, (list, tuple)) else [future]
    return list(dict.fromkeys(refs))


class ActorPool:
    """A fixed pool of actors that calls are spread over.

    Arguments:
        actors: the actor handles to use.

    Example:
        >>> pool = ActorPool([Doubler.remote(), Doubler.remote()])
        >>> list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4]))
        [2, 4, 6, 8]
    """

    def __init__(self, actors: Iterable[Any]) -> None:
        self._idle: list[Any] = list(actors)
        # submission index -> (what fn returned, the actor running it); dict order is
        # submission order.
        self._in_flight: dict[int, tuple[Any, Any]] = {}
        self._queued: deque[tuple[SubmitFn, Any]] = deque()
        self._submitted = 0  # the index the next submitted call gets
        self._next_ordered = 0  # the index get_next() hands back next

    # -- bulk ----------------------------------------------------------------------

    def map(self, fn: SubmitFn, values: Iterable[Any]) -> Iterator[Any]:
        """Submit `fn(actor, v)` for every value; iterate the results in order."""
        self._drop_pending()
        for v in values:
            self.submit(fn, v)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next()

        return results()

    def map_unordered(self, fn: SubmitFn, values: Iterable[Any]) -> Iterator[Any]:
        """Like map(), but iterate the results as they complete."""
        while self.has_next():
            self.get_next_unordered()
        for v in values:
            self.submit(fn, v)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next_unordered()

        return results()

    # -- one call at a time ----------------------------------------------------------

    def submit(self, fn: SubmitFn, value: Any) -> None:
        """Run `fn(actor, value)` on an idle actor, or queue it until one is free."""
        if not self._idle:
            self._queued.append((fn, value))
            return
        actor = self._idle.pop()
        try:
            future = fn(actor, value)
        except BaseException:
            self._idle.append(actor)
            raise
        self._in_flight[self._submitted] = (future, actor)
        self._submitted += 1

    def has_next(self) -> bool:
        """Whether any submitted call's result has not been handed back yet."""
        return bool(self._in_flight)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order, waiting up to `timeout` seconds."""
        if not self._in_flight:
            raise StopIteration("No more results to get")
        index = self._next_ordered
        if index >= self._submitted:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        future, actor = self._in_flight[index]
        if timeout is not None and not self._is_ready(future, timeout):
            if not ignore_if_timedout:
                raise GetTimeoutError(_TIMEOUT_MSG)
            self._take(index)
            self._release(actor)
            raise GetTimeoutError(f"{_TIMEOUT_MSG}. The task {future} has been ignored.")
        self._take(index)
        return self._collect(future, actor)

    def get_next_unordered(
        self, timeout: float | None = None, ignore_if_timedout: bool = False
    ) -> Any:
        """Whichever pending result is ready first, waiting up to `timeout` seconds.

        On a timeout with `ignore_if_timedout=True` the oldest pending call is dropped.
        """
        if not self._in_flight:
            raise StopIteration("No more results to get")
        index = self._wait_any(timeout)
        if index is None:
            if not ignore_if_timedout:
                raise GetTimeoutError(_TIMEOUT_MSG)
            index = next(iter(self._in_flight))
            future, actor = self._take(index)
            self._release(actor)
            raise GetTimeoutError(f"{_TIMEOUT_MSG}. The task {future} has been ignored.")
        future, actor = self._take(index)
        return self._collect(future, actor)

    # -- the actors ------------------------------------------------------------------

    def has_free(self) -> bool:
        """Whether an actor is idle and no submitted value is waiting for one."""
        return bool(self._idle) and not self._queued

    def pop_idle(self) -> Any | None:
        """Take an idle actor out of the pool; None when has_free() is False."""
        return self._idle.pop() if self.has_free() else None

    def push(self, actor: Any) -> None:
        """Add an actor to the pool (it serves a queued value at once, if any)."""
        busy = [a for _, a in self._in_flight.values()]
        if actor in self._idle or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._release(actor)

    # -- internals -------------------------------------------------------------------

    def _take(self, index: int) -> tuple[Any, Any]:
        """Remove call `index` from the in-flight set; get_next() moves past it."""
        entry = self._in_flight.pop(index)
        self._next_ordered = max(self._next_ordered, index + 1)
        return entry

    def _release(self, actor: Any, alive: bool = True) -> None:
        """The actor's call is over: make it idle and give it the oldest queued value."""
        if alive:
            self._idle.append(actor)
        if self._queued and self._idle:
            self.submit(*self._queued.popleft())

    def _collect(self, future: Any, actor: Any) -> Any:
        alive = True
        try:
            return raylite.get(future)
        except ActorDiedError:
            alive = False
            raise
        finally:
            self._release(actor, alive)

    def _drop_pending(self) -> None:
        """Before map(): take what has finished, drop (and free) what has not."""
        for index in list(self._in_flight):
            future, actor = self._take(index)
            if self._is_ready(future, 0):
                self._collect(future, actor)
            else:
                self._release(actor)

    @staticmethod
    def _is_ready(future: Any, timeout: float) -> bool:
        refs = _refs_of(future)
        ready, _ = raylite.wait(refs, num_returns=len(refs), timeout=timeout)
        return len(ready) == len(refs)

    def _wait_any(self, timeout: float | None) -> int | None:
        """The oldest in-flight call whose refs are all ready, or None on timeout."""
        owner: dict[Any, int] = {}
        for index, (future, _) in self._in_flight.items():
            for ref in _refs_of(future):
                owner.setdefault(ref, index)
        refs = list(owner)
        ready, _ = raylite.wait(refs, num_returns=1, timeout=timeout)
        if not ready:
            return None
        first = owner[ready[0]]
        if len(_refs_of(self._in_flight[first][0])) == 1:
            return first
        # A call that returned several refs is done only when all of them are: check
        # everything ready now, and otherwise wait for more (within the timeout).
        return self._wait_all_of_any(owner, timeout)

    def _wait_all_of_any(self, owner: dict[Any, int], timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        done: set[Any] = set()
        while True:
            pending = [r for r in owner if r not in done]
            if pending:
                ready, _ = raylite.wait(pending, num_returns=len(pending), timeout=0)
                done.update(ready)
            for index, (future, _) in self._in_flight.items():
                if all(r in done for r in _refs_of(future)):
                    return index
            pending = [r for r in owner if r not in done]
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if remaining == 0.0:
                return None
            ready, _ = raylite.wait(pending, num_returns=1, timeout=remaining)
            if not ready:
                return None
            done.update(ready)
