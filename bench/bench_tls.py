"""What --tls costs: object transfer between two nodes and task round trips, with and
without TLS, on loopback.

    .venv/bin/python bench/bench_tls.py [--mb 100] [--runs 5] [--tasks 2000]

For each mode (plain, then --tls) it starts a head (`raylite start --head`, resource
{"a": 1}) and a second node joining it (`raylite start --address`, resource {"b": 1})
under a TMPDIR of their own, and a driver on the head's machine measures:
- transfer: an array of --mb MB made by a task on node b, read by a task on node a
  (a pull between the node managers: sendfile into a spliced socket when plain; TLS
  encrypts and decrypts every byte); the median of --runs after one warm-up;
- round trips: --tasks sequential `get(f.remote())` of a no-op task on node a and on
  node b (the driver pushes to a worker's TCP listener in both cases; with TLS each
  push and reply is a TLS record);
- connect: the time of `raylite start --address` (join with enrolment under TLS).
Prints one JSON line per metric: plain, tls, and the ratio tls / plain (for times) or
plain / tls (for rates), so > 1 is the cost. Run it alone on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

CLI = [sys.executable, "-m", "raylite.cli"]

DRIVER = """
import json, sys, time
import numpy as np
import raylite as ray

mb, runs, tasks = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ray.init(address=sys.argv[1])

@ray.remote(resources={"b": 0.01})
def make(n):
    return np.ones(n, dtype=np.uint8)

@ray.remote(resources={"a": 0.01})
def touch(x):
    return int(x[:: 1 << 20].sum())

@ray.remote(resources={"a": 0.01})
def noop_a():
    return 0

@ray.remote(resources={"b": 0.01})
def noop_b():
    return 0

seconds = []
for i in range(runs + 1):
    ref = make.remote(mb << 20)
    ray.wait([ref])
    start = time.perf_counter()
    ray.get(touch.remote(ref))
    if i:  # the first run warms the pools and the receiving store
        seconds.append(time.perf_counter() - start)
    del ref
out = {"transfer_s": seconds}
for name, fn in (("rtt_a_s", noop_a), ("rtt_b_s", noop_b)):
    ray.get([fn.remote() for _ in range(20)])
    start = time.perf_counter()
    for _ in range(tasks):
        ray.get(fn.remote())
    out[name] = (time.perf_counter() - start) / tasks
print("RESULT " + json.dumps(out), flush=True)
ray.shutdown()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(args: list[str], env: dict[str, str]) -> None:
    r = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=300)
    if r.returncode:
        raise SystemExit(f"raylite {' '.join(args)} failed: {r.stdout}{r.stderr}")


def run_mode(tls: bool, args: argparse.Namespace) -> dict[str, float]:
    tmp = tempfile.mkdtemp(prefix="raylite-bench-tls-")
    env = {**os.environ, "TMPDIR": tmp, "RAYLITE_TOKEN": "bench tls token"}
    port = _free_port()
    head = f"127.0.0.1:{port}"
    flag = ["--tls"] if tls else []
    try:
        _cli(["start", "--head", "--port", str(port), "--num-cpus", "2", *flag]
             + ["--resources", '{"a": 1}', "--include-dashboard", "false"], env)  # fmt: skip
        start = time.perf_counter()
        _cli(["start", "--address", head, "--num-cpus", "2", "--resources", '{"b": 1}'], env)
        join_s = time.perf_counter() - start
        r = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(DRIVER), head]
            + [str(args.mb), str(args.runs), str(args.tasks)],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
        if r.returncode or not lines:
            raise SystemExit(f"driver failed ({'tls' if tls else 'plain'}): {r.stdout}{r.stderr}")
        got = json.loads(lines[-1][len("RESULT ") :])
    finally:
        subprocess.run([*CLI, "stop"], env=env, capture_output=True, timeout=300)
    transfer = statistics.median(got["transfer_s"])
    return {
        "transfer_mbps": (args.mb << 20) / 1e6 / transfer,
        "rtt_same_node_us": got["rtt_a_s"] * 1e6,
        "rtt_other_node_us": got["rtt_b_s"] * 1e6,
        "join_s": join_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="object size in MB")
    parser.add_argument("--runs", type=int, default=5, help="transfers measured")
    parser.add_argument("--tasks", type=int, default=2000, help="round trips per node")
    args = parser.parse_args()
    plain = run_mode(False, args)
    tls = run_mode(True, args)
    for metric, value in plain.items():
        higher_is_better = metric.endswith("mbps")
        cost = value / tls[metric] if higher_is_better else tls[metric] / value
        print(
            json.dumps(
                {
                    "metric": metric,
                    "plain": round(value, 3),
                    "tls": round(tls[metric], 3),
                    "tls_cost_ratio": round(cost, 3),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
