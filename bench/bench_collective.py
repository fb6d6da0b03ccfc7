#!/usr/bin/env python3
"""Allreduce (sum) of a 100 MB float32 array among 4 ranks: raylite.util.collective
(shared memory, its choice on one node, and the ring over sockets between the actors,
its choice across nodes), the naive way over the object store (each
actor's array to the driver with get, the sum back with put and get), and mpi4py's
Allreduce under mpiexec where mpi4py and an MPI library are importable. Each in a
fresh process; median of --repeat rounds after one warm round; every round's result
is checked.

    python bench/bench_collective.py [--repeat 5] [--mb 100]
    MPI_PREFIX=/opt/mpi python bench/bench_collective.py   # where mpiexec and libmpi are

mpi4py with MPICH from PyPI, without touching the project's venv:
    pip install --prefix /tmp/mpiprefix mpi4py mpich ; MPI_PREFIX=/tmp/mpiprefix ...

Prints one JSON line per implementation (seconds per allreduce, algorithm bandwidth
= bytes / seconds) and the ratios to raylite's shared-memory allreduce.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

RANKS = 4


def _expected_first(n: int) -> float:
    return float(sum(range(1, RANKS + 1)))  # rank r holds r + 1 everywhere


def run_raylite(n: int, repeat: int, shm: bool = True) -> list[float]:
    import numpy as np

    import raylite
    import raylite.util.collective as col

    raylite.init(num_cpus=RANKS)

    @raylite.remote(num_cpus=0)
    class Rank:
        def setup(self, rank: int) -> None:
            col.init_collective_group(RANKS, rank, backend="gloo", gloo_timeout=300_000)
            self.rank = rank
            if not shm:  # one node: raylite takes shared memory unless told not to
                col.get_group_handle().shm = None

        def allreduce(self, rounds: int) -> list[float]:
            times = []
            for _ in range(rounds):
                a = np.full(n, self.rank + 1, np.float32)
                col.barrier()
                start = time.perf_counter()
                col.allreduce(a)
                times.append(time.perf_counter() - start)
                assert a[0] == a[-1] == _expected_first(n), a[:3]
            return times

    ranks = [Rank.remote() for _ in range(RANKS)]
    raylite.get([r.setup.remote(i) for i, r in enumerate(ranks)])
    per_rank = raylite.get([r.allreduce.remote(repeat + 1) for r in ranks])
    raylite.shutdown()
    return [max(t[i] for t in per_rank) for i in range(1, repeat + 1)]  # the slowest rank


def run_naive(n: int, repeat: int) -> list[float]:
    import numpy as np

    import raylite

    raylite.init(num_cpus=RANKS)

    @raylite.remote(num_cpus=0)
    class Rank:
        def __init__(self, rank: int) -> None:
            self.a = np.full(n, rank + 1, np.float32)

        def reset(self, rank: int) -> None:
            self.a[:] = rank + 1

        def contribute(self) -> object:
            return self.a

        def take(self, total: object) -> float:
            self.a[:] = total  # in place, as an allreduce leaves it
            return float(self.a[0])

    ranks = [Rank.remote(i) for i in range(RANKS)]
    times = []
    for _ in range(repeat + 1):
        raylite.get([r.reset.remote(i) for i, r in enumerate(ranks)])
        start = time.perf_counter()
        parts = raylite.get([r.contribute.remote() for r in ranks])
        total = parts[0].copy()
        for part in parts[1:]:
            total += part
        ref = raylite.put(total)
        got = raylite.get([r.take.remote(ref) for r in ranks])
        times.append(time.perf_counter() - start)
        assert got == [_expected_first(n)] * RANKS, got
        del parts, total, ref
    raylite.shutdown()
    return times[1:]


def run_mpi_rank(n: int, repeat: int) -> None:
    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    times = []
    for _ in range(repeat + 1):
        a = np.full(n, comm.rank + 1, np.float32)
        comm.Barrier()
        start = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, a, op=MPI.SUM)
        times.append(time.perf_counter() - start)
        assert a[0] == a[-1] == _expected_first(n)
    slowest = comm.reduce(
        times, op=lambda x, y: [max(p, q) for p, q in zip(x, y, strict=True)], root=0
    )
    if comm.rank == 0:
        print("@@RESULT " + json.dumps(slowest[1:]), flush=True)


def _mpi_env() -> dict[str, str] | None:
    prefix = os.environ.get("MPI_PREFIX", "/tmp/mpiprefix")
    env = dict(os.environ)
    if os.path.isdir(prefix):
        env["PATH"] = f"{prefix}/bin:{env.get('PATH', '')}"
        env["LD_LIBRARY_PATH"] = f"{prefix}/lib:{env.get('LD_LIBRARY_PATH', '')}"
        site = glob.glob(f"{prefix}/lib/python3*/site-packages")
        env["PYTHONPATH"] = ":".join([*site, env.get("PYTHONPATH", "")])
    mpiexec = shutil.which("mpiexec", path=env.get("PATH"))
    if mpiexec is None:
        return None
    check = subprocess.run(
        [sys.executable, "-c", "from mpi4py import MPI"], env=env, capture_output=True
    )
    return env if check.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--worker")
    args = parser.parse_args()
    n = args.mb * (1 << 20) // 4
    if args.worker == "mpi":
        run_mpi_rank(n, args.repeat)
        return
    if args.worker:
        run = {
            "raylite": run_raylite,
            "raylite-ring": lambda n, r: run_raylite(n, r, shm=False),
            "naive": run_naive,
        }[args.worker]
        times = run(n, args.repeat)
        print("@@RESULT " + json.dumps(times), flush=True)
        return
    common = ["--repeat", str(args.repeat), "--mb", str(args.mb)]
    runs: list[tuple[str, list[str], dict[str, str] | None]] = [
        ("raylite shm", [sys.executable, __file__, "--worker", "raylite", *common], None),
        ("raylite ring", [sys.executable, __file__, "--worker", "raylite-ring", *common], None),
        (
            "naive get/put via driver",
            [sys.executable, __file__, "--worker", "naive", *common],
            None,
        ),
    ]
    mpi_env = _mpi_env()
    if mpi_env is not None:
        cmd = ["mpiexec", "-n", str(RANKS), sys.executable, __file__, "--worker", "mpi", *common]
        runs.append(("mpi4py Allreduce", cmd, mpi_env))
    else:
        print(json.dumps({"impl": "mpi4py Allreduce", "skipped": "no mpi4py or mpiexec"}))
    seconds: dict[str, float] = {}
    for name, cmd, env in runs:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("@@RESULT ")]
        if not lines:
            print(json.dumps({"impl": name, "error": (out.stdout + out.stderr)[-2000:]}))
            continue
        times = json.loads(lines[-1][len("@@RESULT ") :])
        seconds[name] = statistics.median(times)
        print(json.dumps({
            "impl": name, "ranks": RANKS, "megabytes": args.mb,
            "seconds": round(seconds[name], 4), "min_seconds": round(min(times), 4),
            "algbw_GBps": round(args.mb * (1 << 20) / seconds[name] / 1e9, 3),
        }))  # fmt: skip
    base = seconds.get("raylite shm")
    for name, value in seconds.items():
        if base and name != "raylite shm":
            print(json.dumps({"ratio_to_raylite_shm": name, "value": round(value / base, 3)}))


if __name__ == "__main__":
    main()
