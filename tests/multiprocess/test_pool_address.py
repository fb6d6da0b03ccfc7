"""A multiprocessing Pool connects to a running cluster (`ray_address=`, or
RAYLITE_ADDRESS) instead of starting one, and then sizes itself by that cluster."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests._engine import AGAINST_RAY
from tests._head import blocking_head

pytestmark = pytest.mark.skipif(AGAINST_RAY, reason="starts raylite's CLI")

DRIVER = """
import os
import raylite
from raylite.util.multiprocessing import Pool

def pid(_):
    return os.getpid()

pool = Pool({args})
cpus = raylite.cluster_resources()["CPU"]
print("POOL", cpus, len(set(pool.map(pid, range(4), chunksize=1))), flush=True)
pool.terminate()
pool.join()
"""


@pytest.fixture
def cluster(tmp_path):
    """A 3-CPU head started with `raylite start --block`: (its address, the env to use)."""
    env = {**os.environ, "RAYLITE_TOKEN": "pool test token", "TMPDIR": str(tmp_path)}
    env.pop("RAYLITE_ADDRESS", None)
    with blocking_head(env, num_cpus=3) as address:
        yield address, env


def _run_driver(args: str, env: dict[str, str]) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", DRIVER.format(args=args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("POOL")]
    assert lines, out.stderr[-3000:]
    return lines[0].split()[1:]


def test_pool_joins_the_cluster_at_ray_address(cluster):
    address, env = cluster
    # The cluster's 3 CPUs, not this machine's: 3 processes by default.
    assert _run_driver(f"ray_address={address!r}", env) == ["3.0", "3"]


def test_pool_joins_the_cluster_in_raylite_address(cluster):
    address, env = cluster
    assert _run_driver("processes=2", {**env, "RAYLITE_ADDRESS": address}) == ["3.0", "2"]
