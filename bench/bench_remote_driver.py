#!/usr/bin/env python3
"""Remote driver speed: the same workloads from a local driver and from a remote one,
against the same cluster in the same run (and, with --engine both, Ray's local driver
and Ray Client beside them).

    bench_remote_driver.py (orchestrator)
      starts a head with the engine's CLI (`raylite start --head --block` with a token
      under TMPDIR A; `ray start --head --block` with its client server), then, one
      after the other, never two at once:
      |--> <python> bench_remote_driver.py --worker local  (raylite: TMPDIR A, HOST:PORT,
      |                                                     the node's Unix socket)
      '--> <python> bench_remote_driver.py --worker remote (raylite: TMPDIR B, no node
                                                            there: raylite://HOST:PORT, TCP;
                                                            Ray: ray://HOST:CLIENT_PORT)

Workloads (each after a warm-up):

    task_round_trip    get(f.remote()) one after another: median microseconds per call
    actor_round_trip   get(a.m.remote()) one after another: median microseconds per call
    tasks_1000         1000 tasks submitted at once, then one get: seconds
    put_get_50mb       put then get of a 50 MB numpy array: seconds (median)

One JSON line per metric and engine:
    {"metric": ..., "engine": ..., "local": x, "remote": y, "ratio": y / x, "unit": ...}

    python bench/bench_remote_driver.py [--runs 500] [--engine raylite|ray|both]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULT = "@@RESULT "
RAY_PYTHON = "/tmp/rayvenv/bin/python"
SRC = str(Path(__file__).resolve().parent.parent / "src")
TOKEN = "bench remote driver token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker(engine: str, address: str, runs: int) -> None:
    import numpy as np

    ray = __import__(engine)
    for _ in range(150):  # the head may not listen yet
        try:
            ray.init(address=address, logging_level="ERROR")
            break
        except ConnectionError:
            time.sleep(0.2)

    @ray.remote
    def f() -> int:
        return 1

    @ray.remote
    class A:
        def m(self) -> int:
            return 1

    def per_call(call: object, n: int) -> float:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            call()  # type: ignore[operator]
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e6

    per_call(lambda: ray.get(f.remote()), 50)
    out = {"task_round_trip": per_call(lambda: ray.get(f.remote()), runs)}
    a = A.remote()
    per_call(lambda: ray.get(a.m.remote()), 50)
    out["actor_round_trip"] = per_call(lambda: ray.get(a.m.remote()), runs)
    ray.get([f.remote() for _ in range(200)])
    t = time.perf_counter()
    ray.get([f.remote() for _ in range(1000)])
    out["tasks_1000"] = time.perf_counter() - t
    arr = np.arange(50_000_000 // 8, dtype=np.float64)
    timings = []
    for _ in range(5):
        t = time.perf_counter()
        back = ray.get(ray.put(arr))
        timings.append(time.perf_counter() - t)
        assert back.shape == arr.shape
        del back
    out["put_get_50mb"] = statistics.median(timings)
    ray.shutdown()
    print(RESULT + json.dumps(out), flush=True)


def _run(python: str, engine: str, address: str, env: dict[str, str], runs: int) -> dict:
    done = subprocess.run(
        [python, __file__, "--worker", engine, "--address", address, "--runs", str(runs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith(RESULT):
            return dict(json.loads(line[len(RESULT) :]))
    raise SystemExit(f"{engine} driver at {address} failed:\n{done.stdout}\n{done.stderr}")


def bench(engine: str, runs: int) -> None:
    port = _free_port()
    env = {**os.environ}
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        if engine == "ray":
            python = RAY_PYTHON
            client_port = _free_port()
            cmd = [str(Path(python).parent / "ray"), "start", "--head", "--block"]
            cmd += ["--include-dashboard", "false", "--disable-usage-stats"]
            cmd += ["--ray-client-server-port", str(client_port)]
            env["RAY_AUTH_MODE"] = "disabled"
            local_env = remote_env = env
            local, remote = f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}"
        else:
            python = sys.executable
            env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
            env["RAYLITE_TOKEN"] = TOKEN
            cmd = [python, "-m", "raylite.cli", "start", "--head", "--block"]
            cmd += ["--include-dashboard", "false"]
            local_env = {**env, "TMPDIR": a}
            remote_env = {**env, "TMPDIR": b}  # no node of the cluster "on this machine"
            local, remote = f"127.0.0.1:{port}", f"raylite://127.0.0.1:{port}"
        cmd += ["--port", str(port), "--num-cpus", "2"]
        head = subprocess.Popen(
            cmd,
            env=local_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            near = _run(python, engine, local, local_env, runs)
            far = _run(python, engine, remote, remote_env, runs)
        finally:
            head.send_signal(signal.SIGTERM)
            try:
                head.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait(10)
    units = {"tasks_1000": "s", "put_get_50mb": "s"}
    for metric, x in near.items():
        y = far[metric]
        row = {"metric": metric, "engine": engine, "local": round(x, 6), "remote": round(y, 6)}
        row.update(ratio=round(y / x, 3), unit=units.get(metric, "us"))
        print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=("raylite", "ray"))
    parser.add_argument("--address")
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--engine", choices=("raylite", "ray", "both"), default="raylite")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.address, args.runs)
        return
    engines = ("raylite", "ray") if args.engine == "both" else (args.engine,)
    for engine in engines:
        if engine == "ray" and not os.path.exists(RAY_PYTHON):
            print(f"no Ray at {RAY_PYTHON}: skipped", file=sys.stderr)
            continue
        bench(engine, args.runs)


if __name__ == "__main__":
    main()
