#!/usr/bin/env python3
"""The scale envelope of raylite (issue 15): many tasks, objects, actors and nodes.

Each section runs in a fresh subprocess of this script (`--worker SECTION`), one
after the other, and prints "@@RESULT {json}" lines; the orchestrator prints one
JSON line per figure on stdout ({"section", "metric", "engine", "value", "unit",
"check", "met"}) and progress on stderr. Sections (pick any, in argv):

    tasks    SIZE no-op tasks (default 1,000,000) from one driver, in waves of --wave
             (10,000) submitted then fetched: driver and node-manager RSS after the
             first wave and at the end (check: within 50 MB), the rate of the first
             and the last window (100,000 tasks, or a tenth of SIZE if less; check:
             the last within 20% of the first), and the RSS after every tenth wave.
    objects  SIZE small objects (ray.put of an int; default 100,000) and as many 1 MB
             objects as fit in 80% of the store (at most SIZE; the count is printed:
             100,000 x 1 MB is 100 GB), all alive at once, then freed: driver RSS,
             node-manager RSS and the store's memory (raylite: its directory's
             allocated blocks; Ray: /dev/shm) at baseline, peak and after (check: back
             within 50 MB of baseline), and the store's object count after (raylite).
    actors   SIZE actors with num_cpus=0 on one node (default 1,000; the worker cap is
             raised to SIZE + 16 for this): creation rate (each created and answering
             a first call), RSS, PSS and USS per actor (median), one more call to each,
             the node manager's and driver's RSS and open fds. Stops early, and says
             so, when the machine's available memory falls under 2 GiB or 10%.
    nodes    SIZE node managers (default 50, num_cpus=1 each) on this machine joined to
             one head over loopback with `raylite start`: the time of each join,
             --tasks (10,000) no-op tasks with scheduling_strategy="SPREAD" and the
             nodes they ran on, the head's CPU time and RSS (idle and over the tasks),
             and heartbeat traffic per node: the bytes the head received and sent on
             its port's TCP connections (the kernel's per-socket counters, read with
             `ss -ti`) over --idle-s (10) seconds of an idle cluster, divided by nodes
             and seconds (an idle cluster's traffic to the head is heartbeats; what it
             sends is their replies, each the whole cluster view).
             Its nodes live under a private TMPDIR, so `raylite stop` here stops only
             them. raylite only (Ray has no way to run 50 raylets here but its
             cluster_utils, which is not what users run).

    python bench/bench_scale.py tasks objects actors nodes          # full sizes (long)
    python bench/bench_scale.py --small                             # every section, small
    python bench/bench_scale.py tasks --size 20000 --engine raylite,ray
    python bench/bench_scale.py nodes --size 5 --tasks 1000 --idle-s 5

--small runs each section at a size that proves it works (tasks 20,000, objects
1,000, actors 20, nodes 5 with 1,000 tasks). Ray (tasks, objects, actors) comes from
the current interpreter or /tmp/rayvenv/bin/python when --engine names it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULT_PREFIX = "@@RESULT "
MB = 1_000_000
MIB = 1 << 20
GIB = 1 << 30
SECTIONS = ("tasks", "objects", "actors", "nodes")
DEFAULT_SIZE = {"tasks": 1_000_000, "objects": 100_000, "actors": 1_000, "nodes": 50}
SMALL_SIZE = {"tasks": 20_000, "objects": 1_000, "actors": 20, "nodes": 5}
RAY_PYTHON = "/tmp/rayvenv/bin/python"
REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ worker side
def emit(metric: str, value: Any, unit: str = "", check: str = "", met: bool | None = None,
         **detail: Any) -> None:  # fmt: skip
    row = {"metric": metric, "value": value, "unit": unit, "check": check, "met": met, **detail}
    print(RESULT_PREFIX + json.dumps(row), flush=True)


def note(message: str) -> None:
    print(f"[bench_scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rss(pid: int | None = None) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


def shm_used() -> int:
    return shutil.disk_usage("/dev/shm").used if os.path.isdir("/dev/shm") else 0


def node_manager_pid(engine: str) -> int:
    """The node manager of this driver: raylite's (init's child), or Ray's raylet."""
    import psutil

    if engine == "raylite":
        from raylite import api

        assert api._runtime is not None
        return api._runtime.proc.pid
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name() == "raylet" or "raylet" in " ".join(child.cmdline()[:1]):
                return child.pid
        except psutil.Error:
            continue
    raise RuntimeError("no raylet among the driver's children")


def import_engine(engine: str) -> Any:
    if engine == "raylite":
        import raylite as ray
    else:
        import ray
    return ray


def start_engine(ray: Any, engine: str, **kwargs: Any) -> None:
    """A fresh local instance: for Ray, address="local", so a cluster another program
    started on this machine (`ray start`) is never joined."""
    if engine == "ray":
        kwargs["address"] = "local"
    ray.init(include_dashboard=False, **kwargs)


def work_tasks(engine: str, size: int, wave: int, **_: Any) -> None:
    ray = import_engine(engine)
    start_engine(ray, engine, num_cpus=2)

    @ray.remote
    def noop() -> None:
        return None

    ray.get([noop.remote() for _ in range(200)])  # start the pool
    nm = node_manager_pid(engine)
    window = min(100_000, max(wave, size // 10))
    marks: list[tuple[int, float]] = []
    trend: list[tuple[int, float, float]] = []
    first: tuple[int, int] | None = None
    # raylite's node manager keeps the last max_task_events task records (as Ray's GCS
    # keeps 100,000): its RSS grows until that table is full, then stays flat.
    table = 0
    if engine == "raylite":
        from raylite.config import CONFIG

        table = CONFIG.max_task_events
    full: int | None = None
    done = 0
    start = time.perf_counter()
    waves = 0
    while done < size:
        n = min(wave, size - done)
        ray.get([noop.remote() for _ in range(n)])
        done += n
        waves += 1
        marks.append((done, time.perf_counter()))
        if first is None:
            gc.collect()
            first = (rss(), rss(nm))
        if table and full is None and done >= table + wave:
            full = rss(nm)
        if waves % 10 == 0:
            trend.append((done, rss() / MB, rss(nm) / MB))
            note(f"{done} tasks, driver {trend[-1][1]:.0f} MB, node {trend[-1][2]:.0f} MB")
    gc.collect()
    end = (rss(), rss(nm))
    assert first is not None
    # Rate of the first window: from the start to the first mark at >= window tasks;
    # of the last: from the last mark at <= size - window to the end.
    t_first = next(t for d, t in marks if d >= window)
    d_first = next(d for d, t in marks if d >= window)
    before = [(d, t) for d, t in marks if d <= size - window] or [(0, start)]
    d_last, t_last = before[-1]
    rate_first = d_first / (t_first - start)
    rate_last = (size - d_last) / (marks[-1][1] - t_last)
    for who, a, b in (("driver", first[0], end[0]), ("node_manager", first[1], end[1])):
        growth = (b - a) / MB
        emit(f"{who}_rss_after_first_wave", round(a / MB, 1), "MB", tasks=marks[0][0])
        emit(f"{who}_rss_at_end", round(b / MB, 1), "MB", tasks=size)
        emit(f"{who}_rss_growth", round(growth, 1), "MB", "<= 50 MB", growth <= 50)
    if full is not None:
        growth = (end[1] - full) / MB
        emit("node_manager_rss_growth_once_task_table_full", round(growth, 1), "MB",
             "<= 50 MB", growth <= 50, since_tasks=table + wave,
             why=f"the node keeps the last {table} task records (~0.2 KB each)")  # fmt: skip
    emit("rate_first_window", round(rate_first), "tasks/s", window=d_first)
    emit("rate_last_window", round(rate_last), "tasks/s", window=size - d_last)
    ratio = rate_last / rate_first
    emit("rate_last_over_first", round(ratio, 3), "", ">= 0.8", ratio >= 0.8)
    emit("rss_trend", trend, "(tasks, driver MB, node manager MB)")
    ray.shutdown()


def store_capacity(ray: Any, engine: str) -> int:
    if engine == "raylite":
        from raylite.util.state import store_stats

        return int(store_stats()["capacity_bytes"])
    return int(ray.cluster_resources()["object_store_memory"])


def store_bytes(engine: str) -> int:
    """Memory the store's files hold: raylite's store directory (blocks allocated), or
    for Ray all of /dev/shm (machine-wide: other programs' use counts too)."""
    if engine != "raylite":
        return shm_used()
    from raylite.util.state import store_stats

    total = 0
    for root, _, files in os.walk(store_stats()["store_dir"]):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total


def store_objects(engine: str) -> int | None:
    if engine != "raylite":
        return None
    from raylite.util.state import store_stats

    return int(store_stats()["num_objects"])


def work_objects(engine: str, size: int, **_: Any) -> None:
    import numpy as np

    ray = import_engine(engine)
    start_engine(ray, engine, num_cpus=2)
    nm = node_manager_pid(engine)
    gc.collect()
    base = {"driver": rss(), "node_manager": rss(nm), "store": store_bytes(engine)}
    n_big = min(size, int(store_capacity(ray, engine) * 0.8) // MB)
    note(f"{size} small objects and {n_big} objects of 1 MB")
    t = time.perf_counter()
    small = [ray.put(i) for i in range(size)]
    small_s = time.perf_counter() - t
    block = np.ones(MB, dtype=np.uint8)
    t = time.perf_counter()
    big = [ray.put(block) for _ in range(n_big)]
    big_s = time.perf_counter() - t
    assert ray.get(small[-1]) == size - 1
    if big:
        assert int(ray.get(big[-1])[0]) == 1
    peak = {"driver": rss(), "node_manager": rss(nm), "store": store_bytes(engine)}
    emit("small_objects", size, "objects", put_per_s=round(size / small_s))
    emit("objects_1mb", n_big, "objects", put_per_s=round(n_big / big_s) if n_big else None,
         why="as many as fit in 80% of the store")  # fmt: skip
    del small, big
    gc.collect()
    # Frees are sent as the refs go: wait until the store is empty (raylite) or the
    # shared memory is back near its baseline (Ray), at most 60 s.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = store_objects(engine)
        if (left == 0) if left is not None else store_bytes(engine) - base["store"] < 50 * MB:
            break
        time.sleep(0.2)
    time.sleep(1.0)  # let the node manager's frees of the last segments land
    gc.collect()
    after = {"driver": rss(), "node_manager": rss(nm), "store": store_bytes(engine)}
    for key in ("driver", "node_manager", "store"):
        back = (after[key] - base[key]) / MB
        emit(f"{key}_baseline", round(base[key] / MB, 1), "MB")
        emit(f"{key}_peak", round(peak[key] / MB, 1), "MB")
        emit(f"{key}_after_free_over_baseline", round(back, 1), "MB", "<= 50 MB", back <= 50)
    left = store_objects(engine)
    if left is not None:
        emit("store_objects_after_free", left, "objects", "== 0", left == 0)
    ray.shutdown()


def memory_low() -> str:
    import psutil

    vm = psutil.virtual_memory()
    if vm.available < 2 * GIB or vm.available < vm.total * 0.10:
        return f"available memory {vm.available / GIB:.1f} GiB of {vm.total / GIB:.1f} GiB"
    return ""


def work_actors(engine: str, size: int, **_: Any) -> None:
    import psutil

    ray = import_engine(engine)
    kwargs: dict[str, Any] = {"num_cpus": 2}
    if engine == "raylite":
        kwargs["_system_config"] = {"max_workers": size + 16}
    start_engine(ray, engine, **kwargs)

    @ray.remote(num_cpus=0)
    class Actor:
        def ping(self) -> int:
            return os.getpid()

    nm = node_manager_pid(engine)
    actors: list[Any] = []
    pids: list[int] = []
    stopped = ""
    batch = 50
    start = time.perf_counter()
    while len(actors) < size:
        stopped = memory_low()
        if stopped:
            note(f"stopping at {len(actors)} actors: {stopped}")
            break
        new = [Actor.remote() for _ in range(min(batch, size - len(actors)))]
        pids += ray.get([a.ping.remote() for a in new], timeout=600)
        actors += new
        if len(actors) % 200 == 0:
            note(f"{len(actors)} actors")
    created_s = time.perf_counter() - start
    n = len(actors)
    emit("actors_created", n, "actors", stopped_early=stopped or None)
    emit("creation_rate", round(n / created_s, 1), "actors/s", seconds=round(created_s, 2))
    rows = []
    for pid in pids:
        try:
            m = psutil.Process(pid).memory_full_info()
            rows.append((m.rss, m.pss, m.uss))
        except psutil.Error:
            continue
    for i, name in enumerate(("rss", "pss", "uss")):
        emit(f"per_actor_{name}_median", round(statistics.median(r[i] for r in rows) / MIB, 1),
             "MiB", sampled=len(rows))  # fmt: skip
    emit("actors_pss_total", round(sum(r[1] for r in rows) / MIB), "MiB")
    t = time.perf_counter()
    again = ray.get([a.ping.remote() for a in actors], timeout=600)
    call_s = time.perf_counter() - t
    emit("one_call_each", round(n / call_s, 1), "calls/s", seconds=round(call_s, 3),
         all_answered=again == pids)  # fmt: skip
    me, node = psutil.Process(), psutil.Process(nm)
    emit("driver_rss", round(me.memory_info().rss / MB, 1), "MB", open_fds=me.num_fds())
    emit("node_manager_rss", round(node.memory_info().rss / MB, 1), "MB", open_fds=node.num_fds())
    ray.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def head_socket_bytes(port: int) -> tuple[int, int, int] | None:
    """(bytes the head received, bytes it sent, connections) over its established TCP
    connections on `port`: the kernel's per-socket counters (tcp_info, through `ss`).
    None when `ss` is missing."""
    if shutil.which("ss") is None:
        return None
    out = subprocess.run(
        ["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
        capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    received = sum(int(n) for n in re.findall(r"bytes_received:(\d+)", out))
    sent = sum(int(n) for n in re.findall(r"bytes_acked:(\d+)", out))
    return received, sent, len(re.findall(r"bytes_acked:", out))


def cpu_s(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def work_nodes(engine: str, size: int, tasks: int, idle_s: float, **_: Any) -> None:
    if engine != "raylite":
        raise SystemExit("the nodes section runs raylite only")
    import psutil

    # Every node of this run lives under a private TMPDIR: `raylite stop` with it stops
    # these nodes only, never another cluster of this machine.
    private = tempfile.mkdtemp(prefix="bench_scale_")
    os.environ["TMPDIR"] = private
    tempfile.tempdir = None
    env = {**os.environ, "RAYLITE_TOKEN": "bench scale token"}
    cli = [sys.executable, "-m", "raylite.cli"]
    port = free_port()
    joins: list[float] = []
    ray = import_engine(engine)
    try:
        t = time.perf_counter()
        subprocess.run(
            [*cli, "start", "--head", "--port", str(port), "--num-cpus", "1",
             "--include-dashboard", "false"],
            env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        head_start_s = time.perf_counter() - t
        for i in range(size - 1):
            if memory_low():
                note(f"stopping at {i + 1} nodes: {memory_low()}")
                break
            t = time.perf_counter()
            subprocess.run(
                [*cli, "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1"],
                env=env, check=True, capture_output=True, timeout=120,
            )  # fmt: skip
            joins.append(time.perf_counter() - t)
            if (i + 2) % 10 == 0:
                note(f"{i + 2} nodes")
        from raylite.node import local

        head_pid = next(int(n["pid"]) for n in local.local_nodes() if n.get("head_only"))
        ray.init(address=f"127.0.0.1:{port}")
        nodes = 1 + len(joins)
        alive = len([n for n in ray.nodes() if n["Alive"]])
        emit("nodes_alive", alive, "nodes", f"== {nodes}", alive == nodes)
        emit("head_start", round(head_start_s, 2), "s")
        if joins:
            emit("join_median", round(statistics.median(joins), 3), "s",
                 max=round(max(joins), 3), last=round(joins[-1], 3),
                 note="wall time of `raylite start --address` (CLI start-up included)")  # fmt: skip
        # Idle: what the head spends on heartbeats alone.
        gc.collect()
        io0, cpu0, t0 = head_socket_bytes(port), cpu_s(head_pid), time.monotonic()
        time.sleep(idle_s)
        io1, cpu1, t1 = head_socket_bytes(port), cpu_s(head_pid), time.monotonic()
        secs = t1 - t0
        emit("head_idle_cpu", round((cpu1 - cpu0) / secs * 100, 2), "% of a core")
        if io0 is None or io1 is None:
            emit("heartbeat_in_per_node", None, "bytes/s", why="no `ss` here")
        else:
            how = "kernel byte counters of the head port's TCP connections (ss -ti) / nodes"
            emit("heartbeat_in_per_node", round((io1[0] - io0[0]) / secs / nodes), "bytes/s",
                 how=how, connections=io1[2])  # fmt: skip
            emit("heartbeat_out_per_node", round((io1[1] - io0[1]) / secs / nodes), "bytes/s",
                 how=how + " (each reply carries the whole cluster view)")  # fmt: skip
        emit("head_rss_idle", round(rss(head_pid) / MB, 1), "MB")

        @ray.remote(num_cpus=1)
        def where() -> str:
            return ray.get_runtime_context().get_node_id()

        cpu0, t0 = cpu_s(head_pid), time.perf_counter()
        ran = ray.get([where.options(scheduling_strategy="SPREAD").remote() for _ in range(tasks)])
        secs = time.perf_counter() - t0
        # The head's share includes the task records the nodes send it (every
        # event_flush_s): count until all of them have landed (at most 60 s more).
        from raylite.util.state import summarize_tasks

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = summarize_tasks()["cluster"]["summary"]
            if sum(r["state_counts"].get("FINISHED", 0) for r in rows.values()) >= tasks:
                break
            time.sleep(0.5)
        cpu1 = cpu_s(head_pid)
        emit("spread_tasks", tasks, "tasks", rate=round(tasks / secs, 1), seconds=round(secs, 2))
        used = len(set(ran))
        emit("spread_nodes_used", used, "nodes", f"== {nodes}", used == nodes)
        emit("head_cpu_for_tasks", round(cpu1 - cpu0, 3), "s",
             how="from the first submit until the head holds every task's record")  # fmt: skip
        emit("head_rss_after_tasks", round(rss(head_pid) / MB, 1), "MB")
        nm_rss = [rss(int(n["pid"])) for n in local.local_nodes() if not n.get("head_only")]
        emit("node_manager_rss_median", round(statistics.median(nm_rss) / MB, 1), "MB")
        ray.shutdown()
    finally:
        with_ray = ray.is_initialized()
        if with_ray:
            ray.shutdown()
        subprocess.run([*cli, "stop"], env=env, capture_output=True, timeout=300)
        left = [
            p.pid
            for p in psutil.process_iter(["cmdline"])
            if any(private in arg for arg in (p.info["cmdline"] or []))
        ]
        emit("processes_left_after_stop", len(left), "processes", "== 0", not left)
        shutil.rmtree(private, ignore_errors=True)


WORKERS = {"tasks": work_tasks, "objects": work_objects, "actors": work_actors,
           "nodes": work_nodes}  # fmt: skip


# -------------------------------------------------------------- orchestrator side
def python_for(engine: str) -> str | None:
    if engine == "raylite":
        return sys.executable
    probe = "import ray"
    for python in (sys.executable, RAY_PYTHON):
        if (
            os.path.exists(python)
            and subprocess.run([python, "-c", probe], capture_output=True, timeout=120).returncode
            == 0
        ):
            return python
    return None


def run_section(section: str, engine: str, args: argparse.Namespace, size: int) -> int:
    python = python_for(engine)
    if python is None:
        print(json.dumps({"section": section, "engine": engine, "skipped": "not found"}))
        return 0
    cmd = [python, __file__, "--worker", section, "--engine", engine, "--size", str(size),
           "--wave", str(args.wave), "--tasks", str(args.tasks), "--idle-s", str(args.idle_s)]  # fmt: skip
    env = dict(os.environ)
    if engine == "raylite":
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p
        )
    note(f"{section} on {engine}, size {size}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(RESULT_PREFIX):
            row = json.loads(line[len(RESULT_PREFIX) :])
            print(json.dumps({"section": section, "engine": engine, "size": size, **row}),
                  flush=True)  # fmt: skip
    code = proc.wait()
    if code:
        print(json.dumps({"section": section, "engine": engine, "failed": code}), flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sections", nargs="*", help=", ".join(SECTIONS))
    parser.add_argument("--size", type=int, default=None, help="the sections' size")
    parser.add_argument("--small", action="store_true", help="every size small (a smoke run)")
    parser.add_argument("--wave", type=int, default=10_000, help="tasks: per wave")
    parser.add_argument("--tasks", type=int, default=None, help="nodes: SPREAD tasks")
    parser.add_argument("--idle-s", type=float, default=10.0, help="nodes: idle interval")
    parser.add_argument("--engine", default="raylite", help="raylite, ray or raylite,ray")
    parser.add_argument("--worker", choices=SECTIONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tasks is None:
        args.tasks = 1_000 if args.small else 10_000
    if args.worker:
        WORKERS[args.worker](
            engine=args.engine, size=args.size, wave=args.wave, tasks=args.tasks,
            idle_s=args.idle_s,
        )  # fmt: skip
        return 0
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}: pick from {', '.join(SECTIONS)}")
    sections = args.sections or (list(SECTIONS) if args.small else [])
    if not sections:
        parser.error("name the sections to run (tasks, objects, actors, nodes) or --small")
    failed = 0
    for section in sections:
        size = args.size or (SMALL_SIZE if args.small else DEFAULT_SIZE)[section]
        for engine in args.engine.split(","):
            if section == "nodes" and engine != "raylite":
                continue
            failed |= run_section(section, engine, args, size)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
