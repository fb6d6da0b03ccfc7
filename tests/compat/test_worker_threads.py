"""OMP_NUM_THREADS in workers, as Ray sets it: math libraries size their thread pools
by it when they are imported, so a worker uses the CPUs its lease holds, not every core
(two 1-CPU tasks with numpy on 2 cores otherwise run 4 BLAS threads and take twice as
long: bench/bench_dask.py's array workload 4.8 -> 2.2 s)."""

from __future__ import annotations

import os

import pytest

from tests._engine import ray

RAY_INIT = {"num_cpus": 2}


@ray.remote
def threads():
    return os.environ.get("OMP_NUM_THREADS")


@ray.remote
class Threads:
    def get(self):
        return os.environ.get("OMP_NUM_THREADS")


@pytest.fixture(autouse=True)
def no_user_setting(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_a_task_and_an_actor_by_default_get_one_thread(ray_start):
    assert ray.get(threads.remote()) == "1"
    assert ray.get(Threads.remote().get.remote()) == "1"


def test_an_actor_with_two_cpus_gets_two(ray_start):
    assert ray.get(Threads.options(num_cpus=2).remote().get.remote()) == "2"


def test_a_runtime_env_setting_wins(ray_start):
    env = {"env_vars": {"OMP_NUM_THREADS": "3"}}
    assert ray.get(threads.options(runtime_env=env).remote()) == "3"
