"""The worker process cap: its default formula, and the lease book at the cap
(requests wait, idle workers of other envs make room, exits let waiting work start)."""

from __future__ import annotations

from typing import Any

import pytest

from raylite.config import CONFIG, RESOURCE_UNIT
from raylite.node.lease_book import (
    Grant,
    KillWorker,
    LeaseBook,
    LeaseState,
    StartWorker,
    WorkerState,
)
from raylite.node.worker_cap import (
    FDS_PER_WORKER,
    FDS_RESERVED,
    WORKER_BYTES,
    WorkerCap,
    default_max_workers,
    waiting_on_cap,
)

from .test_lease_book import View, Worker, kinds, lease

U = RESOURCE_UNIT
GIB = 1 << 30


def capped(cap: int, cpus: int = 8, **total: int) -> LeaseBook:
    return LeaseBook({"CPU": cpus * U, **total}, 0, View(), cluster=False, max_workers=cap)


def starts(actions: list[Any]) -> list[StartWorker]:
    return [a for a in actions if isinstance(a, StartWorker)]


# --------------------------------------------------------------- the default
def test_default_is_memory_led_on_a_machine_with_memory():
    # 24 GiB available, 2 CPUs, plenty of fds: 24 GiB / 64 MiB = 384.
    assert default_max_workers(2, 24 * GIB, 1 << 20) == 24 * GIB // WORKER_BYTES == 384


def test_default_never_below_four_per_cpu():
    assert default_max_workers(16, 256 << 20, 1 << 20) == 64  # 4 by memory, 64 by CPUs
    assert default_max_workers(0, 0, 1 << 20) == 4  # a 0-CPU node still runs workers
    assert default_max_workers(0.5, 0, 1 << 20) == 4


def test_default_never_above_what_the_fds_allow():
    assert default_max_workers(2, 24 * GIB, 1024) == (1024 - FDS_RESERVED) // FDS_PER_WORKER
    assert default_max_workers(64, 1 << 40, 1024) == 192  # fds bound the CPU floor too
    assert default_max_workers(2, 24 * GIB, 10) == 1  # absurdly few fds: still one


def test_cap_counts_and_refuses_past_the_limit():
    cap = WorkerCap(2)
    assert cap.take()
    assert cap.take()
    assert not cap.take()
    assert cap.room() == 0
    cap.exited(b"w")
    assert cap.room() == 1
    assert WorkerCap(0).take()
    assert WorkerCap(0).room() > 1 << 20
    with pytest.raises(ValueError, match="max_workers"):
        WorkerCap(-1)


# ------------------------------------------------------------ the book at the cap
def test_prestart_stops_at_the_cap():
    b = capped(3)
    assert len(b.prestart(8)) == 3
    assert b.starting == 3
    assert b.cap.processes == 3


def test_actor_creation_waits_at_the_cap_without_holding_resources():
    b = capped(2, cpus=4)
    first, second, third = (lease({"CPU": U}, actor_id=bytes([i])) for i in range(3))
    assert b.request(first) == [StartWorker(first)]
    assert b.request(second) == [StartWorker(second)]
    assert b.request(third) == []  # the cap: nothing forked, its CPU not taken
    assert third.state is LeaseState.PENDING
    assert b.available["CPU"] == 2 * U
    workers = []
    for req in (first, second):
        w = Worker(for_request=req, actor_id=req.actor_id)
        assert b.worker_started(w) == [Grant(req, w)]
        workers.append(w)
    # The first actor is killed: its lease ends (KillWorker), but its process still
    # exists until its exit is seen, so the third still waits.
    assert kinds(b.lease_returned(first.lease_id, kill=False)) == [KillWorker]
    assert third.state is LeaseState.PENDING
    # Its connection closes first (worker_died): the process may still be exiting.
    assert starts(b.worker_died(workers[0], "killed")) == []
    assert third.state is LeaseState.PENDING
    assert starts(b.process_exited(workers[0])) == [StartWorker(third)]  # reaped
    assert third.state is LeaseState.STARTING
    assert b.cap.processes == 2


def test_tasks_past_the_cap_wait_for_a_worker_and_reuse_it():
    b = capped(2, cpus=8)
    reqs = [lease({"CPU": U}) for _ in range(5)]
    actions = [a for r in reqs for a in b.request(r)]
    assert starts(actions) == [StartWorker(None)] * 2  # not 5
    w1, w2 = Worker(), Worker()
    assert b.worker_started(w1) == [Grant(reqs[0], w1)]
    assert b.worker_started(w2) == [Grant(reqs[1], w2)]
    assert [r.state for r in reqs[2:]] == [LeaseState.PENDING] * 3
    # A lease comes back: its worker serves the next waiting one, nothing is forked.
    actions = b.lease_returned(reqs[0].lease_id, kill=False)
    assert Grant(reqs[2], w1) in actions
    assert starts(actions) == []
    assert b.cap.processes == 2


def test_at_the_cap_idle_workers_of_other_envs_are_reclaimed():
    b = capped(2, cpus=8)
    env_worker = Worker(env_key="envA")
    # An env worker that served a request of its env, now idle.
    env_req = lease({"CPU": U}, env_key="envA", runtime_env={"env_vars": {"A": "1"}})
    assert starts(b.request(env_req)) == [StartWorker(None, "envA", env_req.runtime_env)]
    assert b.worker_started(env_worker) == [Grant(env_req, env_worker)]
    b.lease_returned(env_req.lease_id, kill=False)
    assert b.idle_env == {"envA": [env_worker]}
    pool_worker = Worker()
    first = lease({"CPU": U})
    assert starts(b.request(first)) == [StartWorker(None)]
    b.worker_started(pool_worker)
    assert first.state is LeaseState.GRANTED
    # At the cap (2): a task needing a new process kills the idle env worker.
    second = lease({"CPU": U})
    assert b.request(second) == [KillWorker(env_worker)]
    assert env_worker.state is WorkerState.LEASED  # out of the idle pool, dying
    assert b.idle_env == {}
    # Another one: nothing idle is left to reclaim (the pool worker is busy).
    third = lease({"CPU": U})
    assert b.request(third) == []
    # The env worker's exit makes room: one pool worker starts for the two waiting.
    b.worker_died(env_worker, "reclaimed")
    assert starts(b.process_exited(env_worker)) == [StartWorker(None)]
    assert b.cap.reclaimed == set()
    assert b.cap.processes == 2


def test_reclaim_kills_no_more_than_needed():
    b = capped(3, cpus=8)
    envs = []
    for key in ("a", "b", "c"):
        req = lease({"CPU": U}, env_key=key, runtime_env={"env_vars": {key: "1"}})
        b.request(req)
        w = Worker(env_key=key)
        b.worker_started(w)
        b.lease_returned(req.lease_id, kill=False)
        envs.append(w)
    assert b.cap.processes == 3
    # One task needs one process: one idle env worker goes; asking again kills no more.
    task = lease({"CPU": U})
    assert b.request(task) == [KillWorker(envs[0])]
    assert b.schedule() == []
    assert len(b.cap.reclaimed) == 1


def test_an_env_that_fails_to_build_gives_its_count_back():
    b = capped(1, cpus=2)
    req = lease({"CPU": U}, env_key="bad", runtime_env={"pip": ["nope"]})
    assert len(starts(b.request(req))) == 1
    assert b.cap.processes == 1
    b.env_failed("bad", None, "pip failed")
    assert b.cap.processes == 0
    assert starts(b.request(lease({"CPU": U}))) == [StartWorker(None)]


def test_a_request_waiting_on_the_cap_is_announced_once():
    b = capped(1, cpus=4)
    actor = lease({"CPU": 0}, actor_id=b"a")
    b.request(actor)
    b.worker_started(Worker(for_request=actor, actor_id=b"a"))
    task = lease({"CPU": U}, waiting_since=0.0)
    assert b.request(task) == []
    after = CONFIG.pending_warn_s
    assert waiting_on_cap(b.cap, b.pending, b.leases.values(), b.available, after / 2, after) == []
    (warned,) = waiting_on_cap(b.cap, b.pending, b.leases.values(), b.available, after + 1, after)
    assert warned[0] is task
    assert "1 actor(s) and 0 task lease(s)" in warned[1]
    assert "cap of 1 worker processes" in warned[1]
    assert "RAYLITE_MAX_WORKERS" in warned[1]
    assert waiting_on_cap(b.cap, b.pending, b.leases.values(), b.available, after + 2, after) == []


def test_no_cap_changes_nothing():
    b = capped(0, cpus=4)
    assert len(b.prestart(100)) == 100
    reqs = [lease({"CPU": 0}, actor_id=bytes([i])) for i in range(50)]
    assert sum(len(starts(b.request(r))) for r in reqs) == 50
