"""Queue: a first-in, first-out queue shared by tasks and actors (Ray's `ray.util.queue`).

This module owns the queue's client object (`Queue`), the actor that holds the items
(`_QueueActor`), and the `Empty` / `Full` exceptions. It uses only raylite's public
API; the items live in one async actor, created when the `Queue` is, that wraps an
`asyncio.Queue`.

The behaviour follows Ray's:

* `Queue(maxsize=0, actor_options=None)`: `maxsize <= 0` means unbounded;
  `actor_options` go to `.options(...)` of the actor (resources, name, ...).
* `get()` / `put()` block by waiting inside the actor: each blocked call is one
  coroutine suspended on the `asyncio.Queue` (with `asyncio.wait_for` when a
  `timeout` is given), so nothing polls. A blocked call holds one of the actor's
  concurrent slots (`max_concurrency`, 1000 by default for async actors) until it
  returns.
* `get` raises `Empty` and `put` raises `Full` when `block=False` and the queue is
  empty / full, or when `timeout` seconds pass; a negative `timeout` raises
  `ValueError("'timeout' must be a non-negative number")`. `Empty` and `Full`
  subclass the standard library's `queue.Empty` and `queue.Full`.
* `put_async` / `get_async` are the same calls for an event loop (`await q.get_async()`).
* `put_nowait_batch(items)` adds all items or none (`Full` if they do not fit);
  `get_nowait_batch(n)` takes exactly `n` items or none (`Empty` if fewer are there).
* An item passed to `put` is a top-level argument of an actor call, so an `ObjectRef`
  put on the queue comes out as its value, as in Ray; items inside
  `put_nowait_batch`'s list stay references.
* A `Queue` pickles as its actor handle, so it can be passed to tasks and actors and
  all copies share the same items. `shutdown()` ends the actor (gracefully, then by
  force after `grace_period_s`); the queue is unusable afterwards.
"""

from __future__ import annotations

import asyncio
import queue as _stdlib_queue
from collections.abc import Iterable
from typing import Any

import raylite

_TIMEOUT_MSG = "'timeout' must be a non-negative number"


class Empty(_stdlib_queue.Empty):
    """Raised by `get` when no item arrives (non-blocking, or after `timeout`)."""


class Full(_stdlib_queue.Full):
    """Raised by `put` when no space frees up (non-blocking, or after `timeout`)."""


# Replies of the actor: the client raises the matching exception itself, so that the
# caller sees a plain `Empty` / `Full` rather than a task error wrapping one.
_OK = 0
_EMPTY = 1
_FULL = 2


class _QueueActor:
    """The items of one Queue, in an asyncio.Queue on the actor's event loop.

    Every method is `async def` so that all of them run on the one event loop thread
    that owns the asyncio.Queue (asyncio.Queue is not thread-safe).
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)

    async def qsize(self) -> int:
        return self.queue.qsize()

    async def empty(self) -> bool:
        return self.queue.empty()

    async def full(self) -> bool:
        return self.queue.full()

    async def put(self, item: Any, wait_s: float | None) -> int:
        if not self.queue.full():
            self.queue.put_nowait(item)
            return _OK
        if wait_s is not None and wait_s <= 0:
            return _FULL
        try:
            await asyncio.wait_for(self.queue.put(item), wait_s)
        except TimeoutError:
            return _FULL
        return _OK

    async def get(self, wait_s: float | None) -> tuple[int, Any]:
        # An item already there is taken at once, also with wait_s=0 (on Python 3.11
        # wait_for(..., 0) would give up without letting the get run at all).
        if not self.queue.empty():
            return _OK, self.queue.get_nowait()
        if wait_s is not None and wait_s <= 0:
            return _EMPTY, None
        try:
            return _OK, await asyncio.wait_for(self.queue.get(), wait_s)
        except TimeoutError:
            return _EMPTY, None

    async def put_nowait_batch(self, items: list[Any]) -> str | None:
        size = self.queue.qsize()
        if self.maxsize > 0 and size + len(items) > self.maxsize:
            return (
                f"Cannot add {len(items)} items to queue of size {size} and maxsize {self.maxsize}."
            )
        for item in items:
            self.queue.put_nowait(item)
        return None

    async def get_nowait_batch(self, num_items: int) -> tuple[int, Any]:
        size = self.queue.qsize()
        if num_items > size:
            return _EMPTY, f"Cannot get {num_items} items from queue of size {size}."
        return _OK, [self.queue.get_nowait() for _ in range(num_items)]

    def _exit(self) -> None:
        # Sync on purpose: raylite ends an actor from exit_actor() in a sync method.
        raylite.actor.exit_actor()


_actor_class: Any = None


def _queue_actor_class() -> Any:
    # Wrapped lazily and kept apart from the plain class, so that the class itself
    # stays importable by reference (workers load it from this module).
    global _actor_class
    if _actor_class is None:
        _actor_class = raylite.remote(_QueueActor)
    return _actor_class


def _check_timeout(block: bool, timeout: float | None) -> float | None:
    """The timeout to wait inside the actor: 0 for a non-blocking call."""
    if not block:
        return 0
    if timeout is not None and timeout < 0:
        raise ValueError(_TIMEOUT_MSG)
    return timeout


class Queue:
    """A first-in, first-out queue whose items live in an actor, like `ray.util.queue.Queue`.

    Args:
        maxsize: the most items the queue holds; 0 (or less) means unbounded.
        actor_options: options for the actor that holds the items, passed to
            `.options(...)` (for example `{"num_cpus": 1}` or a `name`).
    """

    def __init__(self, maxsize: int = 0, actor_options: dict[str, Any] | None = None) -> None:
        self.maxsize = maxsize
        self.actor: Any = _queue_actor_class().options(**(actor_options or {})).remote(maxsize)

    def _handle(self) -> Any:
        if self.actor is None:
            raise RuntimeError("This Queue has been shut down.")
        return self.actor

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        """The number of items in the queue."""
        return raylite.get(self._handle().qsize.remote())

    def qsize(self) -> int:
        """The number of items in the queue."""
        return self.size()

    def empty(self) -> bool:
        """Whether the queue holds no item."""
        return raylite.get(self._handle().empty.remote())

    def full(self) -> bool:
        """Whether the queue holds `maxsize` items (never true when unbounded)."""
        return raylite.get(self._handle().full.remote())

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add `item`; if the queue is full wait (up to `timeout` s) or raise `Full`."""
        wait = _check_timeout(block, timeout)
        if raylite.get(self._handle().put.remote(item, wait)) != _OK:
            raise Full

    # The `timeout` parameters of the async methods are Ray's API (ASYNC109 prefers none).
    async def put_async(
        self,
        item: Any,
        block: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> None:
        """`put` for an event loop: awaits the actor instead of blocking the thread."""
        wait = _check_timeout(block, timeout)
        if await self._handle().put.remote(item, wait) != _OK:
            raise Full

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the oldest item; if there is none wait (up to `timeout` s)
        or raise `Empty`."""
        wait = _check_timeout(block, timeout)
        status, item = raylite.get(self._handle().get.remote(wait))
        if status != _OK:
            raise Empty
        return item

    async def get_async(
        self,
        block: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any:
        """`get` for an event loop: awaits the actor instead of blocking the thread."""
        wait = _check_timeout(block, timeout)
        status, item = await self._handle().get.remote(wait)
        if status != _OK:
            raise Empty
        return item

    def put_nowait(self, item: Any) -> None:
        """`put(item, block=False)`: raise `Full` at once if there is no space."""
        self.put(item, block=False)

    def put_nowait_batch(self, items: Iterable[Any]) -> None:
        """Add all `items` in order, or none of them (raise `Full`) if they do not fit."""
        if not isinstance(items, Iterable):
            raise TypeError("Argument 'items' must be an Iterable")
        error = raylite.get(self._handle().put_nowait_batch.remote(list(items)))
        if error is not None:
            raise Full(error)

    def get_nowait(self) -> Any:
        """`get(block=False)`: raise `Empty` at once if there is no item."""
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Remove and return the `num_items` oldest items, or raise `Empty` (taking
        nothing) if fewer are there."""
        if not isinstance(num_items, int):
            raise TypeError("Argument 'num_items' must be an int")
        if num_items < 0:
            raise ValueError("'num_items' must be nonnegative")
        status, result = raylite.get(self._handle().get_nowait_batch.remote(num_items))
        if status != _OK:
            raise Empty(result)
        return result

    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        """End the queue's actor and release its resources; items still in it are lost.

        Without `force` the actor is asked to exit and killed only if it has not done
        so within `grace_period_s` seconds; with `force` it is killed at once.
        """
        actor, self.actor = self.actor, None
        if actor is None:
            return
        if not force:
            done, _ = raylite.wait([actor._exit.remote()], timeout=grace_period_s)
            if done:
                return
        raylite.kill(actor, no_restart=True)


__all__ = ["Empty", "Full", "Queue"]
