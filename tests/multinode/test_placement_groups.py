"""Placement groups on a 3-host cluster (issue 14): the strategies across hosts, a
pending group placed when a node joins, a node that dies with a bundle.

Each host has 2 CPUs (conftest.Cluster.start_node). Drivers run in h1.
"""

from __future__ import annotations

import textwrap
import time

import pytest

from tests._engine import raylite_only
from tests.multinode.conftest import NET, NODE_TIMEOUT_S
from tests.multinode.test_cluster import _background_driver, _finish, _three, _wait_dead

pytestmark = [pytest.mark.timeout(300), raylite_only]

HEADER = "import json, os, sys, time\nimport raylite as ray\nray.init(address='auto')\n"
PRELUDE = """
from raylite.util.placement_group import (
    placement_group, placement_group_table, remove_placement_group)
from raylite.util.scheduling_strategies import PlacementGroupSchedulingStrategy as S

@ray.remote(num_cpus=1)
def host():
    return os.environ["TESTNET_HOST"]

def ips():
    return {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}

def hosts_of(pg):
    return [ray.get(host.options(scheduling_strategy=S(pg, placement_group_bundle_index=i))
                    .remote(), timeout=60) for i in range(pg.bundle_count)]
"""


def test_strategies_place_bundles_across_hosts_and_removal_frees_them(cluster):
    _three(cluster)
    out = cluster.driver(
        "h1",
        "ray.init(address='auto')\n"
        + PRELUDE
        + textwrap.dedent(
            """
        out = {}
        for strategy, n in (("STRICT_SPREAD", 3), ("SPREAD", 3), ("STRICT_PACK", 2), ("PACK", 3)):
            pg = placement_group([{"CPU": 1}] * n, strategy=strategy)
            assert pg.wait(30), strategy
            row = placement_group_table(pg)
            out[strategy] = {"hosts": hosts_of(pg),
                             "nodes": len(set(row["bundles_to_node_id"].values()))}
            remove_placement_group(pg)
        too_many = placement_group([{"CPU": 1}] * 4, strategy="STRICT_SPREAD")
        out["too_many"] = too_many.wait(1)
        out["pending_state"] = placement_group_table(too_many)["state"]
        deadline = time.time() + 30
        while ray.available_resources().get("CPU") != 6 and time.time() < deadline:
            time.sleep(0.1)
        out["cpus_back"] = ray.available_resources().get("CPU")
        out["visible"] = sorted(ray.cluster_resources())
        print(json.dumps(out), flush=True)
        """
        ),
        timeout=150,
    )
    assert sorted(out["STRICT_SPREAD"]["hosts"]) == ["h1", "h2", "h3"]
    assert sorted(out["SPREAD"]["hosts"]) == ["h1", "h2", "h3"]
    assert out["STRICT_PACK"]["nodes"] == 1
    assert len(set(out["STRICT_PACK"]["hosts"])) == 1
    assert out["PACK"]["nodes"] == 2  # 3 CPUs: two hosts of 2, as few as it takes
    assert out["too_many"] is False
    assert out["pending_state"] == "PENDING"
    assert out["cpus_back"] == 6
    assert not [k for k in out["visible"] if "_group_" in k]
    # The driver is gone: its pending group went with it.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        groups = cluster.status()["head"]["placement_groups"]
        if all(g["state"] == "REMOVED" for g in groups):
            break
        time.sleep(0.2)
    assert all(g["state"] == "REMOVED" for g in groups), groups


def test_a_pending_group_is_placed_when_a_node_joins(cluster):
    cluster.start_node("h1", head=True)
    cluster.start_node("h2")
    proc = _background_driver(
        "h1",
        HEADER
        + PRELUDE
        + textwrap.dedent(
            """
        pg = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
        before = pg.wait(1)
        ref = host.options(scheduling_strategy=S(pg, placement_group_bundle_index=2)).remote()
        print("READY", json.dumps({"before": before}), flush=True)
        sys.stdin.readline()  # h3 joins now
        start = time.time()
        placed = pg.wait(60)
        print(json.dumps({"before": before, "placed": placed, "s": time.time() - start,
                          "hosts": sorted(hosts_of(pg)), "early": ray.get(ref, timeout=60)}),
              flush=True)
        ray.shutdown()
        """
        ),
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY"), line + proc.stderr.read()
        cluster.start_node("h3")
    finally:
        result = _finish(proc)
    assert result["before"] is False
    assert result["placed"] is True
    assert result["hosts"] == ["h1", "h2", "h3"]
    assert result["early"] in ("h1", "h2", "h3")  # submitted while pending, ran once placed


def test_a_node_that_dies_with_a_bundle_gets_its_bundle_placed_again(cluster):
    _three(cluster)
    proc = _background_driver(
        "h1",
        HEADER
        + PRELUDE
        + textwrap.dedent(
            """
        @ray.remote(num_cpus=0, max_restarts=1, max_task_retries=1)
        class Where:
            def host(self):
                return os.environ["TESTNET_HOST"]

        pg = placement_group([{"CPU": 1}] * 2, strategy="STRICT_SPREAD")
        assert pg.wait(30)
        hosts = hosts_of(pg)
        victim = next(i for i, h in enumerate(hosts) if h != "h1")
        actor = Where.options(
            scheduling_strategy=S(pg, placement_group_bundle_index=victim)).remote()
        assert ray.get(actor.host.remote(), timeout=60) == hosts[victim]
        first = placement_group_table(pg)
        print("READY", hosts[victim], flush=True)
        sys.stdin.readline()  # that host is killed now, and marked dead
        deadline = time.time() + 60
        while time.time() < deadline:  # its bundle moves to a live node (RESCHEDULING first)
            row = placement_group_table(pg)
            moved = row["bundles_to_node_id"].get(victim) != first["bundles_to_node_id"][victim]
            if row["state"] == "CREATED" and moved:
                break
            time.sleep(0.05)
        after = hosts_of(pg)
        print(json.dumps({"before": hosts, "victim": victim, "after": after,
                          "state": row["state"], "attempts": row["stats"]["scheduling_attempt"],
                          "actor": ray.get(actor.host.remote(), timeout=60)}), flush=True)
        ray.shutdown()
        """
        ),
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY"), line + proc.stderr.read()
        victim_host = line.split()[1]
        NET.kill(victim_host)
        _wait_dead(cluster, cluster.ip(victim_host), NODE_TIMEOUT_S + 10)
    finally:
        result = _finish(proc)
    victim = result["victim"]
    assert result["state"] == "CREATED"
    assert result["attempts"] == 2  # placed again after the death (RESCHEDULING between)
    assert result["after"][victim] not in (victim_host, result["before"][1 - victim])
    assert result["after"][1 - victim] == result["before"][1 - victim]  # the other stayed
    assert result["actor"] == result["after"][victim]  # restarted in its bundle's new home
