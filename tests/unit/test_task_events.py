"""The node's task table, timeline flows and worker output rings, in process (no workers)."""

from __future__ import annotations

import collections
import gc
import random
import tracemalloc

import pytest

from raylite import protocol as P
from raylite import task_events as TE
from raylite.config import CONFIG
from raylite.exceptions import RayTaskError, TaskCancelledError
from raylite.serialization import capture_error, dumps_inline

WORKER = b"w" * 16
JOB = b"\x01\0\0\0"


def tid(i: int) -> bytes:
    return i.to_bytes(16, "little")


def oid(i: int) -> bytes:
    return (i + 1_000_000).to_bytes(16, "little")


def event(
    i,
    name="f",
    start=100.0,
    end=101.0,
    pid=7,
    deps=(),
    error=None,
    kind="task",
    func=None,
    node=b"",
):
    """A task event as a worker builds it (worker.py `_event`), through the wire codec."""
    ev = P.TaskEvent(name, tid(i), start, end, pid, WORKER, kind, None, list(deps), [oid(i)],
                     None, JOB, error, func or name, node)  # fmt: skip
    return wire(P.TaskEvents([ev])).events[0]


def wire(msg):
    """`msg` as its receiver gets it: encoded, then decoded."""
    return P.decode(P.encode(msg)[P.HEADER.size :])[0]


def rows(store, filters=(), limit=1000):
    found, _ = store.list_tasks([list(f) for f in filters], limit)
    return found


def test_a_running_task_then_finishes():
    store = TE.TaskEventStore(100)
    store.add_events([event(1, end=None)])
    assert [r["state"] for r in rows(store)] == ["RUNNING"]
    store.add_events([event(1)])
    (row,) = rows(store)
    assert row["state"] == "FINISHED"
    assert row["task_id"] == tid(1).hex()
    assert row["worker_pid"] == 7
    assert row["start_time_ms"] == 100_000
    assert row["end_time_ms"] == 101_000
    assert store.summary()["cluster"]["summary"]["f"]["state_counts"] == {"FINISHED": 1}


def test_a_late_running_event_does_not_undo_the_finish():
    store = TE.TaskEventStore(100)
    store.add_events([event(1), event(1, end=None)])  # flushes overtook each other
    assert [r["state"] for r in rows(store)] == ["FINISHED"]
    assert store.summary()["cluster"]["summary"]["f"]["state_counts"] == {"FINISHED": 1}


def test_a_retry_is_the_next_attempt_of_the_same_task():
    store = TE.TaskEventStore(100)
    store.add_events([event(1, error=["TASK_EXECUTION_EXCEPTION", "boom"])])
    store.add_events([event(1, start=102.0, end=103.0)])
    (row,) = rows(store)
    assert row["state"] == "FINISHED"
    assert row["attempt_number"] == 1
    assert row["error_type"] is None


def test_a_dead_workers_running_tasks_fail():
    store = TE.TaskEventStore(100)
    store.add_events([event(1, end=None, pid=7), event(2, end=None, pid=8)])
    store.worker_died(7, "The worker process (pid=7) died: killed.")
    by_id = {r["task_id"]: r for r in rows(store)}
    assert by_id[tid(1).hex()]["state"] == "FAILED"
    assert by_id[tid(1).hex()]["error_type"] == "WORKER_DIED"
    assert "killed" in by_id[tid(1).hex()]["error_message"]
    assert by_id[tid(2).hex()]["state"] == "RUNNING"


def test_filters_compare_strings_case_insensitively():
    store = TE.TaskEventStore(100)
    store.add_events([event(1, name="ok"), event(2, name="bad", error=["X", "m"])])
    store.add_events([event(3, name="ok", end=None)])
    assert {r["task_id"] for r in rows(store, [("state", "=", "failed")])} == {tid(2).hex()}
    assert len(rows(store, [("state", "!=", "FAILED")])) == 2
    assert len(rows(store, [("name", "=", "OK"), ("state", "=", "running")])) == 1
    assert len(rows(store, [("worker_pid", "=", "7")])) == 3
    with pytest.raises(ValueError, match="not a column"):
        rows(store, [("colour", "=", "red")])
    with pytest.raises(ValueError, match="predicate"):
        rows(store, [("state", "~", "x")])


def test_limit_keeps_running_first_then_newest_and_counts_all():
    store = TE.TaskEventStore(100)
    store.add_events([event(i) for i in range(10)] + [event(99, end=None)])
    found, total = store.list_tasks([], 3)
    assert total == 11
    assert [r["task_id"] for r in found] == [tid(99).hex(), tid(9).hex(), tid(8).hex()]


def test_the_table_is_bounded_and_the_counts_survive_eviction():
    store = TE.TaskEventStore(1000)
    store.add_events([event(i, name=f"f{i % 3}") for i in range(5000)])
    assert len(store.done) == 1000
    assert store.evicted == 4000
    summary = store.summary()["cluster"]
    assert summary["total_tasks"] == 5000
    assert sum(e["state_counts"]["FINISHED"] for e in summary["summary"].values()) == 5000
    assert summary["summary"]["f0"]["state_counts"] == {"FINISHED": 1667}
    assert summary["summary_by"] == "func_name"


def test_summary_groups_by_function_not_by_task_name():
    store = TE.TaskEventStore(100)
    store.add_events([event(i, name=f"chunk-{i}", func="work") for i in range(5)])
    summary = store.summary()["cluster"]["summary"]
    assert list(summary) == ["work"]
    assert summary["work"]["state_counts"] == {"FINISHED": 5}
    assert {r["name"] for r in rows(store)} == {f"chunk-{i}" for i in range(5)}
    assert {r["func_or_class_name"] for r in rows(store)} == {"work"}


def test_summary_counts_by_type():
    store = TE.TaskEventStore(100)
    store.add_events(
        [
            event(1, name="A.__init__", kind="actor_creation"),
            event(2, name="A.m", kind="actor_task"),
            event(3, name="A.m", kind="actor_task", error=["X", "m"]),
            event(4, name="g"),
        ]
    )
    cluster = store.summary()["cluster"]
    assert (cluster["total_tasks"], cluster["total_actor_tasks"]) == (1, 2)
    assert cluster["total_actor_scheduled"] == 1
    assert cluster["summary"]["A.m"] == {
        "func_or_class_name": "A.m",
        "type": "ACTOR_TASK",
        "state_counts": {"FINISHED": 1, "FAILED": 1},
    }


def test_100k_finished_tasks_take_under_25_mb():
    """The head keeps max_task_events (100,000) finished records: measured on a fifth,
    the table full and turning over (each new record evicts the oldest), with the
    store's own columns and index counted."""
    n = 20_000
    node = b"n" * 16
    workers = [(1000 + w, bytes([w]) * 16) for w in range(8)]
    batch = [
        P.TaskEvent(
            "f",
            tid(i),
            1.0 + i,
            2.0 + i,
            *workers[i % 8],
            "task",
            tid(3 * n),
            [],
            [oid(i)],
            None,
            JOB,
            None,
            "f",
            node,
        )
        for i in range(2 * n)
    ]
    frames = [
        P.encode(P.TaskEvents(batch[i : i + 1000]))[P.HEADER.size :] for i in range(0, 2 * n, 1000)
    ]  # TaskEvents bodies of 1000 events, as workers send them
    del batch
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = TE.TaskEventStore(n)
        for frame in frames:
            store.add_events(P.decode(frame)[0].events)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(store.done) == n
    assert store.evicted == n
    per_100k = used / n * 100_000
    assert per_100k < 25 * 2**20, f"{per_100k / 2**20:.1f} MiB for 100,000 task records"
    rec = store.find(tid(2 * n - 1))
    assert rec is not None
    assert (rec.pid, rec.worker_id, rec.parent, rec.returns) == (
        *workers[(2 * n - 1) % 8],
        tid(3 * n),
        [oid(2 * n - 1)],
    )


def test_the_finished_ring_keeps_what_an_ordered_table_would():
    """FinishedRing against an OrderedDict of the same records: appends that evict the
    oldest, removals from the middle (retries, which leave dead slots and make it
    compact), lookups, and reads in both orders with the failed ones picked out."""
    for seed in range(40):
        rnd = random.Random(seed)
        capacity = rnd.choice([1, 2, 5, 30, 100])  # 100: the columns grow past 64
        ring = TE.FinishedRing(capacity)
        model: collections.OrderedDict[bytes, P.TaskEvent] = collections.OrderedDict()
        for step in range(600):
            i = rnd.randrange(3 * capacity + 5)
            if i in model and rnd.random() < 0.5:  # it runs again
                tid_i = tid(i)
                ring.remove(tid_i)
                del model[tid_i]
                continue
            if tid(i) in model:
                continue
            ev = event(
                i,
                name=rnd.choice(["a", "b", f"task-{i}"]),
                start=float(step),
                end=step + rnd.random(),
                pid=rnd.choice([7, 8]),
                deps=rnd.choice([(), (oid(i + 1),)]),
                error=rnd.choice([None, None, ["TASK_EXECUTION_EXCEPTION", "m"]]),
                kind=rnd.choice(["task", "actor_task"]),
            )
            if rnd.random() < 0.2:
                ev = ev._replace(returns=rnd.choice([[], [oid(i), oid(i + 1)]]))
            gone = ring.append(ev)
            model[ev.task_id] = ev._replace(deps=ev.deps or ())  # no deps: one shared ()
            expected_gone = model.popitem(last=False)[0] if len(model) > capacity else None
            assert gone == expected_gone
            assert len(ring) == len(model)
            assert list(ring.records()) == list(model.values()), (seed, step)
        newest = list(reversed(model.values()))
        assert list(ring.records(newest_first=True)) == newest
        assert list(ring.records(True, failed=True)) == [r for r in newest if r.error]
        assert list(ring.records(True, failed=False)) == [r for r in newest if not r.error]
        for i in range(3 * capacity + 5):
            assert ring.get(tid(i)) == model.get(tid(i))
            assert (tid(i) in ring) == (tid(i) in model)
        # What the records share is kept while they live, and no longer.
        assert sum(ring._refs) == len(model)
        assert len(ring._shared_at) == len({(r.name, r.pid, r.kind) for r in model.values()})


def test_chrome_trace_links_producer_and_consumer_with_a_flow():
    producer = event(1, name="produce", start=10.0, end=11.0, pid=7)
    consumer = event(2, name="consume", start=11.5, end=12.0, pid=8, deps=[oid(1)])
    unrelated = event(3, name="solo", start=10.0, end=10.5, pid=9, deps=[oid(42)])
    meta, trace = TE.chrome_trace([producer, consumer, unrelated])
    spans = {e["name"]: e for e in trace if e["ph"] == "X"}
    starts = [e for e in trace if e["ph"] == "s"]
    finishes = [e for e in trace if e["ph"] == "f"]
    assert len(starts) == len(finishes) == 1
    s, f = starts[0], finishes[0]
    assert s["id"] == f["id"]
    assert s["cat"] == f["cat"] == "dependency"
    assert f["bp"] == "e"
    p, c = spans["produce"], spans["consume"]
    assert s["tid"] == p["tid"] == 7
    assert p["ts"] <= s["ts"] <= p["ts"] + p["dur"]
    assert f["tid"] == c["tid"] == 8
    assert c["ts"] <= f["ts"] <= c["ts"] + c["dur"]
    assert f["args"]["object_id"] == oid(1).hex()
    assert {m["tid"] for m in meta if m.get("name") == "thread_name"} == {7, 8, 9}


def test_running_tasks_are_not_in_the_timeline():
    store = TE.TaskEventStore(100)
    store.add_events([event(1), event(2, end=None)])
    _, trace = TE.chrome_trace(store.timeline_events())
    assert [e["args"]["task_id"] for e in trace if e["ph"] == "X"] == [tid(1).hex()]


def test_worker_logs_keep_the_last_lines_and_number_them():
    logs = TE.WorkerLogs(lines=3, workers=2)
    logs.add(10, "out", "a\nb")
    logs.add(10, "err", "c\nd")
    lines, nxt = logs.get(10, after=0, tail=10)
    assert [line.text for line in lines] == ["b", "c", "d"]
    assert [line.stream for line in lines] == ["out", "err", "err"]
    assert nxt == 5
    assert logs.get(10, after=4, tail=0)[0] == [P.NumberedLine(4, "err", "d")]
    assert logs.get(10, after=0, tail=1)[0] == [P.NumberedLine(4, "err", "d")]
    logs.add(11, "out", "x")
    logs.add(12, "out", "y")  # a third worker: the least recent ring goes
    assert logs.get(10, 0, 10) == ([], 1)
    assert logs.get(12, 0, 10)[0] == [P.NumberedLine(1, "out", "y")]


def test_error_info_names_rays_error_types():
    try:
        raise ValueError("the reason")
    except ValueError as exc:
        blob = capture_error(exc, "f", 1)
    kind, message = TE.error_info(blob)
    assert kind == "TASK_EXECUTION_EXCEPTION"
    assert "ValueError" in message
    assert "the reason" in message
    assert TE.error_info(dumps_inline(TaskCancelledError("ab")))[0] == "TASK_CANCELLED"
    long = RayTaskError("f", "x" * 10_000 + "\nValueError: end", ValueError("end"), 1)
    kind, message = TE.error_info(dumps_inline(long))
    assert len(message) <= CONFIG.task_error_chars
    assert message.endswith("ValueError: end")
