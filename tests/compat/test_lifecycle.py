"""Lifecycle: init options, re-init, shutdown, auto-init, cluster views, runtime context."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from tests._engine import ray, wait_for

CONFIGURED = {
    "num_cpus": 3,
    "num_gpus": 1,
    "resources": {"Widget": 2},
    "object_store_memory": 200 * 1024 * 1024,
    "logging_level": logging.WARNING,
    "log_to_driver": True,
    "namespace": "lifecycle_ns",
}


@ray.remote
def task_context():
    ctx = ray.get_runtime_context()
    return {
        "job_id": ctx.get_job_id(),
        "task_id": ctx.get_task_id(),
        "node_id": ctx.get_node_id(),
        "actor_id": ctx.get_actor_id(),
        "pid": os.getpid(),
    }


@ray.remote
class ContextActor:
    def context(self):
        ctx = ray.get_runtime_context()
        return {
            "job_id": ctx.get_job_id(),
            "task_id": ctx.get_task_id(),
            "actor_id": ctx.get_actor_id(),
            "node_id": ctx.get_node_id(),
        }


@ray.remote
def hold_cpu(started, release):
    Path(started).touch()
    deadline = time.monotonic() + 60
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.005)
    return "done"


@pytest.mark.ray_init(**CONFIGURED)
class TestConfiguredCluster:
    def test_is_initialized(self, ray_start):
        assert ray.is_initialized()

    def test_cluster_resources(self, ray_start):
        resources = ray.cluster_resources()
        assert resources["CPU"] == 3
        assert resources["GPU"] == 1
        assert resources["Widget"] == 2
        assert resources["object_store_memory"] == 200 * 1024 * 1024

    def test_available_resources_at_rest(self, ray_start):
        available = wait_for(
            lambda: (lambda a: a if a.get("CPU") == 3 else None)(ray.available_resources()),
            timeout=10,
            message=lambda: f"3 CPUs available at rest: {ray.available_resources()}",
        )
        assert available["GPU"] == 1
        assert available["Widget"] == 2

    def test_available_cpu_drops_while_task_holds_one(self, ray_start, tmp_path):
        started, release = tmp_path / "started", tmp_path / "release"
        ref = hold_cpu.remote(str(started), str(release))
        wait_for(started.exists, timeout=60, message="the CPU-holding task to start")
        wait_for(
            lambda: ray.available_resources().get("CPU") == 2,
            timeout=10,
            message=lambda: f"2 of 3 CPUs available: {ray.available_resources()}",
        )
        assert ray.cluster_resources()["CPU"] == 3
        release.touch()
        assert ray.get(ref, timeout=60) == "done"
        wait_for(
            lambda: ray.available_resources().get("CPU") == 3,
            timeout=10,
            message=lambda: f"3 CPUs available again: {ray.available_resources()}",
        )

    def test_nodes(self, ray_start):
        nodes = ray.nodes()
        assert len(nodes) == 1
        (node,) = nodes
        assert node["Alive"] is True
        assert isinstance(node["NodeID"], str)
        assert node["NodeID"]
        assert node["Resources"]["CPU"] == 3
        assert node["Resources"]["GPU"] == 1
        assert node["Resources"]["Widget"] == 2
        assert node["NodeID"] == ray.get_runtime_context().get_node_id()

    def test_namespace(self, ray_start):
        assert ray.get_runtime_context().namespace == "lifecycle_ns"

    def test_runtime_context_in_driver(self, ray_start):
        ctx = ray.get_runtime_context()
        assert isinstance(ctx.get_job_id(), str)
        assert ctx.get_job_id()
        assert isinstance(ctx.get_node_id(), str)
        assert ctx.get_actor_id() is None

    def test_runtime_context_in_task(self, ray_start):
        driver = ray.get_runtime_context()
        first, second = ray.get([task_context.remote(), task_context.remote()])
        for seen in (first, second):
            assert seen["pid"] != os.getpid()
            assert seen["job_id"] == driver.get_job_id()
            assert seen["node_id"] == driver.get_node_id()
            assert isinstance(seen["task_id"], str)
            assert seen["task_id"]
            assert seen["actor_id"] is None
        assert first["task_id"] != second["task_id"]
        assert driver.get_task_id() not in (first["task_id"], second["task_id"])

    def test_runtime_context_in_actor(self, ray_start):
        actor, other = ContextActor.remote(), ContextActor.remote()
        seen, seen_other = ray.get([actor.context.remote(), other.context.remote()])
        assert isinstance(seen["actor_id"], str)
        assert seen["actor_id"]
        assert seen["actor_id"] != seen_other["actor_id"]
        assert seen["job_id"] == ray.get_runtime_context().get_job_id()
        assert seen["task_id"]
        assert ray.get(actor.context.remote())["actor_id"] == seen["actor_id"]


def test_shutdown_then_init_again(no_engine):
    ray.init(num_cpus=1)
    assert ray.is_initialized()
    assert ray.get(ray.put("first")) == "first"
    ray.shutdown()
    assert not ray.is_initialized()
    ray.init(num_cpus=2)
    assert ray.is_initialized()
    assert ray.cluster_resources()["CPU"] == 2
    assert ray.get(task_context.remote())["job_id"]


def test_shutdown_twice_is_harmless(no_engine):
    ray.init(num_cpus=1)
    ray.shutdown()
    ray.shutdown()
    assert not ray.is_initialized()


def test_init_twice_raises_unless_ignored(no_engine):
    ray.init(num_cpus=2)
    with pytest.raises(RuntimeError):
        ray.init(num_cpus=2)
    ray.init(num_cpus=1, ignore_reinit_error=True)
    assert ray.is_initialized()
    # The first configuration stays.
    assert ray.cluster_resources()["CPU"] == 2


def test_put_initializes_automatically(no_engine):
    assert not ray.is_initialized()
    ref = ray.put(5)
    assert ray.is_initialized()
    assert ray.get(ref) == 5


def test_remote_initializes_automatically(no_engine):
    assert not ray.is_initialized()
    ref = task_context.remote()
    assert ray.is_initialized()
    assert ray.get(ref)["job_id"]
