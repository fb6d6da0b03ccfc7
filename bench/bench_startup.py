#!/usr/bin/env python3
"""Start-up time and idle memory of raylite (issue 17's targets), beside Ray.

    startup_s     whole process: `python -c "import raylite as ray; ray.init();
                  ray.get(ray.remote(lambda: 1).remote()); ray.shutdown()"`, wall
                  time, median of --runs            target: raylite <= 0.25 s
    idle_rss_mb   RSS summed over every process of an idle init(num_cpus=2) cluster,
                  driver included (shared pages counted in each process)
                                                    target: raylite <= 100 MB
    idle_pss_mb   the same in PSS (shared pages split between their processes)

The runs of the engines alternate (raylite, baseline, ray, raylite, ...), so load on
the machine hits them alike; the spread of each is printed with its median. Each
engine runs once first, not counted. Bytecode is cached as in any installed package:
PYTHONDONTWRITEBYTECODE is dropped for the runs and the caches go to a temporary
PYTHONPYCACHEPREFIX (no tree is written to). With it set, every process of the
cluster compiles raylite's sources at its start: about 70 ms of CPU in a driver alone.
--baseline-src DIR measures another raylite tree beside this one (its `src`, e.g.
the main branch's) as "baseline". Ray comes from --ray-python when it exists.

    python bench/bench_startup.py
    python bench/bench_startup.py --runs 5 --no-ray
    python bench/bench_startup.py --baseline-src /work/main/src

Prints one JSON line per (metric, engine) on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_core as core  # process_tree_memory, the default Ray interpreter

SRC = str(Path(__file__).resolve().parent.parent / "src")
MB = core.MB
TARGETS = {"startup_s": 0.25, "idle_rss_mb": 100.0}

STARTUP_CODE = (
    "import {engine} as ray; ray.init(); ray.get(ray.remote(lambda: 1).remote()); ray.shutdown()"
)


PYCACHE = ""  # a temporary directory, made by main()


def _env(engine: str, src: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(PYCACHE, hashlib.sha1(f"{src}".encode()).hexdigest())
    if src:
        env["PYTHONPATH"] = src
    if engine == "ray":  # a fresh local instance, never a cluster left running
        env["RAY_ADDRESS"] = "local"
    return env


def one_startup(python: str, engine: str, src: str | None) -> float:
    env = _env(engine, src)
    code = STARTUP_CODE.format(engine=engine)
    start = time.perf_counter()
    proc = subprocess.run([python, "-c", code], env=env, capture_output=True, timeout=120)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return elapsed


IDLE_DRIVER = (
    "import sys\n"
    "import {engine} as ray\n"
    "ray.init(num_cpus=2{extra})\n"
    "ray.get(ray.remote(lambda: 1).remote())\n"
    "print('READY', flush=True)\n"
    "sys.stdin.read()  # idle until the bench has measured\n"
    "ray.shutdown()\n"
)


def idle_memory(python: str, engine: str, src: str | None, settle_s: float) -> dict[str, Any]:
    """An idle 2-CPU cluster's memory, all its processes, the driver included; read
    from outside (this process's psutil), so the driver holds nothing of the bench."""
    extra = ", include_dashboard=False" if engine == "ray" else ""
    proc = subprocess.Popen(
        [python, "-c", IDLE_DRIVER.format(engine=engine, extra=extra)],
        env=_env(engine, src),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdin is not None
        if not proc.stdout.readline().startswith("READY"):
            raise RuntimeError(f"{engine}'s idle driver did not start (exit {proc.wait()})")
        time.sleep(settle_s)  # start-up work done: the cluster is idle
        mem = core.process_tree_memory(proc.pid)
        proc.stdin.close()
        proc.wait(timeout=120)
        return mem
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def summary(samples: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": [round(s, 3) for s in samples],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=10, help="start-up runs per engine")
    ap.add_argument("--memory-runs", type=int, default=3, help="idle-memory runs per engine")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds before reading memory")
    ap.add_argument("--baseline-src", default=None, help="another raylite tree's src dir")
    ap.add_argument("--ray-python", default=core.DEFAULT_RAY_PYTHON)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    global PYCACHE
    PYCACHE = tempfile.mkdtemp(prefix="bench-startup-pyc-")
    engines: list[tuple[str, str, str, str | None]] = [("raylite", sys.executable, "raylite", SRC)]
    if args.baseline_src:
        engines.append(("baseline", sys.executable, "raylite", args.baseline_src))
    if not args.no_ray and Path(args.ray_python).exists():
        engines.append(("ray", args.ray_python, "ray", None))
    for _name, python, engine, src in engines:  # bytecode compiled and cached
        one_startup(python, engine, src)
    startup: dict[str, list[float]] = {name: [] for name, *_ in engines}
    for i in range(args.runs):
        for name, python, engine, src in engines:
            startup[name].append(one_startup(python, engine, src))
        print(f"startup run {i + 1}/{args.runs}: {startup}", file=sys.stderr)
    memory: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in engines}
    for _ in range(args.memory_runs):
        for name, python, engine, src in engines:
            memory[name].append(idle_memory(python, engine, src, args.settle))
    for name, *_ in engines:
        s = summary(startup[name])
        rss = summary([m["rss"] / MB for m in memory[name]])
        pss_values = [m["pss"] / MB for m in memory[name] if m["pss"] is not None]
        rows = [("startup_s", s, "s"), ("idle_rss_mb", rss, "MB")]
        if pss_values:
            rows.append(("idle_pss_mb", summary(pss_values), "MB"))
        for metric, stat, unit in rows:
            target = TARGETS.get(metric)
            row = {
                "metric": metric,
                "engine": name,
                "value": round(stat["median"], 3),
                "unit": unit,
                "min": round(stat["min"], 3),
                "max": round(stat["max"], 3),
                "target": target,
                "met": None if target is None or name != "raylite" else stat["median"] <= target,
            }
            if metric == "idle_rss_mb":
                row["processes"] = memory[name][-1]["processes"]
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    try:
        main()
    finally:
        if PYCACHE:
            shutil.rmtree(PYCACHE, ignore_errors=True)
