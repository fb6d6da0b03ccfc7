"""ray.util.queue.Queue: a FIFO queue in an actor, shared by the driver, tasks and actors."""

from __future__ import annotations

import asyncio
import queue as stdlib_queue
import time

import pytest

from tests._engine import AGAINST_RAY, ray

if AGAINST_RAY:
    from ray.util.queue import Empty, Full, Queue
else:
    from raylite.util.queue import Empty, Full, Queue

RAY_INIT = {"num_cpus": 2}

# Upper bound for "it did not hang": generous, the machine may be loaded.
HANG_S = 10.0


@ray.remote
def put_later(q, item, delay):
    time.sleep(delay)
    q.put(item)
    return True


@ray.remote
def produce(q, start, count):
    for i in range(start, start + count):
        q.put(i, timeout=HANG_S)
    return count


@ray.remote
class Consumer:
    def consume(self, q, count):
        return [q.get(timeout=HANG_S) for _ in range(count)]


@ray.remote
def value(x):
    return x


def test_exceptions_are_the_standard_library_ones():
    assert issubclass(Empty, stdlib_queue.Empty)
    assert issubclass(Full, stdlib_queue.Full)


def test_fifo_put_get(ray_start):
    q = Queue()
    for i in range(10):
        q.put(i)
    assert [q.get() for _ in range(10)] == list(range(10))
    q.put({"a": [1, 2]})
    assert q.get(block=False) == {"a": [1, 2]}


def test_size_empty_full(ray_start):
    q = Queue(maxsize=2)
    assert q.empty()
    assert not q.full()
    assert q.qsize() == q.size() == len(q) == 0
    q.put("a")
    assert not q.empty()
    assert not q.full()
    assert q.qsize() == 1
    q.put("b")
    assert q.full()
    assert q.size() == 2
    q.get()
    assert not q.full()
    assert q.qsize() == 1

    unbounded = Queue()
    unbounded.put_nowait_batch(range(50))
    assert not unbounded.full()
    assert unbounded.qsize() == 50


def test_nowait_on_empty_and_full(ray_start):
    q = Queue(maxsize=1)
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(Empty):
        q.get(block=False)
    q.put_nowait(1)
    with pytest.raises(Full):
        q.put_nowait(2)
    with pytest.raises(Full):
        q.put(2, block=False)
    assert q.get_nowait() == 1
    assert q.empty()


def test_get_timeout_on_empty_raises_empty(ray_start):
    q = Queue()
    start = time.monotonic()
    with pytest.raises(Empty):
        q.get(timeout=0.2)
    elapsed = time.monotonic() - start
    assert 0.15 <= elapsed < HANG_S


def test_put_timeout_on_full_raises_full(ray_start):
    q = Queue(maxsize=1)
    q.put("x")
    start = time.monotonic()
    with pytest.raises(Full):
        q.put("y", timeout=0.2)
    elapsed = time.monotonic() - start
    assert 0.15 <= elapsed < HANG_S
    assert q.qsize() == 1
    assert q.get() == "x"


def test_negative_timeout_is_rejected(ray_start):
    q = Queue(maxsize=1)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.get(timeout=-1)
    with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
        q.put(1, timeout=-1)
    # Non-blocking calls ignore the timeout.
    q.put(1, block=False, timeout=-1)
    assert q.get(block=False, timeout=-1) == 1


def test_blocked_get_is_released_by_a_put_from_a_task(ray_start):
    q = Queue()
    done = put_later.remote(q, "hello", 0.3)
    start = time.monotonic()
    assert q.get(timeout=HANG_S) == "hello"
    assert time.monotonic() - start < HANG_S
    assert ray.get(done) is True


def test_blocked_put_is_released_by_a_get(ray_start):
    q = Queue(maxsize=1)
    q.put(0)
    done = produce.remote(q, 1, 1)  # blocks in the task until there is space
    assert q.get(timeout=HANG_S) == 0
    assert q.get(timeout=HANG_S) == 1
    assert ray.get(done) == 1


def test_producer_tasks_and_consumer_actor(ray_start):
    q = Queue(maxsize=5)  # small, so that producers block on a full queue
    producers = [produce.remote(q, 100 * p, 20) for p in range(3)]
    consumer = Consumer.remote()
    received = ray.get(consumer.consume.remote(q, 60))
    assert ray.get(producers) == [20, 20, 20]
    assert sorted(received) == sorted(100 * p + i for p in range(3) for i in range(20))
    # Each producer's items arrive in the order it put them.
    for p in range(3):
        mine = [x for x in received if x // 100 == p]
        assert mine == sorted(mine)
    assert q.empty()


def test_batch_methods(ray_start):
    q = Queue(maxsize=4)
    q.put_nowait_batch([1, 2, 3])
    with pytest.raises(Full):
        q.put_nowait_batch([4, 5])  # all or nothing
    assert q.qsize() == 3
    with pytest.raises(Empty):
        q.get_nowait_batch(4)  # all or nothing
    assert q.qsize() == 3
    assert q.get_nowait_batch(2) == [1, 2]
    assert q.get_nowait_batch(0) == []
    assert q.get_nowait_batch(1) == [3]
    with pytest.raises(TypeError):
        q.put_nowait_batch(5)
    with pytest.raises(TypeError):
        q.get_nowait_batch("2")
    with pytest.raises(ValueError):
        q.get_nowait_batch(-1)


def test_async_put_and_get(ray_start):
    q = Queue(maxsize=2)

    async def main():
        await q.put_async("a")
        await q.put_async("b")
        with pytest.raises(Full):
            await q.put_async("c", timeout=0.1)
        with pytest.raises(Full):
            await q.put_async("c", block=False)
        first = await q.get_async()
        second = await q.get_async(timeout=HANG_S)
        with pytest.raises(Empty):
            await q.get_async(timeout=0.1)
        with pytest.raises(Empty):
            await q.get_async(block=False)
        with pytest.raises(ValueError):
            await q.get_async(timeout=-1)
        return first, second

    assert asyncio.run(main()) == ("a", "b")


def test_async_get_waits_for_a_task(ray_start):
    q = Queue()

    async def main():
        done = put_later.remote(q, 42, 0.2)
        return await q.get_async(timeout=HANG_S), await done

    assert asyncio.run(main()) == (42, True)


def test_object_refs_through_the_queue(ray_start):
    q = Queue()
    # A ref put on its own is an argument of the actor call, so its value comes out.
    q.put(value.remote(7))
    assert q.get() == 7
    # Refs inside a batch stay refs.
    q.put_nowait_batch([value.remote(8)])
    (ref,) = q.get_nowait_batch(1)
    assert ray.get(ref) == 8


def test_actor_options_and_shutdown(ray_start):
    q = Queue(actor_options={"num_cpus": 0})
    q.put(1)
    assert q.get() == 1
    q.shutdown()
    assert q.actor is None
    q.shutdown()  # a second shutdown does nothing

    forced = Queue()
    forced.put(1)
    forced.shutdown(force=True)
    assert forced.actor is None
