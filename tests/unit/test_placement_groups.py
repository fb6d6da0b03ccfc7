"""Placement groups in-process: the head's table and placement, a node's bundle book,
and the resource names (bundles.py). Events in, actions asserted."""

from __future__ import annotations

from typing import Any

import pytest

from raylite import bundles as B
from raylite.config import RESOURCE_UNIT
from raylite.head.placement_groups import (
    CREATED,
    PENDING,
    REMOVED,
    RESCHEDULING,
    Cancel,
    Commit,
    Created,
    Infeasible,
    PGRec,
    PlacementGroupTable,
    Prepare,
    Removed,
    place_bundles,
    restored,
)
from raylite.labels import parse_selector
from raylite.node.bundle_book import BundleBook
from raylite.node.lease_book import Grant, KillWorker, LeaseState, Reject
from raylite.protocol import FailCode
from raylite.scheduling import NodeView

from .core_harness import Harness, StandIn, h  # noqa: F401 - h: the fixture
from .test_lease_book import book, lease, with_idle

U = RESOURCE_UNIT


def nodes(*cpus: int) -> list[NodeView]:
    return [
        NodeView(bytes([i + 1]) * 4, f"tcp:n{i}:1", {"CPU": c * U}, {"CPU": c * U})
        for i, c in enumerate(cpus)
    ]


def cpu(n: float) -> dict[str, int]:
    return {"CPU": int(n * U)}


def group(strategy: str, *sizes: float, **kw: object) -> PGRec:
    return PGRec(b"G" * 16, [cpu(s) for s in sizes], strategy, **kw)  # type: ignore[arg-type]


# --- placement -------------------------------------------------------------------------
def test_pack_puts_all_bundles_on_one_node_when_one_holds_them():
    ns = nodes(4, 4)
    plan = place_bundles({0: cpu(1), 1: cpu(2)}, "PACK", ns)
    assert plan is not None
    assert len(set(plan.values())) == 1


def test_pack_spans_nodes_when_no_one_node_holds_them_but_strict_pack_does_not():
    ns = nodes(2, 2)
    plan = place_bundles({0: cpu(2), 1: cpu(2)}, "PACK", ns)
    assert plan is not None
    assert set(plan.values()) == {n.node_id for n in ns}
    assert place_bundles({0: cpu(2), 1: cpu(2)}, "STRICT_PACK", ns) is None


def test_spread_uses_distinct_nodes_and_falls_back_to_sharing():
    ns = nodes(4, 4, 4)
    plan = place_bundles({i: cpu(1) for i in range(3)}, "SPREAD", ns)
    assert plan is not None
    assert len(set(plan.values())) == 3
    plan = place_bundles({i: cpu(1) for i in range(4)}, "SPREAD", ns)  # more bundles than nodes
    assert plan is not None
    assert len(set(plan.values())) == 3


def test_strict_spread_needs_a_node_per_bundle_and_avoids_the_groups_nodes():
    ns = nodes(4, 4)
    assert place_bundles({i: cpu(1) for i in range(3)}, "STRICT_SPREAD", ns) is None
    plan = place_bundles({1: cpu(1)}, "STRICT_SPREAD", ns, fixed={0: ns[0].node_id})
    assert plan == {1: ns[1].node_id}


def test_placement_reads_free_resources_unless_by_total():
    ns = [NodeView(b"a" * 4, "tcp:a:1", cpu(4), cpu(1))]
    assert place_bundles({0: cpu(2)}, "PACK", ns) is None
    assert place_bundles({0: cpu(2)}, "PACK", ns, by_total=True) == {0: b"a" * 4}


# --- the table ---------------------------------------------------------------------------
def test_two_phases_prepare_every_node_then_commit_when_all_said_yes():
    table = PlacementGroupTable()
    pg = group("STRICT_SPREAD", 1, 1)
    table.create(pg)
    ns = nodes(2, 2)
    prepares = table.schedule(ns, 0.0)
    assert sorted(type(a).__name__ for a in prepares) == ["Prepare", "Prepare"]
    assert all(isinstance(a, Prepare) and a.attempt == 1 for a in prepares)
    assert table.schedule(ns, 0.0) == []  # one prepare in flight at a time
    first, second = prepares
    assert isinstance(first, Prepare)
    assert isinstance(second, Prepare)
    assert table.prepared(pg.pg_id, 1, first.node_id, True, 1.0) == []
    actions = table.prepared(pg.pg_id, 1, second.node_id, True, 1.0)
    assert {type(a) for a in actions} == {Commit, Created}
    assert pg.state is CREATED
    assert len(pg.nodes) == 2


def test_a_no_rolls_back_the_nodes_that_prepared_and_the_group_waits():
    table = PlacementGroupTable()
    pg = group("SPREAD", 1, 1)
    table.create(pg)
    first, second = table.schedule(nodes(2, 2), 0.0)
    assert isinstance(first, Prepare)
    assert isinstance(second, Prepare)
    assert table.prepared(pg.pg_id, 1, first.node_id, True, 0.0) == []
    actions = table.prepared(pg.pg_id, 1, second.node_id, False, 0.0)
    assert actions == [Cancel(first.node_id, pg, list(first.bundles), 1)]
    assert pg.state is PENDING
    assert pg.attempt == 0
    assert not pg.nodes
    # A late yes of that attempt gives its reservation back.
    late = table.prepared(pg.pg_id, 1, first.node_id, True, 0.0)
    assert late == [Cancel(first.node_id, pg, [], 1)]
    again = table.schedule(nodes(2, 2), 0.0)  # tried again, as a new attempt
    assert all(isinstance(a, Prepare) and a.attempt == 2 for a in again)


def test_two_waiting_groups_do_not_count_the_same_room():
    table = PlacementGroupTable()
    a, b = group("PACK", 2), PGRec(b"H" * 16, [cpu(2)], "PACK")
    table.create(a)
    table.create(b)
    actions = table.schedule(nodes(2), 0.0)
    assert [x.pg for x in actions if isinstance(x, Prepare)] == [a]


def test_an_infeasible_group_says_so_once_and_stays_pending():
    table = PlacementGroupTable()
    pg = group("STRICT_PACK", 2, 2)
    table.create(pg)
    assert table.schedule(nodes(2, 2), 0.0) == [Infeasible(pg)]
    assert table.schedule(nodes(2, 2), 0.0) == []
    assert pg.state is PENDING
    assert any(isinstance(a, Prepare) for a in table.schedule(nodes(4), 0.0))  # a node joined


def labelled(*labels: dict[str, str]) -> list[NodeView]:
    return [
        NodeView(bytes([i + 1]) * 4, f"tcp:n{i}:1", cpu(4), cpu(4), True, dict(lab))
        for i, lab in enumerate(labels)
    ]


def test_bundle_label_selectors_choose_each_bundles_node():
    ns = labelled({"zone": "a"}, {"zone": "b"}, {"zone": "c"})
    a, b, c = (n.node_id for n in ns)
    sel = {i: parse_selector(s) for i, s in enumerate([{"zone": "b"}, {"zone": "!b"}])}
    plan = place_bundles({0: cpu(1), 1: cpu(1)}, "SPREAD", ns, selectors=sel)
    assert plan is not None
    assert plan[0] == b
    assert plan[1] in (a, c)
    # PACK: one node that matches both, else as few as it takes, each on a match.
    both = {0: parse_selector({"zone": "in(a,b)"}), 1: parse_selector({"zone": "b"})}
    assert place_bundles({0: cpu(1), 1: cpu(1)}, "PACK", ns, selectors=both) == {0: b, 1: b}
    apart = {0: parse_selector({"zone": "a"}), 1: parse_selector({"zone": "c"})}
    assert place_bundles({0: cpu(1), 1: cpu(1)}, "STRICT_PACK", ns, selectors=apart) is None
    assert place_bundles({0: cpu(1), 1: cpu(1)}, "PACK", ns, selectors=apart) == {0: a, 1: c}


def test_a_group_whose_selector_matches_no_node_says_so_and_waits_for_one():
    table = PlacementGroupTable()
    pg = group("PACK", 1, selectors=[{"gpu": "h100"}])
    table.create(pg)
    assert table.schedule(labelled({"gpu": "a100"}), 0.0) == [Infeasible(pg)]
    assert pg.state is PENDING
    ns = labelled({"gpu": "a100"}, {"gpu": "h100"})
    actions = table.schedule(ns, 0.0)
    assert [(type(x), x.node_id) for x in actions if isinstance(x, Prepare)] == [
        (Prepare, ns[1].node_id)
    ]
    assert restored(pg.row()).selectors == [{"gpu": "h100"}]  # kept by a restarted head


def test_remove_frees_the_name_and_tells_every_node():
    table = PlacementGroupTable()
    pg = group("PACK", 1, name="g", namespace="ns")
    table.create(pg)
    assert table.named("ns", "g") is pg
    assert table.remove(pg.pg_id) == [Removed(pg)]
    assert pg.state is REMOVED
    assert table.named("ns", "g") is None
    assert table.remove(pg.pg_id) == []


def _created(table: PlacementGroupTable, pg: PGRec, ns: list[NodeView]) -> None:
    table.create(pg)
    for action in table.schedule(ns, 0.0):
        assert isinstance(action, Prepare)
        table.prepared(pg.pg_id, action.attempt, action.node_id, True, 0.0)
    assert pg.state is CREATED


def test_a_dead_node_reschedules_only_its_bundles():
    table = PlacementGroupTable()
    ns = nodes(2, 2, 2)
    pg = group("STRICT_SPREAD", 1, 1)
    _created(table, pg, ns)
    lost = pg.nodes[0]
    assert table.node_died(lost) == []
    assert pg.state is RESCHEDULING
    assert 0 not in pg.nodes
    assert 1 in pg.nodes
    alive = [n for n in ns if n.node_id != lost]
    (prepare,) = table.schedule(alive, 0.0)
    assert isinstance(prepare, Prepare)
    assert list(prepare.bundles) == [0]
    assert prepare.node_id not in (lost, pg.nodes[1])  # strict: a node of its own


def test_a_dead_node_of_a_strict_pack_group_moves_it_whole():
    table = PlacementGroupTable()
    ns = nodes(4)
    pg = group("STRICT_PACK", 1, 1)
    _created(table, pg, ns)
    assert table.node_died(ns[0].node_id) == []  # nothing left elsewhere to give back
    assert pg.state is RESCHEDULING
    assert pg.nodes == {}


def test_the_creators_death_removes_its_groups_but_not_detached_ones():
    table = PlacementGroupTable()
    mine = group("PACK", 1, owner="drv")
    kept = PGRec(b"K" * 16, [cpu(1)], "PACK", owner="drv", detached=True)
    table.create(mine)
    table.create(kept)
    assert table.owner_gone(address="drv") == [Removed(mine)]
    assert kept.state is PENDING


# --- a node's bundles -------------------------------------------------------------------
PG = b"P" * 16


def test_prepare_is_all_or_nothing():
    b = book(cpus=2)
    bb = BundleBook(b)
    assert not bb.prepare(PG, 1, {0: cpu(1), 1: cpu(2)})
    assert b.available["CPU"] == 2 * U
    assert not bb.prepared
    assert bb.prepare(PG, 1, {0: cpu(1), 1: cpu(1)})
    assert b.available["CPU"] == 0


def test_commit_adds_the_groups_resources_and_a_waiting_task_runs_only_on_them():
    b = book(cpus=4)
    bb = BundleBook(b)
    (worker, *_) = with_idle(b, 2)
    shape = B.task_shape(cpu(1), PG.hex(), 0)
    waiting = lease(shape)
    b.request(waiting)  # the group is not placed yet: it waits, unannounced
    assert waiting in b.pending
    assert bb.prepare(PG, 1, {0: cpu(1)})
    actions = bb.commit(PG, [0])
    assert [type(a) for a in actions if isinstance(a, Grant)] == [Grant]
    assert b.available["CPU"] == 3 * U  # the bundle's CPU, not another
    second = lease(B.task_shape(cpu(1), PG.hex(), 0))
    assert not [a for a in b.request(second) if isinstance(a, Grant)]  # the bundle is busy
    assert second in b.pending
    assert worker is not None


def test_removal_kills_the_groups_workers_and_fails_what_waits():
    b = book(cpus=4)
    bb = BundleBook(b)
    with_idle(b, 2)
    assert bb.prepare(PG, 1, {0: cpu(1)})
    bb.commit(PG, [0])
    running = lease(B.task_shape(cpu(1), PG.hex(), 0))
    (grant,) = [a for a in b.request(running) if isinstance(a, Grant)]
    waiting = lease(B.task_shape(cpu(1), PG.hex(), -1))
    b.request(waiting)
    actions = bb.cancel(PG, [], 0, removed=True)
    assert KillWorker(grant.worker) in actions
    rejects = [a for a in actions if isinstance(a, Reject)]
    assert [(r.lease, r.code) for r in rejects] == [(waiting, FailCode.PG_REMOVED)]
    assert running.state is LeaseState.REVOKED
    assert b.available["CPU"] == 4 * U  # at once, not when the worker's death is seen
    assert not any(B.is_group_resource(k) for k in b.total)
    b.worker_died(grant.worker, "killed")  # its death gives nothing back twice
    assert b.available["CPU"] == 4 * U
    late = lease(B.task_shape(cpu(1), PG.hex(), 0))
    assert [type(a) for a in b.request(late)] == [Reject]  # asked after the removal


def test_a_roll_back_returns_only_its_attempts_reservation():
    b = book(cpus=4)
    bb = BundleBook(b)
    assert bb.prepare(PG, 1, {0: cpu(1)})
    bb.cancel(PG, [], 1, removed=False)
    assert b.available["CPU"] == 4 * U
    assert bb.prepare(PG, 2, {0: cpu(1)})
    bb.cancel(PG, [], 1, removed=False)  # a stale roll back of attempt 1
    assert b.available["CPU"] == 3 * U


# --- names ----------------------------------------------------------------------------
def test_names_are_rays():
    pg = "ab" * 8
    assert B.task_shape({"CPU": U}, pg, 0) == {
        f"CPU_group_0_{pg}": U,
        f"CPU_group_{pg}": U,
        f"bundle_group_0_{pg}": B.SLIVER,
        f"bundle_group_{pg}": B.SLIVER,
    }
    assert B.task_shape({"CPU": U}, pg, -1) == {
        f"CPU_group_{pg}": U,
        f"bundle_group_{pg}": B.SLIVER,
    }
    res = B.node_resources({0: {"CPU": U}, 1: {"CPU": 2 * U}}, pg)
    assert res[f"CPU_group_{pg}"] == 3 * U
    assert res[f"CPU_group_1_{pg}"] == 2 * U
    assert B.group_of(B.task_shape({}, pg, 1)) == pg
    assert B.visible({"CPU": 1.0, f"CPU_group_{pg}": 1.0}) == {"CPU": 1.0}


@pytest.mark.parametrize("strategy", ["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"])
def test_every_strategy_places_a_group_that_fits(strategy):
    plan = place_bundles({0: cpu(1), 1: cpu(1)}, strategy, nodes(2, 2))
    assert plan is not None
    assert set(plan) == {0, 1}


def test_a_task_in_a_gpu_bundle_gets_the_bundles_gpu_ids_and_gives_them_back():
    b = book(cpus=4, gpus=2)
    bb = BundleBook(b)
    with_idle(b, 3)
    assert bb.prepare(PG, 1, {0: {"GPU": U}, 1: {"GPU": U}})
    bb.commit(PG, [0, 1])
    assert b.gpu_free == {0: 0, 1: 0}
    first = lease(B.task_shape({"GPU": U}, PG.hex(), 1))
    (grant,) = [a for a in b.request(first) if isinstance(a, Grant)]
    assert first.gpu_ids == [1]  # bundle 1's GPU
    half = lease(B.task_shape({"GPU": U // 2}, PG.hex(), -1))
    b.request(half)
    assert half.gpu_ids == [0]  # the wildcard: a bundle with room
    b.lease_returned(first.lease_id, False)
    assert b.group_gpus[f"GPU_group_1_{PG.hex()}"] == {1: U}
    bb.cancel(PG, [], 0, removed=True)
    assert b.gpu_free == {0: U, 1: U}
    assert not b.group_gpus
    assert grant is not None


def test_the_table_forgets_the_oldest_removed_groups():
    table = PlacementGroupTable(keep_removed=2)
    ids = [bytes([i]) * 16 for i in range(4)]
    for pg_id in ids:
        table.create(PGRec(pg_id, [cpu(1)], "PACK"))
        table.remove(pg_id)
    assert list(table.groups) == ids[2:]
    assert not table.waiting()


def test_a_groups_row_brings_it_back_as_it_was():
    import msgpack

    table = PlacementGroupTable()
    ns = nodes(2, 2)
    pg = group("SPREAD", 1, 1, name="g", namespace="ns", owner="drv")
    _created(table, pg, ns)
    waiting = PGRec(b"W" * 16, [cpu(8)], "PACK")
    table.create(waiting)
    again = PlacementGroupTable()
    for rec in (pg, waiting):
        blob = msgpack.packb(rec.row(), use_bin_type=True)
        again.create(restored(msgpack.unpackb(blob, raw=False, strict_map_key=False)))
    back = again.groups[pg.pg_id]
    assert (back.state, back.nodes, back.bundles) == (CREATED, pg.nodes, pg.bundles)
    assert again.named("ns", "g") is back
    assert list(again.waiting_groups) == [waiting.pg_id]


def test_raylite_status_counts_groups_and_shows_the_waiting_ones(capsys):
    from raylite.cli_cluster import _print_groups

    _print_groups(
        [
            {"pg_id": "ab" * 16, "name": "", "state": "CREATED", "strategy": "PACK",
             "bundles": [cpu(1)]},
            {"pg_id": "cd" * 16, "name": "big", "state": "PENDING", "strategy": "STRICT_SPREAD",
             "bundles": [cpu(1), cpu(1)]},
        ]
    )  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Placement groups: 1 created, 1 pending"
    assert (
        out[1] == '  cdcdcdcdcdcdcdcd \'big\' STRICT_SPREAD [{"CPU": 1.0}, {"CPU": 1.0}]: pending'
    )
    assert len(out) == 2
    _print_groups([])
    assert capsys.readouterr().out == "Placement groups: none\n"


# --- the owner's side (core_harness: a core worker without processes) -----------------


class _AnswersAtOnce(StandIn):
    """A node manager whose reply arrives before request_async returns."""

    def __init__(self, reply: object) -> None:
        super().__init__("node-manager")
        self.reply = reply

    def request_async(self, msg: object, callback: Any) -> None:
        callback(self.reply)


def test_ready_survives_an_answer_that_comes_before_its_ref(h: Harness) -> None:  # noqa: F811
    from raylite import protocol as P

    h.cw.nm = _AnswersAtOnce(P.PlacementGroupReady(True))
    ref = h.cw.answer_later(P.WaitPlacementGroup(PG, -1.0), lambda reply: "the group")
    assert h.cw.get([ref], timeout=5) == ["the group"]
    h.cw.nm = _AnswersAtOnce(P.Failed(P.FailCode.NOT_FOUND, "gone"))
    ref = h.cw.answer_later(P.WaitPlacementGroup(PG, -1.0), lambda reply: ValueError(reply.reason))
    with pytest.raises(ValueError, match="gone"):
        h.cw.get([ref], timeout=5)


def test_tasks_of_a_removed_group_fail_with_rays_error(h: Harness) -> None:  # noqa: F811
    from raylite import protocol as P
    from raylite.exceptions import TaskPlacementGroupRemoved

    ref, _ = h.submit()
    msg, answer = h.cw.nm.take(P.RequestLease)
    answer(P.Failed(P.FailCode.PG_REMOVED, "The placement group ... has been removed."))
    with pytest.raises(TaskPlacementGroupRemoved):
        h.cw.get([ref], timeout=5)
    assert msg.shape == {"CPU": U}


def test_a_group_made_in_a_task_goes_with_its_job_not_with_the_worker():
    table = PlacementGroupTable()
    in_task = PGRec(b"T" * 16, [cpu(1)], "PACK", owner="", owner_node=b"n", job=b"j1")
    table.create(in_task)
    assert table.owner_gone(address="worker") == []
    assert table.owner_gone(node_id=b"n") == []  # the job goes on where its driver is
    assert table.owner_gone(job=b"j2") == []
    assert table.owner_gone(job=b"j1") == [Removed(in_task)]
