"""An idle lease lingers for lease_linger_s, then goes back to its node manager.

In-process (core_harness): the linger timer is called by hand after moving the
lease's idle time stamp back, so the tests do not wait for real time to pass.
"""

from __future__ import annotations

from raylite import protocol as P

from .core_harness import LINGER_S, Harness, StandIn, done, h

__all__ = ["h"]  # the fixture, imported for pytest


def run_one(h: Harness, worker: StandIn | None = None) -> StandIn:
    """Submit a task, run it on `worker` (or a newly granted one); its lease goes idle."""
    h.submit()
    if worker is None:
        worker = h.grant()
    push, reply = worker.take(P.PushTask)
    reply(done(push))
    return worker


def returned(h: Harness) -> list[P.ReturnLease]:
    return h.cw.nm.of(P.ReturnLease)  # type: ignore[attr-defined, no-any-return]


def linger_timers(h: Harness) -> int:
    return sum(1 for *_, fn in h.cw.timers._heap if fn == h.cw._linger_over)


def test_an_idle_lease_is_kept_for_its_linger_time_then_given_back(h: Harness) -> None:
    run_one(h)
    (sc,) = h.cw.classes.values()
    (lease,) = sc.idle
    h.cw._linger_over()  # too early: kept, and the timer is set again
    assert sc.idle == [lease]
    assert returned(h) == []
    assert h.cw.queues.linger_armed
    assert linger_timers(h) == 2
    lease.idle_at -= LINGER_S
    h.cw._linger_over()
    assert sc.idle == []
    assert [(m.lease_id, m.kill) for m in returned(h)] == [(lease.lease_id, False)]
    assert lease.lease_id not in h.cw.leases
    assert not h.cw.queues.linger_armed  # nothing idle left: no timer set again


def test_a_lease_reused_before_its_linger_time_is_kept(h: Harness) -> None:
    worker = run_one(h)
    (sc,) = h.cw.classes.values()
    (lease,) = sc.idle
    lease.idle_at -= LINGER_S  # it would be due now...
    run_one(h, worker)  # ...but it ran another task, which restarts its linger time
    assert sc.idle == [lease]
    h.cw._linger_over()
    assert sc.idle == [lease]
    assert returned(h) == []


def test_one_timer_serves_every_task_that_leaves_a_lease_idle(h: Harness) -> None:
    worker = run_one(h)
    for _ in range(20):
        run_one(h, worker)
    assert linger_timers(h) == 1


def test_only_the_leases_past_their_linger_time_go(h: Harness) -> None:
    first = run_one(h)
    h.submit()
    h.submit()
    push, reply = first.take(P.PushTask)
    second = h.grant()
    reply(done(push))  # first runs the second task, second the third
    push, reply = second.take(P.PushTask)
    reply(done(push))
    (sc,) = h.cw.classes.values()
    old, new = sorted(sc.idle, key=lambda lease: lease.address != first.name)
    old.idle_at -= LINGER_S
    h.cw._linger_over()
    assert sc.idle == [new]
    assert [m.lease_id for m in returned(h)] == [old.lease_id]
    assert h.cw.queues.linger_armed  # for the one still idle
