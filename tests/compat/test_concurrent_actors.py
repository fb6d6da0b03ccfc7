"""Async actors (async def methods on an event loop) and threaded actors (max_concurrency)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tests._engine import ray, raylite_only

RAY_INIT = {"num_cpus": 2}


@ray.remote
class Sleeper:
    def __init__(self):
        self.running = 0
        self.peak = 0

    async def nap(self, i, seconds):
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(seconds)
        self.running -= 1
        return i

    async def peak_seen(self):
        return self.peak

    def plain(self):
        return "sync method in an async actor"

    async def fetch(self, refs):
        return sum(await asyncio.gather(*refs))

    async def boom(self):
        raise KeyError("async failure")


@ray.remote
def value(x):
    return x


@pytest.mark.timeout(60)
def test_async_methods_run_concurrently(ray_start):
    a = Sleeper.remote()
    ray.get(a.nap.remote(-1, 0))
    start = time.monotonic()
    results = ray.get([a.nap.remote(i, 0.5) for i in range(200)])
    elapsed = time.monotonic() - start
    assert results == list(range(200))
    assert ray.get(a.peak_seen.remote()) > 100
    assert elapsed < 200 * 0.5 / 4, "the naps ran one after another"


def test_max_concurrency_limits_an_async_actor(ray_start):
    a = Sleeper.options(max_concurrency=3).remote()
    ray.get([a.nap.remote(i, 0.05) for i in range(12)])
    assert ray.get(a.peak_seen.remote()) == 3


def test_async_actor_sync_method_and_errors(ray_start):
    a = Sleeper.remote()
    assert ray.get(a.plain.remote()) == "sync method in an async actor"
    with pytest.raises(KeyError):
        ray.get(a.boom.remote())


def test_await_refs_inside_an_async_actor(ray_start):
    a = Sleeper.remote()
    assert ray.get(a.fetch.remote([value.remote(i) for i in range(5)])) == 10


@ray.remote(max_concurrency=4)
class Threaded:
    def __init__(self):
        self.lock = threading.Lock()
        self.inside = 0
        self.peak = 0

    def work(self, seconds):
        with self.lock:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
        time.sleep(seconds)
        with self.lock:
            self.inside -= 1
        return threading.current_thread().name

    def peak_seen(self):
        return self.peak


def test_threaded_actor_runs_calls_in_parallel(ray_start):
    t = Threaded.remote()
    ray.get(t.work.remote(0))
    names = ray.get([t.work.remote(0.3) for _ in range(8)])
    assert len(set(names)) >= 2
    assert ray.get(t.peak_seen.remote()) == 4


@raylite_only  # Ray 2.60 accepts max_concurrency=0 at .remote()
def test_bad_max_concurrency_is_refused(ray_start):
    with pytest.raises((ValueError, TypeError)):
        Threaded.options(max_concurrency=0).remote()


@ray.remote
class CallIds:
    async def async_ids(self, delay):
        first = ray.get_runtime_context().get_task_id()
        await asyncio.sleep(delay)
        return first, ray.get_runtime_context().get_task_id()


@ray.remote(max_concurrency=4)
class ThreadedIds:
    def ids(self, delay):
        first = ray.get_runtime_context().get_task_id()
        time.sleep(delay)
        return first, ray.get_runtime_context().get_task_id()


def _distinct_and_stable(pairs):
    assert all(first is not None and first == last for first, last in pairs), pairs
    assert len({first for first, _ in pairs}) == len(pairs)


def test_task_id_is_each_calls_own_in_an_async_actor(ray_start):
    a = CallIds.remote()
    # The later calls finish first: each must still see its own task id.
    _distinct_and_stable(ray.get([a.async_ids.remote(0.3 - 0.03 * i) for i in range(8)]))


def test_task_id_is_each_calls_own_in_a_threaded_actor(ray_start):
    t = ThreadedIds.remote()
    _distinct_and_stable(ray.get([t.ids.remote(0.3 - 0.05 * i) for i in range(4)]))
