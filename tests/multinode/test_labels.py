"""Node labels across a cluster (issue 13): `raylite start --labels`, label_selector on
tasks and actors sends them to the nodes whose labels match, the head's view and
`ray.nodes()` carry every node's labels."""

from __future__ import annotations

import pytest

from tests._engine import raylite_only

pytestmark = [pytest.mark.timeout(240), raylite_only]


def test_selectors_place_work_on_the_nodes_whose_labels_match(cluster):
    cluster.start_node("h1", head=True)
    cluster.start_node("h2", "--labels", "zone=b,tier=gold")
    out = cluster.driver(
        "h1",
        """
        ray.init(address="auto")

        @ray.remote
        def where():
            return os.environ["TESTNET_HOST"]

        @ray.remote
        class Where:
            def host(self):
                return os.environ["TESTNET_HOST"]

        on_b = ray.get([where.options(label_selector={"zone": "b"}).remote() for _ in range(4)])
        not_b = ray.get([where.options(label_selector={"zone": "!b"}).remote() for _ in range(4)])
        actor = Where.options(label_selector={"tier": "in(gold,silver)"}).remote()
        labels = {n["NodeManagerAddress"]: n["Labels"] for n in ray.nodes() if n["Alive"]}
        nowhere = where.options(label_selector={"zone": "c"}).remote()
        ready, _ = ray.wait([nowhere], timeout=2)
        print(json.dumps({"on_b": sorted(set(on_b)), "not_b": sorted(set(not_b)),
                          "actor": ray.get(actor.host.remote()), "labels": labels,
                          "nowhere_ready": len(ready)}))
        ray.shutdown()
        """,
    )
    assert out["on_b"] == ["h2"]
    assert out["not_b"] == ["h1"]
    assert out["actor"] == "h2"
    assert out["nowhere_ready"] == 0
    assert {k: v for k, v in out["labels"]["10.78.0.2"].items() if k != "ray.io/node-id"} == {
        "zone": "b",
        "tier": "gold",
    }
    assert set(out["labels"]["10.78.0.1"]) == {"ray.io/node-id"}


def test_bundle_label_selectors_place_each_bundle_on_a_matching_host(cluster):
    cluster.start_node("h1", head=True)
    cluster.start_node("h2", "--labels", "zone=b")
    out = cluster.driver(
        "h1",
        """
        ray.init(address="auto")
        from raylite.util.placement_group import placement_group, remove_placement_group
        from raylite.util.scheduling_strategies import PlacementGroupSchedulingStrategy as S

        @ray.remote(num_cpus=1)
        def where():
            return os.environ["TESTNET_HOST"]

        def hosts(pg):
            return [ray.get(where.options(scheduling_strategy=S(pg, placement_group_bundle_index=i))
                            .remote(), timeout=60) for i in range(pg.bundle_count)]

        spread = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="SPREAD",
                                 bundle_label_selector=[{"zone": "b"}, {"zone": "!b"}])
        assert spread.wait(60)
        spread_hosts = hosts(spread)
        remove_placement_group(spread)
        pack = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK",
                               bundle_label_selector=[{"zone": "b"}, {"zone": "in(b,c)"}])
        assert pack.wait(60)
        pack_hosts = hosts(pack)
        remove_placement_group(pack)
        split = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_PACK",
                                bundle_label_selector=[{"zone": "b"}, {"zone": "!b"}])
        split_placed = split.wait(2)
        remove_placement_group(split)
        print(json.dumps({"spread": spread_hosts, "pack": pack_hosts,
                          "split_placed": split_placed}))
        ray.shutdown()
        """,
    )
    assert out["spread"] == ["h2", "h1"]
    assert out["pack"] == ["h2", "h2"]
    assert out["split_placed"] is False
