"""Generator tasks and actor methods: num_returns=N, "streaming" (ObjectRefGenerator:
next, for, anext, async for, wait, completed, backpressure, cancel) and "dynamic"."""

from __future__ import annotations

import asyncio
import os
import pickle
import time

import numpy as np
import pytest

from tests._engine import exceptions, ray, raylite_only, wait_for, wait_for_path

RAY_INIT = {"num_cpus": 2}

# RAYLITE_TESTS_CLUSTER=N runs this file on N local nodes (tests/_cluster.py).
ON_CLUSTER = bool(os.environ.get("RAYLITE_TESTS_CLUSTER"))


def read_state(path):
    """What the reader wrote last (backpressure tests), or "" before it wrote."""
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read()


# --- num_returns=N ----------------------------------------------------------------------


@ray.remote(num_returns=3)
def three(fail_after=None):
    for i in range(3):
        if i == fail_after:
            raise ValueError(f"failed after {i} yields")
        yield i * 10


def test_a_generator_with_num_returns_gives_its_yields_as_the_returns(ray_start):
    refs = three.remote()
    assert len(refs) == 3
    assert ray.get(refs) == [0, 10, 20]


def test_a_fixed_generator_that_raises_after_k_yields_gives_k_values_then_the_error(ray_start):
    refs = three.remote(fail_after=2)
    assert ray.get(refs[:2]) == [0, 10]
    with pytest.raises(ValueError, match="failed after 2 yields"):
        ray.get(refs[2])
    # The worker lived through it: the next task runs.
    assert ray.get(three.remote()) == [0, 10, 20]


@ray.remote(num_returns=3)
def yields(n):
    for i in range(n):  # noqa: UP028 (`yield from` a range fails on Ray 2.60)
        yield i


def test_a_fixed_generator_that_yields_too_few_fails_the_rest(ray_start):
    refs = yields.remote(2)
    assert ray.get(refs[:2]) == [0, 1]
    with pytest.raises(ValueError, match="Task returned 2 objects, but num_returns=3"):
        ray.get(refs[2])


def test_a_fixed_generator_that_yields_too_many_keeps_the_first(ray_start):
    assert ray.get(yields.remote(5)) == [0, 1, 2]


def test_a_generator_with_num_returns_1_returns_its_first_yield(ray_start):
    assert ray.get(count.options(num_returns=1).remote(1)) == 0


# --- streaming -------------------------------------------------------------------------


@ray.remote
def count(n, fail_at=None):
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"failed at {i}")
        yield i


def test_a_generator_function_streams_by_default(ray_start):
    gen = count.remote(4)
    assert isinstance(gen, ray.ObjectRefGenerator)
    refs = list(gen)
    assert all(isinstance(r, ray.ObjectRef) for r in refs)
    assert ray.get(refs) == [0, 1, 2, 3]
    with pytest.raises(StopIteration):
        next(gen)
    with pytest.raises(StopIteration):
        next(gen)


def test_num_returns_streaming_explicitly(ray_start):
    gen = count.options(num_returns="streaming").remote(3)
    assert [ray.get(next(gen)) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(StopIteration):
        next(gen)


@ray.remote
def gated(gate, n):
    yield "first"
    wait_for_path(gate)
    for i in range(n):  # noqa: UP028 (`yield from` a range fails on Ray 2.60)
        yield i


def test_items_come_as_the_worker_yields_them(ray_start, tmp_path):
    gate = tmp_path / "gate"
    gen = gated.remote(str(gate), 2)
    # The task cannot end before the gate opens: the first item came on its own.
    assert ray.get(next(gen), timeout=60) == "first"
    assert not gen.is_finished()
    gate.touch()
    assert [ray.get(r) for r in gen] == [0, 1]
    assert gen.is_finished()


def test_an_exception_after_some_yields_is_raised_at_that_point(ray_start):
    gen = count.remote(5, fail_at=2)
    assert ray.get(next(gen)) == 0
    assert ray.get(next(gen)) == 1
    failed = next(gen)
    with pytest.raises(ValueError, match="failed at 2") as info:
        ray.get(failed)
    assert isinstance(info.value, exceptions.RayTaskError)
    with pytest.raises(StopIteration):
        next(gen)
    with pytest.raises(StopIteration):
        next(gen)


def test_an_exception_before_the_first_yield(ray_start):
    gen = count.remote(5, fail_at=0)
    with pytest.raises(ValueError):
        ray.get(next(gen))
    with pytest.raises(StopIteration):
        next(gen)


@ray.remote
def empty():
    return
    yield


def test_an_empty_generator(ray_start):
    assert list(empty.remote()) == []


def test_completed_is_ready_when_the_task_ends(ray_start):
    gen = count.remote(3)
    assert ray.get(gen.completed(), timeout=60) is None
    assert [ray.get(r) for r in gen] == [0, 1, 2]
    # The task's own exception is an item: completed() does not raise it.
    failed = count.remote(3, fail_at=1)
    assert ray.get(failed.completed(), timeout=60) is None
    refs = list(failed)
    assert len(refs) == 2
    with pytest.raises(ValueError):
        ray.get(refs[1])


def test_get_of_a_generator_returns_it(ray_start):
    gen = count.remote(1)
    assert ray.get(gen) is gen
    assert [ray.get(r) for r in gen] == [0]


def test_a_value_that_does_not_pickle_ends_the_stream_there(ray_start):
    @ray.remote
    def unpicklable():
        import threading

        yield 1
        yield threading.Lock()
        yield 3

    refs = list(unpicklable.remote())
    assert ray.get(refs[0]) == 1
    assert len(refs) == 2
    with pytest.raises(TypeError):
        ray.get(refs[1])


@ray.remote(max_retries=0)
def crashes_after(n):
    for i in range(n):  # noqa: UP028 (`yield from` a range fails on Ray 2.60)
        yield i
    os._exit(1)


def test_a_worker_crash_ends_the_stream_with_the_crash(ray_start):
    refs = list(crashes_after.remote(2))
    # The items before it may come first (raylite) or not (Ray: no order promised).
    with pytest.raises(exceptions.WorkerCrashedError):
        ray.get(refs[-1])
    assert ray.get(refs[:-1]) == list(range(len(refs) - 1))
    assert len(refs) <= 3


@ray.remote(retry_exceptions=True, max_retries=2)
def fails_once(marker, n):
    for i in range(n):
        if i == 2 and not os.path.exists(marker):
            open(marker, "w").close()
            raise ValueError("first attempt")
        yield i


def test_a_retried_generator_yields_each_item_once(ray_start, tmp_path):
    assert [ray.get(r) for r in fails_once.remote(str(tmp_path / "tried"), 5)] == [0, 1, 2, 3, 4]


def test_large_items_go_through_the_store(ray_start):
    @ray.remote
    def arrays(n):
        for i in range(n):
            yield np.full(500_000, i, dtype=np.int64)  # 4 MB each

    for i, ref in enumerate(arrays.remote(3)):
        value = ray.get(ref)
        assert value.shape == (500_000,)
        assert value[0] == value[-1] == i


def test_refs_yielded_inside_values_stay_alive(ray_start):
    @ray.remote
    def wrapped():
        for i in range(2):
            yield [ray.put(i * 7)]

    inner = [ray.get(r)[0] for r in wrapped.remote()]
    assert ray.get(inner) == [0, 7]


def test_a_generator_cannot_be_pickled_or_passed_to_a_task(ray_start):
    gen = count.remote(1)
    with pytest.raises(TypeError):
        pickle.dumps(gen)

    @ray.remote
    def takes(x):
        return x

    with pytest.raises(TypeError):
        takes.remote(gen)
    assert [ray.get(r) for r in gen] == [0]


def test_a_task_reads_a_generator_it_started(ray_start):
    @ray.remote
    def consumer(n):
        return [ray.get(r) * 2 for r in count.remote(n)]

    assert ray.get(consumer.remote(4), timeout=60) == [0, 2, 4, 6]


def test_next_ready_and_is_finished(ray_start, tmp_path):
    gate = tmp_path / "gate"
    gen = gated.remote(str(gate), 0)
    wait_for(gen.next_ready, timeout=60, message="the first item")
    assert not gen.is_finished()
    ray.get(next(gen))
    assert not gen.next_ready()  # the task waits at the gate
    gate.touch()
    ray.get(gen.completed(), timeout=60)
    # (Ray's owner may learn of the end a moment after completed() is ready.)
    wait_for(gen.is_finished, timeout=60, message="the end of the stream")
    assert not gen.next_ready()  # next() raises StopIteration now
    with pytest.raises(StopIteration):
        next(gen)


def test_the_classes_are_where_ray_has_them(ray_start):
    assert ray._raylet.ObjectRefGenerator is ray.ObjectRefGenerator
    assert ray._raylet.DynamicObjectRefGenerator is ray.DynamicObjectRefGenerator
    assert ray._raylet.StreamingObjectRefGenerator is ray.ObjectRefGenerator


def test_send_throw_and_close_are_not_supported(ray_start):
    gen = count.remote(1)
    for call in (lambda: gen.send(None), lambda: gen.throw(ValueError), gen.close):
        with pytest.raises(NotImplementedError):
            call()


# --- wait ------------------------------------------------------------------------------


def test_wait_on_a_generator_is_ready_once_next_would_not_block(ray_start, tmp_path):
    gate = tmp_path / "gate"
    gen = gated.remote(str(gate), 1)
    ready, not_ready = ray.wait([gen], timeout=60)
    assert ready == [gen]
    assert not_ready == []
    assert ray.get(next(gen)) == "first"
    ready, not_ready = ray.wait([gen], timeout=0.2)  # the task waits at the gate
    assert ready == []
    assert not_ready == [gen]
    gate.touch()
    ready, _ = ray.wait([gen], timeout=60)
    assert ready == [gen]
    assert ray.get(next(gen)) == 0


@ray.remote
def value_after(gate, value):
    wait_for_path(gate)
    return value


def test_wait_mixes_generators_and_refs(ray_start, tmp_path):
    gate = tmp_path / "gate"
    gen = gated.remote(str(gate), 0)
    slow = value_after.remote(str(gate), "slow")
    ready, not_ready = ray.wait([slow, gen], num_returns=1, timeout=60)
    assert ready == [gen]
    assert not_ready == [slow]
    assert ray.get(next(gen)) == "first"
    gate.touch()
    ready, not_ready = ray.wait([slow, gen], num_returns=2, timeout=60)
    assert set(ready) == {slow, gen}
    assert not_ready == []


# --- asyncio on the caller's side ----------------------------------------------------------


def test_async_for_and_anext(ray_start):
    async def main():
        values = [await ref async for ref in count.remote(3)]
        gen = count.remote(2)
        values.append(await (await gen.__anext__()))
        values.append(await (await anext(gen)))
        with pytest.raises(StopAsyncIteration):
            await anext(gen)
        return values

    assert asyncio.run(main()) == [0, 1, 2, 0, 1]


def test_async_iteration_raises_a_mid_stream_error_at_that_point(ray_start):
    async def main():
        values = []
        async for ref in count.remote(5, fail_at=1):
            try:
                values.append(await ref)
            except ValueError:
                values.append("error")
        return values

    assert asyncio.run(main()) == [0, "error"]


# --- actors -----------------------------------------------------------------------------


@ray.remote
class Producer:
    def items(self, n, fail_at=None):
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"failed at {i}")
            yield i

    async def async_items(self, n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i * 2

    @ray.method(num_returns=2)
    def pair(self):
        yield "a"
        yield "b"

    def plain(self):
        return "plain"


def test_generator_actor_methods_sync_and_async(ray_start):
    p = Producer.remote()
    gen = p.items.remote(3)
    assert isinstance(gen, ray.ObjectRefGenerator)
    assert [ray.get(r) for r in gen] == [0, 1, 2]
    assert [ray.get(r) for r in p.async_items.remote(3)] == [0, 2, 4]
    assert ray.get(p.pair.remote()) == ["a", "b"]
    assert ray.get(p.plain.remote()) == "plain"


def test_an_actor_generator_that_raises_keeps_the_actor(ray_start):
    p = Producer.remote()
    gen = p.items.remote(3, fail_at=1)
    assert ray.get(next(gen)) == 0
    with pytest.raises(ValueError, match="failed at 1"):
        ray.get(next(gen))
    with pytest.raises(StopIteration):
        next(gen)
    assert ray.get(p.plain.remote()) == "plain"


def test_async_for_over_an_async_actors_generators_at_once(ray_start):
    p = Producer.remote()

    async def read(n):
        return [await ref async for ref in p.async_items.remote(n)]

    async def main():
        return await asyncio.gather(read(2), read(3), read(1))

    assert asyncio.run(main()) == [[0, 2], [0, 2, 4], [0]]


def test_method_options_num_returns(ray_start):
    p = Producer.remote()
    assert ray.get(p.items.options(num_returns=2).remote(2)) == [0, 1]
    with pytest.raises(ValueError, match="generator"):
        p.plain.options(num_returns="streaming")


# --- backpressure ---------------------------------------------------------------------------


@ray.remote(_generator_backpressure_num_objects=1)
def held_back(state_file, n):
    """Each item records what the reader had written when the body went on to it."""
    for i in range(n):
        seen = read_state(state_file)
        yield i, seen


def test_backpressure_holds_the_generator_until_the_reader_takes_items(ray_start, tmp_path):
    state = tmp_path / "state"
    gen = held_back.remote(str(state), 4)
    for i in range(4):
        ready, _ = ray.wait([gen], timeout=60)
        assert ready == [gen]
        state.write_text(f"took {i}")  # before next(): the body may go on only after it
        value = ray.get(next(gen))
        assert value[0] == i
        if i > 0:
            assert value[1] == f"took {i - 1}"
    with pytest.raises(StopIteration):
        next(gen)


def test_dropping_a_held_back_generator_lets_its_task_finish(ray_start, tmp_path):
    gen = held_back.remote(str(tmp_path / "state"), 10)
    ray.get(next(gen))
    done = gen.completed()
    del gen
    assert ray.get(done, timeout=60) is None


def test_async_actor_generator_backpressure(ray_start, tmp_path):
    @ray.remote
    class AsyncHeld:
        async def items(self, state_file, n):
            for i in range(n):
                seen = read_state(state_file)
                yield i, seen

        async def ping(self):
            return "pong"

    a = AsyncHeld.remote()
    state = tmp_path / "state"
    gen = a.items.options(_generator_backpressure_num_objects=1).remote(str(state), 3)
    ray.wait([gen], timeout=60)
    assert ray.get(a.ping.remote(), timeout=60) == "pong"  # the held generator blocks no call
    for i in range(3):
        ray.wait([gen], timeout=60)
        state.write_text(f"took {i}")
        value = ray.get(next(gen))
        if i > 0:
            assert value[1] == f"took {i - 1}"


def test_backpressure_zero_is_refused(ray_start):
    with pytest.raises(ValueError, match="backpressure_num_objects=0 is not allowed"):

        @ray.remote(_generator_backpressure_num_objects=0)
        def f():
            yield 1


def test_actor_method_backpressure(ray_start, tmp_path):
    @ray.remote
    class Held:
        @ray.method(_generator_backpressure_num_objects=1)
        def items(self, state_file, n):
            for i in range(n):
                seen = read_state(state_file)
                yield i, seen

    h = Held.remote()
    state = tmp_path / "state"
    gen = h.items.remote(str(state), 3)
    for i in range(3):
        ray.wait([gen], timeout=60)
        state.write_text(f"took {i}")
        value = ray.get(next(gen))
        if i > 0:
            assert value[1] == f"took {i - 1}"


# --- cancel -----------------------------------------------------------------------------


@ray.remote(max_retries=0)
def endless(marker):
    try:
        i = 0
        while True:
            yield i
            i += 1
            for _ in range(20):  # Python code between short sleeps: interruptible
                time.sleep(0.01)
    finally:
        open(marker, "w").close()


def test_cancel_stops_the_workers_generator(ray_start, tmp_path):
    marker = tmp_path / "stopped"
    gen = endless.remote(str(marker))
    assert ray.get(next(gen), timeout=60) == 0
    ray.cancel(gen)
    wait_for(marker.exists, timeout=60, message="the generator's finally block")
    cancelled = False
    for ref in gen:  # the items yielded before the cancel, then the error
        try:
            ray.get(ref, timeout=60)
        except exceptions.TaskCancelledError:
            cancelled = True
    assert cancelled
    with pytest.raises(StopIteration):
        next(gen)


# --- dynamic ---------------------------------------------------------------------------


@ray.remote(num_returns="dynamic")
def dynamic(n, fail_at=None):
    for i in range(n):
        if i == fail_at:
            raise ValueError("dynamic failed")
        yield i + 100


def test_num_returns_dynamic_returns_one_ref_to_the_items_refs(ray_start):
    ref = dynamic.remote(3)
    assert isinstance(ref, ray.ObjectRef)
    gen = ray.get(ref)
    assert isinstance(gen, ray.DynamicObjectRefGenerator)
    assert len(gen) == 3
    assert [ray.get(r) for r in gen] == [100, 101, 102]


def test_num_returns_dynamic_that_raises_lists_the_error_last(ray_start):
    refs = list(ray.get(dynamic.remote(3, fail_at=1)))
    assert len(refs) == 2
    assert ray.get(refs[0]) == 100
    with pytest.raises(ValueError, match="dynamic failed"):
        ray.get(refs[1])


def test_streaming_and_dynamic_need_a_generator_function(ray_start):
    for num_returns in ("streaming", "dynamic"):
        with pytest.raises(ValueError, match="generator"):

            @ray.remote(num_returns=num_returns)
            def plain():
                return 1


# --- more failures, actors, memory -----------------------------------------------------


@ray.remote
class Gated:
    def items(self, gate):
        yield "before"
        wait_for_path(gate)
        yield "after"

    def ping(self):
        return "pong"


@pytest.mark.xfail(
    ON_CLUSTER,
    reason="raylite on a cluster: kill() of an actor on another node does not end the call "
    "it runs (a plain method's too), so the stream goes on",
    strict=False,
)
def test_killing_the_actor_mid_stream_ends_it_with_the_actors_death(ray_start, tmp_path):
    a = Gated.remote()
    gen = a.items.remote(str(tmp_path / "never"))
    assert ray.get(next(gen), timeout=60) == "before"
    ray.kill(a)
    with pytest.raises(exceptions.RayActorError):
        ray.get(next(gen), timeout=60)
    for _ in range(3):
        with pytest.raises(StopIteration):
            next(gen)


def test_a_threaded_actors_generators(ray_start):
    @ray.remote(max_concurrency=4)
    class Threaded:
        def items(self, n):
            for i in range(n):  # noqa: UP028 (`yield from` a range fails on Ray 2.60)
                yield i

    t = Threaded.remote()
    gens = [t.items.remote(3) for _ in range(3)]
    assert [[ray.get(r) for r in g] for g in gens] == [[0, 1, 2]] * 3


def test_a_dynamic_actor_method(ray_start):
    p = Producer.remote()
    ref = p.items.options(num_returns="dynamic").remote(3)
    assert [ray.get(r) for r in ray.get(ref)] == [0, 1, 2]


@ray.remote(_generator_backpressure_num_objects=1, max_retries=0)
def held_forever(marker):
    try:
        for i in range(100):  # noqa: UP028 (`yield from` a range fails on Ray 2.60)
            yield i
    finally:
        open(marker, "w").close()


def test_cancel_stops_a_generator_held_back_by_backpressure(ray_start, tmp_path):
    marker = tmp_path / "stopped"
    gen = held_forever.remote(str(marker))
    assert ray.get(next(gen), timeout=60) == 0
    ray.wait([gen], timeout=60)  # item 1 came: the body waits for the reader
    ray.cancel(gen)
    wait_for(marker.exists, timeout=60, message="the generator's finally block")
    refs = list(gen)  # what came before the cancel, then its error
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(refs[-1], timeout=60)


@raylite_only
def test_unread_items_are_freed_with_their_generator(ray_start):
    """raylite internals: once the generator and the refs taken from it are gone, the
    owner holds no entry of its items or its generator ref, nor its stream."""
    from raylite.core import context

    cw = context.global_worker()
    cw._process_released()
    before = set(cw.objects)
    gen = count.remote(10)
    first = next(gen)
    assert ray.get(first) == 0
    ray.get(gen.completed(), timeout=60)
    assert len(set(cw.objects) - before) == 11  # the items and the generator ref
    generator_id = gen.completed().id
    del gen, first

    def freed():
        cw._process_released()
        return generator_id not in cw.streams and set(cw.objects) <= before

    wait_for(freed, timeout=60, message="the stream and its items to go")


def test_a_taken_ref_outlives_its_generator(ray_start):
    gen = count.remote(3)
    first = next(gen)
    del gen
    assert ray.get(first, timeout=60) == 0


@ray.remote
def total(generator_value):
    """A task handed a dynamic task's value reads the items it lists."""
    return sum(ray.get(list(generator_value)))


def test_a_dynamic_value_passed_to_a_task(ray_start):
    ref = dynamic.remote(4)
    assert ray.get(total.remote(ref), timeout=60) == 100 + 101 + 102 + 103
    gen = ray.get(ref)
    assert len(list(gen)) == 4
    assert list(gen) == []  # iterating hands each ref out once, as in Ray


def test_a_named_actors_generator_method_through_get_actor(ray_start):
    created = Producer.options(name="generator-producer").remote()  # a handle keeps it
    p = ray.get_actor("generator-producer")
    gen = p.items.remote(2)
    assert isinstance(gen, ray.ObjectRefGenerator)
    assert [ray.get(r) for r in gen] == [0, 1]
    assert ray.get(p.pair.remote()) == ["a", "b"]
    ray.kill(created)


@ray.remote
class Caller:
    def start(self, marker, fail):
        gen = held_forever.remote(marker)
        first = ray.get(next(gen))
        if fail:
            raise ValueError("the caller failed")
        return first


@pytest.mark.parametrize("fail", [False, True])
def test_a_held_back_generator_goes_on_once_its_caller_lets_go(ray_start, tmp_path, fail):
    """The caller's generator is gone when its method returns or raises: its task is no
    longer held back and runs to its end."""
    marker = tmp_path / "ended"
    c = Caller.remote()
    ref = c.start.remote(str(marker), fail)
    if fail:
        with pytest.raises(ValueError, match="the caller failed"):
            ray.get(ref, timeout=60)
    else:
        assert ray.get(ref, timeout=60) == 0
    wait_for(marker.exists, timeout=60, message="the generator to run to its end")


@ray.remote(max_retries=2)
def big_items(counter, n):
    with open(counter, "a") as f:
        f.write("run\n")
    for i in range(n):
        yield np.full(1_000_000, i, dtype=np.int64)  # 8 MB: in the store


@raylite_only
@pytest.mark.skipif(ON_CLUSTER, reason="loses a copy in this node's store: one node only")
def test_a_lost_streamed_item_is_rebuilt_by_running_the_generator_again(ray_start, tmp_path):
    """raylite internals: a copy is lost by unlinking its segment (as test_lineage)."""
    from raylite.util.state import store_stats

    counter = tmp_path / "runs"
    gen = big_items.remote(str(counter), 2)
    refs = list(gen)
    assert [int(ray.get(r)[0]) for r in refs] == [0, 1]
    os.unlink(os.path.join(store_stats()["store_dir"], refs[0].hex()))
    value = ray.get(refs[0], timeout=60)
    assert value.shape == (1_000_000,)
    assert int(value[-1]) == 0
    assert counter.read_text().split() == ["run", "run"]
    assert int(ray.get(refs[1])[-1]) == 1


def test_cancel_a_queued_generator_task(ray_start, tmp_path):
    gate = tmp_path / "gate"
    blockers = [value_after.remote(str(gate), i) for i in range(2)]  # hold both CPUs
    gen = count.remote(3)
    ray.cancel(gen)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(next(gen), timeout=60)
    with pytest.raises(StopIteration):
        next(gen)
    gate.touch()
    assert ray.get(blockers, timeout=60) == [0, 1]
