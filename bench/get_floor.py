#!/usr/bin/env python3
"""The least a first get of a 100 MB array costs on this machine, with no engine.

A put copies the array into shared memory. That copy leaves the CPU's caches full of
the array and empty of the code and kernel data a get runs, so the first ~100 µs after
it run at a fraction of their warm speed. bench_core's first-get figures are the
engine's; these are the bare steps any store must take for a first get, timed right
after the same copy, so that the two can be compared in one run:

- `map`: open the object's file, mmap it, build the array on the mapping
  (np.frombuffer: no pickle, no header). A store that keeps each object in a file of
  its own, as raylite's does, can do no less.
- `nomap`: build the array on a mapping made before the copy. A store that maps one
  arena once (Ray's plasma) makes no system call here.
- `other_process`: `map`, in another process woken through a pipe after the copy: a
  task's first get of an object the driver has just put.
- `warm`: `map` again at once, caches warm: what the same steps cost without the copy.

    python bench/get_floor.py
"""

from __future__ import annotations

import json
import mmap
import os
import statistics
import sys
import tempfile
import time
from typing import Any

MB = 1 << 20
OFFSET = mmap.PAGESIZE  # where the array starts in the file (a header before it)


def _first_get(path: str, count: int) -> tuple[float, Any, mmap.mmap]:
    """open + mmap + an array on the mapping: (ms, the array, its mapping)."""
    import numpy as np

    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    value = np.frombuffer(mm, np.float64, count, OFFSET)
    return (time.perf_counter() - start) * 1000, value, mm


def _child(path: str, count: int, wake: int, done: int) -> None:
    """In a forked child: one `map` get each time the parent writes a byte."""
    times = []
    while os.read(wake, 1) == b"g":
        took, value, mm = _first_get(path, count)
        times.append(took)
        last = float(value[-1])
        del value
        mm.close()
        os.write(done, json.dumps([took, last]).encode() + b"\n")
    os._exit(0)


def measure(runs: int = 5) -> dict[str, list[float]]:
    """Each figure's samples in ms, one per copy of the array."""
    import numpy as np

    array = np.random.default_rng(0).random(100 * MB // 8)
    source = memoryview(array).cast("B")
    count = array.size
    folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
    times: dict[str, list[float]] = {"map": [], "nomap": [], "other_process": [], "warm": []}
    with tempfile.NamedTemporaryFile(dir=folder, prefix="get-floor-") as f:
        os.ftruncate(f.fileno(), OFFSET + array.nbytes)
        # Written through a mapping whose pages are there, as a put into a warm file.
        writable = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
        kept = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        wake_r, wake_w = os.pipe()
        done_r, done_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            _child(f.name, count, wake_r, done_w)
        replies = os.fdopen(done_r, "rb")
        try:
            for _ in range(runs):
                writable[OFFSET:] = source
                took, value, mm = _first_get(f.name, count)
                times["map"].append(took)
                _check(value, array)
                took, value2, mm2 = _first_get(f.name, count)
                times["warm"].append(took)
                del value, value2
                mm.close()
                mm2.close()

                writable[OFFSET:] = source
                start = time.perf_counter()
                value = np.frombuffer(kept, np.float64, count, OFFSET)
                times["nomap"].append((time.perf_counter() - start) * 1000)
                _check(value, array)
                del value

                writable[OFFSET:] = source
                os.write(wake_w, b"g")
                took, last = json.loads(replies.readline())
                times["other_process"].append(took)
                if last != float(array[-1]):
                    raise AssertionError("the child read a different array")
        finally:
            os.write(wake_w, b"q")
            os.waitpid(pid, 0)
            replies.close()
            for fd in (wake_r, wake_w, done_w):
                os.close(fd)
            kept.close()
            writable.close()
    return times


def _check(value: Any, array: Any) -> None:
    if value.shape != array.shape or value[-1] != array[-1]:
        raise AssertionError("the mapping holds a different array")


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    for name, samples in measure(runs).items():
        print(f"{name:14s} median {statistics.median(samples):.3f} ms  {samples}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
