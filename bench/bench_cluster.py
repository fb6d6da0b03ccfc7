"""Cluster speed on testnet hosts: no-op task rate on 3 nodes vs 1, time to join, transfer.

    sudo .venv/bin/python bench/bench_cluster.py [--tasks 10000]   (tests/netns.py's testnet)

Starts a head and a node (2 CPUs) in h1, measures 10,000 no-op tasks from a driver in h1, joins
h2 and h3 (timing each join until the new node runs a task pinned to it), measures
the same 10,000 tasks again, then moves a 1 GB array from h2 to h3 four times, and
compares the median of the last three with plain TCP from h2 to h3 (a veth pair and a
bridge, MTU 1500). Then it starts two nodes on loopback inside h2 and does the same,
compared with loopback TCP in h2: the same network path on both sides of the ratio.
The first transfer is reported apart: it writes into memory the receiving node never
used, and on a VM the first touch of a page costs a trip through the host
(`fresh_memory_write_mbps` measures that alone); later ones reuse the memory of the
freed copy, as a node that keeps receiving objects does. Prints one JSON line per
metric. Targets (issue 5): 3-node rate >= 70% of 1-node, join < 2 s, transfer >= 0.5
of loopback TCP. Ray is not compared here: it does not run on testnet namespaces
without its own cluster launcher.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tests.netns import Testnet  # noqa: E402 - the repository's testnet helper

NET = Testnet("rlbench", "10.79.0")
ENV = {**os.environ, **NET.env(), "RAYLITE_TOKEN": "raylite cluster bench"}
HEAD = "10.79.0.1:6380"


def tn(host: str, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """argv run in testnet host `host`."""
    return NET.run(host, *argv, env=ENV, timeout=timeout)


def start(host: str, head: bool, on: str = "", ip: str = "", port: int = 6380) -> None:
    """A node with 2 CPUs and resource {host: 1}, run in testnet host `on` (default: host)."""
    ip = ip or f"10.79.0.{host[1:]}"
    args = [
        "start",
        "--node-ip-address",
        ip,
        "--num-cpus",
        "2",
        "--resources",
        json.dumps({host: 1}),
    ]
    args += ["--head", "--port", str(port)] if head else ["--address", f"{ip}:{port}"]
    if not head and not on:
        args[-1] = HEAD
    r = tn(on or host, sys.executable, "-m", "raylite.cli", *args)
    if r.returncode:
        raise SystemExit(f"start in {host} failed: {r.stdout}{r.stderr}")


def driver(code: str, host: str = "h1") -> dict:
    prog = "import json, os, time\nimport raylite as ray\n" + textwrap.dedent(code)
    r = tn(host, sys.executable, "-c", prog, timeout=600)
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
from raylite.util.state import store_stats
ray.init(address="{address}")

@ray.remote(resources={"h2": 1})
def make():
    return np.ones(125_000_000)  # 1 GB

@ray.remote(resources={"h3": 1})
def touch(a):
    return float(a[::100_000].sum())

@ray.remote(resources={"h3": 1})
def recycled():  # h3's freed memory kept for the next pull: wait for the freed copy
    deadline = time.monotonic() + 20
    while store_stats()["recycled_bytes"] < 10**9 and time.monotonic() < deadline:
        time.sleep(0.01)

seconds = []
for _ in range({runs}):
    ref = make.remote()
    ray.wait([ref])
    start = time.perf_counter()
    assert ray.get(touch.remote(ref)) == 1250.0
    seconds.append(time.perf_counter() - start)
    del ref
    ray.get(recycled.remote())
print(json.dumps({"seconds": seconds}))
ray.shutdown()
"""

FRESH_MEMORY = """
import json, os, time
fd = os.open("/dev/shm/raylite-bench-fresh", os.O_CREAT | os.O_TRUNC | os.O_WRONLY)
buf = memoryview(bytearray(1 << 20))
start = time.perf_counter()
for off in range(0, 1 << 30, 1 << 20):
    os.pwrite(fd, buf, off)
mbps = (1 << 30) / 1e6 / (time.perf_counter() - start)
os.close(fd)
os.unlink("/dev/shm/raylite-bench-fresh")
print(json.dumps({"mbps": mbps}))
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


WIRE = """
import json, socket, subprocess, sys, time
N = 1 << 30
srv = socket.socket(); srv.bind(("{ip}", 0)); srv.listen(1)
# the sender runs in another testnet host: the same path as a pull between the hosts
sender = subprocess.Popen({command} + [SEND, srv.getsockname()[0], str(srv.getsockname()[1])])
c, _ = srv.accept(); got = 0; buf = memoryview(bytearray(1 << 22))
start = time.perf_counter()
while got < N:
    got += c.recv_into(buf)
print(json.dumps({{"mbps": N / 1e6 / (time.perf_counter() - start)}}))
sender.wait()
"""

SEND = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2]))); buf = b"x" * (1 << 22)
for _ in range((1 << 30) // len(buf)):
    s.sendall(buf)
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
    parser.add_argument("--transfers", type=int, default=4, help="1 GB transfers (>= 2)")
    args = parser.parse_args()
    why = NET.unusable()
    if why:
        print(f"testnet is not usable here: {why}", file=sys.stderr)
        return 77
    NET.up(3)
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
        fresh = driver(FRESH_MEMORY, host="h3")["mbps"]  # before the transfers touch memory
        runs = str(args.transfers)
        hosts = driver(TRANSFER.replace("{runs}", runs).replace("{address}", "auto"))["seconds"]
        wire_code = WIRE.format(ip="10.79.0.3", command=NET.command("h2", sys.executable, "-c"))
        wire = driver(wire_code.replace("[SEND,", "[" + repr(SEND) + ","), host="h3")["mbps"]
        for host in ("h1", "h2", "h3"):
            tn(host, sys.executable, "-m", "raylite.cli", "stop")
        # Two nodes on loopback in one host: the same path as the loopback TCP reference.
        start("h2", head=True, on="h2", ip="127.0.0.1", port=6381)
        start("h3", head=False, on="h2", ip="127.0.0.1", port=6381)
        code = TRANSFER.replace("{runs}", runs).replace("{address}", "127.0.0.1:6381")
        local = driver(code, host="h2")["seconds"]
        loop = driver(LOOPBACK.replace("import socket", "import json, socket"), host="h2")
        transfer = 1000 / statistics.median(local[1:])
        between = 1000 / statistics.median(hosts[1:])
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
        half = transfer >= 0.5 * loop["mbps"]
        emit("transfer_1gb_loopback_nodes_mbps", transfer, "MB/s", ">= 0.5 x loopback TCP", half)
        emit("loopback_tcp_mbps", loop["mbps"], "MB/s", "-", True)
        emit("transfer_vs_loopback_tcp", transfer / loop["mbps"], "x", ">= 0.5", half)
        half = between >= 0.5 * wire
        emit("transfer_1gb_between_hosts_mbps", between, "MB/s", ">= 0.5 x TCP h2->h3", half)
        emit("tcp_between_hosts_mbps", wire, "MB/s", "- (veth, MTU 1500)", True)
        emit("transfer_vs_tcp_between_hosts", between / wire, "x", ">= 0.5", half)
        emit("transfer_1gb_first_mbps", 1000 / hosts[0], "MB/s", "- (into fresh memory)", True)
        emit("fresh_memory_write_mbps", fresh, "MB/s", "-", True)
    finally:
        for host in ("h1", "h2", "h3"):
            tn(host, sys.executable, "-m", "raylite.cli", "stop")
        NET.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
