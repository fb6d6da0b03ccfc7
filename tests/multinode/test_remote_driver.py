"""A driver on a host with no raylite node (h4) connects with raylite://HOST:PORT and
the cluster token: the seeds' three workloads (examples/demo.py, unchanged: it reads
RAYLITE_ADDRESS), work on each node, objects both ways between h4 and the nodes, code
from a module only h4 has, and a wrong token refused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests._engine import raylite_only
from tests.multinode.conftest import ENV, NET, ROOT

pytestmark = [pytest.mark.timeout(600), pytest.mark.testnet_hosts(4), raylite_only]

ADDRESS = "raylite://10.78.0.1:6380"

DRIVER = """
import tempfile
import numpy as np

code = tempfile.mkdtemp()  # a module only this host has, imported by the driver
with open(os.path.join(code, "h4_only.py"), "w") as f:
    f.write("def triple(x):\\n    return 3 * x\\n")
os.chdir(code)
sys.path.insert(0, code)
import h4_only

ray.init(address="@ADDRESS@")

@ray.remote
def where(x):
    import socket
    return socket.gethostname(), ray.get_runtime_context().get_node_id(), h4_only.triple(x)

spots = ray.get([where.options(resources={h: 1}).remote(i) for i, h in enumerate(["h1", "h2", "h3"])])

@ray.remote(resources={"h3": 1})
class Keeper:
    def __init__(self):
        self.items = []
    def add(self, arr):
        self.items.append(float(arr.sum()))
        return len(self.items)
    def sums(self):
        return self.items

keeper = Keeper.options(name="keeper").remote()
arr = np.arange(50_000_000 // 8, dtype=np.float64)
ref = ray.put(arr)  # streamed from h4 into h1's store, pulled by h3
added = ray.get(ray.get_actor("keeper").add.remote(ref))

@ray.remote(resources={"h2": 1})
def make(n):
    return np.full(n, 7, dtype=np.uint8)

big = ray.get(make.remote(30_000_000))  # stored on h2, pulled by h4 from h2
back = ray.get(ref)

@ray.remote(resources={"h2": 1})
def boom():
    raise KeyError("from h2")

try:
    ray.get(boom.remote())
    error = "none"
except KeyError as exc:
    error = str(exc)
print(json.dumps({
    "values": [s[2] for s in spots],
    "nodes": len({s[1] for s in spots}),
    "added": added,
    "sums": ray.get(keeper.sums.remote()) == [float(arr.sum())],
    "big": [len(big), int(big.sum(dtype=np.int64))],
    "back": bool((back == arr).all()),
    "error": error,
}))
""".replace("@ADDRESS@", ADDRESS)


def _in_h4(*argv: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        NET.command("h4", *argv),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_a_driver_on_a_host_without_a_node(cluster):
    cluster.start_node("h1", head=True)
    cluster.start_node("h2")
    cluster.start_node("h3")
    # The seeds' workloads, from h4: RAYLITE_ADDRESS makes demo.py's init() connect.
    env = {**ENV, "RAYLITE_ADDRESS": ADDRESS}
    demo = _in_h4(
        sys.executable, os.path.join(ROOT, "examples", "demo.py"), "--quick", env=env, timeout=400
    )
    assert demo.returncode == 0, f"{demo.stdout}\n{demo.stderr}"
    for workload in ("fib", "pi", "img"):
        assert any(line.startswith(workload) for line in demo.stdout.splitlines()), demo.stdout
    assert "(sample_task_distribute pid=" in demo.stdout  # workers' output reached h4

    out = cluster.driver("h4", DRIVER, timeout=240)
    assert out["values"] == [0, 3, 6]  # h4_only's code ran on h1, h2 and h3
    assert out["nodes"] == 3
    assert out["added"] == 1
    assert out["sums"] is True
    assert out["big"] == [30_000_000, 210_000_000]
    assert out["back"] is True
    assert "from h2" in out["error"]

    wrong = _in_h4(
        sys.executable,
        "-c",
        f"import raylite as ray; ray.init(address={ADDRESS!r})",
        env={**ENV, "RAYLITE_TOKEN": "not the cluster's"},
        timeout=120,
    )
    assert wrong.returncode != 0
    assert "the cluster at 10.78.0.1:6380 refused the token; check RAYLITE_TOKEN" in wrong.stderr
