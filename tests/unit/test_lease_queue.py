"""The owner's lease queues in-process, dask-style: feed events, assert the actions.

No core worker, no node manager: a grant is a LeaseGranted built here, time is a
number passed in. The last test runs the shell (core_harness) to check the messages
its actions send.
"""

from __future__ import annotations

import itertools
from typing import Any

from raylite import protocol as P
from raylite.config import Config
from raylite.core.lease_queue import (
    ArmLinger,
    Ask,
    Cancel,
    FailQueue,
    GiveBack,
    Lease,
    LeaseQueues,
    Push,
)
from raylite.core.tasks import TaskSpec

from .core_harness import Harness, StandIn, h

__all__ = ["h"]  # the fixture, imported for pytest

LINGER = 1.0
CPU = {"CPU": 10000}
GPU = {"CPU": 10000, "GPU": 10000}
_ids = itertools.count(1)


def queues(max_pending: int = 10) -> LeaseQueues:
    return LeaseQueues(Config(lease_linger_s=LINGER, max_pending_leases=max_pending))


def task(shape: dict[str, int] = CPU) -> TaskSpec:
    n = next(_ids).to_bytes(4, "big")
    key: tuple[Any, ...] = tuple(sorted(shape.items()))
    return TaskSpec(n, "f", b"f", None, b"", [n + b"r"], shape, key, 0, False)


def grant(
    q: LeaseQueues, ask: Ask, node: bytes = b"node-a", now: float = 0.0
) -> tuple[Lease, list]:
    """The node manager grants the request `ask` made: the new lease and the actions."""
    n = next(_ids)
    reply = P.LeaseGranted(ask.lease_id, b"w%d" % n, f"unix:/w{n}.sock", n, [], node)
    lease = Lease(reply, ask.sclass)
    return lease, q.granted(lease, now)


def idle_leases(q: LeaseQueues, *nodes: bytes, shape: dict[str, int] = CPU) -> list[Lease]:
    """Leases (one granted on each of `nodes`) that ran a task each and are now idle
    (from time 0)."""
    specs = [task(shape) for _ in nodes]
    asks = [a for spec in specs for a in q.enqueue(spec) if isinstance(a, Ask)]
    leases = []
    for spec, ask, node in zip(specs, asks, nodes, strict=True):
        lease, actions = grant(q, ask, node)
        assert actions == [Push(lease, spec)]
        leases.append(lease)
    for lease in leases:
        q.task_ended(lease, 0.0)
    assert leases[0].sclass.idle == leases
    return leases


def idle_lease(q: LeaseQueues, shape: dict[str, int] = CPU) -> Lease:
    """A lease that ran one task and is now idle (from time 0)."""
    return idle_leases(q, b"node-a", shape=shape)[0]


def test_a_ready_task_asks_for_a_lease_and_the_grant_runs_it():
    q = queues()
    spec = task()
    (ask,) = q.enqueue(spec)
    assert isinstance(ask, Ask)
    assert ask.sclass.pending == {ask.lease_id: ""}
    assert list(ask.sclass.queue) == [spec]
    lease, actions = grant(q, ask)
    assert actions == [Push(lease, spec)]
    assert q.leases == {lease.lease_id: lease}
    assert ask.sclass.pending == {}


def test_an_idle_lease_takes_the_next_task_with_one_action():
    q = queues()
    lease = idle_lease(q)
    spec = task()
    assert q.enqueue(spec) == [Push(lease, spec)]
    assert lease.sclass.idle == []


def test_a_task_ending_runs_the_next_queued_task_on_its_lease():
    q = queues()
    first, second = task(), task()
    (ask,) = q.enqueue(first)
    (_second_ask,) = q.enqueue(second)
    lease, actions = grant(q, ask)
    assert actions == [Push(lease, first)]
    assert q.task_ended(lease, 5.0) == Push(lease, second)
    # Nothing queued now: it goes idle at the time given, and sets the timer once.
    assert q.task_ended(lease, 6.0) == ArmLinger(LINGER)
    assert lease.idle_at == 6.0
    assert q.linger_armed


def test_requests_in_flight_are_capped_per_class():
    q = queues(max_pending=3)
    actions = [a for _ in range(5) for a in q.enqueue(task())]
    assert [type(a) for a in actions] == [Ask, Ask, Ask]
    sc = actions[0].sclass
    assert set(sc.pending) == {a.lease_id for a in actions}
    assert len(sc.queue) == 5
    # A request refused: another is asked for in its place.
    (again,) = q.refused(sc, actions[0].lease_id, gone=False)
    assert isinstance(again, Ask)
    assert again.lease_id not in {a.lease_id for a in actions}
    assert len(sc.pending) == 3


def test_requests_are_cancelled_where_they_wait_once_the_queue_is_empty():
    q = queues()
    first, second, third = task(), task(), task()
    a, b, c = (q.enqueue(spec)[0] for spec in (first, second, third))
    sc = a.sclass
    assert q.spilled(sc, c.lease_id, "tcp:10.0.0.2:7000")
    q.dequeue(second)  # cancelled while queued
    q.dequeue(third)
    lease, actions = grant(q, a)
    assert actions == [Push(lease, first), Cancel(b.lease_id, ""),
                       Cancel(c.lease_id, "tcp:10.0.0.2:7000")]  # fmt: skip
    assert sc.pending == {}
    # A spillback or grant that crossed the cancel is not followed, and given back.
    assert not q.spilled(sc, b.lease_id, "tcp:10.0.0.3:7000")
    late, actions = grant(q, c)
    assert actions == [GiveBack(late)]
    assert late.returned
    assert late.lease_id not in q.leases


def test_a_class_that_needs_resources_gives_back_other_shapes_idle_leases():
    q = queues()
    cpu_lease = idle_lease(q, CPU)
    gpu_task = task(GPU)
    actions = q.enqueue(gpu_task)
    assert [type(a) for a in actions] == [GiveBack, Ask]
    assert actions[0] == GiveBack(cpu_lease)
    assert cpu_lease.sclass.idle == []
    assert cpu_lease.lease_id not in q.leases
    # Its own idle leases are kept: a second CPU lease idle, another CPU task takes it.
    own = idle_lease(q, CPU)
    spec = task(CPU)
    assert q.enqueue(spec) == [Push(own, spec)]


def test_an_idle_lease_lingers_for_its_time_then_goes_back():
    q = queues()
    lease = idle_lease(q)  # idle at 0
    assert q.linger_over(LINGER / 2) == [ArmLinger(LINGER / 2)]  # too early: again later
    assert lease.sclass.idle == [lease]
    assert q.linger_over(LINGER) == [GiveBack(lease)]
    assert lease.sclass.idle == []
    assert q.leases == {}
    assert not q.linger_armed  # nothing idle: no timer


def test_only_the_leases_past_their_linger_time_go():
    q = queues()
    first, second = task(), task()
    a, b = q.enqueue(first)[0], q.enqueue(second)[0]
    old, _ = grant(q, a)
    new, _ = grant(q, b)
    assert q.task_ended(old, 0.0) == ArmLinger(LINGER)
    assert q.task_ended(new, 0.75) is None  # the timer is set already
    assert q.linger_over(LINGER + 0.25) == [GiveBack(old), ArmLinger(0.5)]
    assert new.sclass.idle == [new]


def test_a_lease_reused_before_its_linger_time_is_kept():
    q = queues()
    lease = idle_lease(q)
    spec = task()
    assert q.enqueue(spec) == [Push(lease, spec)]
    q.task_ended(lease, 0.5)
    assert q.linger_over(LINGER) == [ArmLinger(0.5)]
    assert lease.sclass.idle == [lease]


def test_release_idle_gives_back_every_idle_lease():
    q = queues()
    a, b = idle_leases(q, b"node-a", b"node-a")
    assert q.release_idle() == [GiveBack(b), GiveBack(a)]
    assert q.leases == {}
    assert q.release_idle() == []


def test_a_dead_node_takes_its_idle_leases_and_names_its_workers():
    q = queues()
    idle_there, idle_here = idle_leases(q, b"dead", b"alive")
    spec = task(CPU)
    (push,) = q.enqueue(spec)  # runs on one of them: the last to go idle
    assert push == Push(idle_here, spec)
    busy_here = idle_here
    spec2, spec3 = task(CPU), task(CPU)
    assert q.enqueue(spec2) == [Push(idle_there, spec2)]
    (ask,) = q.enqueue(spec3)
    busy_there, _ = grant(q, ask, node=b"dead")
    q.task_ended(idle_there, 1.0)  # idle on the dead node; busy_there still runs
    assert q.node_died(b"dead") == {idle_there.address, busy_there.address}
    assert idle_there.sclass.idle == []
    assert idle_there.lease_id not in q.leases
    assert busy_there.lease_id in q.leases  # its push fails and the shell kills it
    assert busy_here.lease_id in q.leases
    # Nothing is ever given back to the dead node.
    q.task_ended(busy_here, 2.0)
    assert q.release_idle() == [GiveBack(busy_here)]


def test_a_hard_affinity_refusal_fails_the_queue():
    q = queues()
    first, second = task(), task()
    (ask,) = q.enqueue(first)
    q.enqueue(second)
    sc = ask.sclass
    actions = q.refused(sc, ask.lease_id, gone=False, unplaceable="node x is not alive")
    assert actions == [FailQueue([first, second], "node x is not alive")]
    assert list(sc.queue) == []


def test_a_refusal_asks_again_only_while_tasks_wait_and_someone_answers():
    q = queues()
    first = task()
    (a,) = q.enqueue(first)
    sc = a.sclass
    assert q.refused(sc, a.lease_id, gone=True) == []  # our node manager is gone
    assert sc.pending == {}
    assert q.refused(sc, a.lease_id, gone=False) == []  # answered already
    second = task()
    b, c = q.enqueue(second)  # two wait now, none is asked for
    q.dequeue(first)
    q.dequeue(second)
    assert q.refused(sc, b.lease_id, gone=False) == []  # nothing waits
    third = task()
    assert q.enqueue(third) == []  # c is still pending for it
    (d,) = q.refused(sc, c.lease_id, gone=False)
    assert isinstance(d, Ask)
    assert sc.pending == {d.lease_id: ""}


# -- the shell (leasing.py) runs the actions: the messages that go out ------------------


def test_the_shell_follows_a_spillback_then_cancels_and_returns_there(h: Harness) -> None:
    other = StandIn("tcp:10.0.0.2:7000")
    h.cw.peers[other.name] = other  # type: ignore[assignment]
    _, first = h.submit()
    ref, _ = h.submit()
    a, answer_a = h.cw.nm.take(P.RequestLease)  # type: ignore[attr-defined]
    b, answer_b = h.cw.nm.take(P.RequestLease)  # type: ignore[attr-defined]
    answer_a(P.LeaseSpillback(other.name))
    again, answer_there = other.take(P.RequestLease)
    assert (again.lease_id, again.spilled) == (a.lease_id, 1)
    h.cw.cancel(ref, force=False)  # the second task leaves the queue
    worker = StandIn("unix:/worker.sock")
    h.cw.peers[worker.name] = worker  # type: ignore[assignment]
    answer_b(P.LeaseGranted(b.lease_id, b"w", worker.name, 7, [], b"n" * 16))
    push, _ = worker.take(P.PushTask)
    assert push.task_id == first.task_id
    assert [m.lease_id for m in other.of(P.CancelLease)] == [a.lease_id]  # where it waits
    # Its grant crossed the cancel: given back through our node manager.
    answer_there(P.LeaseGranted(a.lease_id, b"w2", "tcp:10.0.0.2:7001", 8, [], b"o" * 16))
    (back,) = h.cw.nm.of(P.ReturnLease)  # type: ignore[attr-defined]
    assert (back.lease_id, back.kill, back.via) == (a.lease_id, False, other.name)


def retriable(shape: dict[str, int] = CPU) -> TaskSpec:
    spec = task(shape)
    spec.max_retries = 3
    return spec


def running(q: LeaseQueues, spec: TaskSpec, now: float) -> Lease:
    """A granted lease running `spec` since `now` (the shell's part: busy, mark)."""
    (ask,) = [a for a in q.enqueue(spec) if isinstance(a, Ask)]
    lease, actions = grant(q, ask)
    assert actions == [Push(lease, spec)]
    lease.busy, lease.mark = spec, now
    return lease


def ended(q: LeaseQueues, lease: Lease, now: float) -> Any:
    """Its running task ended: the shell moves `busy` on (submission._advance), then
    asks the queues."""
    lease.busy = lease.queued.pop(0) if lease.queued else None
    return q.task_ended(lease, now)


def test_a_quick_class_pipelines_up_to_its_depth_behind_the_running_task():
    q = LeaseQueues(Config(lease_linger_s=LINGER, pipeline_depth=3))
    first, second, third, fourth, fifth = (retriable() for _ in range(5))
    lease = running(q, first, 0.0)
    for spec in (second, third, fourth, fifth):
        q.enqueue(spec)
    # first took 1 ms (< pipeline_task_s): the next runs, and more may queue behind it
    assert ended(q, lease, 0.001) == Push(lease, second)
    assert lease.sclass.fast
    lease.sclass.pace = 0.0001  # its tasks have been quick for a while: the depth bounds
    lease.busy = second  # the shell pushes it
    assert q.pipeline(lease) == Push(lease, third)
    lease.queued.append(third)
    assert q.pipeline(lease) == Push(lease, fourth)
    lease.queued.append(fourth)
    assert q.pipeline(lease) is None  # depth 3: the running task and two behind it
    # second ends: third (pushed already) runs, fifth goes behind fourth
    assert ended(q, lease, 0.0015) == Push(lease, fifth)


def test_what_waits_behind_a_running_task_is_bounded_by_the_class_pace():
    """At most pipeline_task_s of work at the class's pace waits behind the running
    task (one task at least, depth - 1 at most): quick tasks fill the pipeline, slower
    ones queue where other leases can take them."""

    def ahead(task_s: float, depth: int = 32) -> int:
        q = LeaseQueues(Config(lease_linger_s=LINGER, pipeline_task_s=0.002, pipeline_depth=depth))
        specs = [retriable() for _ in range(60)]
        lease = running(q, specs[0], 0.0)
        for spec in specs[1:]:
            q.enqueue(spec)
        now = 0.0
        for _ in range(20):  # tasks of task_s each, the pace settles on it
            now += task_s
            action = ended(q, lease, now)
            lease.busy = action.spec if isinstance(action, Push) else lease.busy
        lease.queued.clear()
        pushed = 0
        while (action := q.pipeline(lease)) is not None:
            lease.queued.append(action.spec)
            pushed += 1
        return pushed

    assert ahead(0.00005) == 31  # 40 would fit in 2 ms: the depth caps it
    assert ahead(0.00005, depth=8) == 7
    assert ahead(0.00049) == 4  # 2 ms of them
    assert ahead(0.0015) == 1  # one at least, while the class is quick


def test_a_slow_class_never_pipelines():
    q = queues()
    first, second, third = (retriable() for _ in range(3))
    lease = running(q, first, 0.0)
    q.enqueue(second)
    q.enqueue(third)
    assert ended(q, lease, 0.5) == Push(lease, second)  # took 0.5 s
    assert not lease.sclass.fast
    lease.busy = second
    assert q.pipeline(lease) is None


def test_tasks_a_dead_worker_would_lose_unrun_are_never_pipelined():
    def pipelined(**change: Any) -> Push | None:
        q = queues()
        first, second = retriable(), retriable()
        for name, value in change.items():
            setattr(second, name, value)
        lease = running(q, first, 0.0)
        q.enqueue(second)
        ended(q, lease, 0.0)  # second runs now: nothing behind it to pipeline
        lease.busy, lease.mark = second, 0.0
        third = retriable()
        for name, value in change.items():
            setattr(third, name, value)
        q.enqueue(third)
        return q.pipeline(lease)

    assert pipelined() is not None
    assert pipelined(max_retries=0) is None  # unrun, it would fail with its worker
    assert pipelined(pipelinable=False) is None  # max_calls: its worker exits after it
    assert pipelined(generator=P.GENERATOR_STREAMING) is None


def test_pipelining_is_off_with_a_zero_threshold():
    q = LeaseQueues(Config(lease_linger_s=LINGER, pipeline_task_s=0.0))
    first, second, third = (retriable() for _ in range(3))
    lease = running(q, first, 0.0)
    q.enqueue(second)
    q.enqueue(third)
    assert ended(q, lease, 0.0) == Push(lease, second)
    lease.busy = second
    assert q.pipeline(lease) is None


def test_a_class_with_a_scheduling_strategy_never_pipelines():
    # SPREAD wants its tasks on many nodes: stacking them on one lease defeats it.
    q = queues()
    specs = [retriable() for _ in range(3)]
    for spec in specs:
        spec.strategy = "SPREAD"
        spec.shape_key = (*spec.shape_key, ("@strategy", "'SPREAD'"))
    lease = running(q, specs[0], 0.0)
    q.enqueue(specs[1])
    q.enqueue(specs[2])
    assert ended(q, lease, 0.0) == Push(lease, specs[1])
    lease.busy = specs[1]
    assert q.pipeline(lease) is None
