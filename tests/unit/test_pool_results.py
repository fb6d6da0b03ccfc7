"""The Pool's results side (util/multiprocessing/results.py) with hand-made refs: the
order imap yields in, when chunks are submitted, callbacks, and the collector thread's
life. No engine: a ref here is anything with a `future()`."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from multiprocessing import TimeoutError as PoolTimeoutError

import pytest

from raylite.util.multiprocessing.results import (
    AsyncResult,
    OrderedIMapIterator,
    PoolTaskError,
    UnorderedIMapIterator,
    _Collector,
)


class Ref:
    def __init__(self) -> None:
        self.fut: concurrent.futures.Future = concurrent.futures.Future()

    def future(self) -> concurrent.futures.Future:
        return self.fut


class Submitter:
    """Stands in for the pool: records chunks, hands out refs it completes on demand."""

    def __init__(self) -> None:
        self.chunks: list[tuple[list, int]] = []
        self.refs: list[Ref] = []

    def __call__(self, items: list, actor_index: int) -> Ref:
        self.chunks.append((items, actor_index))
        self.refs.append(Ref())
        return self.refs[-1]

    def finish(self, index: int, fn=lambda x: x * 10) -> None:
        items, _ = self.chunks[index]
        self.refs[index].fut.set_result([fn(x) for x in items])


def test_ordered_imap_waits_for_the_next_chunk_in_order():
    collector, submit = _Collector(), Submitter()
    it = OrderedIMapIterator(collector, submit, range(5), chunksize=2, processes=2)
    assert [c for c, _ in submit.chunks] == [[0, 1], [2, 3]]  # one chunk per actor
    assert [a for _, a in submit.chunks] == [0, 1]
    submit.finish(1)
    with pytest.raises(PoolTimeoutError):
        it.next(timeout=0.05)  # chunk 1 is in, chunk 0 is not
    assert len(submit.chunks) == 3  # taking chunk 1's result submitted the next one
    assert submit.chunks[2] == ([4], 0)
    submit.finish(0)
    assert [it.next(timeout=5) for _ in range(4)] == [0, 10, 20, 30]
    submit.finish(2)
    assert it.next(timeout=5) == 40
    with pytest.raises(StopIteration):
        it.next()
    collector.join(5)


def test_unordered_imap_yields_chunks_as_they_finish():
    collector, submit = _Collector(), Submitter()
    it = UnorderedIMapIterator(collector, submit, iter(range(3)), chunksize=1, processes=2)
    submit.finish(1)
    assert next(it) == 10
    submit.finish(0)
    submit.finish(2)
    assert sorted(it) == [0, 20]
    collector.join(5)


def test_a_failed_chunk_is_one_error_value():
    collector, submit = _Collector(), Submitter()
    it = OrderedIMapIterator(collector, submit, [1, 2], chunksize=2, processes=1)
    submit.refs[0].fut.set_exception(RuntimeError("actor died"))
    (value,) = list(it)
    assert isinstance(value, RuntimeError)
    collector.join(5)


def test_async_result_callbacks_and_order():
    collector = _Collector()
    refs = [Ref(), Ref(), Ref()]
    calls: queue.Queue = queue.Queue()
    result = AsyncResult(collector, refs, callback=calls.put, error_callback=calls.put)
    refs[2].fut.set_result([5])
    refs[0].fut.set_result([1, 2])
    assert not result.ready()
    with pytest.raises(ValueError, match="not ready"):
        result.successful()
    refs[1].fut.set_result([3, 4])
    assert result.get(timeout=5) == [1, 2, 3, 4, 5]
    assert calls.get_nowait() == [1, 2, 3, 4, 5]  # in submission order, once
    assert calls.empty()
    assert result.successful()
    collector.join(5)


def test_async_result_error_callback_gets_the_first_failure_only():
    collector = _Collector()
    refs = [Ref(), Ref()]
    calls: queue.Queue = queue.Queue()
    errors: queue.Queue = queue.Queue()
    result = AsyncResult(collector, refs, callback=calls.put, error_callback=errors.put)
    first = PoolTaskError(ValueError("one"))
    refs[0].fut.set_result([1, first])
    refs[1].fut.set_result([PoolTaskError(KeyError("two"))])
    result.wait(5)
    assert errors.get_nowait() is first
    assert errors.empty()
    assert calls.empty()
    assert not result.successful()
    with pytest.raises(ValueError, match="one"):
        result.get()
    collector.join(5)


def test_a_raising_callback_does_not_stop_the_collector():
    collector = _Collector()

    def bad(_):
        raise RuntimeError("callback bug")

    ref = Ref()
    result = AsyncResult(collector, [ref], callback=bad, single_result=True)
    ref.fut.set_result([7])
    result.wait(5)
    assert result.ready()
    assert result.get() == 7
    ref2 = Ref()
    second = AsyncResult(collector, [ref2], single_result=True)
    ref2.fut.set_result([8])
    assert second.get(timeout=5) == 8
    collector.join(5)


def test_the_collector_thread_lives_only_while_chunks_are_out():
    def threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name == "raylite-pool-results"]

    collector = _Collector()
    assert AsyncResult(collector, []).get(timeout=1) == []  # nothing out: no thread
    assert threads() == []
    ref = Ref()
    result = AsyncResult(collector, [ref])
    assert threads() == ["raylite-pool-results"]
    ref.fut.set_result([1])
    assert result.get(timeout=5) == [1]
    collector.join(5)
    assert threads() == []
