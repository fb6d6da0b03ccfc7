"""`raylite memory` against a running node."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests._engine import AGAINST_RAY, ray

pytestmark = pytest.mark.skipif(AGAINST_RAY, reason="raylite's own command line")


def test_memory_lists_the_objects_in_the_store(no_engine):
    ray.init(num_cpus=1, object_store_memory=64 * 2**20)
    try:
        kept = ray.put(np.ones(2**20))  # 8 MiB: in the store
        spilled = [ray.put(np.full(2**20, i)) for i in range(10)]  # 80 MiB: some spill
        out = subprocess.run(
            [sys.executable, "-m", "raylite.cli", "memory"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert kept.hex() in out
        assert all(r.hex() in out for r in spilled)
        assert "spilled to disk" in out
        lines = [
            line for line in out.splitlines() if line.startswith(tuple(r.hex() for r in spilled))
        ]
        assert any(" yes " in line for line in lines), out
    finally:
        ray.shutdown()


def test_memory_without_a_node_says_so(no_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "raylite.cli", "memory"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "no running raylite node" in result.stderr
