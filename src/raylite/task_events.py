"""What a node knows about its tasks after the fact, and its workers' recent output.

Owns the task records the node manager builds from its workers' task events (a
bounded table plus per-function/state counts that outlive it), the timeline those
records make, and a small ring of recent output lines per worker. Not the tasks
themselves (their owners, core_worker), not the worker pool or the actor table
(node/pool.py, head/; node/listings.py answers the state requests from the
node's statistics and these records).

    worker ──TaskEvents (batched: every event_flush_s, or on FlushEvents)──▶ TaskEventStore
    worker fd 1, 2 ──pipe──▶ node manager.on_log ──add()──▶ WorkerLogs (per pid ring)
    cli, util.state ──ListState, SummarizeTasks, GetLogs──▶ node/listings.py ──▶ rows
    api.timeline ──GetTimeline──▶ finished records ──chrome_trace()──▶ trace with flows

A task event is a protocol.TaskEvent record, built by the worker (worker.py `_record`,
`flush_events`) with one constructor call; a task with enable_task_events=False makes
none, at its worker or its owner (core/tasks.task_events_off). A worker sends one per finished attempt and,
at a flush, one with end None for each task it is still running. The node manager
keeps the event as the task's record, its names and ids shared with other records;
a finished task's record goes into compact columns (FinishedRing), read back as an
event when asked for.

Task states, as Ray names them. The node sees RUNNING, FINISHED and FAILED; the
PENDING_* states exist only at the owner (util.state adds the caller's own).

    RUNNING ──▶ FINISHED | FAILED        (the attempt's worker reports it, or dies)
    FAILED  ──▶ RUNNING | FINISHED       (the owner retries: same task id, next attempt)

Events of one worker may arrive out of order (a periodic flush and a FlushEvents can
overtake each other), so a RUNNING event that started before the record's end is a
late copy and is dropped.
"""

from __future__ import annotations

import array
import collections
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import protocol as P
from .config import CONFIG

log = logging.getLogger("raylite.task_events")

TaskEvent = P.TaskEvent  # a task's record: the last event of its last attempt

RUNNING, FINISHED, FAILED = "RUNNING", "FINISHED", "FAILED"
# Owner-side states (util.state): arguments not ready, waiting for a worker, pushed.
PENDING_ARGS_AVAIL = "PENDING_ARGS_AVAIL"
PENDING_NODE_ASSIGNMENT = "PENDING_NODE_ASSIGNMENT"
SUBMITTED_TO_WORKER = "SUBMITTED_TO_WORKER"

TASK_TYPES = {
    "task": "NORMAL_TASK",
    "actor_task": "ACTOR_TASK",
    "actor_creation": "ACTOR_CREATION_TASK",
}
ACTOR_STATES = {"PENDING": "PENDING_CREATION"}  # raylite's ActorRec state -> Ray's name

_EMPTY: tuple[()] = ()


def state_of(rec: TaskEvent) -> str:
    if rec.end is None:
        # No worker yet (an owner's event at submission): waiting for one.
        return RUNNING if rec.pid else PENDING_NODE_ASSIGNMENT
    return FINISHED if rec.error is None else FAILED


def _hex(b: bytes | None) -> str | None:
    return b.hex() if b else None


# --- filters: Ray's (key, "=" | "!=", value), string values case-insensitive ----------
def _equal(actual: Any, expected: Any) -> bool:
    if actual is None:
        return expected is None or str(expected).lower() in ("", "none", "null")
    if isinstance(actual, bool):
        return str(actual).lower() == str(expected).lower()
    if isinstance(actual, (int, float)):
        try:
            return float(expected) == actual
        except (TypeError, ValueError):
            return False
    return str(actual).lower() == str(expected).lower()


def check_filters(filters: Iterable[Any], columns: Iterable[str], kind: str) -> list[P.Filter]:
    """The filters as Filter records; ValueError naming what is allowed."""
    allowed = set(columns)
    out = []
    for f in filters:
        if len(f) != 3:
            raise ValueError(f"a filter is (key, predicate, value), got {f!r}")
        key, pred, value = f
        if key not in allowed:
            raise ValueError(
                f"{key!r} is not a column of {kind}; filter on one of: {', '.join(sorted(allowed))}"
            )
        if pred not in ("=", "!="):
            raise ValueError(f"unsupported filter predicate {pred!r}: use '=' or '!='")
        out.append(P.Filter(key, pred, value))
    return out


def matches(get: Callable[[str], Any], filters: list[P.Filter]) -> bool:
    """Whether the row whose fields `get` returns passes every filter."""
    return all(_equal(get(f.column), f.value) == (f.op == "=") for f in filters)


def error_info(blob: bytes) -> list[str]:
    """[Ray's error type, message] of a pickled task error (a worker calls this on failure)."""
    from .exceptions import RayActorError, TaskCancelledError, WorkerCrashedError
    from .serialization import loads_inline

    try:
        exc = loads_inline(blob)
    except Exception as e:  # the user's exception class does not unpickle here
        return ["TASK_EXECUTION_EXCEPTION", f"(the error could not be read: {e})"]
    if isinstance(exc, TaskCancelledError):
        kind = "TASK_CANCELLED"
    elif isinstance(exc, RayActorError):
        kind = "ACTOR_DIED"
    elif isinstance(exc, WorkerCrashedError):
        kind = "WORKER_DIED"
    else:
        kind = "TASK_EXECUTION_EXCEPTION"
    text = str(exc)
    keep = CONFIG.task_error_chars
    if len(text) > keep:  # keep the head and the last lines, where the error is
        text = text[:200] + "\n...\n" + text[-(keep - 205) :]
    return [kind, text]


# --- finished records, compact --------------------------------------------------------------
_NO_SLOT = -1
_new_event = tuple.__new__
_SHARED_PARENTS = 256  # distinct parent ids shared between records (then the cache restarts)


class FinishedRing:
    """The last `capacity` finished task records, oldest first, kept in columns.

    A node keeps 100,000 of them (as Ray does): as TaskEvent tuples in an
    OrderedDict they cost 0.75 KB each once the table is full (the tuple and its
    floats, ids and list, and the OrderedDict's entry and node, whose hash table a
    delete-oldest, insert-newest churn keeps at twice the live size). Here a record
    is a slot in columns: its task id, its parent id and its one return id (the
    objects its event brought, parents shared), start and end in an array of
    doubles, and the index of a tuple of the fields tasks share (name, worker, kind,
    actor, job, function, node), counted so that it lives as long as its records do.
    A task is found by id through an open-addressing table of slot numbers (an array
    of ints, not a dict). About 0.16 KB a record (test_task_events measures it).

    A record leaves from the middle only when its task runs again (a retry): its slot
    stays dead until the oldest end reaches it, or the columns are compacted when
    dead slots fill the spare room. Records are read back as TaskEvent tuples, built
    on each read.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.live = 0  # records held
        # Slots: as many as records, and spare room for dead slots. 64 at first, all
        # when those are used (a node that forwards its events to the head keeps
        # none; growing by doubling leaves the freed columns as holes in the heap).
        self._most = capacity + max(16, capacity // 8)
        self._size = 0  # the columns' length now
        self._head = 0  # the oldest slot
        self._used = 0  # slots from the head on, live or dead
        self._tid: list[bytes | None] = []  # None: a dead or free slot
        self._parent: list[bytes | None] = []
        # The one return id; (returns, deps, error) for a record with other than one
        # return, with arguments from other tasks, or failed.
        self._rest: list[Any] = []
        self._time = array.array("d")  # start, end of each slot
        self._ctx = array.array("i")  # the slot's shared fields
        self._mask = 0
        self._index = array.array("i")  # slot numbers by task id's hash; load under a half
        # (name, pid, worker_id, kind, actor_id, job_id, func, node) tuples and counts.
        self._shared: list[tuple[Any, ...] | None] = []
        self._refs: list[int] = []
        self._shared_at: dict[tuple[Any, ...], int] = {}
        self._free: list[int] = []
        self._parents: dict[bytes, bytes] = {}
        self._compact(min(self._most, 64))

    def __len__(self) -> int:
        return self.live

    # ------------------------------------------------------------------ changes
    def append(self, ev: TaskEvent) -> bytes | None:
        """Keep a finished record (its task is not held); the task id of the oldest
        record, if it went to make room."""
        gone = self._evict_oldest() if self.live >= self.capacity else None
        if self._used == self._size:  # full: grow, or drop the dead slots
            self._compact(self._most)
        slot = self._head + self._used
        if slot >= self._size:
            slot -= self._size
        self._used += 1
        self.live += 1
        tid = ev.task_id
        self._tid[slot] = tid
        self._index[self._position(tid)] = slot
        parent = ev.parent
        if parent is not None:
            parents = self._parents
            if len(parents) >= _SHARED_PARENTS and parent not in parents:
                parents.clear()  # nested tasks: many parents, each shared by its children
            parent = parents.setdefault(parent, parent)
        self._parent[slot] = parent
        returns, error = ev.returns, ev.error
        if len(returns) == 1 and not ev.deps and error is None:
            self._rest[slot] = returns[0]
        else:
            self._rest[slot] = (returns, ev.deps or _EMPTY, error)
        self._time[2 * slot] = ev.start
        self._time[2 * slot + 1] = ev.end  # type: ignore[assignment]  # finished: not None
        self._ctx[slot] = self._share(ev)
        return gone

    def remove(self, tid: bytes) -> None:
        """Drop a task's record (it runs again); its slot stays dead."""
        at = self._position(tid)
        slot = self._index[at]
        if slot != _NO_SLOT:
            self._drop(slot, at)

    def _evict_oldest(self) -> bytes:
        while True:
            slot = self._head
            self._head = slot + 1 if slot + 1 < self._size else 0
            self._used -= 1
            tid = self._tid[slot]
            if tid is not None:
                self._drop(slot, self._position(tid))
                return tid

    def _drop(self, slot: int, at: int) -> None:
        self._unindex(at)
        self._release(self._ctx[slot])
        self._tid[slot] = self._parent[slot] = self._rest[slot] = None
        self.live -= 1

    def _compact(self, size: int) -> None:
        """Move the live records to the front of columns of `size` slots, oldest first,
        and index them again."""
        order = list(self._slots(False))
        pad: list[Any] = [None] * (size - len(order))
        self._tid = [self._tid[s] for s in order] + pad
        self._parent = [self._parent[s] for s in order] + pad
        self._rest = [self._rest[s] for s in order] + pad
        times = array.array("d", bytes(16 * size))
        ctx = array.array("i", bytes(4 * size))
        for new, s in enumerate(order):
            times[2 * new], times[2 * new + 1] = self._time[2 * s], self._time[2 * s + 1]
            ctx[new] = self._ctx[s]
        self._time, self._ctx = times, ctx
        self._size, self._head, self._used = size, 0, len(order)
        self._mask = (1 << max(4, (2 * size - 1).bit_length())) - 1
        self._index = array.array("i", [_NO_SLOT]) * (self._mask + 1)
        for slot in range(len(order)):
            self._index[self._position(self._tid[slot])] = slot  # type: ignore[arg-type]

    # ------------------------------------------------- the index: linear probing
    def _position(self, tid: bytes) -> int:
        """Where the index holds tid's slot, else the free position where it would go."""
        index, tids, mask = self._index, self._tid, self._mask
        at = hash(tid) & mask
        while True:
            slot = index[at]
            if slot == _NO_SLOT or tids[slot] == tid:
                return at
            at = (at + 1) & mask

    def _unindex(self, at: int) -> None:
        """Empty position `at`, moving later entries of its run back (no tombstones)."""
        index, tids, mask = self._index, self._tid, self._mask
        later = at
        while True:
            later = (later + 1) & mask
            slot = index[later]
            if slot == _NO_SLOT:
                break
            home = hash(tids[slot]) & mask
            # It may fill the hole unless its home lies after the hole (cyclically).
            if (later - home) & mask >= (later - at) & mask:
                index[at] = slot
                at = later
        index[at] = _NO_SLOT

    # ----------------------------------------------------------- shared fields
    def _share(self, ev: TaskEvent) -> int:
        key = (ev.name, ev.pid, ev.worker_id, ev.kind, ev.actor_id, ev.job_id, ev.func, ev.node)
        k = self._shared_at.get(key)
        if k is not None:
            self._refs[k] += 1
            return k
        if self._free:
            k = self._free.pop()
            self._shared[k], self._refs[k] = key, 1
        else:
            k = len(self._shared)
            self._shared.append(key)
            self._refs.append(1)
        self._shared_at[key] = k
        return k

    def _release(self, k: int) -> None:
        self._refs[k] -= 1
        if not self._refs[k]:
            del self._shared_at[self._shared[k]]  # type: ignore[arg-type]
            self._shared[k] = None
            self._free.append(k)

    # ----------------------------------------------------------------- reads
    def _slots(self, newest_first: bool) -> Iterator[int]:
        head, size, tids = self._head, self._size, self._tid
        for k in range(self._used - 1, -1, -1) if newest_first else range(self._used):
            slot = head + k if head + k < size else head + k - size
            if tids[slot] is not None:
                yield slot

    def record(self, slot: int) -> TaskEvent:
        name, pid, worker_id, kind, actor_id, job_id, func, node = self._shared[self._ctx[slot]]  # type: ignore[misc]
        rest = self._rest[slot]
        returns, deps, error = rest if type(rest) is tuple else ([rest], _EMPTY, None)
        times = self._time
        return _new_event(TaskEvent, (  # TaskEvent(...) is a Python function: 3x slower
            name, self._tid[slot], times[2 * slot], times[2 * slot + 1], pid, worker_id, kind,
            self._parent[slot], deps, returns, actor_id, job_id, error, func, node,
        ))  # fmt: skip

    def get(self, tid: bytes) -> TaskEvent | None:
        slot = self._index[self._position(tid)]
        return None if slot == _NO_SLOT else self.record(slot)

    def __contains__(self, tid: bytes) -> bool:
        return self._index[self._position(tid)] != _NO_SLOT

    def records(
        self, newest_first: bool = False, failed: bool | None = None
    ) -> Iterator[TaskEvent]:
        """The records, oldest first (or newest); only the failed ones (or only the
        others) if `failed` says so. Lazy: read it before the table changes."""
        rest = self._rest
        for slot in self._slots(newest_first):
            if failed is not None:
                r = rest[slot]
                if (type(r) is tuple and r[2] is not None) is not failed:
                    continue
            yield self.record(slot)


# --- the task table ----------------------------------------------------------------------
class TaskEventStore:
    """Task records from task events: at most `capacity` finished ones, all running ones.

    The oldest finished record goes first when the table is full; the counts per
    (function, type) and state are kept apart and survive that, so summaries stay
    exact. Finished records are kept compact (FinishedRing: about 0.18 KB a task,
    under 25 MB for 100,000); running and waiting ones are events whose strings
    and ids are shared (interned).
    """

    def __init__(self, capacity: int, node_id: bytes = b"") -> None:
        self.capacity = max(int(capacity), 1)
        self.node_id = node_id
        self.active: dict[bytes, TaskEvent] = {}  # task id -> RUNNING record
        # Submitted, not started (owners report these): at most `capacity`, oldest go first.
        self.pending: collections.OrderedDict[bytes, TaskEvent] = collections.OrderedDict()
        self.done = FinishedRing(self.capacity)
        self.attempts: dict[bytes, int] = {}  # task id -> attempt number, where > 0
        # (func_or_class_name, type) -> state -> count: the summary, never evicted.
        self.counts: dict[tuple[str, str], dict[str, int]] = {}
        self.evicted = 0
        self._shared: dict[Any, Any] = {}
        # Distinct names and ids shared between records; beyond, each keeps its own.
        self.max_interned = CONFIG.task_events_interned

    # ------------------------------------------------------------------ ingest
    def add_events(self, events: Iterable[TaskEvent]) -> None:
        for ev in events:
            self._add(ev)

    def _add(self, ev: TaskEvent) -> None:
        tid = ev.task_id
        state = state_of(ev)
        if state == PENDING_NODE_ASSIGNMENT:
            if tid in self.pending or tid in self.active or tid in self.done:
                return  # it started already: the owner's word came late
            ev = self._share(ev)
            self._count(ev, state, 1)
            self.pending[tid] = ev
            while len(self.pending) > self.capacity:
                _, gone = self.pending.popitem(last=False)
                self._count(gone, PENDING_NODE_ASSIGNMENT, -1)
            return
        was_pending = self.pending.pop(tid, None)
        if was_pending is not None:
            self._count(was_pending, PENDING_NODE_ASSIGNMENT, -1)
        old = self.active.get(tid)
        if old is None:
            old = self.done.get(tid)
        if old is not None:
            old_state = state_of(old)
            if state == RUNNING and (old_state == RUNNING or ev.start <= old.end):
                return  # a late copy of what the record says already
            if old_state == RUNNING:
                del self.active[tid]
            else:
                self.done.remove(tid)
            self._count(old, old_state, -1)
            if old_state != RUNNING and ev.start > old.end:  # the owner ran it again
                self.attempts[tid] = self.attempts.get(tid, 0) + 1
        if state == RUNNING:
            ev = self._share(ev)
            self._count(ev, state, 1)
            self.active[tid] = ev
            return
        self._count(ev, state, 1)
        dropped = self.done.append(ev)
        if dropped is not None:
            self.attempts.pop(dropped, None)
            self.evicted += 1

    def _share(self, ev: TaskEvent) -> TaskEvent:
        """The record of an event: one copy of each name, kind, worker, job and node id,
        however many records hold it."""
        one = self._one
        return TaskEvent(
            one(ev.name), ev.task_id, ev.start, ev.end, one(ev.pid), one(ev.worker_id),
            one(ev.kind), ev.parent, ev.deps or _EMPTY, ev.returns, ev.actor_id,
            one(ev.job_id), ev.error, one(ev.func), one(ev.node),
        )  # fmt: skip

    def _one(self, v: Any) -> Any:
        shared = self._shared
        s = shared.get(v)
        if s is None:
            if len(shared) < self.max_interned:
                shared[v] = v
            return v
        return s

    def _count(self, rec: TaskEvent, state: str, n: int) -> None:
        key = (rec.func, TASK_TYPES.get(rec.kind, "NORMAL_TASK"))
        by_state = self.counts.get(key)
        if by_state is None:
            by_state = self.counts[key] = {}
        left = by_state.get(state, 0) + n
        if left:
            by_state[state] = left
        else:
            by_state.pop(state, None)

    def worker_died(self, pid: int, cause: str) -> None:
        """The tasks a dead worker was running failed (its owner may retry them)."""
        now = time.time()
        for rec in [r for r in self.active.values() if r.pid == pid]:
            error = ["WORKER_DIED" if rec.kind == "task" else "ACTOR_DIED", cause]
            self._add(rec._replace(end=max(now, rec.start), error=error))

    # ----------------------------------------------------------------- queries
    def _records(self) -> Iterable[TaskEvent]:
        """Running first, then waiting, then finished, newest first."""
        yield from list(self.active.values())
        yield from reversed(list(self.pending.values()))
        yield from self.done.records(newest_first=True)

    def get_field(self, rec: TaskEvent, key: str) -> Any:
        return TASK_COLUMNS[key](self, rec)

    def row(self, rec: TaskEvent) -> dict[str, Any]:
        return {k: get(self, rec) for k, get in TASK_COLUMNS.items()}

    def list_tasks(self, filters: list[P.Filter], limit: int) -> tuple[list[dict[str, Any]], int]:
        """(up to `limit` rows passing the filters, how many pass in all)."""
        filters = check_filters(filters, TASK_COLUMNS, "tasks")
        if not filters:  # no need to read every record to count them
            some = itertools.islice(self._records(), max(limit, 0))
            return [self.row(rec) for rec in some], self.recorded()
        rows: list[dict[str, Any]] = []
        total = 0
        for rec in self._records():
            if filters and not matches(lambda k, r=rec: TASK_COLUMNS[k](self, r), filters):
                continue
            total += 1
            if len(rows) < limit:
                rows.append(self.row(rec))
        return rows, total

    def summary(self) -> dict[str, Any]:
        """Ray's summarize_tasks() shape: counts by func_or_class_name and state."""
        per_name: dict[str, dict[str, Any]] = {}
        totals = dict.fromkeys(TASK_TYPES.values(), 0)
        for (name, kind), by_state in self.counts.items():
            if not by_state:
                continue
            entry = per_name.setdefault(
                name, {"func_or_class_name": name, "type": kind, "state_counts": {}}
            )
            for state, n in by_state.items():
                entry["state_counts"][state] = entry["state_counts"].get(state, 0) + n
                totals[kind] += n
        return {
            "cluster": {
                "summary": per_name,
                "total_tasks": totals["NORMAL_TASK"],
                "total_actor_tasks": totals["ACTOR_TASK"],
                "total_actor_scheduled": totals["ACTOR_CREATION_TASK"],
                "summary_by": "func_name",
                "evicted_records": self.evicted,
            }
        }

    def recorded(self) -> int:
        """Records held now (running, waiting and finished)."""
        return len(self.active) + len(self.pending) + len(self.done)

    def state_totals(self) -> dict[str, int]:
        """How many tasks are in each state (also those whose records were dropped)."""
        out: dict[str, int] = {}
        for by_state in self.counts.values():
            for state, n in by_state.items():
                out[state] = out.get(state, 0) + n
        return out

    def newest_first(self, state: str = "") -> Iterator[TaskEvent]:
        """Records in `state` (all if ""): running, then waiting, then finished newest
        first. Lazy: a bounded listing stops early; read it before the table changes."""
        if state in ("", RUNNING):
            yield from list(self.active.values())  # small: one per busy worker
        if state in ("", PENDING_NODE_ASSIGNMENT):
            yield from reversed(list(self.pending.values()))
        if not state:
            yield from self.done.records(newest_first=True)
        elif state in (FINISHED, FAILED):
            yield from self.done.records(newest_first=True, failed=state == FAILED)

    def find(self, task_id: bytes) -> TaskEvent | None:
        """A task's record (running, waiting or finished), or None."""
        return self.active.get(task_id) or self.pending.get(task_id) or self.done.get(task_id)

    def finished_newest_first(self) -> Iterator[TaskEvent]:
        return self.done.records(newest_first=True)

    def oldest_finished(self) -> TaskEvent | None:
        return next(self.done.records(), None)

    def timeline_events(self) -> list[TaskEvent]:
        """The finished records, oldest first (the wire form GetTimeline replies with)."""
        return list(self.done.records())

    def chrome_trace(self) -> list[dict[str, Any]]:
        meta, trace = chrome_trace(self.timeline_events())
        return meta + trace


TASK_COLUMNS: dict[str, Callable[[TaskEventStore, TaskEvent], Any]] = {
    "task_id": lambda s, r: r.task_id.hex(),
    "attempt_number": lambda s, r: s.attempts.get(r.task_id, 0),
    "name": lambda s, r: r.name,
    "state": lambda s, r: state_of(r),
    "job_id": lambda s, r: _hex(r.job_id),
    "actor_id": lambda s, r: _hex(r.actor_id),
    "type": lambda s, r: TASK_TYPES.get(r.kind, "NORMAL_TASK"),
    "func_or_class_name": lambda s, r: r.func,
    "parent_task_id": lambda s, r: _hex(r.parent),
    "node_id": lambda s, r: _hex(r.node or s.node_id),
    "worker_id": lambda s, r: _hex(r.worker_id),
    "worker_pid": lambda s, r: r.pid,
    "error_type": lambda s, r: r.error[0] if r.error else None,
    "error_message": lambda s, r: r.error[1] if r.error else None,
    "language": lambda s, r: "PYTHON",
    "creation_time_ms": lambda s, r: None,
    "start_time_ms": lambda s, r: int(r.start * 1000),
    "end_time_ms": lambda s, r: int(r.end * 1000) if r.end is not None else None,
}


def chrome_trace(events: list[TaskEvent]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(metadata, spans and flows) in Chrome's trace format, from finished task events.

    A span ("X") per task on its worker's row. For each argument that another task
    produced, a flow ("s" in the producer's span, "f" bound to the consumer's span,
    category "dependency"), which Perfetto and chrome://tracing draw as an arrow.
    """
    trace: list[dict[str, Any]] = []
    workers: dict[int, str] = {}
    produced: dict[bytes, dict[str, Any]] = {}  # object id -> the span of its producer
    spans = []
    for ev in events:
        if ev.end is None:
            continue
        pid = ev.pid
        workers.setdefault(pid, ev.worker_id.hex())
        span = {
            "cat": ev.kind,
            "name": ev.name,
            "ph": "X",
            "pid": 1,
            "tid": pid,
            "ts": ev.start * 1e6,
            "dur": max(ev.end - ev.start, 0) * 1e6,
            "args": {
                "task_id": ev.task_id.hex(),
                "worker_id": ev.worker_id.hex(),
                "worker_pid": pid,
                "parent_task_id": _hex(ev.parent),
                "state": state_of(ev),
            },
        }
        if ev.error:
            span["args"]["error_type"] = ev.error[0]
        trace.append(span)
        spans.append((span, ev.deps))
        for oid in ev.returns:
            produced[oid] = span
    flow_id = 0
    for span, deps in spans:
        for oid in deps:
            src = produced.get(oid)
            if src is None or src is span:
                continue  # a put() or an argument from another node: no producer here
            flow_id += 1
            # Inside both spans, not on their edges: a viewer binds each end to the
            # span that encloses it ("bp": "e" on the finish end).
            out_ts = src["ts"] + max(src["dur"] - 1.0, src["dur"] / 2)
            in_ts = span["ts"] + min(1.0, span["dur"] / 2)
            common = {"cat": "dependency", "name": "dependency", "id": flow_id, "pid": 1}
            trace.append({**common, "ph": "s", "tid": src["tid"], "ts": out_ts})
            arrives = {"ph": "f", "bp": "e", "tid": span["tid"], "ts": in_ts}
            trace.append({**common, **arrives, "args": {"object_id": oid.hex()}})
    trace.sort(key=lambda e: e["ts"])
    # Metadata carries a ts too (the first event's): tools that read the trace as
    # Ray's expect one on every event, and a viewer ignores it on metadata.
    ts = trace[0]["ts"] if trace else 0.0
    meta = [
        {"ph": "M", "name": "process_name", "pid": 1, "ts": ts,
         "args": {"name": "Node 127.0.0.1"}}
    ]  # fmt: skip
    meta += [
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": pid, "ts": ts,
         "args": {"name": f"worker {pid}"}}
        for pid in sorted(workers)
    ]  # fmt: skip
    return meta, trace


# --- recent output per worker ----------------------------------------------------------------
class WorkerLogs:
    """The last `lines` output lines of each of the last `workers` workers that printed.

    Each line gets a sequence number per worker, so a follower asks for what came after
    the last one it saw. Lines as the driver sees them: `(name pid=N) text`.
    """

    def __init__(
        self,
        lines: int = CONFIG.worker_log_lines,
        workers: int = CONFIG.worker_log_workers,
        max_line: int = CONFIG.log_line_chars,
    ) -> None:
        self.lines = lines
        self.workers = workers
        self.max_line = max_line  # longer lines are cut: one runaway print must not fill the ring
        self.rings: collections.OrderedDict[int, collections.deque[P.NumberedLine]] = (
            collections.OrderedDict()
        )
        self.next_seq: dict[int, int] = {}

    def add(self, pid: int, stream: str, text: str) -> None:
        ring = self.rings.get(pid)
        if ring is None:
            ring = self.rings[pid] = collections.deque(maxlen=self.lines)
            while len(self.rings) > self.workers:
                gone, _ = self.rings.popitem(last=False)
                self.next_seq.pop(gone, None)
        else:
            self.rings.move_to_end(pid)
        seq = self.next_seq.get(pid, 1)
        for line in text.splitlines():
            ring.append(P.NumberedLine(seq, stream, line[: self.max_line]))
            seq += 1
        self.next_seq[pid] = seq

    def line_count(self, pid: int) -> int:
        """Lines kept for this worker (0 if none: it never printed, or was evicted)."""
        return len(self.rings.get(pid, ()))

    def knows(self, pid: int) -> bool:
        return pid in self.rings

    def get(self, pid: int, after: int, tail: int) -> tuple[list[P.NumberedLine], int]:
        """(lines numbered `after` and later, or the last `tail` if after <= 0; next number)."""
        ring = self.rings.get(pid)
        nxt = self.next_seq.get(pid, 1)
        if ring is None:
            return [], nxt
        if after > 0:
            return [line for line in ring if line.number >= after], nxt
        lines = list(ring)
        return (lines[-tail:] if tail > 0 else lines), nxt
