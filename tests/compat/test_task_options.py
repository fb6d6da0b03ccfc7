"""Task and actor options: max_calls, enable_task_events, allow_out_of_order_execution,
object_store_memory, _metadata, and actor methods bound in DAGs with options.

Ordering is proven with gate files (a call whose argument waits on a file that only
the test writes), never with sleeps. Task events are read from the timeline, which
both engines serve without a dashboard: a call that makes none is checked absent once
a call made after it (on the same actor, for actors) has shown up there.

Run against Ray with RAY_ADDRESS=local where another Ray cluster runs on the machine
(its ray.init() would join that one instead of starting its own).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
import warnings

import psutil
import pytest

from tests._engine import AGAINST_RAY, ray, raylite_only, wait_for, wait_for_path

if AGAINST_RAY:
    import ray.dag as dag_api
else:
    import raylite.dag as dag_api  # type: ignore[no-redef]

RAY_INIT = {"num_cpus": 2}
WAIT = 30  # seconds a gate or barrier waits before the test fails

_CALLS = [0]  # per worker process: how many calls of `counted` it ran


# --- max_calls ---------------------------------------------------------------------------
@ray.remote(max_calls=1)
def counted():
    _CALLS[0] += 1
    return os.getpid(), _CALLS[0]


@ray.remote(max_calls=1, max_retries=0)
def fails_once_per_worker():
    raise ValueError("expected")


def _gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_max_calls_one_runs_each_call_in_a_new_worker(ray_start):
    results = [ray.get(counted.remote()) for _ in range(3)]
    pids = [pid for pid, _ in results]
    assert len(set(pids)) == 3, pids
    assert [n for _, n in results] == [1, 1, 1]  # each a fresh process: no state kept
    for pid in pids:
        wait_for(lambda pid=pid: _gone(pid), timeout=WAIT, message=f"worker {pid} to exit")


def test_max_calls_workers_are_replaced_for_queued_tasks_without_spending_retries(ray_start):
    # More tasks than CPUs, none with a retry: each worker exits after its call and the
    # queued ones get new workers (a worker that exits is not a crash of the next task).
    results = ray.get([counted.options(max_retries=0).remote() for _ in range(6)])
    assert len({pid for pid, _ in results}) == 6
    assert all(n == 1 for _, n in results)


def test_max_calls_counts_a_call_that_raised(ray_start):
    for _ in range(2):
        with pytest.raises(ValueError, match="expected"):
            ray.get(fails_once_per_worker.remote())
    assert ray.get(counted.remote())[1] == 1


def test_max_calls_is_not_an_option_of_a_call(ray_start):
    with pytest.raises(ValueError, match="max_calls"):
        counted.options(max_calls=2)
    with pytest.raises(ValueError, match="max_calls"):
        ray.remote(max_calls=-1)(lambda: 1)


@pytest.mark.ray_init(num_cpus=2, num_gpus=1)
def test_a_gpu_task_runs_once_per_worker_by_default(ray_start):
    @ray.remote(num_gpus=1)
    def gpu_pid():
        return os.getpid()

    @ray.remote(num_gpus=1, max_calls=0)
    def reused_gpu_pid():
        return os.getpid()

    first, second = ray.get(gpu_pid.remote()), ray.get(gpu_pid.remote())
    assert first != second  # max_calls=1: a GPU task's worker exits after it
    assert ray.get(reused_gpu_pid.remote()) == ray.get(reused_gpu_pid.remote())


# --- enable_task_events ------------------------------------------------------------------
def _tag():
    return uuid.uuid4().hex[:10]


def _timeline_text():
    return json.dumps([e for e in ray.timeline() if e.get("ph") == "X"])


def _wait_in_timeline(token):
    wait_for(lambda: token in _timeline_text(), timeout=WAIT, interval=0.25,
             message=f"{token} in the timeline")  # fmt: skip


def test_a_task_without_task_events_runs_and_is_not_in_the_timeline(ray_start):
    quiet_name, loud_name = f"quiet_{_tag()}", f"loud_{_tag()}"

    @ray.remote(enable_task_events=False)
    def quiet(x):
        return x + 1

    @ray.remote
    def loud(x):
        return x * 2

    assert ray.get(quiet.options(name=quiet_name).remote(1)) == 2
    assert ray.get(loud.options(name=f"{quiet_name}_opt", enable_task_events=False).remote(2)) == 4
    assert ray.get(loud.options(name=loud_name).remote(3)) == 6
    _wait_in_timeline(loud_name)
    assert quiet_name not in _timeline_text()


def test_an_actor_without_task_events_and_its_method_overrides(ray_start):
    tag = _tag()
    quiet_cls = type(f"QuietActor{tag}", (), {})
    loud_cls = type(f"LoudActor{tag}", (), {})

    def hush(self):
        return "hush"

    def speak(self):
        return "speak"

    quiet_cls.hush = hush
    quiet_cls.speak = ray.method(enable_task_events=True)(speak)
    loud_cls.speak = speak
    loud_cls.hush = ray.method(enable_task_events=False)(hush)
    quiet = ray.remote(enable_task_events=False)(quiet_cls).remote()
    loud = ray.remote(loud_cls).remote()

    assert ray.get(quiet.hush.remote()) == "hush"
    assert ray.get(loud.hush.remote()) == "hush"
    assert ray.get(loud.speak.options(enable_task_events=False).remote()) == "speak"
    assert ray.get(quiet.speak.remote()) == "speak"  # @method(enable_task_events=True)
    assert ray.get(loud.speak.remote()) == "speak"
    wait_for(lambda: _timeline_text().count(f"{tag}.speak") >= 2, timeout=WAIT,
             interval=0.25, message="both speak calls in the timeline")  # fmt: skip
    text = _timeline_text()
    assert f"QuietActor{tag}.hush" not in text
    assert f"LoudActor{tag}.hush" not in text
    assert f"QuietActor{tag}.__init__" not in text  # its creation makes none either
    assert f"LoudActor{tag}.__init__" in text


def test_enable_task_events_must_be_a_bool(ray_start):
    with pytest.raises(TypeError, match="enable_task_events"):
        counted.options(enable_task_events=None)
    with pytest.raises(TypeError, match="enable_task_events"):
        Log.options(enable_task_events="no")


@raylite_only  # Ray 2.60's @method keeps any value (and its calls then pass it on as a bool)
def test_method_enable_task_events_must_be_a_bool(ray_start):
    with pytest.raises(TypeError, match="enable_task_events"):
        ray.method(enable_task_events="no")(lambda self: 1)


@raylite_only  # Ray's state API needs its dashboard, which the compat venv lacks
def test_a_task_without_task_events_is_in_no_listing(ray_start):
    from raylite.util.state import list_tasks

    quiet_name, loud_name = f"quiet_{_tag()}", f"loud_{_tag()}"
    ray.get(counted.options(name=quiet_name, enable_task_events=False).remote())
    ray.get(counted.options(name=loud_name).remote())
    wait_for(lambda: any(t.name == loud_name for t in list_tasks()), timeout=WAIT,
             message="the loud task listed")  # fmt: skip
    assert not any(t.name == quiet_name for t in list_tasks())


# --- allow_out_of_order_execution -------------------------------------------------------
@ray.remote
def gated(path, value):
    wait_for_path(path, WAIT)
    return value


@ray.remote
class Log:
    def __init__(self):
        self.seen = []

    def add(self, value):
        self.seen.append(value)
        return value

    def get(self):
        return self.seen


@ray.remote
class AsyncLog:
    async def add(self, value):
        return value


def test_an_out_of_order_actor_runs_a_ready_call_before_one_that_waits(ray_start, tmp_path):
    gate = str(tmp_path / "gate")
    log = Log.options(allow_out_of_order_execution=True).remote()
    waiting = log.add.remote(gated.remote(gate, "slow"))
    assert ray.get(log.add.remote("fast"), timeout=WAIT) == "fast"  # not behind `waiting`
    open(gate, "w").close()
    assert ray.get(waiting, timeout=WAIT) == "slow"
    assert ray.get(log.get.remote()) == ["fast", "slow"]


def test_an_actor_runs_calls_in_submission_order_by_default(ray_start, tmp_path):
    gate = str(tmp_path / "gate")
    log = Log.remote()
    waiting = log.add.remote(gated.remote(gate, "slow"))
    fast = log.add.remote("fast")
    ready, _ = ray.wait([fast], timeout=0.5)
    assert not ready  # behind the call that waits for its argument
    open(gate, "w").close()
    assert ray.get([waiting, fast], timeout=WAIT) == ["slow", "fast"]
    assert ray.get(log.get.remote()) == ["slow", "fast"]


def test_an_async_actor_is_out_of_order_by_default(ray_start, tmp_path):
    gate = str(tmp_path / "gate")
    actor = AsyncLog.remote()
    waiting = actor.add.remote(gated.remote(gate, "slow"))
    assert ray.get(actor.add.remote("fast"), timeout=WAIT) == "fast"
    open(gate, "w").close()
    assert ray.get(waiting, timeout=WAIT) == "slow"


def test_allow_out_of_order_execution_false_is_refused_where_calls_overlap(ray_start):
    with pytest.raises(ValueError, match="async actors"):
        AsyncLog.options(allow_out_of_order_execution=False).remote()
    with pytest.raises(ValueError, match="multi-threaded actors"):
        Log.options(max_concurrency=2, allow_out_of_order_execution=False).remote()
    with pytest.raises(TypeError, match="allow_out_of_order_execution"):
        Log.options(allow_out_of_order_execution=1)


def test_a_handle_passed_on_keeps_the_actor_out_of_order(ray_start, tmp_path):
    gate = str(tmp_path / "gate")

    @ray.remote
    def use(handle, gate):
        waiting = handle.add.remote(gated.remote(gate, "slow"))
        fast = ray.get(handle.add.remote("fast"), timeout=WAIT)
        open(gate, "w").close()
        return fast, ray.get(waiting, timeout=WAIT)

    log = Log.options(allow_out_of_order_execution=True).remote()
    assert ray.get(use.remote(log, gate), timeout=2 * WAIT) == ("fast", "slow")


# --- object_store_memory and _metadata -----------------------------------------------------
def test_object_store_memory_is_for_actors_only(ray_start):
    with pytest.raises(ValueError, match="not implemented for tasks"):
        counted.options(object_store_memory=1024)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Log.options(object_store_memory=1024 * 1024)
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    with pytest.raises(TypeError, match="object_store_memory"):
        Log.options(object_store_memory=1.5)


# Ray 2.60 schedules such an actor, but its raylet then crashes when the actor exits
# (a failed check in LocalResourceManager::FreeTaskResourceInstances).
@raylite_only
def test_an_actors_object_store_memory_is_a_demand_on_its_node(ray_start):
    mib = 1024 * 1024
    before = ray.available_resources()["object_store_memory"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        actor = Log.options(object_store_memory=64 * mib).remote()
    assert ray.get(actor.add.remote(1)) == 1
    wait_for(lambda: ray.available_resources()["object_store_memory"] <= before - 64 * mib,
             timeout=WAIT, message="the actor's object_store_memory held")  # fmt: skip
    ray.kill(actor)
    wait_for(lambda: ray.available_resources()["object_store_memory"] >= before,
             timeout=WAIT, message="the actor's object_store_memory back")  # fmt: skip


def test_metadata_is_not_an_option(ray_start):
    with pytest.raises(ValueError, match="_metadata"):
        counted.options(_metadata={"a": 1})
    with pytest.raises(ValueError, match="_metadata"):
        Log.options(_metadata={"a": 1})


# --- DAGs: generator methods and bound calls with options --------------------------------
@ray.remote
class Gen:
    def __init__(self):
        self.failures = 0

    def count(self, n):
        # Not `yield from`: Ray 2.60 calls .send() on what it delegates to (range has none).
        for i in range(n):  # noqa: UP028
            yield i

    def flaky(self, x):
        if self.failures == 0:
            self.failures += 1
            raise ValueError("first call fails")
        return x


@ray.remote(concurrency_groups={"io": 2})
class Grouped:
    def __init__(self):
        self.barrier = threading.Barrier(2, timeout=WAIT)

    def meet(self):
        self.barrier.wait()  # passes only if two calls run at once
        return "met"


def test_a_generator_method_bound_on_a_class_node_streams(ray_start):
    with dag_api.InputNode() as inp:
        dag = Gen.bind().count.bind(inp)
    gen = dag.execute(3)
    assert isinstance(gen, ray.ObjectRefGenerator)
    assert [ray.get(ref) for ref in gen] == [0, 1, 2]


@raylite_only  # Ray 2.60 fails at bind: TypeError comparing num_returns "streaming" > 1
def test_a_generator_method_bound_on_a_handle_streams(ray_start):
    actor = Gen.remote()
    with dag_api.InputNode() as inp:
        dag = actor.count.bind(inp)
    assert dag.get_options()["num_returns"] == "streaming"
    assert [ray.get(ref) for ref in dag.execute(2)] == [0, 1]
    assert [ray.get(ref) for ref in dag.execute(3)] == [0, 1, 2]


def test_a_call_bound_on_a_handle_runs_in_the_concurrency_group_it_names(ray_start):
    actor = Grouped.remote()
    node = actor.meet.options(concurrency_group="io").bind()
    assert node.get_options() == {
        "name": "",
        "num_returns": 1,
        "concurrency_group": "io",
        "_generator_backpressure_num_objects": None,
    }
    dag = dag_api.MultiOutputNode([node, actor.meet.options(concurrency_group="io").bind()])
    assert ray.get(dag.execute(), timeout=2 * WAIT) == ["met", "met"]


def test_a_call_bound_on_a_class_node_retries_as_its_options_say(ray_start):
    with dag_api.InputNode() as inp:
        dag = Gen.bind().flaky.options(retry_exceptions=True, max_task_retries=1).bind(inp)
    assert ray.get(dag.execute(7)) == 7


@raylite_only  # Ray 2.60's bind on a handle takes no retry options (TypeError)
def test_a_call_bound_on_a_handle_retries_as_its_options_say(ray_start):
    actor = Gen.remote()
    node = actor.flaky.options(retry_exceptions=[ValueError], max_task_retries=1).bind(5)
    assert node.get_options()["retry_exceptions"] == (ValueError,)
    assert ray.get(node.execute()) == 5
