#!/usr/bin/env python3
"""Runtime environment speed of raylite, side by side with Ray (issue 14's numbers).

Same harness as bench_core.py: every (engine, workload) pair runs in its own fresh
subprocess, one after the other. Every workload runs under init(num_cpus=2).

    pip        a task in a new pip env ({"pip": ["pyjokes==0.8.3"]}: the virtualenv is
               built, the package installed from the registry, pip's download cache
               warm after the first run): seconds from .remote() to its result; then
               tasks in that env, now built (cached), one after the other: median s
    env_vars   a task in a new env_vars env (a worker started for it): seconds; then a
               task of the default env, for reference

    python bench/bench_runtime_env.py
    python bench/bench_runtime_env.py --engine raylite --only pip
"""

from __future__ import annotations

import importlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_core as core
from bench_actors import Metric

emit = core.emit

PIP_ENV = {"pip": ["pyjokes==0.8.3"]}

METRICS = [
    Metric("first_task_new_pip_env_s", "pip", "s", "lower", "reference", "raylite", None),
    Metric("task_cached_pip_env_s", "pip", "s", "lower", "reference", "raylite", None),
    Metric("first_task_new_env_vars_env_s", "env_vars", "s", "lower", "reference", "raylite", None),
    Metric("task_default_env_s", "env_vars", "s", "lower", "reference", "raylite", None),
]
WORKER_TIMEOUT_S = {"pip": 600, "env_vars": 180}


def work_pip(engine: str, quick: bool) -> None:
    ray = importlib.import_module(engine)
    core.engine_init(ray, num_cpus=2, address="local")  # not a cluster another process runs

    @ray.remote
    def joke() -> bool:
        import pyjokes

        return isinstance(pyjokes.get_joke(), str)

    start = time.perf_counter()
    assert ray.get(joke.options(runtime_env=PIP_ENV).remote(), timeout=540)
    first = time.perf_counter() - start
    cached = []
    for _ in range(5 if quick else 20):
        start = time.perf_counter()
        assert ray.get(joke.options(runtime_env=PIP_ENV).remote(), timeout=60)
        cached.append(time.perf_counter() - start)
    ray.shutdown()
    emit("first_task_new_pip_env_s", first)
    emit("task_cached_pip_env_s", statistics.median(cached), runs=len(cached))


def work_env_vars(engine: str, quick: bool) -> None:
    ray = importlib.import_module(engine)
    core.engine_init(ray, num_cpus=2, address="local")  # not a cluster another process runs

    @ray.remote
    def read() -> str | None:
        import os

        return os.environ.get("BENCH_VAR")

    assert ray.get(read.remote()) is None  # the default pool is up
    firsts = []
    for i in range(3 if quick else 5):
        start = time.perf_counter()
        value = ray.get(read.options(runtime_env={"env_vars": {"BENCH_VAR": str(i)}}).remote())
        firsts.append(time.perf_counter() - start)
        assert value == str(i)
    defaults = []
    for _ in range(20):
        start = time.perf_counter()
        ray.get(read.remote())
        defaults.append(time.perf_counter() - start)
    ray.shutdown()
    emit("first_task_new_env_vars_env_s", statistics.median(firsts), runs=len(firsts))
    emit("task_default_env_s", statistics.median(defaults), runs=len(defaults))


WORKERS = {"pip": work_pip, "env_vars": work_env_vars}

SUITE = core.Suite(
    "runtime_env",
    __file__,
    "raylite runtime environments: a new pip env vs a cached one, vs Ray",
    METRICS,
    WORKERS,
    WORKER_TIMEOUT_S,
)


def main(argv: list[str] | None = None) -> int:
    return core.suite_main(SUITE, argv)


if __name__ == "__main__":
    sys.exit(main())
