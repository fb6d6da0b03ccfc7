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
