#!/usr/bin/env python3
"""joblib on raylite against joblib's own default (loky), and Ray's backend if Ray is
installed: the same scikit-learn GridSearchCV, each backend in a fresh process.

    python bench/bench_joblib.py              # raylite and loky (and ray, if found)
    python bench/bench_joblib.py --repeat 3   # median of 3 fits per backend

Each backend's process starts its engine first (raylite / Ray: init with every CPU;
loky: a warm-up Parallel call), then times `--repeat` fits of a 5-fold search over 12
SVC settings on 4,000 x 40 samples: what the timing holds is the search, not the
start-up. Prints one JSON line per backend: {"backend", "seconds", "best_params"}, and
the ratios to loky.
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


def worker(backend: str, repeat: int) -> None:
    import joblib
    from sklearn.datasets import make_classification
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    if backend == "raylite":
        import raylite
        from raylite.util.joblib import register_raylite

        raylite.init()
        register_raylite()
    elif backend == "ray":
        import ray
        from ray.util.joblib import register_ray

        ray.init()
        register_ray()
    X, y = make_classification(n_samples=4000, n_features=40, random_state=0)
    grid = {"C": [0.1, 1, 10, 100], "gamma": ["scale", 0.01, 0.001]}
    times = []
    with joblib.parallel_config(backend=backend):
        joblib.Parallel(n_jobs=-1)(joblib.delayed(abs)(-i) for i in range(8))  # warm
        for _ in range(repeat):
            start = time.perf_counter()
            search = GridSearchCV(SVC(), grid, n_jobs=-1, cv=5).fit(X, y)
            times.append(time.perf_counter() - start)
    print("@@RESULT " + json.dumps({"backend": backend, "seconds": statistics.median(times),
                                    "best_params": search.best_params_}), flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.repeat)
        return
    runs = [("raylite", sys.executable), ("loky", sys.executable)]
    if os.path.exists(RAY_PYTHON):
        runs.append(("ray", RAY_PYTHON))
    results = {}
    for backend, python in runs:
        out = subprocess.run(
            [python, __file__, "--worker", backend, "--repeat", str(args.repeat)],
            capture_output=True, text=True, timeout=1800, env={**os.environ, "RAY_ADDRESS": "local"} if backend == "ray" else None,
        )  # fmt: skip
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("@@RESULT ")]
        if not lines:
            print(json.dumps({"backend": backend, "error": out.stderr[-2000:]}))
            continue
        result = json.loads(lines[-1][len("@@RESULT ") :])
        results[backend] = result
        print(json.dumps(result))
    if "loky" in results:
        for backend, result in results.items():
            ratio = result["seconds"] / results["loky"]["seconds"]
            print(json.dumps({"ratio_to_loky": backend, "value": round(ratio, 3)}))


if __name__ == "__main__":
    main()
