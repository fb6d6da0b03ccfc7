"""Run compat tests on a multi-node cluster: RAYLITE_TESTS_CLUSTER=N.

Each init() configuration becomes a cluster of N nodes with the same resources in
total: CPUs split as evenly as whole units allow, GPUs and custom resources over all
nodes but the last.
With RAYLITE_TESTS_TESTNET=1 (tests/multinode runs pytest inside testnet host h1 so),
node K runs in testnet host hK, each with its own address (tests/netns.py); otherwise all
nodes run on 127.0.0.1. Nodes are started and stopped with the raylite CLI, as a user
would. With RAYLITE_TESTS_TLS=1 the cluster runs `--tls` (every TCP connection TLS; this
test process, the driver, then uses TLS too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.netns import Testnet

PORT = 6390
_started: list[str] = []  # hosts ("" = here) that run a node


def _on(host: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "raylite.cli", *args]
    if host:  # the testnet of the caller's environment (TESTNET_NAME, TESTNET_PREFIX)
        cmd = Testnet.from_env().command(host, *cmd)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _shares(total: float, n: int) -> list[float]:
    if total != int(total):
        return [total / n] * n
    whole = int(total)
    return [whole // n + (1 if k < whole % n else 0) for k in range(n)]


def split(config: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Every resource split as evenly as whole units allow, remainders on the first nodes."""
    nodes: list[dict[str, Any]] = [{"num_cpus": c} for c in _shares(config.get("num_cpus") or 2, n)]
    # GPUs and custom resources on all nodes but the last: it stays a plain CPU node.
    some = max(n - 1, 1)
    for k, g in enumerate(_shares(config.get("num_gpus") or 0, some)):
        if g:
            nodes[k]["num_gpus"] = int(g)
    for name, total in (config.get("resources") or {}).items():
        for k, share in enumerate(_shares(total, some)):
            if share:
                nodes[k].setdefault("resources", {})[name] = share
    return nodes


def start_cluster(config: dict[str, Any], n: int) -> str:
    testnet = os.environ.get("RAYLITE_TESTS_TESTNET") == "1"
    prefix = os.environ.get("TESTNET_PREFIX", "10.77.0")
    head_ip = f"{prefix}.1" if testnet else "127.0.0.1"
    head = f"{head_ip}:{PORT}"
    for k, node in enumerate(split(config, n)):
        host = f"h{k + 1}" if testnet else ""
        ip = f"{prefix}.{k + 1}" if testnet else "127.0.0.1"
        args = ["start", "--node-ip-address", ip, "--num-cpus", str(node["num_cpus"])]
        if "num_gpus" in node:
            args += ["--num-gpus", str(node["num_gpus"])]
        if "resources" in node:
            args += ["--resources", json.dumps(node["resources"])]
        args += ["--head", "--port", str(PORT)] if k == 0 else ["--address", head]
        if os.environ.get("RAYLITE_TESTS_TLS") == "1":  # the cluster runs --tls (tls.py)
            args.append("--tls")
        r = _on(host, args)
        if r.returncode:
            raise RuntimeError(f"raylite start failed: {r.stdout}{r.stderr}")
        _started.append(host)
    return head


def stop_cluster() -> None:
    while _started:
        host = _started.pop()
        if host not in _started:
            _on(host, ["stop"])
