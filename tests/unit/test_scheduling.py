"""The placement policy, on hand-made cluster views (no processes)."""

from __future__ import annotations

from raylite.protocol import NodeAffinity
from raylite.scheduling import HERE, NodeView, place

U = 10_000  # one resource unit


def node(i: int, cpu_free: int, cpu_total: int = 2, **custom: int) -> NodeView:
    total = {"CPU": cpu_total * U, **{k: v * U for k, v in custom.items()}}
    avail = {**total, "CPU": cpu_free * U}
    return NodeView(bytes([i]) * 16, f"tcp:10.0.0.{i}:1", total, avail)


def test_local_first_when_it_fits_now():
    assert place({"CPU": U}, None, node(1, 1), [node(2, 2)]).kind == HERE


def test_busy_node_spills_to_the_node_with_most_room():
    p = place({"CPU": U}, None, node(1, 0), [node(2, 1), node(3, 2)])
    assert p.kind == "spill"
    assert p.node.address == "tcp:10.0.0.3:1"


def test_everyone_busy_waits_here_if_this_node_can_ever_run_it():
    assert place({"CPU": U}, None, node(1, 0), [node(2, 0)]).kind == HERE


def test_custom_resource_names_a_machine():
    p = place({"CPU": U, "gpu_box": U}, None, node(1, 2), [node(2, 0, gpu_box=1)])
    assert p.kind == "spill"
    assert p.node.address == "tcp:10.0.0.2:1"


def test_nothing_has_it_is_infeasible():
    assert place({"TPU": U}, None, node(1, 2), [node(2, 2)]).kind == "infeasible"


def test_spread_round_robins_over_all_nodes_that_have_the_resources():
    nodes = [node(2, 0), node(3, 2)]
    placements = [place({"CPU": U}, "SPREAD", node(1, 2), nodes, seq) for seq in range(6)]
    seen = {p.node.address if p.node else p.kind for p in placements}
    assert seen == {HERE, "tcp:10.0.0.2:1", "tcp:10.0.0.3:1"}


def test_node_affinity_hard_and_soft():
    target = node(3, 0)
    hard = NodeAffinity(target.node_id.hex(), soft=False)
    assert place({"CPU": U}, hard, node(1, 2), [target]).node == target  # waits there
    gone = NodeAffinity("ff" * 16, soft=False)
    p = place({"CPU": U}, gone, node(1, 2), [target])
    assert p.kind == "fail"
    assert "affinity" in p.reason
    assert place({"CPU": U}, NodeAffinity("ff" * 16, soft=True), node(1, 2), [target]).kind == HERE


def test_plain_requests_keep_off_nodes_with_resources_they_do_not_need():
    gpu_local = node(1, 2, GPU=1)
    plain = node(2, 2)
    p = place({"CPU": U}, None, gpu_local, [plain])
    assert p.kind == "spill"
    assert p.node == plain
    assert place({"CPU": U, "GPU": U}, None, gpu_local, [plain]).kind == HERE
    # No plain node with room: the special node serves it rather than queueing.
    assert place({"CPU": U}, None, gpu_local, [node(2, 0)]).kind == HERE
