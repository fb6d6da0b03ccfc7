#!/usr/bin/env python3
"""10k-task batches, one time per batch: the spread behind bench_core's tasks_10k.

Runs `--batches` batches of 10,000 no-op tasks in one driver and prints each batch's
seconds, then the median and quartiles. For before/after comparisons of the task
path, run it alternately on both trees (e.g. PYTHONPATH=<tree>/src) and compare the
medians of all batches: on 2 cores a batch's time is bimodal, so a few batches (or
the best of them) say more about luck than about the change.

    python bench/tasks_batches.py --batches 12
    python bench/tasks_batches.py --engine ray --batches 12
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="raylite", choices=("raylite", "ray"))
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--tasks", type=int, default=10_000)
    args = ap.parse_args()
    ray = importlib.import_module(args.engine)
    ray.init(num_cpus=2, logging_level=logging.ERROR)

    @ray.remote
    def noop() -> None:
        return None

    ray.get([noop.remote() for _ in range(200)])
    seconds = []
    for _ in range(args.batches):
        start = time.perf_counter()
        ray.get([noop.remote() for _ in range(args.tasks)])
        seconds.append(time.perf_counter() - start)
    ray.shutdown()
    q1, median, q3 = statistics.quantiles(seconds, n=4) if len(seconds) > 1 else seconds * 3
    print(
        json.dumps(
            {
                "engine": args.engine,
                "tasks": args.tasks,
                "seconds": [round(s, 4) for s in seconds],
                "median_s": round(median, 4),
                "q1_s": round(q1, 4),
                "q3_s": round(q3, 4),
                "median_tasks_per_s": round(args.tasks / median, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
