#!/usr/bin/env python3
"""The demo's image workload on 2 CPUs: raylite beside the machine's own ceiling.

Issue 17 asks the seed workloads for >= 1.9x serial on 2 CPUs. For the image
transform (examples/demo.py: blur, grayscale, crops, augmentation, numpy arithmetic
over 1500x1000 images) two plain processes that share nothing already slow each other
down on a 2-core machine (memory bandwidth, shared cache). This bench measures, in one
run and alternating:

    serial    the transform of N images, one after another, in this process
    pool      multiprocessing.Pool(2) (fork), N/2 images per process: what two
              processes with no engine at all get on this machine (the ceiling)
    raylite   init(num_cpus=2), the N images put in the store, one task per image

and prints the speedup of pool and raylite over serial, and raylite / pool.

    python bench/bench_images.py                # 12 images, 3 rounds
    python bench/bench_images.py --images 8 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

EXAMPLES = str(Path(__file__).resolve().parent.parent / "examples")
sys.path.insert(0, EXAMPLES)
# Workers import demo too (its functions travel by reference): they inherit this.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [EXAMPLES, os.environ.get("PYTHONPATH")]))
import demo  # noqa: E402  (examples/demo.py: the workload itself)


def _transform_all(seeds: list[int]) -> float:
    """Seconds to transform the images of `seeds` here (made before the clock)."""
    images = [demo.generate_image(seed) for seed in seeds]
    start = time.perf_counter()
    for image in images:
        demo.transform_image(image, fetch_image=False)
    return time.perf_counter() - start


def serial(n: int) -> float:
    return _transform_all(list(range(n)))


def pool(n: int) -> float:
    """Wall time of two processes, each transforming half (timed inside each: the
    slower one is the wall time of the pair, start-up excluded)."""
    halves = [list(range(0, n, 2)), list(range(1, n, 2))]
    with mp.get_context("fork").Pool(2) as workers:
        return max(workers.map(_transform_all, halves))


def raylite_run(n: int) -> float:
    ray = demo.ray
    refs = [ray.put(demo.generate_image(seed)) for seed in range(n)]
    ray.get(demo.augment_image_distributed.remote(refs[0], False))  # both workers warm
    ray.get([demo.augment_image_distributed.remote(r, False) for r in refs[:2]])
    start = time.perf_counter()
    ray.get([demo.augment_image_distributed.remote(r, False) for r in refs])
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    demo.ray.init(num_cpus=2, log_to_driver=False)
    times: dict[str, list[float]] = {"serial": [], "pool": [], "raylite": []}
    try:
        for r in range(args.rounds):
            for name, run in (("serial", serial), ("pool", pool), ("raylite", raylite_run)):
                times[name].append(run(args.images))
            print(f"round {r + 1}: " + json.dumps({k: round(v[-1], 3) for k, v in times.items()}),
                  file=sys.stderr)  # fmt: skip
    finally:
        demo.ray.shutdown()
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "images": args.images,
        "serial_s": round(med["serial"], 3),
        "pool_s": round(med["pool"], 3),
        "raylite_s": round(med["raylite"], 3),
        "pool_speedup": round(med["serial"] / med["pool"], 3),
        "raylite_speedup": round(med["serial"] / med["raylite"], 3),
        "raylite_vs_pool": round(med["pool"] / med["raylite"], 3),
        "target": "raylite_speedup >= 1.9 (issue 17)",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
