#!/usr/bin/env python3
"""Dask on raylite against Dask's own schedulers (threaded, and distributed's
LocalCluster if `distributed` is installed) and Ray's `ray_dask_get` if Ray is: the same
graphs, each scheduler in a fresh process, median of --repeat runs after one warm run.

Workloads: `array` (a 4000 x 4000 random matrix in 500 x 500 chunks: (x @ x.T).sum(0)
and x.mean(), ~200 tasks moving 2 MB blocks) and `frame` (a 2-million-row frame in 16
partitions: a groupby mean and a filtered count).

    python bench/bench_dask.py [--repeat 3]

Prints one JSON line per (scheduler, workload) and the ratios to threaded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

RAY_PYTHON = os.environ.get("RAY_PYTHON", "/tmp/rayvenv/bin/python")
WORKLOADS = ("array", "frame")


def worker(scheduler: str, repeat: int) -> None:
    import dask
    import dask.array as da
    import dask.dataframe as dd
    import numpy as np
    import pandas as pd

    cpus = os.cpu_count() or 1
    if scheduler == "raylite":
        import raylite
        from raylite.util.dask import raylite_dask_get

        raylite.init()
        get: object = raylite_dask_get
    elif scheduler == "ray":
        import ray
        from ray.util.dask import ray_dask_get

        ray.init()
        get = ray_dask_get
    elif scheduler == "distributed":
        from distributed import Client, LocalCluster

        client = Client(LocalCluster(n_workers=cpus, threads_per_worker=1, processes=True))
        get = client.get
    else:
        get = "threads"
    x = da.random.RandomState(0).random((4000, 4000), chunks=(500, 500))
    frame = pd.DataFrame({"k": np.arange(2_000_000) % 101, "v": np.random.rand(2_000_000)})
    ddf = dd.from_pandas(frame, npartitions=16)
    graphs = {
        "array": lambda: dask.compute((x @ x.T).sum(axis=0), x.mean(), scheduler=get),
        "frame": lambda: dask.compute(
            ddf.groupby("k").v.mean(), (ddf.v > 0.5).sum(), scheduler=get
        ),
    }
    for name, run in graphs.items():
        run()  # warm: workers started, code loaded
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        result = {"scheduler": scheduler, "workload": name, "seconds": statistics.median(times)}
        print("@@RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.repeat)
        return
    runs = [("raylite", sys.executable), ("threaded", sys.executable)]
    try:
        import distributed  # noqa: F401

        runs.append(("distributed", sys.executable))
    except ImportError:
        pass
    if os.path.exists(RAY_PYTHON):
        runs.append(("ray", RAY_PYTHON))
    seconds: dict[tuple[str, str], float] = {}
    for scheduler, python in runs:
        env = {**os.environ, "RAY_ADDRESS": "local"}
        out = subprocess.run(
            [python, __file__, "--worker", scheduler, "--repeat", str(args.repeat)],
            capture_output=True, text=True, timeout=1800, env=env,
        )  # fmt: skip
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("@@RESULT ")]
        if not lines:
            print(json.dumps({"scheduler": scheduler, "error": out.stderr[-2000:]}))
        for line in lines:
            result = json.loads(line[len("@@RESULT ") :])
            seconds[(scheduler, result["workload"])] = result["seconds"]
            print(json.dumps(result))
    for (scheduler, workload), value in seconds.items():
        base = seconds.get(("threaded", workload))
        if base:
            ratio = {"ratio_to_threaded": scheduler, "workload": workload}
            print(json.dumps({**ratio, "value": round(value / base, 3)}))


if __name__ == "__main__":
    main()
