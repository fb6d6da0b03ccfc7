"""The memory monitor's policy (node/memory_policy.py), its readings (memory_monitor.py)
and what an owner does with a task killed for memory (core/submission.py), in-process."""

from __future__ import annotations

import logging
import os
import types

import pytest

from raylite import protocol as P
from raylite.config import CONFIG, load
from raylite.core import lifecycle as L
from raylite.exceptions import ConnectionLost, OutOfMemoryError, RayError
from raylite.node.memory_monitor import MemoryMonitor, read_cgroup, read_fake
from raylite.node.memory_policy import (
    Candidate,
    GiB,
    MemoryReading,
    choose_victims,
    kill_buffer,
    oom_message,
    oom_retry_delay_s,
    threshold_bytes,
    with_task,
)
from raylite.serialization import loads_inline

from .core_harness import Harness, h  # noqa: F401  (the fixture)

TOTAL = 100 * GiB
THRESHOLD = threshold_bytes(TOTAL, 0.95)


def worker(n: int, *, order: int, retriable: bool = True, memory: int = 10 * GiB,
           leased: bool = True) -> Candidate:  # fmt: skip
    return Candidate(bytes([n]) * 16, 1000 + n, leased, retriable, order, memory)


def test_nothing_is_killed_under_the_threshold() -> None:
    workers = [worker(1, order=1)]
    assert choose_victims(workers, MemoryReading(THRESHOLD, TOTAL), THRESHOLD) == []
    assert choose_victims(workers, MemoryReading(THRESHOLD + 1, TOTAL), THRESHOLD) != []


def test_the_newest_retriable_worker_goes_first() -> None:
    old, new = worker(1, order=1), worker(2, order=2)
    fixed = worker(3, order=3, retriable=False)  # newest, but not retriable
    reading = MemoryReading(THRESHOLD + 1, TOTAL)
    (victim,) = choose_victims([old, fixed, new], reading, THRESHOLD)
    assert victim is new


def test_a_non_retriable_worker_goes_only_when_no_retriable_one_is_left() -> None:
    older, newer = worker(1, order=1, retriable=False), worker(2, order=2, retriable=False)
    (victim,) = choose_victims([older, newer], MemoryReading(THRESHOLD + 1, TOTAL), THRESHOLD)
    assert victim is newer


def test_workers_are_taken_until_they_cover_the_excess_and_the_buffer() -> None:
    excess = 2 * GiB
    reading = MemoryReading(THRESHOLD + excess, TOTAL)
    need = excess + kill_buffer(TOTAL)
    assert kill_buffer(TOTAL) == 3 * GiB  # 5% of 100 GiB, capped at 3 GiB
    workers = [worker(n, order=n, memory=2 * GiB) for n in range(1, 6)]
    victims = choose_victims(workers, reading, THRESHOLD)
    assert [v.order for v in victims] == [5, 4, 3]  # newest first, 6 GiB >= 5 GiB
    assert sum(v.memory for v in victims) >= need > sum(v.memory for v in victims[:-1])


def test_a_big_idle_worker_goes_before_leased_ones_and_small_idle_ones_never() -> None:
    big_idle = worker(1, order=-1, leased=False, memory=2 * GiB)
    small_idle = worker(2, order=-1, leased=False, memory=GiB // 2)
    busy = worker(3, order=3, memory=10 * GiB)
    reading = MemoryReading(THRESHOLD + 1, TOTAL)
    assert choose_victims([busy, small_idle, big_idle], reading, THRESHOLD)[0] is big_idle
    assert choose_victims([small_idle], reading, THRESHOLD) == []


def test_the_threshold_must_be_a_fraction() -> None:
    assert threshold_bytes(1000, 0.5) == 500
    with pytest.raises(ValueError, match="memory_usage_threshold"):
        threshold_bytes(1000, 1.5)


def test_the_message_names_the_node_the_memory_the_threshold_and_then_the_task() -> None:
    victim = worker(1, order=1, memory=3 * GiB)
    reading = MemoryReading(96 * GiB, TOTAL)
    text = oom_message([victim], reading, THRESHOLD, 0.95, "10.0.0.1", "ab" * 8, victim)
    assert text.startswith("1 worker(s) were killed due to the node running low on memory.")
    assert "(IP: 10.0.0.1, ID: abababababababab) was 96.00GB used / 100.00GB limit" in text
    assert "exceeds the memory usage threshold of 0.950000" in text
    assert f"pid={victim.pid}, memory used=3.00GB" in text
    named = with_task(text, "hog", "12ab")
    lines = named.split("\n")
    assert lines[0] == text.split("\n")[0]
    assert lines[1] == "The task killed: name=hog, task ID=12ab."


def test_the_retry_backoff_doubles_up_to_a_minute() -> None:
    assert [oom_retry_delay_s(n, 1000) for n in range(3)] == [1.0, 2.0, 4.0]
    assert oom_retry_delay_s(10, 1000) == 60.0
    assert oom_retry_delay_s(3, 0) == 0.0


def test_rays_variable_names_set_the_monitor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_memory_usage_threshold", "0.5")
    monkeypatch.setenv("RAYLITE_MEMORY_USAGE_THRESHOLD", "0.7")  # Ray's name wins
    monkeypatch.setenv("RAYLITE_MEMORY_MONITOR_REFRESH_MS", "0")
    config = load()
    assert config.memory_usage_threshold == 0.5
    assert config.memory_monitor_refresh_ms == 0
    monkeypatch.delenv("RAY_memory_usage_threshold")
    assert load().memory_usage_threshold == 0.7


def test_a_cgroup_v2_reading_leaves_out_the_page_cache(tmp_path) -> None:
    (tmp_path / "memory.max").write_text(f"{8 * GiB}\n")
    (tmp_path / "memory.current").write_text(f"{5 * GiB}\n")
    (tmp_path / "memory.stat").write_text(f"anon 1\ninactive_file {GiB}\nactive_file {GiB}\n")
    assert read_cgroup(str(tmp_path)) == MemoryReading(3 * GiB, 8 * GiB)
    (tmp_path / "memory.max").write_text("max\n")  # no limit: the machine's is read
    assert read_cgroup(str(tmp_path)) is None


def test_a_cgroup_v1_reading(tmp_path) -> None:
    v1 = tmp_path / "memory"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text(f"{4 * GiB}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{3 * GiB}\n")
    (v1 / "memory.stat").write_text(f"total_inactive_file {GiB}\ntotal_active_file 0\n")
    assert read_cgroup(str(tmp_path)) == MemoryReading(2 * GiB, 4 * GiB)


def test_the_test_hook_counts_what_live_processes_hold(tmp_path) -> None:
    path = tmp_path / "memory"
    path.write_text(f"100 1000\n{os.getpid()} 50\n999999 400\n")
    reading, held = read_fake(str(path), lambda pid: pid == os.getpid())
    assert reading == MemoryReading(150, 1000)
    assert held == {os.getpid(): 50}


# --- the owner: a task whose worker the memory monitor killed ---------------------------
OOM = "1 worker(s) were killed due to the node running low on memory. Memory on ...\nmore"


def test_a_task_killed_for_memory_is_retried_without_spending_a_retry(
    h: Harness,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No backoff here (oom_retry_delay_s is tested above): the retry is queued at once.
    no_wait = CONFIG.replace(task_oom_retry_delay_base_ms=0)
    monkeypatch.setattr("raylite.core.submission.CONFIG", no_wait)
    _, spec = h.submit(max_retries=1)
    for attempt in range(3):  # more kills than max_retries: none is spent
        _, reply = h.grant().take(P.PushTask)
        h.worker_died(reply, oom=OOM)
        assert spec.max_retries == 1
        assert spec.oom_kills == attempt + 1
        assert spec.state is L.QUEUED


def test_a_task_without_retries_killed_for_memory_raises_out_of_memory_error(
    h: Harness,  # noqa: F811
) -> None:
    ref, spec = h.submit(max_retries=0)
    _, reply = h.grant().take(P.PushTask)
    h.worker_died(reply, oom=OOM)
    assert spec.state is L.FAILED
    kind, data = h.value(ref)
    err = loads_inline(data)
    assert kind == P.ERROR
    assert isinstance(err, OutOfMemoryError)
    assert isinstance(err, RayError)  # as Ray's: OutOfMemoryError(RayError)
    assert str(err).startswith("1 worker(s) were killed due to the node running low")
    assert f"The task killed: name=f, task ID={spec.task_id.hex()}." in str(err)


def test_a_task_whose_retries_other_failures_spent_is_still_retried_for_memory(
    h: Harness,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ray: only max_retries=0 at submission stops retries for memory."""
    no_wait = CONFIG.replace(task_oom_retry_delay_base_ms=0)
    monkeypatch.setattr("raylite.core.submission.CONFIG", no_wait)
    _, spec = h.submit(max_retries=1)
    _, reply = h.grant().take(P.PushTask)
    h.worker_died(reply)  # a crash spends the one retry
    assert spec.max_retries == 0
    _, reply = h.grant().take(P.PushTask)
    h.worker_died(reply, oom=OOM)
    assert spec.state is L.QUEUED


# --- the shell: one tick of the monitor on a stand-in node manager ---------------------
class _Lease:
    def __init__(self, retriable: bool) -> None:
        self.retriable = retriable


class _Rec:
    def __init__(self, n: int, lease_id: bytes | None, actor: bool = False) -> None:
        self.worker_id = bytes([n]) * 16
        self.pid = 5000 + n
        self.state = "leased" if lease_id else "idle"
        self.lease_id = lease_id
        self.actor_id = b"a" * 16 if actor else None


class _Node:
    """What MemoryMonitor reads of a NodeManager: workers, leases (in grant order), pids."""

    def __init__(self, recs: list[_Rec], leases: dict[bytes, _Lease]) -> None:
        self.workers = {r.worker_id: r for r in recs}
        self.by_pid = {r.pid: r for r in recs}
        self.lease_book = types.SimpleNamespace(leases=leases)
        self.ip, self.node_id, self.stopping = "127.0.0.1", b"n" * 16, False
        self.killed: list[int] = []

    def kill_worker(self, rec: _Rec) -> None:
        self.killed.append(rec.pid)


def _monitor(tmp_path, node: _Node, lines: str) -> MemoryMonitor:
    fake = tmp_path / "memory"
    fake.write_text(lines)
    monitor = MemoryMonitor(node)
    monitor.fake, monitor.fraction = str(fake), 0.5
    return monitor


def test_a_tick_kills_the_newest_retriable_worker_and_waits_for_it(tmp_path) -> None:
    older, newer, fixed = _Rec(1, b"L1"), _Rec(2, b"L2"), _Rec(3, b"L3")
    leases = {b"L1": _Lease(True), b"L2": _Lease(True), b"L3": _Lease(False)}  # grant order
    node = _Node([older, newer, fixed], leases)
    monitor = _monitor(tmp_path, node, f"1000 10000\n{newer.pid} 8000\n")
    monitor.check()
    assert node.killed == [newer.pid]
    assert "1 worker(s) were killed" in monitor.causes[newer.worker_id]
    reply = []
    conn = types.SimpleNamespace(reply=lambda rid, msg: reply.append(msg))
    monitor.on_get_worker_failure_cause(conn, P.GetWorkerFailureCause(newer.worker_id), 1)
    assert reply[0].oom_message == monitor.causes[newer.worker_id]
    monitor.on_get_worker_failure_cause(conn, P.GetWorkerFailureCause(older.worker_id), 2)
    assert reply[1].oom_message == ""  # not killed for memory
    monitor.check()  # still over, but the one chosen has not exited yet: no new choice
    assert node.killed == [newer.pid]
    assert "killed by the memory monitor" in monitor.death_cause(newer.worker_id, "exited")
    assert monitor.death_cause(older.worker_id, "exited") == "exited"


def test_a_tick_under_the_threshold_does_nothing(tmp_path) -> None:
    rec = _Rec(1, b"L1")
    node = _Node([rec], {b"L1": _Lease(True)})
    monitor = _monitor(tmp_path, node, "4000 10000\n")
    monitor.check()
    assert node.killed == []
    assert monitor.causes == {}


def test_over_the_threshold_with_nothing_to_kill_warns_once_a_while(tmp_path, caplog) -> None:
    node = _Node([_Rec(1, None)], {})  # one small idle worker: never taken
    monitor = _monitor(tmp_path, node, "9000 10000\n")
    with caplog.at_level(logging.WARNING):
        monitor.check()
        monitor.check()
    assert node.killed == []
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "no worker can be killed" in caplog.records[0].message


def test_the_owner_asks_the_node_that_granted_the_lease(h: Harness) -> None:  # noqa: F811
    """A worker on another node: that node's manager is asked, not ours."""
    from .core_harness import StandIn

    ref, spec = h.submit(max_retries=0)
    worker = h.grant()
    _, reply = worker.take(P.PushTask)
    other = StandIn("tcp:10.0.0.2:7000")
    h.cw.peers[other.name] = other  # type: ignore[assignment]
    lease = spec.lease
    lease.nm = other.name  # as if granted there (a spillback)
    reply(ConnectionLost("the worker died"))
    assert h.cw.nm.of_requests(P.GetWorkerFailureCause) == []  # type: ignore[attr-defined]
    asked, answer = other.take(P.GetWorkerFailureCause)
    assert asked.worker_id == lease.worker_id
    answer(P.WorkerFailureCause(OOM))
    assert isinstance(loads_inline(h.value(ref)[1]), OutOfMemoryError)
