#!/usr/bin/env python3
"""Core speed and memory figures of raylite, side by side with Ray.

Each figure is measured on raylite and, when Ray can be found, on Ray in the same
run. Every (engine, workload) pair runs in its own fresh subprocess, one after the
other, never two at once, so the engines never share a process or a CPU:

    bench_core.py (orchestrator, stdlib only)
      |--> <raylite python> bench_core.py --worker startup --engine raylite
      |--> ...                                              (one per workload)
      '--> <ray python>     bench_core.py --worker startup --engine ray
           ...             each prints "@@RESULT {json}" lines; everything else
                           it writes (engine logs) is ignored

The orchestrator prints one JSON line per metric on stdout:

    {"metric": ..., "raylite": x, "ray": y, "ratio": x / y, "unit": ...,
     "target": ..., "met": true | false | null}

ratio is always raylite / ray; "better" in --out tells which way is good. Progress
and per-run details go to stderr; --out PATH writes everything, details included.

Ray is used from the current interpreter when it imports ray, else from
/tmp/rayvenv/bin/python (or --ray-python), waiting for it up to --ray-wait seconds.

    python bench/bench_core.py --quick
    python bench/bench_core.py --engine raylite --only startup,memory
    python bench/bench_core.py --out /tmp/core.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULT_PREFIX = "@@RESULT "
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RAY_PYTHON = "/tmp/rayvenv/bin/python"
ENGINES = ("raylite", "ray")
MB = 1_000_000


@dataclass(frozen=True)
class Metric:
    name: str
    workload: str  # the worker that measures it
    unit: str
    better: str  # "higher" or "lower"
    target: str
    # what "met" compares: the raylite value itself, or raylite / ray
    target_on: str  # "raylite" or "ratio"
    threshold: float
    # a "derived" metric: raylite's value of of[0] / raylite's value of of[1]
    of: tuple[str, str] | None = None

    def met(self, raylite: float | None, ratio: float | None) -> bool | None:
        value = raylite if self.target_on == "raylite" else ratio
        if value is None:
            return None
        return value < self.threshold if self.better == "lower" else value >= self.threshold


METRICS = [
    # Targets from issue 17 (the speed pass): ratios are raylite / Ray, or raylite /
    # Python's own multiprocessing.Pool (the "stdlib" workload, timed in its own process).
    Metric("startup_s", "startup", "s", "lower", "raylite <= 0.25 s", "raylite", 0.2501),
    Metric("roundtrip_per_s", "roundtrip", "calls/s", "higher", "ratio >= 10", "ratio", 10.0),
    # The same with an 8 MB array in the store as the argument: what reading it costs.
    Metric(
        "roundtrip_store_arg_per_s", "roundtrip", "calls/s", "higher", "(reference)", "raylite", 0.0
    ),
    Metric("tasks_10k_per_s", "tasks", "tasks/s", "higher", "ratio >= 6", "ratio", 6.0),
    # Results in completion order (Ray's documented pattern): wait(num_returns=1) in a
    # loop over 1,000 no-op tasks, each ready ref taken out of the list.
    Metric("wait_loop_1k_per_s", "tasks", "tasks/s", "higher", "(reference)", "raylite", 0.0),
    # A task given a list of 1,000 refs (small values the driver put) that gets them all.
    Metric("borrowed_get_1k_ms", "tasks", "ms", "lower", "(reference)", "raylite", float("inf")),
    Metric("actor_calls_per_s", "actor", "calls/s", "higher", "ratio >= 5", "ratio", 5.0),
    Metric("actor_pipelined_per_s", "pipelined", "calls/s", "higher", "ratio >= 3", "ratio", 3.0),
    Metric("chain_1000_s", "chain", "s", "lower", "ratio <= 0.2 (5x Ray)", "ratio", 0.2),
    Metric("handoff_p95_ms", "chain", "ms", "lower", "raylite <= 1 ms", "raylite", 1.0001),
    Metric("idle_rss_mb", "memory", "MB", "lower", "raylite <= 100 MB", "raylite", 100.001),
    Metric("idle_pss_mb", "memory", "MB", "lower", "raylite < 100 MB", "raylite", 100.001),
    Metric("get_100mb_ms", "get", "ms", "lower", "raylite <= 0.05 ms", "raylite", 0.05001),
    Metric("get_100mb_again_ms", "get", "ms", "lower", "raylite <= 0.05 ms", "raylite", 0.05001),
    # The first get of a 100 MB object in a task (the driver put it): where a program's
    # big objects are read, and without the driver's cache-filling copy just before.
    Metric("get_100mb_task_ms", "get", "ms", "lower", "raylite <= 0.05 ms", "raylite", 0.05001),
    # A task that gets a 100 MB array the driver has just put and reads all of it (sum),
    # the driver's put and the task's result included: what a program that hands big
    # arrays to tasks waits per array (the reader's page faults on a fresh mapping, or
    # none on one it kept: object_store's idle mappings).
    Metric("put_task_sum_100mb_ms", "get", "ms", "lower", "(reference)", "raylite", float("inf")),
    # A put of a 100 MB array (the first, into a fresh file, left out of the median).
    Metric("put_100mb_ms", "get", "ms", "lower", "(reference)", "raylite", float("inf")),
    # The machine's floor under the three (bench/get_floor.py, no engine): the bare open,
    # mmap and np.frombuffer of a first get right after the same 100 MB copy, in this
    # process and in another; and frombuffer alone on a mapping made before the copy.
    Metric("get_100mb_floor_ms", "getfloor", "ms", "lower", "(reference)", "raylite", float("inf")),
    Metric(
        "get_100mb_floor_task_ms", "getfloor", "ms", "lower", "(reference)", "raylite", float("inf")
    ),
    Metric(
        "get_100mb_floor_arena_ms",
        "getfloor",
        "ms",
        "lower",
        "(reference)",
        "raylite",
        float("inf"),
    ),
    Metric("pi_speedup_2cpu", "pi", "x", "higher", "raylite >= 1.9x", "raylite", 1.9),
    Metric("pool_apply_per_s", "stdlib", "calls/s", "higher", "(reference)", "raylite", 0.0),
    Metric(
        "pool_apply_async_10k_per_s", "stdlib", "tasks/s", "higher", "(reference)", "raylite", 0.0
    ),
    Metric(
        "roundtrip_vs_pool_apply",
        "derived",
        "x",
        "higher",
        "raylite >= 1x Pool.apply",
        "raylite",
        1.0,
        of=("roundtrip_per_s", "pool_apply_per_s"),
    ),
    Metric(
        "tasks_10k_vs_pool_apply_async",
        "derived",
        "x",
        "higher",
        "raylite >= 0.7x Pool.apply_async",
        "raylite",
        0.7,
        of=("tasks_10k_per_s", "pool_apply_async_10k_per_s"),
    ),
]
WORKLOADS = [w for w in dict.fromkeys(m.workload for m in METRICS) if w != "derived"]
WORKER_TIMEOUT_S = {"startup": 300, "tasks": 300, "chain": 300}  # others: 180
# Workloads that measure no engine (Python's own pools): run once, in raylite's python.
ENGINE_FREE = {"stdlib", "getfloor"}


# ---------------------------------------------------------------------------
# Worker side: runs inside the engine's interpreter, one workload per process
# ---------------------------------------------------------------------------


def emit(metric: str, value: float | None, **detail: Any) -> None:
    print(
        RESULT_PREFIX + json.dumps({"metric": metric, "value": value, "detail": detail}), flush=True
    )


def engine_init(ray: Any, **kwargs: Any) -> None:
    ray.init(logging_level=logging.ERROR, **kwargs)


def sampling_task(num_samples: int) -> int:
    """The seeds' Monte Carlo pi task (without its print)."""
    import math
    import random

    num_inside = 0
    for _ in range(num_samples):
        x, y = random.uniform(-1, 1), random.uniform(-1, 1)
        if math.hypot(x, y) <= 1:
            num_inside += 1
    return num_inside


def work_startup(engine: str, quick: bool) -> None:
    """Whole-process wall time of import + init + one task + shutdown: median of 5,
    after one run not counted. Bytecode is cached, as in any installed package:
    PYTHONDONTWRITEBYTECODE (set on some machines) is dropped for the runs and the
    caches go to a temporary PYTHONPYCACHEPREFIX; with it set, every process of the
    cluster would compile the engine's sources at its start (bench_startup.py, too)."""
    import tempfile

    code = (
        f"import {engine} as ray\n"
        "@ray.remote\n"
        "def f():\n"
        "    return 1\n"
        "ray.init()\n"
        "assert ray.get(f.remote()) == 1\n"
        "ray.shutdown()\n"
    )
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    samples = []
    with tempfile.TemporaryDirectory(prefix="bench-core-pyc-") as pycache:
        env["PYTHONPYCACHEPREFIX"] = pycache
        for _ in range(6):
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
            )
            elapsed = time.perf_counter() - start
            if proc.returncode != 0:
                raise RuntimeError(
                    f"startup child exited {proc.returncode}:\n{proc.stderr[-3000:]}"
                )
            samples.append(elapsed)
    samples = samples[1:]  # the first run wrote the bytecode caches
    emit("startup_s", statistics.median(samples), samples=[round(s, 3) for s in samples])


def timed_loop(call: Any, duration: float) -> tuple[int, float]:
    count = 0
    start = time.perf_counter()
    deadline = start + duration
    while True:
        call()
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            return count, now - start


def work_roundtrip(engine: str, quick: bool) -> None:
    ray = importlib.import_module(engine)
    engine_init(ray, num_cpus=2)

    @ray.remote
    def noop() -> None:
        return None

    for _ in range(50):
        ray.get(noop.remote())
    count, elapsed = timed_loop(lambda: ray.get(noop.remote()), 1.0 if quick else 3.0)

    @ray.remote
    def first(a: Any) -> float:
        return float(a[0])

    import numpy as np

    stored = ray.put(np.ones(1 << 20))  # 8 MB: in the store (a ref argument)
    for _ in range(50):
        ray.get(first.remote(stored))
    count2, elapsed2 = timed_loop(lambda: ray.get(first.remote(stored)), 1.0 if quick else 3.0)
    ray.shutdown()
    emit("roundtrip_per_s", count / elapsed, calls=count, seconds=round(elapsed, 3))
    emit("roundtrip_store_arg_per_s", count2 / elapsed2, calls=count2, seconds=round(elapsed2, 3))


def work_tasks(engine: str, quick: bool) -> None:
    ray = importlib.import_module(engine)
    engine_init(ray, num_cpus=2)

    @ray.remote
    def noop() -> None:
        return None

    ray.get([noop.remote() for _ in range(200)])
    n = 10_000
    runs = []
    # The median of 7 batches: on 2 cores a batch's time is bimodal (driver, node and
    # two workers share them), so a best-of-3 measured how often the fast mode came up
    # more than the engine's speed (bench/tasks_batches.py shows the spread).
    for _ in range(1 if quick else 7):
        start = time.perf_counter()
        refs = [noop.remote() for _ in range(n)]
        submitted = time.perf_counter()
        ray.get(refs)
        done = time.perf_counter()
        runs.append((done - start, submitted - start))
        del refs
    waits = []  # results in completion order: wait(num_returns=1) over 1,000 tasks
    for _ in range(1 if quick else 3):
        start = time.perf_counter()
        left = [noop.remote() for _ in range(1000)]
        while left:
            ready, left = ray.wait(left, num_returns=1)
            ray.get(ready[0])
        waits.append(time.perf_counter() - start)

    @ray.remote
    def get_all(boxed: list) -> int:
        return len(ray.get(boxed[0]))

    smalls = [ray.put(i) for i in range(1000)]
    ray.get(get_all.remote([smalls]))
    borrowed = []
    for _ in range(1 if quick else 5):
        start = time.perf_counter()
        if ray.get(get_all.remote([smalls])) != 1000:
            raise AssertionError("the task got another list")
        borrowed.append(time.perf_counter() - start)
    ray.shutdown()
    median_total = statistics.median(t for t, _ in runs)
    emit(
        "tasks_10k_per_s",
        n / median_total,
        tasks=n,
        seconds=[round(t, 3) for t, _ in runs],
        submit_seconds=round(statistics.median(s for _, s in runs), 3),
    )
    emit(
        "wait_loop_1k_per_s", 1000 / statistics.median(waits), seconds=[round(t, 3) for t in waits]
    )
    ms = [round(t * 1000, 2) for t in borrowed]
    emit("borrowed_get_1k_ms", statistics.median(borrowed) * 1000, ms=ms)


def started_actor(engine: str) -> tuple[Any, Any]:
    """(the engine, an actor with a no-op method m) on a fresh 2-CPU session."""
    ray = importlib.import_module(engine)
    engine_init(ray, num_cpus=2)

    @ray.remote
    class Counter:
        def m(self) -> None:
            return None

    return ray, Counter.remote()


def work_actor(engine: str, quick: bool) -> None:
    ray, actor = started_actor(engine)
    for _ in range(50):
        ray.get(actor.m.remote())
    count, elapsed = timed_loop(lambda: ray.get(actor.m.remote()), 1.0 if quick else 3.0)
    ray.shutdown()
    emit("actor_calls_per_s", count / elapsed, calls=count, seconds=round(elapsed, 3))


def process_tree_memory(pid: int) -> dict[str, Any]:
    """RSS and PSS summed over a process and all its descendants."""
    import psutil  # a raylite dependency; Ray's venv has it too

    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    rss = pss = 0
    pss_ok = True
    listing = []
    for proc in procs:
        try:
            mem = proc.memory_full_info()
            name = " ".join(proc.cmdline()[:3])[:80] or proc.name()
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied:
            mem = proc.memory_info()
            name = proc.name()
        proc_pss = getattr(mem, "pss", None)
        if proc_pss is None:
            pss_ok = False
        rss += mem.rss
        pss += proc_pss or 0
        listing.append([proc.pid, name, round(mem.rss / MB, 1)])
    return {"rss": rss, "pss": pss if pss_ok else None, "processes": listing}


def work_memory(engine: str, quick: bool) -> None:
    ray = importlib.import_module(engine)
    engine_init(ray, num_cpus=2)

    @ray.remote
    def noop() -> None:
        return None

    ray.get(noop.remote())
    time.sleep(2.0 if quick else 5.0)  # let start-up work settle: an idle cluster
    mem = process_tree_memory(os.getpid())
    ray.shutdown()
    detail = {"process_count": len(mem["processes"]), "processes": mem["processes"]}
    emit("idle_rss_mb", mem["rss"] / MB, **detail)
    emit("idle_pss_mb", None if mem["pss"] is None else mem["pss"] / MB, **detail)


def work_get(engine: str, quick: bool) -> None:
    import numpy as np

    ray = importlib.import_module(engine)
    engine_init(ray, num_cpus=2)
    array = np.random.default_rng(0).random(100 * MB // 8)  # 100 MB of float64
    first_gets = []
    puts = []
    for _ in range(3 if quick else 5):
        # A fresh object each time, so each get is the first get of an object that
        # is in the store (no per-process cache of an earlier get can help).
        start = time.perf_counter()
        ref = ray.put(array)
        puts.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        value = ray.get(ref)
        first_gets.append((time.perf_counter() - start) * 1000)
        if not (
            value.shape == array.shape and value[:: 1 << 16].tolist() == array[:: 1 << 16].tolist()
        ):
            raise AssertionError("get returned a different array")
        del value, ref
    ref = ray.put(array)
    ray.get(ref)
    repeat_gets = []
    for _ in range(5):
        start = time.perf_counter()
        value = ray.get(ref)
        repeat_gets.append((time.perf_counter() - start) * 1000)
        del value

    @ray.remote
    def timed_get(boxed: list, size: int, last: float) -> float:
        start = time.perf_counter()
        value = ray.get(boxed[0])  # in a list: the task gets the ref, not the value
        took = (time.perf_counter() - start) * 1000
        if value.size != size or value[-1] != last:
            raise AssertionError("get returned a different array")
        return took

    check = (array.size, float(array[-1]))  # not the array: the function stays small
    ray.get(timed_get.remote([ray.put(array)], *check))  # a worker that has run it
    task_gets = []
    for _ in range(3 if quick else 5):
        # A fresh object each time, first read in the task (it was never mapped there).
        task_gets.append(ray.get(timed_get.remote([ray.put(array)], *check)))

    @ray.remote
    def total(boxed: list) -> float:
        return float(ray.get(boxed[0]).sum())

    expected = float(array.sum())
    sums = []
    for _ in range(4 if quick else 10):
        start = time.perf_counter()
        if ray.get(total.remote([ray.put(array)])) != expected:
            raise AssertionError("the task summed a different array")
        sums.append((time.perf_counter() - start) * 1000)
    ray.shutdown()
    emit("put_task_sum_100mb_ms", statistics.median(sums), ms=[round(t, 2) for t in sums])
    emit("put_100mb_ms", statistics.median(puts[1:]), ms=[round(t, 2) for t in puts])
    emit("get_100mb_ms", statistics.median(first_gets), ms=[round(t, 3) for t in first_gets])
    emit("get_100mb_task_ms", statistics.median(task_gets), ms=[round(t, 3) for t in task_gets])
    emit(
        "get_100mb_again_ms", statistics.median(repeat_gets), ms=[round(t, 3) for t in repeat_gets]
    )


def work_pi(engine: str, quick: bool) -> None:
    ray = importlib.import_module(engine)
    engine_init(ray, num_cpus=2)
    num_tasks = 2
    samples_per_task = 1_500_000 if quick else 4_000_000

    @ray.remote
    def noop() -> None:
        return None

    @ray.remote
    def sample_task_distribute(num_samples: int) -> int:
        return sampling_task(num_samples)

    ray.get([noop.remote() for _ in range(num_tasks)])  # workers up, as in the seed's session

    start = time.perf_counter()
    serial = [sampling_task(samples_per_task) for _ in range(num_tasks)]
    serial_s = time.perf_counter() - start

    start = time.perf_counter()
    distributed = ray.get(
        [sample_task_distribute.remote(samples_per_task) for _ in range(num_tasks)]
    )
    distributed_s = time.perf_counter() - start
    ray.shutdown()

    total = num_tasks * samples_per_task
    emit(
        "pi_speedup_2cpu",
        serial_s / distributed_s,
        tasks=num_tasks,
        samples_per_task=samples_per_task,
        serial_s=round(serial_s, 3),
        distributed_s=round(distributed_s, 3),
        pi_serial=4 * sum(serial) / total,
        pi_distributed=4 * sum(distributed) / total,
    )


def work_pipelined(engine: str, quick: bool) -> None:
    """Actor calls submitted 1,000 at a time, then fetched: the caller never waits on
    one call before sending the next (Ray's "pipelined" actor calls)."""
    ray, actor = started_actor(engine)
    ray.get([actor.m.remote() for _ in range(200)])
    count, elapsed = timed_loop(
        lambda: ray.get([actor.m.remote() for _ in range(1000)]), 1.0 if quick else 3.0
    )
    ray.shutdown()
    emit("actor_pipelined_per_s", count * 1000 / elapsed, calls=count * 1000)


def work_chain(engine: str, quick: bool) -> None:
    """1,000 tasks, each taking the one before's result: the whole chain's time, and
    the hand-off (from one task's end to its dependent's start, by the wall clock
    both processes share) at the 95th percentile."""
    ray = importlib.import_module(engine)
    engine_init(ray, num_cpus=2)

    @ray.remote
    def step(previous: tuple[float, float] | None) -> tuple[float, float]:
        start = time.time()
        gap = 0.0 if previous is None else start - previous[1]
        return gap, time.time()

    ray.get(step.remote(None))
    n = 1000
    totals, gaps = [], []
    for _ in range(1 if quick else 3):
        start = time.perf_counter()
        refs = [step.remote(None)]
        for _ in range(n - 1):
            refs.append(step.remote(refs[-1]))
        ray.get(refs[-1])
        totals.append(time.perf_counter() - start)
        gaps.extend(gap for gap, _ in ray.get(refs[1:]))
        del refs
    ray.shutdown()
    gaps.sort()
    p95 = gaps[int(0.95 * (len(gaps) - 1))] * 1000
    emit("chain_1000_s", statistics.median(totals), seconds=[round(t, 3) for t in totals])
    emit(
        "handoff_p95_ms",
        p95,
        median_ms=round(statistics.median(gaps) * 1000, 3),
        max_ms=round(gaps[-1] * 1000, 3),
    )


def _pool_noop() -> None:
    return None


def work_stdlib(engine: str, quick: bool) -> None:
    """Python's own multiprocessing.Pool on the same two processes' worth of work: no
    scheduling, no ownership, no object store; the floor raylite is compared with."""
    import multiprocessing

    with multiprocessing.get_context("forkserver").Pool(2) as pool:
        for _ in range(50):
            pool.apply(_pool_noop)
        count, elapsed = timed_loop(lambda: pool.apply(_pool_noop), 1.0 if quick else 3.0)
        emit("pool_apply_per_s", count / elapsed, calls=count)
        n, runs = 10_000, []
        [r.get() for r in [pool.apply_async(_pool_noop) for _ in range(200)]]
        for _ in range(1 if quick else 7):
            start = time.perf_counter()
            results = [pool.apply_async(_pool_noop) for _ in range(n)]
            for result in results:
                result.get()
            runs.append(time.perf_counter() - start)
        emit(
            "pool_apply_async_10k_per_s",
            n / statistics.median(runs),
            seconds=[round(t, 3) for t in runs],
        )


def work_getfloor(engine: str, quick: bool) -> None:
    from get_floor import measure

    times = measure(3 if quick else 5)
    for metric, key in (
        ("floor", "map"),
        ("floor_task", "other_process"),
        ("floor_arena", "nomap"),
    ):
        ms = times[key]
        emit(f"get_100mb_{metric}_ms", statistics.median(ms), ms=[round(t, 3) for t in ms])


WORKERS = {
    "startup": work_startup,
    "roundtrip": work_roundtrip,
    "tasks": work_tasks,
    "actor": work_actor,
    "memory": work_memory,
    "get": work_get,
    "pi": work_pi,
    "pipelined": work_pipelined,
    "chain": work_chain,
    "stdlib": work_stdlib,
    "getfloor": work_getfloor,
}


@dataclass(frozen=True)
class Suite:
    """One bench_<area>.py: its metrics, its workloads (run each in a fresh engine
    process), and how it presents itself. `suite_main` is every such script's main."""

    name: str  # "core", "store", "actors": the report's name
    script: str  # the file the worker subprocesses run
    description: str
    metrics: list[Any]
    workers: dict[str, Any]  # workload -> fn(engine, quick) that emits its metrics
    timeouts: dict[str, int]  # workload -> seconds (default 180)
    quick_help: str = "shorter runs"

    @property
    def workloads(self) -> list[str]:
        return [w for w in dict.fromkeys(m.workload for m in self.metrics) if w != "derived"]


def run_worker(suite: Suite, workload: str, engine: str, quick: bool) -> int:
    try:
        version = getattr(importlib.import_module(engine), "__version__", None)
        print(RESULT_PREFIX + json.dumps({"version": version}), flush=True)
        suite.workers[workload](engine, quick)
    except BaseException as exc:
        print(
            RESULT_PREFIX
            + json.dumps(
                {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            ),
            flush=True,
        )
        return 1
    return 0


# ---------------------------------------------------------------------------
# Orchestrator side
# ---------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def python_imports(python: str, module: str) -> bool:
    if not os.access(python, os.X_OK):
        return False
    try:
        proc = subprocess.run([python, "-c", f"import {module}"], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def find_raylite_python() -> str | None:
    if importlib.util.find_spec("raylite") is not None:
        return sys.executable
    venv = REPO_ROOT / ".venv" / "bin" / "python"
    return str(venv) if python_imports(str(venv), "raylite") else None


def find_ray_python(ray_python: str, wait_s: float, poll_s: float = 30.0) -> str | None:
    if importlib.util.find_spec("ray") is not None:
        return sys.executable
    deadline = time.monotonic() + wait_s
    while True:
        if python_imports(ray_python, "ray"):
            return ray_python
        if time.monotonic() + poll_s > deadline:
            return None
        log(f"waiting for Ray at {ray_python} (polling every {poll_s:.0f} s) ...")
        time.sleep(poll_s)


def run_workload(
    suite: Suite, python: str, engine: str, workload: str, quick: bool
) -> dict[str, Any]:
    """One fresh engine process for one workload; returns {"version", "error", metric: (v, d)}."""
    cmd = [python, str(Path(suite.script).resolve()), "--worker", workload, "--engine", engine]
    if quick:
        cmd.append("--quick")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    timeout = suite.timeouts.get(workload, 180)
    # Its own session, so a hung engine's whole process group can be killed.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        stdout, stderr = proc.communicate()
        stderr += f"\n[bench] worker timed out after {timeout} s and was killed"
    out: dict[str, Any] = {"metrics": {}, "version": None, "error": None}
    for line in stdout.splitlines():
        if not line.startswith(RESULT_PREFIX):
            continue
        record = json.loads(line[len(RESULT_PREFIX) :])
        if "metric" in record:
            out["metrics"][record["metric"]] = (record["value"], record["detail"])
        elif "error" in record:
            out["error"] = record["traceback"].rstrip()
        elif "version" in record:
            out["version"] = record["version"]
    if out["error"] is None and (proc.returncode != 0 or not out["metrics"]):
        out["error"] = f"worker exited {proc.returncode}; stderr tail:\n{stderr[-3000:]}"
    return out


def summarize(detail: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in detail.items() if k != "processes"})


def measure_engine(
    suite: Suite,
    engine: str,
    python: str | None,
    workloads: list[str],
    quick: bool,
    values: dict[str, dict[str, Any]],
    info: dict[str, Any],
) -> None:
    if python is None:
        info[engine] = {"python": None, "error": f"{engine} not found"}
        log(f"[{engine}] not available: its figures are null")
        return
    info[engine] = {"python": python, "version": None, "errors": {}}
    log(f"[{engine}] measuring with {python}")
    for workload in workloads:
        if engine != "raylite" and workload in ENGINE_FREE:
            continue  # measured once, with raylite's python
        result = run_workload(suite, python, engine, workload, quick)
        info[engine]["version"] = info[engine]["version"] or result["version"]
        for metric, (value, detail) in result["metrics"].items():
            values[metric][engine] = (value, detail)
            shown = "null" if value is None else f"{value:.4g}"
            log(f"[{engine}] {metric} = {shown}  {summarize(detail)}")
        if result["error"]:
            info[engine]["errors"][workload] = result["error"]
            log(f"[{engine}] {workload} FAILED:\n{result['error']}")


def suite_main(suite: Suite, argv: list[str] | None = None) -> int:
    """The command line of every bench_<area>.py (and its worker subprocesses)."""
    metrics_all, workloads = suite.metrics, suite.workloads
    parser = argparse.ArgumentParser(description=suite.description)
    parser.add_argument("--engine", choices=["raylite", "ray", "both"], default="both")
    parser.add_argument(
        "--only", help=f"comma-separated workloads or metric names: {', '.join(workloads)}"
    )
    parser.add_argument("--quick", action="store_true", help=suite.quick_help)
    parser.add_argument("--out", help="also write all results, with details, to this JSON file")
    parser.add_argument(
        "--ray-python", default=DEFAULT_RAY_PYTHON, help="interpreter that imports ray"
    )
    parser.add_argument(
        "--ray-wait", type=float, default=1200.0, help="seconds to wait for --ray-python"
    )
    parser.add_argument("--worker", choices=workloads, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        if args.engine not in ENGINES:
            parser.error("--worker needs --engine raylite or ray")
        return run_worker(suite, args.worker, args.engine, args.quick)

    metrics = metrics_all
    if args.only:
        wanted = {w.strip() for w in args.only.split(",") if w.strip()}
        unknown = wanted - {m.name for m in metrics_all} - set(workloads)
        if unknown:
            parser.error(f"unknown --only {sorted(unknown)}; choose from {workloads}")
        metrics = [m for m in metrics_all if m.name in wanted or m.workload in wanted]
        # A derived metric (bench_core's `of`; other suites have none) needs its inputs.
        inputs = {name for m in metrics for name in getattr(m, "of", None) or ()}
        metrics += [m for m in metrics_all if m.name in inputs and m not in metrics]
    chosen = [w for w in dict.fromkeys(m.workload for m in metrics) if w != "derived"]
    engines = ENGINES if args.engine == "both" else (args.engine,)

    values: dict[str, dict[str, Any]] = {m.name: {} for m in metrics_all}
    info: dict[str, Any] = {}
    started = _dt.datetime.now().astimezone()
    for engine in engines:  # one after the other, never concurrently
        if engine == "raylite":
            python = find_raylite_python()
        else:
            python = find_ray_python(args.ray_python, args.ray_wait)
        measure_engine(suite, engine, python, chosen, args.quick, values, info)

    for metric in metrics:
        if getattr(metric, "of", None):
            top, bottom = (values[name].get("raylite", (None, None))[0] for name in metric.of)
            if top is not None and bottom:
                values[metric.name]["raylite"] = (top / bottom, {"of": list(metric.of)})
    return report(suite.name, metrics, values, info, started, args)


CORE = Suite(
    "core",
    __file__,
    "raylite core speed and memory, vs Ray",
    METRICS,
    WORKERS,
    WORKER_TIMEOUT_S,
)


def main(argv: list[str] | None = None) -> int:
    return suite_main(CORE, argv)


def report(
    bench: str, metrics: Any, values: dict[str, Any], info: dict[str, Any], started: Any, args: Any
) -> int:
    """Print one JSON line per metric (and write --out); exit status 1 if a run failed."""
    lines = []
    for metric in metrics:
        raylite = values[metric.name].get("raylite", (None, None))
        ray = values[metric.name].get("ray", (None, None))
        ratio = raylite[0] / ray[0] if raylite[0] is not None and ray[0] else None
        line = {
            "metric": metric.name,
            "raylite": None if raylite[0] is None else round(raylite[0], 4),
            "ray": None if ray[0] is None else round(ray[0], 4),
            "ratio": None if ratio is None else round(ratio, 3),
            "unit": metric.unit,
            "target": metric.target,
            "met": metric.met(raylite[0], ratio),
        }
        print(json.dumps(line), flush=True)
        lines.append(
            {**line, "better": metric.better, "detail": {"raylite": raylite[1], "ray": ray[1]}}
        )

    if args.out:
        report = {
            "bench": bench,
            "started": started.isoformat(timespec="seconds"),
            "quick": args.quick,
            "host": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            },
            "engines": info,
            "metrics": lines,
        }
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        log(f"results written to {out}")
    failed = any(e.get("errors") for e in info.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
