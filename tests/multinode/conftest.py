"""A 3-host raylite cluster on one machine (tests/netns.py), for multi-node tests.

Each host hK is a network namespace with address 10.78.0.K; the head runs in h1, and
h2, h3 join it. Drivers run inside a host (`Cluster.driver`), as a user's program
would on that machine; tests read what they print. Skips where testnet is unusable
(not root, no `ip`, no namespaces), saying why.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap
import time
from typing import Any

import psutil
import pytest

from tests.netns import Testnet

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NET = Testnet("rlmn", "10.78.0", grace=1.0)
ENV = {**os.environ, **NET.env()}  # a process in a host finds the testnet (tests/_cluster.py)
# A cluster token set by the operator (a restarted head must keep the cluster's token).
ENV["RAYLITE_TOKEN"] = "raylite multinode tests"
PORT = 6380
NODE_TIMEOUT_S = 3.0


def in_host(
    host: str, *argv: str, timeout: float = 60, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """argv run in `host` to its end, with the tests' environment."""
    return NET.run(host, *argv, env=kw.pop("env", ENV), timeout=timeout, **kw)


def raylite_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "raylite.cli", *args]


class Cluster:
    def __init__(self, hosts: int = 3) -> None:
        self.hosts = [f"h{k}" for k in range(1, hosts + 1)]
        self.head = f"10.78.0.1:{PORT}"

    def ip(self, host: str) -> str:
        return f"10.78.0.{host[1:]}"

    def start_node(self, host: str, *extra: str, head: bool = False, storage: str = "") -> str:
        args = ["start", "--node-ip-address", self.ip(host), "--num-cpus", "2"]
        args += ["--resources", json.dumps({host: 1}), "--node-timeout-s", str(NODE_TIMEOUT_S)]
        if head:
            args += ["--head", "--port", str(PORT)]
            if storage:
                args += ["--storage", storage]
        else:
            args += ["--address", self.head]
        r = in_host(host, *raylite_cmd(*args, *extra), timeout=60)
        assert r.returncode == 0, f"raylite start in {host} failed:\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def driver(self, host: str, code: str, timeout: float = 90) -> dict:
        """Run a driver program in `host`; it prints one JSON line last, which is returned."""
        prog = "import json, os, sys, time\nimport raylite as ray\n" + textwrap.dedent(code)
        r = in_host(host, sys.executable, "-c", prog, timeout=timeout)
        assert r.returncode == 0, f"driver in {host} failed:\n{r.stdout}\n{r.stderr}"
        last = [line for line in r.stdout.splitlines() if line.startswith("{")]
        assert last, f"driver printed no JSON:\n{r.stdout}\n{r.stderr}"
        out = json.loads(last[-1])
        out["_stdout"] = r.stdout
        return out

    def status(self, host: str = "h1") -> dict:
        r = in_host(host, *raylite_cmd("status", "--format", "json"))
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def stop(self, host: str) -> None:
        in_host(host, *raylite_cmd("stop"), timeout=60)


def _node_managers(hosts: list[str]) -> set[int]:
    """raylite node processes running in the testnet's hosts (not other tests' nodes on
    this machine: they run in the machine's own network namespace)."""
    found = set()
    for host in hosts:
        for pid in NET.pids(host):
            try:
                if "raylite.node" in psutil.Process(pid).cmdline():
                    found.add(pid)
            except psutil.Error:
                pass
    return found


def _testnet_nodes() -> list[dict[str, Any]]:
    """Node files of nodes on the testnet's addresses, each with "file" added."""
    from raylite.node.local import nodes_dir

    found = []
    for path in glob.glob(os.path.join(nodes_dir(), "*.json")):
        try:
            with open(path) as f:
                info = {**json.load(f), "file": path}
        except (OSError, ValueError):
            continue
        if str(info.get("ip", "")).startswith(NET.prefix + "."):
            found.append(info)
    return found


@pytest.fixture
def cluster(request):
    """h1..h3 (`@pytest.mark.testnet_hosts(N)`: h1..hN; hosts past h3 run no node unless
    the test starts one)."""
    from raylite.node.local import remove_dirs

    why = NET.unusable()
    if why:
        pytest.skip(f"testnet not usable here: {why}")
    marker = request.node.get_closest_marker("testnet_hosts")
    hosts = marker.args[0] if marker else 3
    NET.up(hosts)
    c = Cluster(hosts)
    try:
        yield c
    finally:
        running = [n for n in _testnet_nodes() if psutil.pid_exists(n["pid"])]
        for host in c.hosts:
            c.stop(host)
        deadline = time.monotonic() + 10  # a fork server stops its workers, then exits
        while (left := _node_managers(c.hosts)) and time.monotonic() < deadline:
            time.sleep(0.1)
        NET.down()  # stops whatever is left in the hosts
        for info in _testnet_nodes():  # of nodes killed in a test: nobody else removes them
            if not psutil.pid_exists(info["pid"]):
                remove_dirs(info)
        assert not left, f"raylite node processes left running after raylite stop: {left}"
        dirs = [n[k] for n in running for k in ("session_dir", "store_dir") if n.get(k)]
        dirs_left = [d for d in dirs if os.path.exists(d)]
        assert not dirs_left, f"stopped nodes left their directories: {dirs_left}"
