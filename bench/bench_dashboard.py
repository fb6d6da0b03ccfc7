#!/usr/bin/env python3
"""The dashboard's cost on the head: memory with 100,000 recorded tasks, API latency.

Starts one node with the dashboard on (`init(include_dashboard=True,
dashboard_port=0)`), runs 100,000 no-op tasks so the head's task table is full,
and then asks each of the dashboard's API endpoints (the pages poll them) many
times over plain HTTP with the session cookie:

    bench_dashboard.py ──init──▶ node manager (head + dashboard) ──fork──▶ workers
            └──GET /api/... x N (keep-alive, cookie)──▶ node manager

It prints one JSON line per metric, like bench_core.py: the head's (node
manager's) RSS growth from idle to 100,000 recorded tasks and polled pages
(target < 100 MB), the dashboard's own RSS at idle (the same node without it), and
the p95 answer time of each endpoint in ms (target < 300 ms). Progress goes to stderr.

    python bench/bench_dashboard.py            # 100,000 tasks
    python bench/bench_dashboard.py --quick    # 20,000 tasks, fewer requests
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
import urllib.parse
from typing import Any

import psutil

import raylite as ray

MB = 1_000_000
BATCH = 5000


@ray.remote
def noop() -> None:
    return None


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit(
    metric: str, value: float | None, unit: str, target: str | None, met: bool | None, **detail: Any
) -> None:
    line = {"metric": metric, "raylite": value, "ray": None, "ratio": None, "unit": unit}
    line.update({"target": target, "met": met, **detail})
    print(json.dumps(line), flush=True)


def head_rss() -> int:
    proc = ray.api._runtime.proc  # the node manager init() started (the head)
    return psutil.Process(proc.pid).memory_info().rss


class Client:
    """One keep-alive connection with the dashboard's session cookie, as a browser has."""

    def __init__(self, ctx: Any) -> None:
        host, port = ctx.dashboard_url.split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        query = urllib.parse.urlparse(ctx.dashboard_login_url).query
        self.conn.request("GET", f"/?{query}")
        resp = self.conn.getresponse()
        resp.read()
        assert resp.status == 303, resp.status
        self.cookie = resp.getheader("Set-Cookie", "").split(";", 1)[0]

    def get(self, path: str) -> tuple[float, int]:
        start = time.perf_counter()
        self.conn.request("GET", path, headers={"Cookie": self.cookie})
        resp = self.conn.getresponse()
        body = resp.read()
        elapsed = time.perf_counter() - start
        assert resp.status == 200, (path, resp.status, body[:200])
        return elapsed, len(body)

    def json(self, path: str) -> Any:
        self.conn.request("GET", path, headers={"Cookie": self.cookie})
        resp = self.conn.getresponse()
        return json.loads(resp.read())


def endpoints(client: Client) -> dict[str, str]:
    """What each page polls, and the costliest listings (a filter nothing matches scans all)."""
    workers = client.json("/api/workers")["rows"]
    pid = workers[0]["pid"] if workers else 0
    first = client.json("/api/timeline?limit=1")
    t0 = (first["first"] or time.time()) + 0.5
    return {
        "index": "/",
        "cluster": "/api/cluster",
        "tasks": "/api/tasks?limit=100",
        "tasks_failed": "/api/tasks?state=FAILED&limit=100",
        "tasks_func": "/api/tasks?func=nothing_by_this_name&limit=100",
        "actors": "/api/actors?limit=500",
        "objects": "/api/objects?limit=200",
        "workers": "/api/workers",
        "logs": f"/api/logs?pid={pid}&tail=1000",
        "timeline": "/api/timeline?limit=2000",
        "timeline_oldest": f"/api/timeline?start={t0 - 1}&end={t0}&limit=2000",
    }


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def idle_rss(dashboard: bool) -> int:
    ray.init(
        num_cpus=2,
        include_dashboard=dashboard,
        dashboard_port=0 if dashboard else None,
        logging_level="WARNING",
    )
    try:
        ray.get([noop.remote() for _ in range(100)])
        time.sleep(1.0)  # let the node settle (worker pool, event flushes)
        return head_rss()
    finally:
        ray.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=40, help="requests per endpoint")
    parser.add_argument("--quick", action="store_true", help="20,000 tasks, 15 requests each")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.requests = 20_000, 15

    without = idle_rss(dashboard=False)
    say(f"idle head without the dashboard: {without / MB:.1f} MB")

    ctx = ray.init(num_cpus=2, include_dashboard=True, dashboard_port=0, logging_level="WARNING")
    try:
        client = Client(ctx)
        ray.get([noop.remote() for _ in range(100)])
        paths = endpoints(client)
        for path in paths.values():
            client.get(path)
        time.sleep(1.0)
        idle = head_rss()
        say(f"idle head with the dashboard: {idle / MB:.1f} MB")
        start = time.perf_counter()
        done = 0
        while done < args.tasks:
            n = min(BATCH, args.tasks - done)
            ray.get([noop.remote() for _ in range(n)])
            done += n
            if done % 20_000 == 0:
                say(f"  {done} tasks, {done / (time.perf_counter() - start):.0f} tasks/s")
        elapsed = time.perf_counter() - start
        recorded = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            recorded = client.json("/api/tasks?limit=1")["recorded"]
            if recorded >= min(args.tasks, 100_000):
                break
            time.sleep(0.2)
        say(f"{args.tasks} tasks in {elapsed:.1f} s; the head holds {recorded} records")
        paths = endpoints(client)
        latencies: dict[str, list[float]] = {name: [] for name in paths}
        sizes: dict[str, int] = {}
        for _ in range(args.requests):  # round robin, as several open pages would poll
            for name, path in paths.items():
                seconds, size = client.get(path)
                latencies[name].append(seconds)
                sizes[name] = size
        after = head_rss()
    finally:
        ray.shutdown()

    growth = (after - idle) / MB
    emit(
        "dashboard_head_rss_growth",
        round(growth, 1),
        "MB",
        "< 100",
        growth < 100,
        tasks=args.tasks,
        recorded=recorded,
        idle_mb=round(idle / MB, 1),
        after_mb=round(after / MB, 1),
    )
    cost = (idle - without) / MB
    emit("dashboard_idle_rss", round(cost, 1), "MB", None, None, without_mb=round(without / MB, 1))
    for name, samples in latencies.items():
        ms = p95(samples) * 1000
        emit(
            f"dashboard_p95_{name}",
            round(ms, 2),
            "ms",
            "< 300",
            ms < 300,
            path=paths[name],
            median_ms=round(statistics.median(samples) * 1000, 2),
            max_ms=round(max(samples) * 1000, 2),
            bytes=sizes[name],
            requests=len(samples),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
