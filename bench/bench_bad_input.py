#!/usr/bin/env python3
"""The bad-input cases too large for the test suite (issue 18), timed on both engines.

    bytes_arg   a 2.2 GB `bytes` argument passed by value to a task that returns its
                length, then a small task: seconds for each. raylite used to fail it
                after about 150 s with WorkerCrashedError (every argument was pickled
                into the task message, which the receiver refused over 2 GiB, and the
                retries sent it again), and then ran no task at all; Ray took 35 s.

Each engine runs in a fresh subprocess of its own, one after the other, never two at
once: the case needs about 7 GB of memory for raylite (the value, its pickle, the
store's copy) and more for Ray. Prints one JSON line per metric on stdout:

    {"metric": ..., "raylite": x, "ray": y, "ratio": x / y, "unit": "s"}

    python bench/bench_bad_input.py                 # both engines, 2.2 GB
    python bench/bench_bad_input.py --engine raylite --gb 0.5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_core as core  # the shared harness: engine lookup, init, logging

RESULT = "@@RESULT "


def work_bytes_arg(engine: str, gb: float) -> None:
    import importlib

    ray = importlib.import_module(engine)
    core.engine_init(ray, num_cpus=2)

    @ray.remote
    def size(b: bytes) -> int:
        return len(b)

    @ray.remote
    def one() -> int:
        return 1

    n = int(gb * 1e9)
    data = b"x" * n
    start = time.perf_counter()
    got = ray.get(size.remote(data), timeout=900)
    arg_s = time.perf_counter() - start
    del data
    if got != n:
        raise AssertionError(f"the task saw {got} bytes, not {n}")
    start = time.perf_counter()
    if ray.get(one.remote(), timeout=120) != 1:
        raise AssertionError("the follow-up task returned something else")
    follow_s = time.perf_counter() - start
    ray.shutdown()
    print(RESULT + json.dumps({"bytes_arg_s": arg_s, "follow_up_s": follow_s}), flush=True)


def measure(python: str, engine: str, gb: float) -> dict[str, Any]:
    cmd = [python, __file__, "--worker", "--engine", engine, "--gb", str(gb)]
    env = dict(os.environ, RAY_ADDRESS="local")  # never join a Ray cluster running here
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 1200 s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT):
            return dict(json.loads(line[len(RESULT) :]))
    return {"error": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["raylite", "ray", "both"], default="both")
    parser.add_argument("--gb", type=float, default=2.2, help="the argument's size in GB")
    parser.add_argument("--ray-python", default="/tmp/rayvenv/bin/python")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        work_bytes_arg(args.engine, args.gb)
        return 0
    results: dict[str, dict[str, Any]] = {}
    for engine in ("raylite", "ray"):
        if args.engine not in (engine, "both"):
            continue
        if engine == "raylite":
            python = core.find_raylite_python()
        else:
            python = core.find_ray_python(args.ray_python, wait_s=0)
        if python is None:
            core.log(f"{engine}: no interpreter that imports it; skipped")
            continue
        core.log(f"{engine}: a {args.gb} GB bytes argument ...")
        results[engine] = measure(python, engine, args.gb)
        core.log(f"{engine}: {results[engine]}")
    for metric in ("bytes_arg_s", "follow_up_s"):
        mine = results.get("raylite", {}).get(metric)
        ray = results.get("ray", {}).get(metric)
        ratio = mine / ray if mine is not None and ray else None
        line = {"metric": f"{metric}_{args.gb:g}gb", "raylite": mine, "ray": ray, "ratio": ratio}
        print(json.dumps({**line, "unit": "s"}), flush=True)
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
