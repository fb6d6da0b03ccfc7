"""The lease book in-process: feed it events, assert the actions that come out."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest

from raylite.config import CONFIG, RESOURCE_UNIT
from raylite.exceptions import InvalidTransition
from raylite.node.lease_book import (
    LEASE_TRANSITIONS,
    RESOURCES_CHANGED,
    Grant,
    Infeasible,
    KillWorker,
    Lease,
    LeaseBook,
    LeaseState,
    Reject,
    Spillback,
    StartWorker,
    WorkerState,
    transition,
)
from raylite.protocol import FailCode, NodeAffinity
from raylite.scheduling import NodeView

U = RESOURCE_UNIT
_ids = itertools.count(1)


@dataclass(eq=False)
class Owner:
    closed: bool = False

    def reply(self, rid: int, msg: Any) -> None:
        pass

    def send(self, msg: Any) -> None:
        pass


@dataclass(eq=False)
class Worker:
    worker_id: bytes = field(default_factory=lambda: next(_ids).to_bytes(4, "big"))
    pid: int = 0
    address: str = ""
    state: WorkerState = WorkerState.STARTING
    lease_id: bytes | None = None
    for_request: Lease | None = None
    actor_id: bytes | None = None
    env_key: str = ""


@dataclass
class View:
    node_id: bytes = b"here"
    tcp_address: str = "tcp:here:1"
    others: list[NodeView] = field(default_factory=list)

    def other_nodes(self) -> list[NodeView]:
        return self.others


def node(name: bytes, total: dict[str, int], available: dict[str, int] | None = None) -> NodeView:
    return NodeView(
        name, f"tcp:{name.decode()}:1", total, available if available is not None else total
    )


def lease(shape: dict[str, int], owner: Owner | None = None, **kw: Any) -> Lease:
    return Lease(next(_ids).to_bytes(4, "big"), shape, kw.pop("actor_id", None),
                 owner or Owner(), 7, **kw)  # fmt: skip


def book(cpus: int = 2, *, gpus: int = 0, view: View | None = None, **kw: Any) -> LeaseBook:
    total = {"CPU": cpus * U}
    if gpus:
        total["GPU"] = gpus * U
    config = CONFIG.replace(**kw)
    return LeaseBook(total, gpus, view or View(), cluster=view is not None, config=config)


def with_idle(b: LeaseBook, n: int = 1) -> list[Worker]:
    """n pool workers started and registered: idle."""
    assert b.prestart(n) == [StartWorker(None)] * n
    workers = [Worker() for _ in range(n)]
    for w in workers:
        assert b.worker_started(w) == []
    assert b.idle == workers
    assert b.starting == 0
    return workers


def kinds(actions: list[Any]) -> list[type]:
    return [type(a) for a in actions if a is not RESOURCES_CHANGED]


def test_grant_when_a_worker_is_idle_and_resources_free():
    b = book(2)
    (w,) = with_idle(b)
    req = lease({"CPU": U})
    assert b.request(req) == [Grant(req, w)]
    assert req.state is LeaseState.GRANTED
    assert w.state is WorkerState.LEASED
    assert w.lease_id == req.lease_id
    assert b.leases == {req.lease_id: req}
    assert b.available["CPU"] == U
    assert b.pending == []


def test_start_a_worker_when_none_is_idle_then_grant_when_it_registers():
    b = book(2)
    first, second = lease({"CPU": U}), lease({"CPU": U})
    assert b.request(first) == [StartWorker(None)]
    # One worker is starting for the pool already: the second asks for one more only.
    assert b.request(second) == [StartWorker(None)]
    assert b.starting == 2
    assert b.pending == [first, second]
    w = Worker()
    actions = b.worker_started(w)
    assert actions == [Grant(first, w)]
    assert b.pending == [second]
    assert b.starting == 1


def test_queue_when_busy_and_grant_when_a_lease_comes_back():
    b = book(1)
    (w,) = with_idle(b)
    first, second = lease({"CPU": U}), lease({"CPU": U})
    b.request(first)
    assert b.request(second) == []  # no CPU free: it waits, no worker is started
    assert b.pending == [second]
    assert second.state is LeaseState.PENDING
    actions = b.lease_returned(first.lease_id, kill=False)
    assert first.state is LeaseState.RETURNED
    assert RESOURCES_CHANGED in actions
    assert Grant(second, w) in actions
    assert b.available["CPU"] == 0
    assert b.pending == []


def test_returned_with_kill_kills_the_worker():
    b = book(1)
    (w,) = with_idle(b)
    req = lease({"CPU": U})
    b.request(req)
    actions = b.lease_returned(req.lease_id, kill=True)
    assert KillWorker(w) in actions
    assert b.idle == []
    assert b.available["CPU"] == U
    assert b.lease_returned(req.lease_id, kill=False) == []  # twice: nothing more


def test_an_actor_lease_gets_a_worker_of_its_own():
    b = book(2)
    with_idle(b)  # an idle pool worker is not used for an actor
    req = lease({"CPU": U}, actor_id=b"actor")
    assert b.request(req) == [StartWorker(req)]
    assert req.state is LeaseState.STARTING
    assert b.available["CPU"] == U
    w = Worker(for_request=req, actor_id=b"actor")
    assert b.worker_started(w) == [Grant(req, w)]
    assert w.for_request is None
    assert w.state is WorkerState.LEASED
    # Its lease over, an actor's worker is killed, never reused.
    assert kinds(b.lease_returned(req.lease_id, kill=False)) == [KillWorker]


def test_a_worker_death_frees_its_lease():
    b = book(2)
    (w,) = with_idle(b)
    req = lease({"CPU": 2 * U})
    b.request(req)
    assert b.available["CPU"] == 0
    actions = b.worker_died(w, "its process exited")
    assert actions == [RESOURCES_CHANGED]
    assert b.available["CPU"] == 2 * U
    assert b.leases == {}
    assert req.state is LeaseState.REVOKED
    assert w.state is WorkerState.DEAD
    assert b.worker_died(w, "again") == []  # reported twice: once counts


def test_an_actor_worker_dying_at_start_fails_its_lease():
    b = book(1)
    req = lease({"CPU": U}, actor_id=b"actor")
    b.request(req)
    w = Worker(for_request=req, actor_id=b"actor")
    actions = b.worker_died(w, "killed")
    assert (
        Reject(req, FailCode.WORKER_DIED, "the worker for the actor died at start (killed)")
        in actions
    )
    assert req.state is LeaseState.FAILED
    assert b.available["CPU"] == U


def test_a_pool_worker_dying_at_start_is_started_again():
    b = book(1)
    req = lease({"CPU": U})
    assert b.request(req) == [StartWorker(None)]
    assert b.worker_died(Worker(), "crashed") == [StartWorker(None)]
    assert b.starting == 1


def test_an_idle_worker_dying_leaves_the_idle_list():
    b = book(1)
    (w,) = with_idle(b)
    b.worker_died(w, "killed")
    assert b.idle == []
    assert b.request(lease({"CPU": U})) == [StartWorker(None)]


def test_infeasible_on_one_node_warns_and_waits():
    b = book(1)
    req = lease({"CPU": U, "GPU": U})
    actions = b.request(req)
    assert actions == [Infeasible(req, {"GPU": U})]
    assert b.pending == [req]


def test_blocked_lease_lends_its_cpu_back():
    b = book(1)
    w1, _w2 = with_idle(b, 2)
    first, second = lease({"CPU": U}), lease({"CPU": U})
    b.request(first)
    b.request(second)
    assert b.pending == [second]
    actions = b.worker_blocked(first.lease_id)
    assert first.state is LeaseState.BLOCKED
    assert actions == [Grant(second, w1)]
    b.worker_unblocked(first.lease_id)  # takes its CPU back: over-committed for now
    assert first.state is LeaseState.GRANTED
    assert b.available["CPU"] == -U
    b.worker_blocked(first.lease_id)
    b.lease_returned(first.lease_id, kill=False)  # blocked: only what it still held returns
    assert b.available["CPU"] == 0


def test_gpu_ids_are_assigned_and_given_back():
    b = book(4, gpus=2)
    with_idle(b, 2)
    one, two = lease({"CPU": U, "GPU": U}), lease({"CPU": U, "GPU": U})
    b.request(one)
    b.request(two)
    assert (one.gpu_ids, two.gpu_ids) == ([0], [1])
    assert b.gpu_free == {0: 0, 1: 0}
    b.lease_returned(one.lease_id, kill=False)
    assert b.gpu_free == {0: U, 1: 0}
    half = lease({"GPU": U // 2})
    b.request(half)
    assert half.gpu_ids == [0]


def test_gpu_shares_pack_onto_the_first_gpu_with_room():
    b = book(8, gpus=2)
    with_idle(b, 5)
    halves = [lease({"GPU": U // 2}) for _ in range(4)]
    for h in halves:
        b.request(h)
    assert [h.gpu_ids for h in halves] == [[0], [0], [1], [1]]  # as Ray: 0, 0, 1, 1
    b.lease_returned(halves[1].lease_id, kill=False)
    assert b.gpu_free == {0: U // 2, 1: 0}
    # Half a GPU is free in all, but no whole GPU: a whole request waits.
    whole = lease({"GPU": U})
    b.request(whole)
    assert whole.state is LeaseState.PENDING
    b.lease_returned(halves[0].lease_id, kill=False)  # GPU 0 is whole again
    assert whole.gpu_ids == [0]


def test_a_share_waits_when_no_single_gpu_has_room_for_it():
    b = book(8, gpus=2)
    with_idle(b, 4)
    small = [lease({"GPU": 3 * U // 5}) for _ in range(2)]  # 0.6 on each GPU
    for s in small:
        b.request(s)
    assert [s.gpu_ids for s in small] == [[0], [1]]
    half = lease({"GPU": U // 2})  # 0.8 free in all, 0.4 on each: it does not fit
    b.request(half)
    assert half.state is LeaseState.PENDING
    b.lease_returned(small[1].lease_id, kill=False)
    assert half.gpu_ids == [1]


def test_cancel_a_waiting_request():
    b = book(1)
    req = lease({"CPU": 2 * U})
    b.request(req)
    assert b.cancel(req.lease_id) == [Reject(req, FailCode.CANCELLED, "cancelled")]
    assert req.state is LeaseState.CANCELLED
    assert b.pending == []
    assert b.cancel(req.lease_id) == []


def test_owner_gone_drops_its_requests_and_kills_its_workers():
    b = book(2)
    _w1, _w2 = with_idle(b, 2)
    gone, other = Owner(), Owner()
    mine = lease({"CPU": U}, gone)
    detached = lease({"CPU": U}, gone, detached=True)
    waiting = lease({"CPU": U}, gone)
    theirs = lease({"CPU": U}, other)
    for req in (mine, detached, waiting, theirs):
        b.request(req)
    assert b.pending == [waiting, theirs]
    gone.closed = True
    actions = b.owner_gone(gone)
    assert KillWorker(mine.worker) in actions  # type: ignore[arg-type]
    assert KillWorker(detached.worker) not in actions  # type: ignore[arg-type]
    assert waiting.state is LeaseState.CANCELLED
    assert b.pending == [theirs]


def test_an_owner_closed_while_waiting_is_dropped_at_the_next_schedule():
    b = book(1)
    owner = Owner()
    req = lease({"CPU": 2 * U}, owner)
    b.request(req)
    owner.closed = True
    assert b.schedule() == []
    assert req.state is LeaseState.CANCELLED
    assert b.pending == []


def test_actor_owner_gone_while_its_worker_started():
    b = book(1)
    owner = Owner()
    req = lease({"CPU": U}, owner, actor_id=b"actor")
    b.request(req)
    owner.closed = True
    w = Worker(for_request=req, actor_id=b"actor")
    actions = b.worker_started(w)
    assert KillWorker(w) in actions
    assert not any(isinstance(a, Grant) for a in actions)
    assert req.state is LeaseState.REVOKED
    assert b.available["CPU"] == U


def test_spillback_to_a_node_with_room_debits_its_view():
    there = node(b"there", {"CPU": 4 * U})
    b = book(1, view=View(others=[there]))
    (_w,) = with_idle(b)
    b.request(lease({"CPU": U}))  # takes this node's only CPU
    req = lease({"CPU": U})
    actions = b.request(req)
    assert actions == [Spillback(req, there, {"CPU": 3 * U})]
    assert req.state is LeaseState.SPILLED
    assert b.pending == []


def test_a_burst_spreads_over_free_nodes_within_one_schedule():
    a = node(b"a", {"CPU": 1 * U})
    c = node(b"c", {"CPU": 1 * U})
    view = View(others=[])
    b = book(1, view=view)
    with_idle(b)
    b.request(lease({"CPU": U}))
    # Two requests wait here (placed when this node looked free), then nodes appear.
    first, second = lease({"CPU": U}), lease({"CPU": U})
    b.pending.extend([first, second])
    view.others = [a, c]
    actions = [x for x in b.schedule() if isinstance(x, Spillback)]
    # The first spillback counts a's CPU as taken: the second goes to c.
    assert {x.node.node_id for x in actions} == {b"a", b"c"}


def test_hop_limit_a_request_sent_on_enough_waits_here():
    there = node(b"there", {"CPU": 4 * U})
    b = book(1, view=View(others=[there]), max_hops=2)
    with_idle(b)
    b.request(lease({"CPU": U}))
    tired = lease({"CPU": U}, spilled=2)
    assert kinds(b.request(tired)) == []  # not placed again: it waits for this node
    assert b.pending == [tired]
    young = lease({"CPU": U}, spilled=1)  # sent here once: another node has room now
    assert kinds(b.request(young)) == [Spillback]


def test_a_request_out_of_hops_moves_on_at_a_fresh_view_to_room_there():
    # Late views bounced it max_hops times; now this node is full, another has room.
    view = View()
    b = book(1, view=view, max_hops=2)
    with_idle(b)
    b.request(lease({"CPU": U}))
    tired = lease({"CPU": U}, spilled=2)
    assert b.request(tired) == []
    view.others = [node(b"busy", {"CPU": U}, {"CPU": 0}), node(b"free", {"CPU": 2 * U})]
    assert b.schedule() == []  # a local event: no hop
    (action,) = b.view_refreshed()  # a heartbeat's numbers: it moves once, to the room
    assert isinstance(action, Spillback)
    assert (action.lease, action.node.node_id) == (tired, b"free")
    assert b.pending == []


def test_a_request_out_of_hops_waits_at_a_fresh_view_without_room():
    b = book(1, view=View(others=[node(b"busy", {"CPU": 4 * U}, {"CPU": 0})]), max_hops=2)
    with_idle(b)
    b.request(lease({"CPU": U}))
    tired = lease({"CPU": U}, spilled=2)
    b.request(tired)
    assert b.view_refreshed() == [RESOURCES_CHANGED]  # never sent to wait elsewhere
    assert b.pending == [tired]


def test_a_pinned_request_waits_here_even_at_a_fresh_view():
    b = book(1, view=View(others=[node(b"free", {"CPU": 2 * U})]))
    with_idle(b)
    b.request(lease({"CPU": U}))
    own = lease({"CPU": U}, pinned=True)  # the node's own (a detached actor's restart)
    assert b.request(own) == []  # not placed: it waits for this node
    assert b.view_refreshed() == []
    assert b.pending == [own]


def test_a_request_sent_here_moves_on_only_to_room_now():
    busy = node(b"busy", {"CPU": 4 * U}, {"CPU": 0})
    b = book(1, view=View(others=[busy]))
    with_idle(b)
    b.request(lease({"CPU": U}))
    req = lease({"CPU": U}, spilled=1)
    actions = b.request(req)
    # Placement would send it to wait at `busy`: no, it waits here and asks for fresh views.
    assert actions == [RESOURCES_CHANGED]
    assert b.pending == [req]


def test_hard_affinity_to_a_dead_node_is_rejected():
    b = book(1, view=View(others=[node(b"alive", {"CPU": U})]))
    req = lease({"CPU": U}, strategy=NodeAffinity(b"gone".hex(), soft=False))
    (action,) = b.request(req)
    assert isinstance(action, Reject)
    assert "hard node affinity" in action.reason
    assert req.state is LeaseState.FAILED


def test_spread_is_placed_once():
    there = node(b"zzz", {"CPU": U})
    b = book(1, view=View(node_id=b"aaa", others=[there]), max_hops=3)
    with_idle(b)
    first, second = lease({"CPU": U}, strategy="SPREAD"), lease({"CPU": U}, strategy="SPREAD")
    assert kinds(b.request(first)) == [Spillback]  # round-robin: seq 1 picks the second node
    assert kinds(b.request(second)) == [Grant]
    assert first.spilled == second.spilled == 3


def test_place_shape_places_without_a_request():
    b = book(1)
    assert b.place_shape({"CPU": U}, b"actor").kind == "here"
    assert b.place_shape({"GPU": U}, b"actor").kind == "infeasible"
    assert b.pending == []


def test_stopping_grants_and_starts_nothing():
    b = book(1)
    with_idle(b)
    b.stop()
    req = lease({"CPU": U})
    assert b.request(req) == []
    assert b.pending == [req]


def test_pending_shapes_are_capped():
    b = book(0)
    for _ in range(5):
        b.request(lease({"CPU": U}))
    assert b.pending_shapes(3) == [{"CPU": U}] * 3


def test_invalid_transition_raises():
    b = book(1)
    (w,) = with_idle(b)
    with pytest.raises(InvalidTransition, match="IDLE -> IDLE"):
        b.worker_started(w)  # registered twice
    req = lease({"CPU": U})
    b.request(req)
    b.lease_returned(req.lease_id, kill=False)
    with pytest.raises(InvalidTransition, match="RETURNED -> GRANTED"):
        transition(req, LeaseState.GRANTED, LEASE_TRANSITIONS, cause="late", who=req.lease_id)
    assert req.state is LeaseState.RETURNED


def test_a_request_waiting_long_on_held_resources_is_reported_once_with_its_holders():
    b = book(1)
    holder = lease({"CPU": U}, actor_id=b"\x0a" * 16)
    (start,) = b.request(holder)
    assert start == StartWorker(holder)
    b.worker_started(Worker(for_request=holder))  # the actor's own worker registered
    assert holder.state is LeaseState.GRANTED
    waiting = lease({"CPU": U}, waiting_since=100.0)
    b.request(waiting)
    assert b.waiting_long(now=101.0, after=5.0) == []  # not long yet
    ((which, holders),) = b.waiting_long(now=106.0, after=5.0)
    assert which is waiting
    assert holders == "1 actor(s) (0a0a0a0a0a0a)"
    assert b.waiting_long(now=120.0, after=5.0) == []  # once


def test_a_request_waiting_behind_running_tasks_is_a_backlog_not_reported():
    b = book(1)
    task = lease({"CPU": U})
    assert len(b.request(task)) == 1  # its worker starts
    b.worker_started(Worker(for_request=task))
    assert task.state is LeaseState.GRANTED
    b.request(lease({"CPU": U}, waiting_since=100.0))
    assert b.waiting_long(now=200.0, after=5.0) == []  # the task ends: no hang


def test_a_request_waiting_for_a_worker_to_start_is_not_reported():
    b = book(2)
    req = lease({"CPU": U}, waiting_since=0.0)
    b.request(req)  # resources free, no idle worker: one is starting
    assert b.waiting_long(now=100.0, after=5.0) == []
