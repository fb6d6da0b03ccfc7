#!/usr/bin/env python3
"""Job submission speed of raylite, side by side with Ray: submit to first log line.

Each engine runs in its own subprocess, one after the other:

    bench_jobs.py (orchestrator)
      |--> <raylite python> bench_jobs.py --worker --engine raylite
      '--> <ray python>     bench_jobs.py --worker --engine ray
           each starts a head with its own CLI (`start --head --block`, the dashboard
           on a free port), times jobs through its JobSubmissionClient, stops the head,
           and prints "@@RESULT {json}" lines

Workloads (median of --runs, after one untimed job):

    first_line   submit_job("python -c print(...)") until the first chunk of its
                 output arrives through tail_job_logs: seconds
    to_success   submit_job(the same) until get_job_status is SUCCEEDED (polled every
                 10 ms): seconds
    driver       a job whose entrypoint is a driver (init(), one task, print): submit
                 until its first line: seconds

The orchestrator prints one JSON line per metric:
    {"metric": ..., "raylite": x, "ray": y, "ratio": x / y, "unit": "s"}

    python bench/bench_jobs.py [--runs 5] [--engine raylite|ray|both]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULT = "@@RESULT "
RAY_PYTHON = "/tmp/rayvenv/bin/python"
SRC = str(Path(__file__).resolve().parent.parent / "src")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_head(engine: str) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    port, dash = _free_port(), _free_port()
    env = dict(os.environ)
    py = sys.executable
    if engine == "ray":
        cmd = [str(Path(py).parent / "ray"), "start", "--head", "--block", "--disable-usage-stats"]
        cmd += ["--dashboard-agent-listen-port", str(_free_port())]
        cmd += ["--ray-client-server-port", str(_free_port())]
        env["RAY_AUTH_MODE"] = "disabled"
    else:
        cmd = [py, "-m", "raylite.cli", "start", "--head", "--block"]
    cmd += ["--port", str(port), "--dashboard-port", str(dash), "--num-cpus", "2"]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    return proc, f"http://127.0.0.1:{dash}", env


def worker(engine: str, runs: int) -> None:
    jobs = importlib.import_module(f"{engine}.job_submission")
    proc, url, _ = _start_head(engine)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                client = jobs.JobSubmissionClient(url)
                break
            except (ConnectionError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        py = sys.executable
        hello = f"{py} -c \"print('first line', flush=True)\""
        driver = (
            f'{py} -c "import {engine} as r; r.init(); f = r.remote(lambda: 1); '
            "print('first line', r.get(f.remote()), flush=True)\""
        )

        async def first_chunk(entrypoint: str) -> float:
            t0 = time.perf_counter()
            sid = client.submit_job(entrypoint=entrypoint)
            async for chunk in client.tail_job_logs(sid):
                if "first line" in chunk:
                    return time.perf_counter() - t0
            raise AssertionError(f"no first line: {client.get_job_logs(sid)!r}")

        def to_success() -> float:
            t0 = time.perf_counter()
            sid = client.submit_job(entrypoint=hello)
            while True:
                status = client.get_job_status(sid)
                if status.is_terminal():
                    assert status == jobs.JobStatus.SUCCEEDED, client.get_job_logs(sid)
                    return time.perf_counter() - t0
                time.sleep(0.01)

        asyncio.run(first_chunk(hello))  # warm: the first job pays one-time costs
        asyncio.run(first_chunk(driver))
        results = {
            "first_line": [asyncio.run(first_chunk(hello)) for _ in range(runs)],
            "to_success": [to_success() for _ in range(runs)],
            "driver": [asyncio.run(first_chunk(driver)) for _ in range(runs)],
        }
        for metric, values in results.items():
            print(RESULT + json.dumps({"metric": metric, "value": statistics.median(values)}))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--engine", default="both")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ray-python", default=RAY_PYTHON)
    args = parser.parse_args()
    if args.worker:
        worker(args.engine, args.runs)
        return
    engines = ("raylite", "ray") if args.engine == "both" else (args.engine,)
    found: dict[str, dict[str, float]] = {}
    for engine in engines:
        py = args.ray_python if engine == "ray" else sys.executable
        if engine == "ray" and not os.path.exists(py):
            print(f"(no Ray at {py}: raylite only)", file=sys.stderr)
            continue
        env = dict(os.environ)
        if engine == "raylite":
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, env.get("PYTHONPATH")]))
        cmd = [py, __file__, "--worker", "--engine", engine, "--runs", str(args.runs)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(f"{engine} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
            continue
        for line in out.stdout.splitlines():
            if line.startswith(RESULT):
                r = json.loads(line[len(RESULT) :])
                found.setdefault(r["metric"], {})[engine] = r["value"]
    for metric, values in found.items():
        a, b = values.get("raylite"), values.get("ray")
        ratio = a / b if a is not None and b else None
        row = {"metric": metric, "raylite": a, "ray": b, "ratio": ratio, "unit": "s"}
        print(json.dumps(row))


if __name__ == "__main__":
    main()
