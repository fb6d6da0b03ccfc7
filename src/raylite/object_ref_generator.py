"""ObjectRefGenerator and DynamicObjectRefGenerator: what a generator task returns.

Owns the two public classes (Ray's names) and how `.remote()` of a generator task
makes its result. ObjectRefGenerator reads a streaming task's items as its worker
yields them: `next()`, `for`, `anext()`, `async for`, `completed()`, and `wait()`
(wait_with_generators); it cannot be pickled, as in Ray. DynamicObjectRefGenerator is
the value of a `num_returns="dynamic"` task's one ref: the items' refs. Not the
items themselves (core/generators.py: Stream, on the owner), not running the
generator (worker_generators).

    f.remote() ─▶ ObjectRefGenerator ──next()──▶ core worker: Stream.take
                      └── __del__ ──▶ the stream goes (the worker is not held back)
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from typing import Any

from . import protocol as P
from .core.generators import END, FAILED, ITEM, Stream
from .object_ref import ObjectRef


class ObjectRefGenerator:
    """The refs a streaming generator task yields, as it yields them.

    Iterate it (`for ref in gen`, `next(gen)`, `async for`, `await anext(gen)`): each
    item is an ObjectRef. If the task fails after some yields, the next item is a ref
    whose `get` raises the error; then the iteration stops. Made by `.remote()`; not
    thread-safe; it cannot be passed to other tasks.
    """

    def __init__(self, generator_ref: ObjectRef, stream: Stream, worker: Any) -> None:
        self._generator_ref = generator_ref
        self._stream = stream
        self._worker = worker

    def __iter__(self) -> ObjectRefGenerator:
        return self

    def __next__(self) -> ObjectRef:
        """The next item's ref, waiting until the task yields it; StopIteration at the end."""
        return self._item(*self._worker.stream_next(self._stream), StopIteration)

    def __aiter__(self) -> ObjectRefGenerator:
        return self

    async def __anext__(self) -> ObjectRef:
        kind, ref = await self._worker.stream_next_async(self._stream)
        return self._item(kind, ref, StopAsyncIteration)

    def _item(self, kind: str, ref: ObjectRef | None, stop: type[Exception]) -> ObjectRef:
        if kind is ITEM:
            assert ref is not None
            return ref
        if kind is FAILED:
            return self._generator_ref  # its get raises the task's error
        assert kind is END
        raise stop

    def completed(self) -> ObjectRef:
        """A ref that is ready once the task has ended (its get raises if it failed)."""
        return self._generator_ref

    def next_ready(self) -> bool:
        """Whether next() would return a ref at once (False at the end: see is_finished)."""
        return bool(self._worker.stream_state(self._stream)[0])

    def is_finished(self) -> bool:
        """Whether the task has ended and every ref was taken: next() raises StopIteration."""
        return bool(self._worker.stream_state(self._stream)[1])

    def send(self, value: Any) -> Any:
        raise NotImplementedError("`gen.send` is not supported.")

    def throw(self, *args: Any) -> Any:
        raise NotImplementedError("`gen.throw` is not supported.")

    def close(self) -> None:
        raise NotImplementedError("`gen.close` is not supported.")

    async def asend(self, value: Any) -> Any:
        raise NotImplementedError("`gen.asend` is not supported.")

    async def athrow(self, *args: Any) -> Any:
        raise NotImplementedError("`gen.athrow` is not supported.")

    async def aclose(self) -> None:
        raise NotImplementedError("`gen.aclose` is not supported.")

    def __reduce__(self) -> Any:
        raise TypeError(
            "You cannot return or pass a generator to other task. "
            "Serializing a ObjectRefGenerator is not allowed."
        )

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._generator_ref.hex()})"

    def __del__(self) -> None:
        # __del__ may run anywhere (under the core worker's lock, in the GC): the timer
        # thread lets the stream go.
        try:
            cw = self._worker
            if not cw.closed:
                stream = self._stream
                cw.timers.call_later(0, lambda: cw.drop_stream(stream))
        except Exception:  # interpreter shutdown, or built half-way
            pass


class DynamicObjectRefGenerator:
    """The value of a `num_returns="dynamic"` task's ref: the refs of what it yielded,
    in order. Iterating hands each out once, as in Ray."""

    def __init__(self, refs: Iterable[ObjectRef]) -> None:
        self._refs: collections.deque[ObjectRef] = collections.deque(refs)

    def __iter__(self) -> Iterator[ObjectRef]:
        while self._refs:
            yield self._refs.popleft()

    def __len__(self) -> int:
        return len(self._refs)


def generator_result(cw: Any, refs: list[ObjectRef], mode: int) -> Any:
    """What `.remote()` of a streaming or dynamic generator task returns."""
    if mode == P.GENERATOR_DYNAMIC:
        return refs[0]
    return ObjectRefGenerator(refs[0], cw.streams[refs[0].id], cw)


def wait_with_generators(
    cw: Any, items: list[Any], num_returns: int, timeout: float | None
) -> tuple[list[Any], list[Any]]:
    """wait() on refs and generators: a generator is ready once next() would not wait."""

    def when_ready(item: Any, callback: Any) -> int:
        if isinstance(item, ObjectRefGenerator):
            if getattr(item, "_stream", None) is None:  # local_mode's: all there already
                return 1
            return int(cw.stream_when_ready(item._stream, callback))
        return int(cw._when_ready(item, callback))

    return cw.wait(items, num_returns, timeout, when_ready)  # type: ignore[no-any-return]


__all__ = ["DynamicObjectRefGenerator", "ObjectRefGenerator"]
