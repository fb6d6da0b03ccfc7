"""Resources: GPU ids and CUDA_VISIBLE_DEVICES, custom resources, infeasible requests."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from tests._engine import StdStreams, exceptions, ray, raylite_only, wait_for

RAY_INIT = {"num_cpus": 4, "num_gpus": 2, "resources": {"Custom1": 2}}


@ray.remote(num_gpus=1)
def one_gpu():
    return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")


@ray.remote(num_gpus=2)
def two_gpus():
    return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")


@ray.remote
def no_gpu():
    return ray.get_gpu_ids()


@ray.remote(num_gpus=1)
def gpu_at_barrier(barrier_dir, parties):
    """Hold a GPU until `parties` GPU tasks hold theirs at the same time."""
    Path(barrier_dir, uuid.uuid4().hex).touch()
    deadline = time.monotonic() + 30
    while len(os.listdir(barrier_dir)) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError("the other GPU task never started")
        time.sleep(0.005)
    return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")


@ray.remote(resources={"Custom1": 1})
def custom_interval(seconds):
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


@ray.remote(resources={"Nonexistent": 1})
def infeasible():
    return "should never run"


def _max_overlap(intervals):
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def test_cluster_resources_match_init(ray_start):
    resources = ray.cluster_resources()
    assert resources["CPU"] == 4
    assert resources["GPU"] == 2
    assert resources["Custom1"] == 2


def test_get_gpu_ids_in_one_gpu_task(ray_start):
    ids, visible = ray.get(one_gpu.remote())
    assert len(ids) == 1
    assert ids[0] in (0, 1)
    assert visible == str(ids[0])


def test_get_gpu_ids_in_two_gpu_task(ray_start):
    ids, visible = ray.get(two_gpus.remote())
    assert sorted(ids) == [0, 1]
    assert sorted(visible.split(",")) == ["0", "1"]


def test_task_without_gpus_gets_none(ray_start):
    assert ray.get(no_gpu.remote()) == []


def test_concurrent_gpu_tasks_get_distinct_gpus(ray_start, tmp_path):
    results = ray.get([gpu_at_barrier.remote(str(tmp_path), 2) for _ in range(2)], timeout=90)
    ids = [r[0] for r in results]
    assert all(len(i) == 1 for i in ids)
    assert {i[0] for i in ids} == {0, 1}
    for gpu_ids, visible in results:
        assert visible == str(gpu_ids[0])


def test_driver_get_gpu_ids_is_empty(ray_start):
    assert ray.get_gpu_ids() == []


def test_custom_resource_limits_concurrency(ray_start):
    intervals = ray.get([custom_interval.remote(0.3) for _ in range(4)])
    # Custom1 == 2: never more than two at once, and the two slots are both used.
    assert _max_overlap(intervals) == 2


def test_available_resources_reflect_running_task(ray_start, tmp_path):
    @ray.remote(num_cpus=1, resources={"Custom1": 1})
    def hold(started, release):
        Path(started).touch()
        deadline = time.monotonic() + 60
        while not os.path.exists(release):
            if time.monotonic() > deadline:
                raise TimeoutError("never released")
            time.sleep(0.005)
        return "released"

    started, release = tmp_path / "started", tmp_path / "release"
    ref = hold.remote(str(started), str(release))
    wait_for(started.exists, timeout=60, message="the holding task to start")
    wait_for(
        lambda: (
            ray.available_resources().get("Custom1", 0) == 1
            and ray.available_resources().get("CPU", 0) == 3
        ),
        timeout=10,
        message=lambda: f"Custom1 1 and CPU 3 available, got {ray.available_resources()}",
    )
    release.touch()
    assert ray.get(ref, timeout=60) == "released"
    wait_for(
        lambda: (
            ray.available_resources().get("Custom1", 0) == 2
            and ray.available_resources().get("CPU", 0) == 4
        ),
        timeout=10,
        message=lambda: f"all resources back, got {ray.available_resources()}",
    )


def test_infeasible_request_does_not_complete(ray_start):
    ref = infeasible.remote()
    with pytest.raises(exceptions.GetTimeoutError):
        ray.get(ref, timeout=1)
    ready, not_ready = ray.wait([ref], timeout=0.2)
    assert ready == []
    assert not_ready == [ref]


def test_infeasible_cpu_request_does_not_complete(ray_start):
    ref = infeasible.options(num_cpus=64, resources={}).remote()
    with pytest.raises(exceptions.GetTimeoutError):
        ray.get(ref, timeout=1)


@raylite_only
def test_infeasible_request_warns_at_once_naming_the_resource(ray_start, monkeypatch):
    streams = StdStreams(monkeypatch)  # no line lost to a capture's truncation
    ref = infeasible.options(resources={"WarnOnlyResource": 1}).remote()
    wait_for(
        lambda: "WarnOnlyResource" in streams.err,
        timeout=5,
        message=lambda: f"a warning naming WarnOnlyResource; output so far: {streams.err!r}",
    )
    ready, _ = ray.wait([ref], timeout=0)
    assert ready == []


@ray.remote(num_gpus=0.5)
class HalfGpuUser:
    def gpus(self):
        return ray.get_gpu_ids()


@pytest.mark.ray_init(num_cpus=4, num_gpus=2)
def test_half_gpu_actors_pack_two_per_gpu(ray_fresh):
    actors = []
    for _ in range(4):  # one by one: each placed after the one before
        actor = HalfGpuUser.remote()
        ray.get(actor.gpus.remote())
        actors.append(actor)
    ids = [ray.get(a.gpus.remote()) for a in actors]
    assert [[int(i) for i in g] for g in ids] == [[0], [0], [1], [1]]


@ray.remote(accelerator_type="V100")
def on_a_v100():
    return "ran"


@pytest.mark.ray_init(num_cpus=2, resources={"accelerator_type:V100": 1})
def test_accelerator_type_needs_a_node_of_that_type(ray_fresh):
    assert ray.get(on_a_v100.remote(), timeout=60) == "ran"
    elsewhere = on_a_v100.options(accelerator_type="A100").remote()
    ready, _ = ray.wait([elsewhere], timeout=1.0)
    assert ready == []  # no node has an A100: it waits, as on Ray
    ray.cancel(elsewhere, force=True)


@ray.remote(num_gpus=0.5)
class HalfGpu:
    def ready(self):
        return True


@ray.remote(resources={"Custom1": 0.5})
class SomeCustom:
    def ready(self):
        return True


@ray.remote
class Plain:
    def ready(self):
        return True


@pytest.mark.parametrize("cls", [HalfGpu, SomeCustom], ids=["num_gpus", "resources"])
@pytest.mark.ray_init(num_cpus=1, num_gpus=2, resources={"Custom1": 2})
def test_an_actor_asking_for_a_gpu_or_custom_resource_holds_a_cpu_too(ray_fresh, cls):
    # Ray: once any resource but memory is asked for, the actor holds 1 CPU (unless
    # num_cpus says otherwise) for its lifetime, so a second one waits on a 1-CPU node.
    first = cls.remote()
    assert ray.get(first.ready.remote(), timeout=60)
    second = cls.remote()
    ready, _ = ray.wait([second.ready.remote()], timeout=1.5)
    assert ready == [], "the second actor started: the first holds no CPU"
    ray.kill(first)
    assert ray.get(second.ready.remote(), timeout=60)


@pytest.mark.ray_init(num_cpus=1, num_gpus=2)
def test_plain_actors_and_num_cpus_0_gpu_actors_hold_no_cpu(ray_fresh):
    plain = [Plain.remote() for _ in range(3)]
    gpu = [HalfGpu.options(num_cpus=0).remote() for _ in range(2)]
    assert ray.get([a.ready.remote() for a in plain + gpu], timeout=60) == [True] * 5
