"""Actor APIs: concurrency groups, __ray_ready__, @method options, the runtime context.

Concurrency is proven with barriers and events (a barrier of N passes only when N
calls run at once; a limit shows as a barrier that cannot fill), never with sleeps.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from tests._engine import exceptions, ray, raylite_only, wait_for_path

RAY_INIT = {"num_cpus": 2}
WAIT = 20  # seconds a barrier or event waits before the test fails


# --- concurrency groups ---------------------------------------------------------------
@ray.remote(concurrency_groups={"io": 2, "one": 1})
class Threaded:
    def __init__(self):
        self.io_barrier = threading.Barrier(2, timeout=WAIT)
        self.small = threading.Barrier(2, timeout=1)
        self.gate = threading.Event()

    @ray.method(concurrency_group="io")
    def io(self):
        self.io_barrier.wait()  # passes only if two io calls run at once
        return threading.current_thread().ident

    @ray.method(concurrency_group="io")
    def io_blocked(self):
        return self.gate.wait(WAIT)

    @ray.method(concurrency_group="one")
    def one(self):
        try:
            self.small.wait()
        except threading.BrokenBarrierError:
            return "alone"
        return "together"

    def default(self):
        return threading.current_thread().ident

    def default_pair(self):
        try:
            self.small.wait()
        except threading.BrokenBarrierError:
            return "alone"
        return "together"

    def blocked(self):
        return self.gate.wait(WAIT)

    def release(self):
        self.gate.set()
        return True


def test_sync_actor_runs_a_group_concurrently_up_to_its_size(ray_start):
    a = Threaded.remote()
    idents = ray.get([a.io.remote(), a.io.remote()], timeout=WAIT + 10)
    assert idents[0] != idents[1]
    # A group of 1 runs one call at a time: neither call finds the other in its barrier.
    assert ray.get([a.one.remote(), a.one.remote()], timeout=WAIT) == ["alone", "alone"]


def test_the_default_group_has_max_concurrency(ray_start):
    one = Threaded.remote()  # max_concurrency 1: its calls never meet
    assert ray.get([one.default_pair.remote() for _ in range(2)], timeout=WAIT) == ["alone"] * 2
    two = Threaded.options(max_concurrency=2).remote()
    assert ray.get([two.default_pair.remote() for _ in range(2)], timeout=WAIT) == ["together"] * 2


def test_sync_actor_groups_do_not_wait_for_each_other(ray_start):
    a = Threaded.remote()
    blocked = a.io_blocked.remote()  # holds one io thread until released
    # The default group (max_concurrency 1) runs while the io group is busy.
    ray.get(a.default.remote(), timeout=WAIT)
    ray.get(a.release.remote(), timeout=WAIT)
    assert ray.get(blocked, timeout=WAIT) is True


def test_options_concurrency_group_runs_the_call_in_that_group(ray_start):
    a = Threaded.remote()
    blocked = a.blocked.remote()  # fills the default group (1 thread) until released
    # In the default group, release() would wait behind blocked() for ever.
    assert ray.get(a.release.options(concurrency_group="io").remote(), timeout=WAIT) is True
    assert ray.get(blocked, timeout=WAIT) is True


@ray.remote(concurrency_groups={"io": 2, "one": 1})
class Async:
    def __init__(self):
        self.io_barrier = threading.Barrier(2, timeout=WAIT)
        self.small = threading.Barrier(2, timeout=1)
        self.gate = threading.Event()

    @ray.method(concurrency_group="io")
    async def io(self):
        await asyncio.to_thread(self.io_barrier.wait)
        return threading.current_thread().ident

    @ray.method(concurrency_group="one")
    async def one(self):
        try:
            await asyncio.to_thread(self.small.wait)
        except threading.BrokenBarrierError:
            return "alone"
        return "together"

    async def blocked(self):
        return await asyncio.to_thread(self.gate.wait, WAIT)

    async def default(self):
        return threading.current_thread().ident

    def sync_release(self):
        self.gate.set()
        return threading.current_thread().ident


def test_async_actor_groups_each_run_on_their_own_thread(ray_start):
    a = Async.remote()
    io = ray.get([a.io.remote(), a.io.remote()], timeout=WAIT + 10)
    default = ray.get(a.default.remote(), timeout=WAIT)
    assert io[0] == io[1] != default
    assert ray.get([a.one.remote(), a.one.remote()], timeout=WAIT) == ["alone", "alone"]
    # .options() moves a call to another group's loop; sync methods run on the default.
    moved = ray.get(a.default.options(concurrency_group="io").remote(), timeout=WAIT)
    assert moved == io[0]
    assert ray.get(a.sync_release.remote(), timeout=WAIT) == default


def test_async_actor_default_group_runs_beside_a_blocked_group(ray_start):
    a = Async.options(max_concurrency=1).remote()
    blocked = a.blocked.remote()  # fills the default group (max_concurrency=1)
    assert ray.get(a.sync_release.options(concurrency_group="io").remote(), timeout=WAIT)
    assert ray.get(blocked, timeout=WAIT) is True


def test_a_method_in_an_undefined_group_fails_at_creation(ray_start):
    @ray.remote
    class Undeclared:
        @ray.method(concurrency_group="io")
        def f(self):
            return 1

    with pytest.raises((AssertionError, ValueError)):
        Undeclared.remote()


def test_concurrency_groups_are_not_an_options_key(ray_start):
    with pytest.raises(ValueError, match="concurrency_groups"):
        Threaded.options(concurrency_groups={"x": 1})


@raylite_only  # Ray's actor process crashes (a failed check in its C++ core)
def test_a_call_to_an_undefined_group_fails(ray_start):
    a = Threaded.remote()
    with pytest.raises(ValueError, match="no concurrency group 'nope'"):
        ray.get(a.default.options(concurrency_group="nope").remote(), timeout=WAIT)
    assert ray.get(a.release.remote(), timeout=WAIT) is True  # it lives on


@raylite_only  # Ray accepts these and its actor process crashes or truncates
@pytest.mark.parametrize("groups", [{"io": 0}, {"io": 1.5}, {1: 2}, [("io", 1)]])
def test_bad_concurrency_groups_are_refused(ray_start, groups):
    with pytest.raises((TypeError, ValueError)):

        @ray.remote(concurrency_groups=groups)
        class Bad:
            pass


# --- __ray_ready__ -----------------------------------------------------------------------
def test_ray_ready_is_true_once_the_actor_is_constructed(ray_start):
    a = Threaded.remote()
    assert ray.get(a.__ray_ready__.remote(), timeout=WAIT) is True


# --- @method(max_task_retries=, retry_exceptions=) ------------------------------------
@ray.remote
class Flaky:
    def __init__(self):
        self.calls = 0

    @ray.method(max_task_retries=2, retry_exceptions=True)
    def twice_then_ok(self):
        self.calls += 1
        if self.calls < 3:
            raise ValueError(self.calls)
        return self.calls

    @ray.method(max_task_retries=2, retry_exceptions=[KeyError])
    def not_a_key_error(self):
        self.calls += 1
        raise ValueError(self.calls)

    @ray.method(retry_exceptions=True)
    def retries_by_actor(self):
        self.calls += 1
        raise ValueError(self.calls)

    def plain(self):
        self.calls += 1
        if self.calls < 2:
            raise ValueError(self.calls)
        return self.calls

    def count(self):
        return self.calls


def test_method_retry_exceptions(ray_start):
    a = Flaky.remote()
    assert ray.get(a.twice_then_ok.remote(), timeout=WAIT) == 3
    with pytest.raises(ValueError):
        ray.get(a.not_a_key_error.remote(), timeout=WAIT)
    assert ray.get(a.count.remote()) == 4  # not retried: only KeyError is
    with pytest.raises(ValueError):
        ray.get(a.retries_by_actor.remote(), timeout=WAIT)
    assert ray.get(a.count.remote()) == 5  # the actor's max_task_retries: 0


def test_method_retries_use_the_actor_max_task_retries(ray_start):
    a = Flaky.options(max_task_retries=3).remote()
    with pytest.raises(ValueError):
        ray.get(a.retries_by_actor.remote(), timeout=WAIT)
    assert ray.get(a.count.remote()) == 4


def test_call_options_override_the_method(ray_start):
    a = Flaky.remote()
    with pytest.raises(ValueError):
        ray.get(a.twice_then_ok.options(max_task_retries=0).remote(), timeout=WAIT)
    b = Flaky.remote()
    with pytest.raises(ValueError):
        ray.get(b.twice_then_ok.options(retry_exceptions=False).remote(), timeout=WAIT)
    c = Flaky.options(max_task_retries=1).remote()
    assert ray.get(c.plain.options(retry_exceptions=True).remote(), timeout=WAIT) == 2


def test_named_actor_handle_keeps_method_options(ray_start):
    owner_handle = Flaky.options(name="flaky-apis").remote()  # keeps the actor alive
    a = ray.get_actor("flaky-apis")
    assert a == owner_handle
    assert ray.get(a.twice_then_ok.remote(), timeout=WAIT) == 3
    ray.kill(a)


@raylite_only  # Ray accepts any value here and fails later, or never
@pytest.mark.parametrize(
    "options",
    [{"max_task_retries": -2}, {"retry_exceptions": "x"}, {"concurrency_group": 3}, {"foo": 1}],
)
def test_bad_method_options_are_refused(options):
    with pytest.raises((TypeError, ValueError)):
        ray.method(**options)


# --- the runtime context ----------------------------------------------------------------
@ray.remote
class Context:
    def __init__(self):
        self.noticed = None

    def info(self):
        ctx = ray.get_runtime_context()
        return ctx.get_actor_name(), ctx.get_assigned_resources(), ctx.get_accelerator_ids()

    def me(self):
        return ray.get_runtime_context().current_actor

    def ping(self):
        return "pong"

    def reconstructed(self):
        return ray.get_runtime_context().was_current_actor_reconstructed

    def die(self):
        os._exit(1)

    def pid(self):
        return os.getpid()

    def poll_cancel(self, path):
        open(path, "w").close()
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if ray.get_runtime_context().is_canceled():
                self.noticed = True
                return "noticed"
            time.sleep(0.01)  # polling, bounded by the deadline
        return "never"

    def noticed_cancel(self):
        return self.noticed


def test_actor_name_and_resources(ray_start):
    a = Context.options(name="ctx-apis").remote()
    name, resources, accelerators = ray.get(a.info.remote(), timeout=WAIT)
    assert name == "ctx-apis"
    assert resources == {}
    assert accelerators["GPU"] == []
    assert accelerators["TPU"] == accelerators["neuron_cores"] == []
    b = Context.options(num_cpus=1).remote()
    name, resources, _ = ray.get(b.info.remote(), timeout=WAIT)
    assert name == ""
    assert resources == {"CPU": 1.0}
    ray.kill(a)


@ray.remote
def task_context():
    ctx = ray.get_runtime_context()
    try:
        ctx.current_actor  # noqa: B018
    except RuntimeError as exc:
        actor = str(exc)
    return (
        ctx.get_actor_name(),
        actor,
        ctx.is_canceled(),
        ctx.get_accelerator_ids()["GPU"],
        ctx.get_assigned_resources(),
    )


def test_task_context(ray_start):
    name, actor, cancelled, gpus, resources = ray.get(task_context.remote(), timeout=WAIT)
    assert name is None
    assert "only available in an actor" in actor
    assert cancelled is False
    assert gpus == []
    assert resources == {"CPU": 1.0}
    *_, resources = ray.get(task_context.options(num_cpus=0.5).remote(), timeout=WAIT)
    assert resources == {"CPU": 0.5}


def test_driver_context(ray_start):
    ctx = ray.get_runtime_context()
    assert ctx.get_actor_name() is None
    with pytest.raises(RuntimeError, match="only available in an actor"):
        ctx.current_actor  # noqa: B018
    with pytest.raises(RuntimeError, match="only available when the process is a worker"):
        ctx.is_canceled()
    with pytest.raises((AssertionError, RuntimeError), match="only available when the process"):
        ctx.get_assigned_resources()


def test_current_actor_is_a_handle_to_itself(ray_start):
    a = Context.remote()
    me = ray.get(a.me.remote(), timeout=WAIT)
    assert me == a
    assert ray.get(me.ping.remote(), timeout=WAIT) == "pong"


def test_was_current_actor_reconstructed(ray_start):
    a = Context.options(max_restarts=1, max_task_retries=-1).remote()
    assert ray.get(a.reconstructed.remote(), timeout=WAIT) is False
    pid = ray.get(a.pid.remote(), timeout=WAIT)
    a.die.options(max_task_retries=0).remote()  # the later calls retry into the new life
    assert ray.get(a.reconstructed.remote(), timeout=60) is True
    assert ray.get(a.pid.remote(), timeout=WAIT) != pid


def test_is_canceled_in_an_actor_call(ray_start, tmp_path):
    a = Context.remote()
    path = tmp_path / "started"
    ref = a.poll_cancel.remote(str(path))
    wait_for_path(path, WAIT)
    ray.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=WAIT)
    # The call was not interrupted: it saw is_canceled() and returned.
    assert ray.get(a.noticed_cancel.remote(), timeout=WAIT + 5) is True


@ray.remote
def interrupted(path):
    open(path, "w").close()
    try:
        time.sleep(WAIT)  # interrupted by cancel()
    except KeyboardInterrupt:
        return ray.get_runtime_context().is_canceled()
    return "not interrupted"


def test_is_canceled_in_a_cancelled_task(ray_start, tmp_path):
    path = tmp_path / "started"
    ref = interrupted.remote(str(path))
    wait_for_path(path, WAIT)
    ray.cancel(ref)
    # It caught the interrupt and returned: its value stands, as in Ray.
    assert ray.get(ref, timeout=WAIT) is True


@ray.remote
class AsyncContext:
    async def cancel_check(self):
        try:
            ray.get_runtime_context().is_canceled()
        except RuntimeError as exc:
            return str(exc)
        return "no error"


def test_is_canceled_is_refused_in_an_async_actor(ray_start):
    a = AsyncContext.remote()
    assert "not supported in an async actor" in ray.get(a.cancel_check.remote(), timeout=WAIT)
