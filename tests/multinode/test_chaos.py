"""The chaos soak (tests/multinode/chaos.py) for about a minute on three testnet hosts.

A workload of tasks, actor calls, objects passed between nodes and a named detached
actor runs while workers, actors and node managers are killed by pid, h2 and h3 are
partitioned and healed, and the head (SQLite storage) is killed and started again.
Every result is checked against an idempotent, keyed ledger; afterwards the cluster
must be whole and, once stopped, leave nothing behind. RAYLITE_CHAOS_SEED picks
another sequence of faults (the report names the seed of a failing run);
bench/bench_chaos.py runs the same soak for longer.
"""

from __future__ import annotations

import json
import os

import pytest

from tests._engine import raylite_only
from tests.multinode import chaos
from tests.multinode.conftest import ENV, NET, PORT

pytestmark = [pytest.mark.timeout(600), raylite_only]


def test_chaos_soak_loses_nothing_counts_nothing_twice_and_leaves_nothing(cluster, tmp_path):
    seed = int(os.environ.get("RAYLITE_CHAOS_SEED", "15"))
    events: list[str] = []
    report = chaos.soak(
        NET, ENV, str(tmp_path), seconds=30, seed=seed, port=PORT, log=events.append
    )
    print(json.dumps(report, indent=1))
    assert report["problems"] == [], (report, events)
    for fault in chaos.FAULTS:
        assert report["faults"].get(fault, 0) >= 1, (fault, report["faults"], events)
    # The workload did work under the chaos, of every kind, and all of it after.
    outcomes = report["outcomes"]
    chaos_ok = {
        k.split()[1].rstrip(":") for k in outcomes if k.startswith("chaos") and k.endswith(": ok")
    }
    assert {"task", "obj", "put", "actor", "named"} <= chaos_ok, outcomes
    assert not [k for k in outcomes if k.startswith("final") and not k.endswith(": ok")], outcomes
