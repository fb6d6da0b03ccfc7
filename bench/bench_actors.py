#!/usr/bin/env python3
"""Actor and fault-tolerance speed of raylite, side by side with Ray (issue 4's targets).

Same harness as bench_core.py (whose helpers it reuses): every (engine, workload)
pair runs in its own fresh subprocess, one after the other, never two at once:

    bench_actors.py (orchestrator, stdlib only)
      |--> <raylite python> bench_actors.py --worker async --engine raylite
      |--> ...                                              (one per workload)
      '--> <ray python>     bench_actors.py --worker async --engine ray
           ...             each prints "@@RESULT {json}" lines

Every workload runs under init(num_cpus=2). Workloads and what they measure:

    async      an actor with an `async def` method that awaits asyncio.sleep(0.1):
               1,000 calls submitted at once, then all fetched: seconds (median of 3)
    pipelined  10,000 no-op calls to one actor, all submitted, then all fetched:
               calls/s (best of 3)
    scaling    calls that each spin the CPU for ~3 ms (a busy loop of a fixed
               130,000 iterations, the same on both engines: no sleep, no clock),
               pipelined to 1 actor, then spread over 2 actors: calls/s of each,
               and rate2 / rate1
    crash      a task with max_retries=1 whose first attempt writes time.time() to a
               marker file and calls os._exit(1), and whose retry returns: seconds
               from the crash to the result being back at the driver (max and
               median of 5, after one untimed round)
    roundtrip  get(actor.f.remote()) in a loop for 3 s: calls/s (a reference figure)

The orchestrator prints one JSON line per metric on stdout:

    {"metric": ..., "raylite": x, "ray": y, "ratio": x / y, "unit": ...,
     "target": ..., "met": true | false | null}

ratio is always raylite / ray; a metric without a target (reference) has met null.

    python bench/bench_actors.py --quick
    python bench/bench_actors.py --engine raylite --only async,crash
    python bench/bench_actors.py --out /tmp/actors.json
"""

from __future__ import annotations

import importlib
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_core as core  # the shared harness: emit, engine lookup, logging, report

RESULT_PREFIX = core.RESULT_PREFIX
ENGINES = core.ENGINES

emit = core.emit
log = core.log


@dataclass(frozen=True)
class Metric:
    name: str
    workload: str
    unit: str
    better: str  # "higher" or "lower"
    target: str
    target_on: str  # "raylite" or "ratio" (raylite / ray)
    threshold: float | None  # None: a reference figure, no target

    def met(self, raylite: float | None, ratio: float | None) -> bool | None:
        if self.threshold is None:
            return None
        value = raylite if self.target_on == "raylite" else ratio
        if value is None:
            return None
        return value < self.threshold if self.better == "lower" else value >= self.threshold


METRICS = [
    Metric("async_1000_sleep_s", "async", "s", "lower", "raylite < 0.5 s", "raylite", 0.5),
    Metric("actor_pipelined_per_s", "pipelined", "calls/s", "higher", "ratio >= 2", "ratio", 2.0),
    Metric("cpu_calls_1_actor_per_s", "scaling", "calls/s", "higher", "reference", "raylite", None),
    Metric(
        "cpu_calls_2_actors_per_s", "scaling", "calls/s", "higher", "reference", "raylite", None
    ),
    Metric("actors_2_vs_1_scaling", "scaling", "x", "higher", "raylite >= 1.6", "raylite", 1.6),
    Metric("crash_retry_max_s", "crash", "s", "lower", "raylite < 1 s", "raylite", 1.0),
    Metric("crash_retry_median_s", "crash", "s", "lower", "raylite < 1 s", "raylite", 1.0),
    Metric("actor_roundtrip_per_s", "roundtrip", "calls/s", "higher", "reference", "raylite", None),
]
WORKLOADS = list(dict.fromkeys(m.workload for m in METRICS))
WORKER_TIMEOUT_S: dict[str, int] = {}  # all: 180

SPIN_ITERATIONS = 130_000  # CPU work per call in the scaling workload: ~3 ms here


# ---------------------------------------------------------------------------
# Worker side: runs inside the engine's interpreter, one workload per process
# ---------------------------------------------------------------------------


def work_async(engine: str, quick: bool) -> None:
    import asyncio

    ray = importlib.import_module(engine)
    core.engine_init(ray, num_cpus=2)

    @ray.remote
    class Sleeper:
        async def nap(self, seconds: float) -> int:
            await asyncio.sleep(seconds)
            return 1

    actor = Sleeper.remote()
    ray.get(actor.nap.remote(0))
    n = 1_000
    ray.get([actor.nap.remote(0.1) for _ in range(n)])  # warm up: a whole batch, untimed
    runs = []
    for _ in range(2 if quick else 3):
        start = time.perf_counter()
        refs = [actor.nap.remote(0.1) for _ in range(n)]
        submitted = time.perf_counter()
        results = ray.get(refs)
        runs.append((time.perf_counter() - start, submitted - start))
        if sum(results) != n:
            raise AssertionError("async calls returned wrong values")
        del refs, results
    ray.shutdown()
    emit(
        "async_1000_sleep_s",
        statistics.median(t for t, _ in runs),
        calls=n,
        sleep_s=0.1,
        seconds=[round(t, 3) for t, _ in runs],
        submit_seconds=[round(s, 3) for _, s in runs],
    )


def work_pipelined(engine: str, quick: bool) -> None:
    ray = importlib.import_module(engine)
    core.engine_init(ray, num_cpus=2)

    @ray.remote
    class Noop:
        def f(self) -> None:
            return None

    actor = Noop.remote()
    ray.get([actor.f.remote() for _ in range(500)])  # warm up
    n = 2_000 if quick else 10_000
    runs = []
    for _ in range(1 if quick else 3):
        start = time.perf_counter()
        refs = [actor.f.remote() for _ in range(n)]
        submitted = time.perf_counter()
        ray.get(refs)
        runs.append((time.perf_counter() - start, submitted - start))
        del refs
    ray.shutdown()
    best_total, best_submit = min(runs)
    emit(
        "actor_pipelined_per_s",
        n / best_total,
        calls=n,
        seconds=[round(t, 3) for t, _ in runs],
        submit_seconds=round(best_submit, 3),
    )


def spin(n: int) -> int:
    """A fixed amount of pure-Python CPU work (no sleep, no time checks)."""
    x = 0
    for i in range(n):
        x += i
    return x


def timed_spin(n: int) -> float:
    start = time.perf_counter()
    spin(n)
    return time.perf_counter() - start


def work_scaling(engine: str, quick: bool) -> None:
    iterations = SPIN_ITERATIONS
    spin(iterations)
    spin_s = statistics.median(timed_spin(iterations) for _ in range(7))  # before init

    ray = importlib.import_module(engine)
    core.engine_init(ray, num_cpus=2)

    @ray.remote
    class Spinner:
        def work(self, n: int) -> int:
            x = 0
            for i in range(n):
                x += i
            return x

    actors = [Spinner.remote(), Spinner.remote()]
    for actor in actors:  # warm up: both actors up, their method run a few times
        ray.get([actor.work.remote(iterations) for _ in range(20)])
    calls = 200 if quick else 600

    def rate(pool: list[Any]) -> float:
        start = time.perf_counter()
        refs = [pool[i % len(pool)].work.remote(iterations) for i in range(calls)]
        ray.get(refs)
        return calls / (time.perf_counter() - start)

    rates1, rates2 = [], []
    for _ in range(2 if quick else 3):  # interleaved, so drifts hit both alike
        rates1.append(rate(actors[:1]))
        rates2.append(rate(actors))
    ray.shutdown()
    rate1, rate2 = max(rates1), max(rates2)
    detail = {
        "calls": calls,
        "spin_iterations": iterations,
        "spin_ms_alone": round(spin_s * 1000, 3),
        "ideal_1_actor_per_s": round(1 / spin_s, 1),
        "rates_1_actor": [round(r, 1) for r in rates1],
        "rates_2_actors": [round(r, 1) for r in rates2],
    }
    emit("cpu_calls_1_actor_per_s", rate1, **detail)
    emit("cpu_calls_2_actors_per_s", rate2, **detail)
    emit("actors_2_vs_1_scaling", rate2 / rate1, rate1=rate1, rate2=rate2)


def work_crash(engine: str, quick: bool) -> None:
    ray = importlib.import_module(engine)
    core.engine_init(ray, num_cpus=2)

    @ray.remote(max_retries=1)
    def crash_once(marker: str) -> str:
        import os as _os
        import time as _time

        if not _os.path.exists(marker):  # the first attempt: crash
            with open(marker, "w") as fh:
                fh.write(repr(_time.time()))
            _os._exit(1)
        return "retried"

    @ray.remote
    def noop() -> None:
        return None

    ray.get([noop.remote() for _ in range(4)])  # warm up: workers up
    latencies = []
    with tempfile.TemporaryDirectory(prefix="bench_actors_") as tmp:
        for i in range(1 + (3 if quick else 5)):  # round 0 is an untimed warm-up
            marker = os.path.join(tmp, f"marker-{i}")
            result = ray.get(crash_once.remote(marker), timeout=60)
            done = time.time()
            if result != "retried":
                raise AssertionError(f"crash_once returned {result!r}")
            crashed = float(Path(marker).read_text())
            if i > 0:
                latencies.append(done - crashed)
            ray.get([noop.remote() for _ in range(4)])  # the pool refilled before the next
            time.sleep(0.5)
    ray.shutdown()
    detail = {"rounds": len(latencies), "seconds": [round(t, 4) for t in latencies]}
    emit("crash_retry_max_s", max(latencies), **detail)
    emit("crash_retry_median_s", statistics.median(latencies), **detail)


def work_roundtrip(engine: str, quick: bool) -> None:
    ray = importlib.import_module(engine)
    core.engine_init(ray, num_cpus=2)

    @ray.remote
    class Noop:
        def f(self) -> None:
            return None

    actor = Noop.remote()
    for _ in range(100):
        ray.get(actor.f.remote())
    count, elapsed = core.timed_loop(lambda: ray.get(actor.f.remote()), 1.0 if quick else 3.0)
    ray.shutdown()
    emit("actor_roundtrip_per_s", count / elapsed, calls=count, seconds=round(elapsed, 3))


WORKERS = {
    "async": work_async,
    "pipelined": work_pipelined,
    "scaling": work_scaling,
    "crash": work_crash,
    "roundtrip": work_roundtrip,
}


SUITE = core.Suite(
    "actors",
    __file__,
    "raylite actor and retry speed, vs Ray",
    METRICS,
    WORKERS,
    WORKER_TIMEOUT_S,
    "shorter runs",
)


def main(argv: list[str] | None = None) -> int:
    return core.suite_main(SUITE, argv)


if __name__ == "__main__":
    sys.exit(main())
