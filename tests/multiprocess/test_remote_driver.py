"""A driver on a machine with no node: init(address="raylite://HOST:PORT") over TCP.

One machine stands in for two: the cluster runs under one TMPDIR and the driver under
another, so the driver finds no node of its own (node/local.py reads the nodes of this
host from TMPDIR) and attaches to the cluster's over TCP with the token. Its code lives
in a directory the workers cannot import from.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import time

import pytest

from tests._engine import AGAINST_RAY
from tests._head import blocking_head

pytestmark = [
    pytest.mark.skipif(AGAINST_RAY, reason="raylite's own cluster start and token"),
    pytest.mark.timeout(180),
]

TOKEN = "remote driver test token"

MYLIB = """
def double(x):
    return 2 * x


class Box:
    def __init__(self, v):
        self.v = v
"""

LATER = """
class Point:
    def __init__(self, x):
        self.x = x
"""

DRIVER = """
import json, sys
import numpy as np
import raylite as ray
import mylib  # beside this script: not importable on the cluster

def out(**kw):
    print("OUT " + json.dumps(kw), flush=True)

ctx = ray.init(address=sys.argv[1])

@ray.remote
def square(x):
    return x * x

out(tasks=ray.get([square.remote(i) for i in range(20)]))

@ray.remote
def nested(n):
    return sum(ray.get([square.remote(i) for i in range(n)]))

out(nested=ray.get(nested.remote(5)))

@ray.remote
class Counter:
    def __init__(self, start):
        self.n = start
    def inc(self):
        self.n += 1
        return self.n

c = Counter.options(name="counter", namespace="remote").remote(10)
out(actor=ray.get([c.inc.remote() for _ in range(3)]))
same = ray.get_actor("counter", namespace="remote")
out(named=ray.get(same.inc.remote()))

arr = np.arange(50_000_000 // 8, dtype=np.float64)  # 50 MB
ref = ray.put(arr)
out(put=ref.hex())
sys.stdin.readline()  # the test looks for the segment in the node's store
back = ray.get(ref)
out(get_equal=bool((back == arr).all()), readonly=not back.flags.writeable)

@ray.remote
def total(a):
    return float(a.sum())

out(sum_ok=ray.get(total.remote(ref)) == float(arr.sum()))

@ray.remote
def make(n):
    import numpy as np
    return np.full(n, 3, dtype=np.uint8)

big = ray.get(make.remote(20_000_000))
out(result_len=len(big), result_sum=int(big.sum(dtype=np.int64)))

@ray.remote
def use_lib(x):
    return mylib.double(x), mylib.Box(x).v

out(lib=ray.get(use_lib.remote(21)))

import later_lib  # after init, and only in data: its class travels by value too

@ray.remote
def x_of(point):
    return point.x

out(later=ray.get(x_of.remote(ray.put(later_lib.Point(7)))))

@ray.remote
def import_lib():
    import mylib  # noqa: F401

try:
    ray.get(import_lib.remote())
    out(importable=True)
except ModuleNotFoundError:
    out(importable=False)

@ray.remote
def boom():
    raise ValueError("kaboom")

try:
    ray.get(boom.remote())
except ValueError as exc:
    out(error=type(exc).__name__, text=str(exc))
ray.shutdown()
out(done=True)
"""

QUICK = """
import sys
import raylite as ray
ray.init(address=sys.argv[1], **({"_token": sys.argv[2]} if len(sys.argv) > 2 else {}))

@ray.remote
def one():
    return 1

print("RAN", ray.get(one.remote()), flush=True)
"""


@pytest.fixture
def cluster(tmp_path):
    """`raylite start --head --block` with a token, under a TMPDIR of its own."""
    head_tmp = tmp_path / "cluster"
    head_tmp.mkdir()
    env = {**os.environ, "RAYLITE_TOKEN": TOKEN, "TMPDIR": str(head_tmp)}
    with blocking_head(env, num_cpus=2, cwd=head_tmp) as address:
        yield address, head_tmp


def _driver_env(tmp_path: pathlib.Path, token: str | None) -> dict[str, str]:
    driver_tmp = tmp_path / "driver-tmp"
    driver_tmp.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(driver_tmp)}
    env.pop("RAYLITE_TOKEN", None)
    env.pop("RAYLITE_ADDRESS", None)
    if token is not None:
        env["RAYLITE_TOKEN"] = token
    return env


def _node_store(head_tmp: pathlib.Path) -> pathlib.Path:
    for path in (head_tmp / "raylite" / "nodes").glob("*.json"):
        info = json.loads(path.read_text())
        if not info.get("head_only"):
            return pathlib.Path(info["store_dir"])
    raise AssertionError("the cluster's node wrote no node file")


def test_a_driver_without_a_node_runs_everything_over_tcp(cluster, tmp_path):
    address, head_tmp = cluster
    code = tmp_path / "driver-code"
    code.mkdir()
    (code / "mylib.py").write_text(MYLIB)
    (code / "later_lib.py").write_text(LATER)
    (code / "driver.py").write_text(DRIVER)
    env = _driver_env(tmp_path, TOKEN)
    driver = subprocess.Popen(
        [sys.executable, "driver.py", f"raylite://{address}"],
        cwd=code,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert driver.stdout is not None
    assert driver.stdin is not None
    got: dict[str, object] = {}
    try:
        for line in driver.stdout:
            if not line.startswith("OUT "):
                continue
            got.update(json.loads(line[4:]))
            if "put" in got and "stored" not in got:
                # The 50 MB value was streamed into the node's store (another TMPDIR's).
                got["stored"] = (_node_store(head_tmp) / str(got["put"])).exists()
                driver.stdin.write("\n")
                driver.stdin.flush()
        assert driver.wait(60) == 0
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(10)
    assert not list((tmp_path / "driver-tmp").glob("raylite/nodes/*.json"))  # no node here
    # The driver is gone: the node let go of what it owned (no leak in the store).
    segment = _node_store(head_tmp) / str(got["put"])
    deadline = time.monotonic() + 15
    while segment.exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the node frees it when it sees the connection close
    assert not segment.exists()
    assert got["tasks"] == [i * i for i in range(20)]
    assert got["nested"] == 30
    assert got["actor"] == [11, 12, 13]
    assert got["named"] == 14
    assert got["stored"] is True
    assert got["get_equal"] is True
    assert got["readonly"] is True
    assert got["sum_ok"] is True
    assert (got["result_len"], got["result_sum"]) == (20_000_000, 60_000_000)
    assert got["lib"] == [42, 21]
    assert got["later"] == 7
    assert got["importable"] is False  # the worker ran mylib's code it could not import
    assert got["error"] == "RayTaskError(ValueError)"  # caught as ValueError, as Ray
    assert "kaboom" in str(got["text"])
    assert "Traceback" in str(got["text"])
    assert "boom" in str(got["text"])  # the remote traceback names the task's function
    assert got["done"] is True


def test_a_wrong_or_missing_token_is_refused_and_token_works(cluster, tmp_path):
    address, _ = cluster
    quick = tmp_path / "quick.py"
    quick.write_text(textwrap.dedent(QUICK))
    wrong = subprocess.run(
        [sys.executable, str(quick), f"raylite://{address}"],
        env=_driver_env(tmp_path, "not the token"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode != 0
    assert f"the cluster at {address} refused the token; check RAYLITE_TOKEN" in wrong.stderr

    missing = subprocess.run(
        [sys.executable, str(quick), f"ray://{address}"],
        env=_driver_env(tmp_path, None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0
    assert "needs the cluster token: set RAYLITE_TOKEN" in missing.stderr

    given = subprocess.run(  # Ray Client's scheme, the token as an argument
        [sys.executable, str(quick), f"ray://{address}", TOKEN],
        env=_driver_env(tmp_path, None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert given.returncode == 0, given.stderr
    assert "RAN 1" in given.stdout
