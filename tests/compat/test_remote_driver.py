"""A driver that connects with ray://HOST:PORT (Ray Client's scheme) behaves as a local
driver: tasks, an actor found by name, a large put and get, a task's error with its
remote traceback, and shutdown.

Each test starts a cluster with the engine's own command line (`ray start --head` with
its client server, `raylite start --head` with a token) and runs the driver as a
process of its own. raylite's driver runs under another TMPDIR, so it finds no node of
the cluster on "its machine" and connects over TCP with RAYLITE_TOKEN; Ray's goes
through its client server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests._engine import AGAINST_RAY, ENGINE_NAME
from tests._head import blocking_head, free_port, run_driver

pytestmark = pytest.mark.timeout(300)

TOKEN = "compat remote driver token"

DRIVER = """
import json, sys, time
import numpy as np
import {engine} as ray

for attempt in range(100):  # the head may not listen yet: the engines wait differently
    try:
        ray.init(address=sys.argv[1], namespace="remote")
        break
    except ConnectionError:
        time.sleep(0.2)
out = {{"initialized": ray.is_initialized()}}


@ray.remote
def square(x):
    return x * x


@ray.remote
class Counter:
    def __init__(self):
        self.n = 0

    def inc(self):
        self.n += 1
        return self.n


@ray.remote
def total(a):
    return float(a.sum())


@ray.remote
def fail():
    raise ValueError("bad value in a task")


out["tasks"] = ray.get([square.remote(i) for i in range(10)])
Counter.options(name="counter").remote()
counter = ray.get_actor("counter")
out["actor"] = ray.get([counter.inc.remote() for _ in range(3)])
arr = np.arange(3_000_000, dtype=np.float64)  # 24 MB
ref = ray.put(arr)
out["same"] = bool((ray.get(ref) == arr).all())
out["sum"] = ray.get(total.remote(ref)) == float(arr.sum())
try:
    ray.get(fail.remote())
except ValueError as exc:
    out["error"] = str(exc)
ray.shutdown()
out["after"] = ray.is_initialized()
print("OUT " + json.dumps(out), flush=True)
"""


@pytest.fixture
def cluster(tmp_path):
    """The engine's head, and (address, driver environment) for ray:// drivers."""
    env = dict(os.environ)
    driver_env = dict(os.environ)
    if not AGAINST_RAY:  # raylite's head, stopped and checked gone after (tests/_head.py)
        (tmp_path / "cluster").mkdir()
        (tmp_path / "driver").mkdir()
        env.update(RAYLITE_TOKEN=TOKEN, TMPDIR=str(tmp_path / "cluster"))
        driver_env.update(RAYLITE_TOKEN=TOKEN, TMPDIR=str(tmp_path / "driver"))
        with blocking_head(env, num_cpus=2) as address:
            yield f"ray://{address}", driver_env
        return
    client_port = free_port()
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block"]
    cmd += ["--include-dashboard", "false", "--disable-usage-stats"]
    cmd += ["--ray-client-server-port", str(client_port)]
    cmd += ["--port", str(free_port()), "--num-cpus", "2"]
    env["RAY_AUTH_MODE"] = "disabled"  # a token file in ~/.ray would turn it on
    driver_env["RAY_AUTH_MODE"] = "disabled"
    address = f"ray://127.0.0.1:{client_port}"
    head = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        yield address, driver_env
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(10)


def test_a_ray_client_address_runs_tasks_actors_objects_and_errors(cluster):
    address, env = cluster
    prog = textwrap.dedent(DRIVER).format(engine=ENGINE_NAME)
    stdout = run_driver(prog, address, env=env, timeout=240)
    lines = [line for line in stdout.splitlines() if line.startswith("OUT ")]
    assert lines, stdout
    out = json.loads(lines[-1][4:])
    assert out["initialized"] is True
    assert out["tasks"] == [i * i for i in range(10)]
    assert out["actor"] == [1, 2, 3]
    assert out["same"] is True
    assert out["sum"] is True
    assert "bad value in a task" in out["error"]
    assert ", in fail" in out["error"]  # the remote traceback's frame
    assert out["after"] is False
