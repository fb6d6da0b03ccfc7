#!/usr/bin/env python3
"""Object store speed of raylite, side by side with Ray (issue 3's targets).

Same harness as bench_core.py (whose helpers it reuses): every (engine, workload)
pair runs in its own fresh subprocess, one after the other, never two at once:

    bench_store.py (orchestrator, stdlib only)
      |--> <raylite python> bench_store.py --worker put --engine raylite
      |--> ...                                              (one per workload)
      '--> <ray python>     bench_store.py --worker put --engine ray
           ...             each prints "@@RESULT {json}" lines

Workloads and what they measure:

    put     numpy.copyto of 100 MB (the machine's memcpy bandwidth, same process,
            same run), then put of a 100 MB numpy array: GB/s, and put / memcpy
    get     first get of a 100 MB array just put: ms
    small   10,000 x get(put(small value)): ops/s
    spill   init(object_store_memory=256 MiB), put 1 GiB of 10 MiB arrays (all kept
            alive: most must be spilled), then get every one back and touch every
            page: write and restore throughput in MB/s

The orchestrator prints one JSON line per metric on stdout:

    {"metric": ..., "raylite": x, "ray": y, "ratio": x / y, "unit": ...,
     "target": ..., "met": true | false | null}

ratio is always raylite / ray; a metric without a target (memcpy) has met null.

    python bench/bench_store.py --quick
    python bench/bench_store.py --engine raylite --only put,get
    python bench/bench_store.py --out /tmp/store.json
"""

from __future__ import annotations

import importlib
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_core as core  # the shared harness: emit, engine lookup, logging

RESULT_PREFIX = core.RESULT_PREFIX
ENGINES = core.ENGINES
MB = core.MB
MiB = 1024 * 1024
GB = 1_000_000_000

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
    Metric("memcpy_100mb_gbps", "put", "GB/s", "higher", "reference", "raylite", None),
    Metric(
        "put_100mb_gbps", "put", "GB/s", "higher", "ratio >= 1 (no slower than Ray)", "ratio", 1.0
    ),
    Metric("put_vs_memcpy", "put", "x", "higher", "raylite >= 0.5", "raylite", 0.5),
    # put of a 1 MB array, the last one's ref dropped each time (a loop of mid-size puts).
    Metric("put_1mb_us", "put", "us", "lower", "(reference)", "raylite", None),
    Metric("get_100mb_ms", "get", "ms", "lower", "raylite < 1 ms", "raylite", 1.0),
    # Another get of the same object while a view of it lives: one buffer (issue 17).
    Metric("get_again_100mb_us", "get", "us", "lower", "raylite <= 50 us", "raylite", 50.0),
    Metric("small_put_get_per_s", "small", "ops/s", "higher", "ratio >= 2", "ratio", 2.0),
    # A task with a numpy array argument passed by value (no put): 100 MB and 400 MB.
    Metric("arg_100mb_s", "args", "s", "lower", "ratio < 2", "ratio", 2.0),
    Metric("arg_400mb_s", "args", "s", "lower", "ratio < 2", "ratio", 2.0),
    Metric("spill_write_mbps", "spill", "MB/s", "higher", "raylite >= 500", "raylite", 500.0),
    Metric("restore_read_mbps", "spill", "MB/s", "higher", "raylite >= 500", "raylite", 500.0),
]
WORKLOADS = list(dict.fromkeys(m.workload for m in METRICS))
WORKER_TIMEOUT_S = {"spill": 600}  # others: 180


# ---------------------------------------------------------------------------
# Worker side: runs inside the engine's interpreter, one workload per process
# ---------------------------------------------------------------------------


def _store_stats(ray: Any) -> dict[str, Any] | None:
    """raylite.util.state.store_stats() when the engine has it (raylite), else None."""
    try:
        return importlib.import_module(f"{ray.__name__}.util.state").store_stats()
    except Exception:
        return None


def work_put(engine: str, quick: bool) -> None:
    import numpy as np

    nbytes = 100 * MB
    src = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault dst in: measure the copy, not the page faults
    copies = []
    for _ in range(5 if quick else 10):
        start = time.perf_counter()
        np.copyto(dst, src)
        copies.append(time.perf_counter() - start)
    del dst
    memcpy_gbps = nbytes / GB / statistics.median(copies)

    ray = importlib.import_module(engine)
    core.engine_init(ray, num_cpus=2)
    for _ in range(2):  # warm up: first store use, mappings
        ref = ray.put(src)
        del ref
    puts = []
    for _ in range(5 if quick else 15):
        start = time.perf_counter()
        ref = ray.put(src)
        puts.append(time.perf_counter() - start)
        del ref  # freed: a store of any size holds this loop
    check = ray.get(ray.put(src))
    if not (check.shape == src.shape and np.array_equal(check[:: 1 << 12], src[:: 1 << 12])):
        raise AssertionError("get returned a different array")
    del check
    stats = _store_stats(ray)
    small = src[:MB]
    for _ in range(50):
        ref = ray.put(small)
    small_puts = []
    for _ in range(200 if quick else 1000):
        start = time.perf_counter()
        ref = ray.put(small)  # the last one is freed as its ref goes
        small_puts.append(time.perf_counter() - start)
    del ref
    ray.shutdown()
    emit("put_1mb_us", statistics.median(small_puts) * 1e6, puts=len(small_puts))
    put_gbps = nbytes / GB / statistics.median(puts)
    detail = {
        "bytes": nbytes,
        "put_ms": [round(t * 1000, 2) for t in puts],
        "memcpy_ms": [round(t * 1000, 2) for t in copies],
    }
    emit("memcpy_100mb_gbps", memcpy_gbps, **detail)
    emit("put_100mb_gbps", put_gbps, **detail, store_stats=stats)
    emit("put_vs_memcpy", put_gbps / memcpy_gbps, put_gbps=put_gbps, memcpy_gbps=memcpy_gbps)


def work_get(engine: str, quick: bool) -> None:
    import numpy as np

    ray = importlib.import_module(engine)
    core.engine_init(ray, num_cpus=2)
    array = np.random.default_rng(0).random(100 * MB // 8)
    first_gets = []
    again = []
    shared = True
    for _ in range(5 if quick else 15):
        ref = ray.put(array)  # a fresh object: the first get of an object in the store
        start = time.perf_counter()
        value = ray.get(ref)
        first_gets.append((time.perf_counter() - start) * 1000)
        if not (
            value.shape == array.shape and value[:: 1 << 16].tolist() == array[:: 1 << 16].tolist()
        ):
            raise AssertionError("get returned a different array")
        # The first get after a 100 MB put runs with the CPU caches full of the put's
        # bytes; a get of the same object again measures the engine's own cost.
        start = time.perf_counter()
        second = ray.get(ref)
        again.append((time.perf_counter() - start) * 1e6)
        shared = shared and bool(np.shares_memory(value, second))
        del value, second, ref
    ray.shutdown()
    emit(
        "get_100mb_ms",
        statistics.median(first_gets),
        first_get_ms=[round(t, 3) for t in first_gets],
    )
    emit(
        "get_again_100mb_us",
        statistics.median(again),
        again_us=[round(t, 1) for t in again],
        shares_memory=shared,
    )


def work_args(engine: str, quick: bool) -> None:
    import numpy as np

    ray = importlib.import_module(engine)
    core.engine_init(ray, num_cpus=2)

    @ray.remote
    def total(a: Any) -> float:
        return float(a[:: 1 << 12].sum())

    ray.get(total.remote(np.ones(1000)))
    for mb in (100, 400):
        array = np.ones(mb * MB // 8)
        times = []
        for _ in range(1 if quick else 3):
            start = time.perf_counter()
            got = ray.get(total.remote(array))  # by value: the engine moves it
            times.append(time.perf_counter() - start)
            if got != float(array[:: 1 << 12].sum()):
                raise AssertionError("the task saw another array")
        del array
        emit(f"arg_{mb}mb_s", statistics.median(times), seconds=[round(t, 3) for t in times])
    ray.shutdown()


def work_small(engine: str, quick: bool) -> None:
    ray = importlib.import_module(engine)
    core.engine_init(ray, num_cpus=2)
    n = 2_000 if quick else 10_000
    value = {"key": "value", "n": 1}
    for _ in range(200):
        ray.get(ray.put(value))
    runs = []
    for _ in range(1 if quick else 3):
        start = time.perf_counter()
        for _ in range(n):
            ray.get(ray.put(value))
        runs.append(time.perf_counter() - start)
    ray.shutdown()
    emit("small_put_get_per_s", n / min(runs), ops=n, seconds=[round(t, 3) for t in runs])


def work_spill(engine: str, quick: bool) -> None:
    import numpy as np

    ray = importlib.import_module(engine)
    core.engine_init(ray, num_cpus=2, object_store_memory=256 * MiB)
    chunk = 10 * MiB
    count = 50 if quick else 100  # 0.5 GiB or 1 GiB through a 256 MiB store
    total = chunk * count
    base = np.zeros(chunk, dtype=np.uint8)
    before = _store_stats(ray)

    refs = []
    start = time.perf_counter()
    for i in range(count):
        base[0] = base[-1] = i % 256
        refs.append(ray.put(base))
    write_s = time.perf_counter() - start
    after_write = _store_stats(ray)

    start = time.perf_counter()
    for i, ref in enumerate(refs):  # oldest first: these were spilled first
        value = ray.get(ref)
        touched = int(value[::4096].sum(dtype=np.uint64))  # one byte per page: all paged in
        if value[0] != i % 256 or value[-1] != i % 256 or touched != value[0]:
            raise AssertionError(f"object {i} came back wrong")
        del value
    read_s = time.perf_counter() - start
    after_read = _store_stats(ray)
    del refs
    ray.shutdown()
    detail = {
        "bytes": total,
        "objects": count,
        "store_bytes": 256 * MiB,
        "write_s": round(write_s, 3),
        "read_s": round(read_s, 3),
        "stats_before": before,
        "stats_after_write": after_write,
        "stats_after_read": after_read,
    }
    emit("spill_write_mbps", total / MB / write_s, **detail)
    emit("restore_read_mbps", total / MB / read_s, **detail)


WORKERS = {
    "put": work_put,
    "get": work_get,
    "small": work_small,
    "args": work_args,
    "spill": work_spill,
}


SUITE = core.Suite(
    "store",
    __file__,
    "raylite object store speed, vs Ray",
    METRICS,
    WORKERS,
    WORKER_TIMEOUT_S,
    "shorter runs (0.5 GiB spill)",
)


def main(argv: list[str] | None = None) -> int:
    return core.suite_main(SUITE, argv)


if __name__ == "__main__":
    sys.exit(main())
