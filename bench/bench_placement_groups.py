#!/usr/bin/env python3
"""Placement group speed of raylite, side by side with Ray (issue 14).

Same harness as bench_core.py (whose helpers it reuses): every (engine, workload)
pair runs in its own fresh subprocess, one after the other, never two at once.
Every workload runs under init(num_cpus=4). Workloads and what they measure:

    roundtrip  placement_group([{"CPU": 1}]), get(pg.ready()), remove_placement_group(pg),
               in a loop (after 20 untimed): ms per round trip (median), and round
               trips per second over the loop
    bundles    the same with 4 bundles of 0.5 CPU, SPREAD: ms per round trip (median)
    task       get(f.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg,
               0)).remote()) in a loop for 3 s, on one group: calls/s (a reference)

The orchestrator prints one JSON line per metric on stdout:

    {"metric": ..., "raylite": x, "ray": y, "ratio": x / y, "unit": ..., ...}

ratio is always raylite / ray. Run Ray on a machine where another Ray may run with
RAY_ADDRESS=local (so ray.init starts its own):

    RAY_ADDRESS=local python bench/bench_placement_groups.py
    python bench/bench_placement_groups.py --engine raylite --quick
"""

from __future__ import annotations

import importlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_core as core  # the shared harness: emit, engine lookup, logging, report
from bench_actors import Metric

emit = core.emit

METRICS = [
    Metric("pg_roundtrip_ms", "roundtrip", "ms", "lower", "reference", "raylite", None),
    Metric(
        "pg_roundtrip_per_s", "roundtrip", "round trips/s", "higher", "ratio >= 1", "ratio", 1.0
    ),
    Metric("pg_4_bundles_roundtrip_ms", "bundles", "ms", "lower", "reference", "raylite", None),
    Metric("pg_task_in_bundle_per_s", "task", "calls/s", "higher", "reference", "raylite", None),
]
WORKER_TIMEOUT_S: dict[str, int] = {}  # all: 180


def _api(engine: str):  # type: ignore[no-untyped-def]
    ray = importlib.import_module(engine)
    pg = importlib.import_module(f"{engine}.util.placement_group")
    strategies = importlib.import_module(f"{engine}.util.scheduling_strategies")
    return ray, pg, strategies.PlacementGroupSchedulingStrategy


def _round_trips(
    engine: str, quick: bool, bundles: list[dict[str, float]], strategy: str
) -> list[float]:
    ray, pgs, _ = _api(engine)
    core.engine_init(ray, num_cpus=4)

    def once() -> float:
        start = time.perf_counter()
        pg = pgs.placement_group(bundles, strategy=strategy)
        ray.get(pg.ready(), timeout=60)
        pgs.remove_placement_group(pg)
        return time.perf_counter() - start

    for _ in range(20):
        once()
    times = [once() for _ in range(100 if quick else 300)]
    # The resources are back (Ray frees them asynchronously): the next run starts whole.
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU") != 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    ray.shutdown()
    return times


def work_roundtrip(engine: str, quick: bool) -> None:
    times = _round_trips(engine, quick, [{"CPU": 1}], "PACK")
    detail = {"rounds": len(times), "p90_ms": round(sorted(times)[int(len(times) * 0.9)] * 1e3, 3)}
    emit("pg_roundtrip_ms", statistics.median(times) * 1e3, **detail)
    emit("pg_roundtrip_per_s", len(times) / sum(times), **detail)


def work_bundles(engine: str, quick: bool) -> None:
    times = _round_trips(engine, quick, [{"CPU": 0.5}] * 4, "SPREAD")
    emit("pg_4_bundles_roundtrip_ms", statistics.median(times) * 1e3, rounds=len(times))


def work_task(engine: str, quick: bool) -> None:
    ray, pgs, strategy = _api(engine)
    core.engine_init(ray, num_cpus=4)

    @ray.remote
    def f() -> None:
        return None

    pg = pgs.placement_group([{"CPU": 1}, {"CPU": 1}])
    ray.get(pg.ready(), timeout=60)
    in_bundle = f.options(scheduling_strategy=strategy(pg, placement_group_bundle_index=0))
    for _ in range(100):
        ray.get(in_bundle.remote())
    count, elapsed = core.timed_loop(lambda: ray.get(in_bundle.remote()), 1.0 if quick else 3.0)
    pgs.remove_placement_group(pg)
    ray.shutdown()
    emit("pg_task_in_bundle_per_s", count / elapsed, calls=count, seconds=round(elapsed, 3))


WORKERS = {"roundtrip": work_roundtrip, "bundles": work_bundles, "task": work_task}

SUITE = core.Suite(
    "placement_groups",
    __file__,
    "raylite placement group speed, vs Ray",
    METRICS,
    WORKERS,
    WORKER_TIMEOUT_S,
    "shorter runs",
)


def main(argv: list[str] | None = None) -> int:
    return core.suite_main(SUITE, argv)


if __name__ == "__main__":
    sys.exit(main())
