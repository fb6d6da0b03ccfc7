"""Cluster speed on testnet hosts: no-op task rate on 3 nodes vs 1, time to join, transfer.

    sudo .venv/bin/python bench/bench_cluster.py [--tasks 10000]

Starts a head in h1 (2 CPUs), measures 10,000 no-op tasks from a driver in h1, joins
h2 and h3 (timing each join until the new node runs a task pinned to it), measures
the same 10,000 tasks again, then moves a 1 GB array from h2 to h3 and compares it
with loopback TCP measured inside h2 in the same run. Prints one JSON line per
metric. Targets (issue 5): 3-node rate >= 70% of 1-node, join < 2 s, transfer >= 0.5
of loopback TCP. Ray is not compared here: it does not run on testnet namespaces
without its own cluster launcher.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTNET = os.path.join(os.path.dirname(ROOT), "shared", "tools", "testnet")
ENV = {
    **os.environ,
    "TESTNET_NAME": "rlbench",
    "TESTNET_PREFIX": "10.79.0",
    "RAYLITE_TOKEN": "raylite cluster bench",
}
HEAD = "10.79.0.1:6380"


def tn(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", TESTNET, *args], env=ENV, capture_output=True, text=True, timeout=timeout
    )


def start(host: str, head: bool) -> None:
    ip = f"10.79.0.{host[1:]}"
    args = [
        "start",
        "--node-ip-address",
        ip,
        "--num-cpus",
        "2",
        "--resources",
        json.dumps({host: 1}),
    ]
    args += ["--head", "--port", "6380"] if head else ["--address", HEAD]
    r = tn("exec", host, sys.executable, "-m", "raylite.cli", *args)
    if r.returncode:
        raise SystemExit(f"start in {host} failed: {r.stdout}{r.stderr}")


def driver(code: str, host: str = "h1") -> dict:
    prog = "import json, os, time\nimport raylite as ray\n" + textwrap.dedent(code)
    r = tn("exec", host, sys.executable, "-c", prog, timeout=600)
    if r.returncode:
        raise SystemExit(f"driver failed: {r.stdout}{r.stderr}")
    return json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])


RATE = """
ray.init(address="auto")

@ray.remote
def noop():
    return 0

ray.get([noop.remote() for _ in range(200)])  # warm the pools
start = time.perf_counter()
ray.get([noop.remote() for _ in range({n})])
rate = {n} / (time.perf_counter() - start)
print(json.dumps({{"rate": rate}}))
ray.shutdown()
"""

TRANSFER = """
import numpy as np
ray.init(address="auto")

@ray.remote(resources={"h2": 1})
def make():
    return np.ones(125_000_000)  # 1 GB

@ray.remote(resources={"h3": 1})
def touch(a):
    return float(a[::100_000].sum())

ref = make.remote()
ray.wait([ref])
start = time.perf_counter()
ray.get(touch.remote(ref))
print(json.dumps({"seconds": time.perf_counter() - start}))
ray.shutdown()
"""

LOOPBACK = """
import socket, threading, time
N = 1 << 30
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
def sink():
    c, _ = srv.accept(); got = 0
    while got < N:
        got += len(c.recv(1 << 22))
t = threading.Thread(target=sink); t.start()
s = socket.create_connection(srv.getsockname()); buf = b"x" * (1 << 22)
start = time.perf_counter()
for _ in range(N // len(buf)):
    s.sendall(buf)
t.join()
print(json.dumps({"mbps": N / 1e6 / (time.perf_counter() - start)}))
"""


def emit(metric: str, value: float, unit: str, target: str, met: bool) -> None:
    print(
        json.dumps(
            {
                "metric": metric,
                "raylite": round(value, 3),
                "unit": unit,
                "target": target,
                "met": met,
            }
        ),
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()
    if tn("check").returncode:
        print("testnet is not usable here (needs root and network namespaces)", file=sys.stderr)
        return 77
    tn("up", "3")
    try:
        start("h1", head=True)
        one = driver(RATE.format(n=args.tasks))["rate"]
        joins = []
        for host in ("h2", "h3"):
            t0 = time.perf_counter()
            start(host, head=False)
            driver(f"""
                ray.init(address="auto")
                @ray.remote(resources={{"{host}": 1}})
                def ping():
                    return 1
                print(json.dumps({{"ok": ray.get(ping.remote())}}))
                ray.shutdown()
                """)
            joins.append(time.perf_counter() - t0)
        three = driver(RATE.format(n=args.tasks))["rate"]
        seconds = driver(TRANSFER)["seconds"]
        loop = driver(LOOPBACK.replace("import socket", "import json, socket"), host="h2")
        transfer = 1000 / seconds
        emit("tasks_1_node_per_s", one, "tasks/s", "-", True)
        emit("tasks_3_nodes_per_s", three, "tasks/s", ">= 0.7 x 1 node", three >= 0.7 * one)
        emit("tasks_3_vs_1_ratio", three / one, "x", ">= 0.7", three / one >= 0.7)
        emit(
            "join_until_runs_task_s",
            max(joins),
            "s",
            "< 2 (includes a driver start)",
            max(joins) < 2,
        )
        emit(
            "transfer_1gb_mbps",
            transfer,
            "MB/s",
            ">= 0.5 x loopback TCP",
            transfer >= 0.5 * loop["mbps"],
        )
        emit("loopback_tcp_mbps", loop["mbps"], "MB/s", "-", True)
    finally:
        for host in ("h1", "h2", "h3"):
            tn("exec", host, sys.executable, "-m", "raylite.cli", "stop")
        tn("down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
