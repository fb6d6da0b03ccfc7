"""What a node knows about its tasks after the fact, and its workers' recent output.

Owns the task records the node manager builds from its workers' task events (a
bounded table plus per-function/state counts that outlive it), the timeline those
records make, and a small ring of recent output lines per worker. Not the tasks
themselves (their owners, core_worker), not the worker pool or the actor table
(node/pool.py, head/: `StateViews` reads those when asked).

    worker ──TaskEvents (batched: every event_flush_s, or on FlushEvents)──▶ TaskEventStore
    worker fd 1, 2 ──pipe──▶ node manager.on_log ──add()──▶ WorkerLogs (per pid ring)
    cli, util.state ──ListState, SummarizeTasks, GetLogs──▶ StateViews ──▶ rows (dicts)
    api.timeline ──GetTimeline──▶ finished records ──chrome_trace()──▶ trace with flows

A task event is one list, built by the worker (worker.py `_finish`, `flush_events`) in
the order of the index constants below. A worker sends one per finished attempt and,
at a flush, one with END = None for each task it is still running. Per-task work on
the worker stays one small list; the node manager keeps that list as the record.

Task states, as Ray names them. The node sees RUNNING, FINISHED and FAILED; the
PENDING_* states exist only at the owner (util.state adds the caller's own).

    RUNNING ──▶ FINISHED | FAILED        (the attempt's worker reports it, or dies)
    FAILED  ──▶ RUNNING | FINISHED       (the owner retries: same task id, next attempt)

Events of one worker may arrive out of order (a periodic flush and a FlushEvents can
overtake each other), so a RUNNING event that started before the record's end is a
late copy and is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from . import protocol as P
from .config import RESOURCE_UNIT

log = logging.getLogger("raylite.task_events")

# Fields of a task event (and of a record: the same list). NAME is the task's name
# (`.options(name=...)`), FUNC its function's or "Class.method" (summaries group by it).
# NODE: the node the worker runs on (the head keeps every node's tasks).
(NAME, TASK_ID, START, END, PID, WORKER_ID, KIND, PARENT, DEPS, RETURNS, ACTOR_ID, JOB_ID, ERROR,
 FUNC, NODE) = range(15)  # fmt: skip
EVENT_FIELDS = 15

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

MAX_INTERNED = 10_000  # distinct names/ids shared between records; beyond, each keeps its own
_EMPTY: tuple[()] = ()


def _state(rec: list[Any]) -> str:
    if rec[END] is None:
        # No worker yet (an owner's event at submission): waiting for one.
        return RUNNING if rec[PID] else PENDING_NODE_ASSIGNMENT
    return FINISHED if rec[ERROR] is None else FAILED


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


MAX_ERROR_MESSAGE = 1000  # characters of a failed task's error kept in its record


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
    if len(text) > MAX_ERROR_MESSAGE:  # keep the head and the last lines, where the error is
        text = text[:200] + "\n...\n" + text[-(MAX_ERROR_MESSAGE - 205) :]
    return [kind, text]


# --- the task table ----------------------------------------------------------------------
class TaskEventStore:
    """Task records from task events: at most `capacity` finished ones, all running ones.

    The oldest finished record goes first when the table is full; the counts per
    (function, type) and state are kept apart and survive that, so summaries stay
    exact. A record is the event list itself, its strings and ids shared (interned):
    about 0.5 KB a task, under 60 MB for 100,000 finished tasks.
    """

    def __init__(self, capacity: int, node_id: bytes = b"") -> None:
        self.capacity = max(int(capacity), 1)
        self.node_id = node_id
        self.active: dict[bytes, list[Any]] = {}  # task id -> RUNNING record
        # Submitted, not started (owners report these): at most `capacity`, oldest go first.
        self.pending: collections.OrderedDict[bytes, list[Any]] = collections.OrderedDict()
        self.done: collections.OrderedDict[bytes, list[Any]] = collections.OrderedDict()
        self.attempts: dict[bytes, int] = {}  # task id -> attempt number, where > 0
        # (func_or_class_name, type) -> state -> count: the summary, never evicted.
        self.counts: dict[tuple[str, str], dict[str, int]] = {}
        self.evicted = 0
        self._shared: dict[Any, Any] = {}

    # ------------------------------------------------------------------ ingest
    def add_events(self, events: Iterable[list[Any]]) -> None:
        for ev in events:
            if len(ev) == EVENT_FIELDS:
                self._add(ev)

    def _add(self, ev: list[Any]) -> None:
        tid = ev[TASK_ID]
        state = _state(ev)
        if state == PENDING_NODE_ASSIGNMENT:
            if tid in self.pending or tid in self.active or tid in self.done:
                return  # it started already: the owner's word came late
            self._share(ev)
            self._count(ev, state, 1)
            self.pending[tid] = ev
            while len(self.pending) > self.capacity:
                _, gone = self.pending.popitem(last=False)
                self._count(gone, PENDING_NODE_ASSIGNMENT, -1)
            return
        was_pending = self.pending.pop(tid, None)
        if was_pending is not None:
            self._count(was_pending, PENDING_NODE_ASSIGNMENT, -1)
        table: dict[bytes, list[Any]] = self.active
        old = table.get(tid)
        if old is None:
            table = self.done
            old = table.get(tid)
        if old is not None:
            old_state = _state(old)
            if state == RUNNING and (old_state == RUNNING or ev[START] <= old[END]):
                return  # a late copy of what the record says already
            del table[tid]
            self._count(old, old_state, -1)
            if old_state != RUNNING and ev[START] > old[END]:  # the owner ran it again
                self.attempts[tid] = self.attempts.get(tid, 0) + 1
        self._share(ev)
        self._count(ev, state, 1)
        if state == RUNNING:
            self.active[tid] = ev
            return
        self.done[tid] = ev
        while len(self.done) > self.capacity:
            gone, _ = self.done.popitem(last=False)
            self.attempts.pop(gone, None)
            self.evicted += 1

    def _share(self, ev: list[Any]) -> None:
        """One copy of each name, kind, worker and job id, however many records hold it."""
        shared = self._shared
        for i in (NAME, FUNC, KIND, WORKER_ID, JOB_ID, PID):
            v = ev[i]
            s = shared.get(v)
            if s is None:
                if len(shared) < MAX_INTERNED:
                    shared[v] = v
            else:
                ev[i] = s
        if not ev[DEPS]:
            ev[DEPS] = _EMPTY

    def _count(self, rec: list[Any], state: str, n: int) -> None:
        key = (rec[FUNC], TASK_TYPES.get(rec[KIND], "NORMAL_TASK"))
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
        for rec in [r for r in self.active.values() if r[PID] == pid]:
            ev = list(rec)
            ev[END] = max(now, ev[START])
            ev[ERROR] = ["WORKER_DIED" if ev[KIND] == "task" else "ACTOR_DIED", cause]
            self._add(ev)

    # ----------------------------------------------------------------- queries
    def _records(self) -> Iterable[list[Any]]:
        """Running first, then waiting, then finished, newest first."""
        yield from list(self.active.values())
        yield from reversed(list(self.pending.values()))
        yield from reversed(list(self.done.values()))

    def get_field(self, rec: list[Any], key: str) -> Any:
        return TASK_COLUMNS[key](self, rec)

    def row(self, rec: list[Any]) -> dict[str, Any]:
        return {k: get(self, rec) for k, get in TASK_COLUMNS.items()}

    def list_tasks(self, filters: list[P.Filter], limit: int) -> tuple[list[dict[str, Any]], int]:
        """(up to `limit` rows passing the filters, how many pass in all)."""
        filters = check_filters(filters, TASK_COLUMNS, "tasks")
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

    def timeline_events(self) -> list[list[Any]]:
        """The finished records, oldest first (the wire form GetTimeline replies with)."""
        return list(self.done.values())

    def chrome_trace(self) -> list[dict[str, Any]]:
        meta, trace = chrome_trace(self.timeline_events())
        return meta + trace

    def memory_bytes(self) -> int:
        """A rough size of the table (for statistics; tests measure it exactly)."""
        return 520 * (len(self.done) + len(self.active))


TASK_COLUMNS: dict[str, Callable[[TaskEventStore, list[Any]], Any]] = {
    "task_id": lambda s, r: r[TASK_ID].hex(),
    "attempt_number": lambda s, r: s.attempts.get(r[TASK_ID], 0),
    "name": lambda s, r: r[NAME],
    "state": lambda s, r: _state(r),
    "job_id": lambda s, r: _hex(r[JOB_ID]),
    "actor_id": lambda s, r: _hex(r[ACTOR_ID]),
    "type": lambda s, r: TASK_TYPES.get(r[KIND], "NORMAL_TASK"),
    "func_or_class_name": lambda s, r: r[FUNC],
    "parent_task_id": lambda s, r: _hex(r[PARENT]),
    "node_id": lambda s, r: _hex(r[NODE] or s.node_id),
    "worker_id": lambda s, r: _hex(r[WORKER_ID]),
    "worker_pid": lambda s, r: r[PID],
    "error_type": lambda s, r: r[ERROR][0] if r[ERROR] else None,
    "error_message": lambda s, r: r[ERROR][1] if r[ERROR] else None,
    "language": lambda s, r: "PYTHON",
    "creation_time_ms": lambda s, r: None,
    "start_time_ms": lambda s, r: int(r[START] * 1000),
    "end_time_ms": lambda s, r: int(r[END] * 1000) if r[END] is not None else None,
}


def chrome_trace(events: list[list[Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
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
        if len(ev) < EVENT_FIELDS or ev[END] is None:
            continue
        pid = ev[PID]
        workers.setdefault(pid, ev[WORKER_ID].hex())
        span = {
            "cat": ev[KIND],
            "name": ev[NAME],
            "ph": "X",
            "pid": 1,
            "tid": pid,
            "ts": ev[START] * 1e6,
            "dur": max(ev[END] - ev[START], 0) * 1e6,
            "args": {
                "task_id": ev[TASK_ID].hex(),
                "worker_id": ev[WORKER_ID].hex(),
                "worker_pid": pid,
                "parent_task_id": _hex(ev[PARENT]),
                "state": _state(ev),
            },
        }
        if ev[ERROR]:
            span["args"]["error_type"] = ev[ERROR][0]
        trace.append(span)
        spans.append((span, ev[DEPS]))
        for oid in ev[RETURNS]:
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
    meta = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "Node 127.0.0.1"}}]
    meta += [
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": pid, "args": {"name": f"worker {pid}"}}
        for pid in sorted(workers)
    ]
    return meta, trace


# --- recent output per worker ----------------------------------------------------------------
class WorkerLogs:
    """The last `lines` output lines of each of the last `workers` workers that printed.

    Each line gets a sequence number per worker, so a follower asks for what came after
    the last one it saw. Lines as the driver sees them: `(name pid=N) text`.
    """

    MAX_LINE = 8192  # longer lines are cut: one runaway print must not fill the ring

    def __init__(self, lines: int = 1000, workers: int = 128) -> None:
        self.lines = lines
        self.workers = workers
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
            ring.append(P.NumberedLine(seq, stream, line[: self.MAX_LINE]))
            seq += 1
        self.next_seq[pid] = seq

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


# --- answers to the state requests, from the node manager's records -----------------------
class StateViews:
    """ListState, SummarizeTasks and GetLogs, answered from what the node manager holds.

    Reads the node manager's tables (workers, actors, segments, resources) only when
    asked, so the node manager needs no code of its own for them; it registers these
    handlers and feeds `tasks` (on_task_events) and `logs` (on_log).
    """

    def __init__(self, nm: Any, tasks: TaskEventStore, logs: WorkerLogs) -> None:
        self.nm = nm
        self.tasks = tasks
        self.logs = logs
        self.started = time.time()

    async def flush_workers(self) -> None:
        """Ask every live worker for the task events it has not sent yet."""
        flushes = [
            asyncio.wait_for(w.conn.request(P.FlushEvents()), 5.0)
            for w in self.nm.workers.values()
            if w.conn is not None and not w.conn.closed and w.state != "dead"
        ]
        await asyncio.gather(*flushes, return_exceptions=True)

    # ----------------------------------------------------------------- handlers
    def on_list_state(self, conn: Any, msg: P.ListState, rid: int) -> None:
        self.nm.spawn(self._list_state(conn, msg, rid))

    async def _list_state(self, conn: Any, msg: P.ListState, rid: int) -> None:
        self.tasks.node_id = self.nm.node_id
        if msg.kind == "tasks":
            await self.flush_workers()
        try:
            if msg.kind == "tasks":
                rows, total = self.tasks.list_tasks(msg.filters, msg.limit)
            else:
                lister = getattr(self, f"_{msg.kind}", None)
                if lister is None or msg.kind.startswith("_"):
                    raise ValueError(
                        f"cannot list {msg.kind!r}: choose tasks, actors, objects, nodes or workers"
                    )
                filters = check_filters(msg.filters, _COLUMNS[msg.kind], msg.kind)
                everything = lister()
                picked = [r for r in everything if matches(r.get, filters)]
                rows, total = picked[: msg.limit], len(picked)
        except ValueError as exc:
            conn.reply(rid, P.Failed(P.FailCode.BAD_REQUEST, str(exc)))
            return
        except Exception as exc:  # a table changed shape: say so rather than never reply
            log.exception("listing %s failed", msg.kind)
            conn.reply(
                rid, P.Failed(P.FailCode.INTERNAL, f"raylite could not list {msg.kind}: {exc!r}")
            )
            return
        conn.reply(rid, P.StateList(rows, total))

    def on_summarize_tasks(self, conn: Any, msg: P.SummarizeTasks, rid: int) -> None:
        self.nm.spawn(self._summarize(conn, rid))

    async def _summarize(self, conn: Any, rid: int) -> None:
        await self.flush_workers()
        conn.reply(rid, P.TaskSummary(self.tasks.summary()))

    def on_get_logs(self, conn: Any, msg: P.GetLogs, rid: int) -> None:
        pid, found = self._log_pid(msg)
        if not found:
            conn.reply(rid, P.Failed(P.FailCode.NOT_FOUND, found_nothing(msg)))
            return
        lines, nxt = self.logs.get(pid, msg.after, msg.tail)
        rec = self.nm.by_pid.get(pid)
        # Another node's worker (the head keeps their output): alive as far as we know.
        alive = rec.state != "dead" if rec is not None else pid in self.logs.rings
        conn.reply(rid, P.Logs(pid, lines, nxt, alive))

    def _log_pid(self, msg: P.GetLogs) -> tuple[int, bool]:
        if msg.actor_id:
            actor = self.nm.actors.get(msg.actor_id)
            if actor is not None and actor.pid:
                return actor.pid, True
            for w in self.nm.workers.values():  # starting, or never reported alive
                if w.actor_id == msg.actor_id:
                    return w.pid, True
            return 0, False
        if msg.task_id:
            rec = self.tasks.active.get(msg.task_id) or self.tasks.done.get(msg.task_id)
            return (rec[PID], True) if rec is not None else (0, False)
        known = msg.pid in self.logs.rings or any(
            w.pid == msg.pid for w in self.nm.workers.values()
        )
        return msg.pid, known

    # ------------------------------------------------------------------ listings
    def _node_hex(self) -> str:
        return self.nm.node_id.hex()

    def _actors(self) -> list[dict[str, Any]]:
        nm = self.nm
        rows = {}
        for actor in nm.actors.values():
            if not (actor.class_name or actor.pid or actor.state == "DEAD"):
                continue  # only asked about (GetActorInfo), never created here
            namespace, name = actor.name or (None, None)
            rows[actor.actor_id] = {
                "actor_id": actor.actor_id.hex(),
                "class_name": actor.class_name,
                "state": ACTOR_STATES.get(actor.state, actor.state),
                "job_id": None,
                "name": name or "",
                "node_id": self._node_hex(),
                "pid": actor.pid or None,
                "ray_namespace": namespace,
                "death_cause": {"message": actor.cause} if actor.state == "DEAD" else None,
                "address": actor.address,
            }
        for w in nm.workers.values():  # actors whose worker starts: nobody reported them yet
            if w.actor_id is not None and w.actor_id not in rows and w.state != "dead":
                rows[w.actor_id] = {
                    "actor_id": w.actor_id.hex(),
                    "class_name": "",
                    "state": "PENDING_CREATION",
                    "job_id": None,
                    "name": "",
                    "node_id": self._node_hex(),
                    "pid": w.pid,
                    "ray_namespace": None,
                    "death_cause": None,
                    "address": w.address,
                }
        return list(rows.values())

    def _workers(self) -> list[dict[str, Any]]:
        nm = self.nm
        rows = []
        addresses = set()
        for w in nm.workers.values():
            addresses.add(w.address)
            rows.append(
                {
                    "worker_id": w.worker_id.hex(),
                    "is_alive": w.state != "dead",
                    "worker_type": "WORKER",
                    "exit_type": None if w.state != "dead" else "SYSTEM_ERROR",
                    "node_id": self._node_hex(),
                    "ip": "127.0.0.1",
                    "pid": w.pid,
                    "state": w.state.upper(),
                    "actor_id": _hex(w.actor_id),
                    "log_lines": len(self.logs.rings.get(w.pid, ())),
                }
            )
        for address, pid in nm.client_pids.items():
            if address in addresses or not os.path.basename(address).startswith("d-"):
                continue
            alive = _pid_alive(pid)
            rows.append(
                {
                    "worker_id": os.path.basename(address)[2:].split(".")[0],
                    "is_alive": alive,
                    "worker_type": "DRIVER",
                    "exit_type": None if alive else "INTENDED_USER_EXIT",
                    "node_id": self._node_hex(),
                    "ip": "127.0.0.1",
                    "pid": pid,
                    "state": "ALIVE" if alive else "DEAD",
                    "actor_id": None,
                    "log_lines": 0,
                }
            )
        return rows

    def _nodes(self) -> list[dict[str, Any]]:
        nm = self.nm
        head = getattr(nm, "head", None)
        if head is not None and getattr(head, "nodes", None):  # the head: the cluster's view
            return [self._node_row(nm.node_dict(r)) for r in head.nodes.values()]
        return [
            {
                "node_id": self._node_hex(),
                "node_ip": "127.0.0.1",
                "is_head_node": True,
                "state": "ALIVE",
                "state_message": None,
                "node_name": socket.gethostname(),
                "resources_total": {k: v / RESOURCE_UNIT for k, v in nm.total.items()},
                "resources_available": {
                    k: max(v, 0) / RESOURCE_UNIT for k, v in nm.available.items()
                },
                "labels": {},
                "start_time_ms": int(self.started * 1000),
            }
        ]

    def _node_row(self, d: dict[str, Any]) -> dict[str, Any]:
        """A node as the head's `nodes()` view has it, in Ray's state-API names."""
        local = d["NodeID"] == self._node_hex()
        return {
            "node_id": d["NodeID"],
            "node_ip": d.get("NodeManagerAddress", ""),
            "is_head_node": bool(d.get("IsHead", local)),
            "state": "ALIVE" if d.get("Alive") else "DEAD",
            "state_message": None,
            "node_name": d.get("NodeManagerHostname") or d.get("NodeName", ""),
            "resources_total": dict(d.get("Resources", {})),
            "resources_available": (
                {k: max(v, 0) / RESOURCE_UNIT for k, v in self.nm.available.items()}
                if local
                else {}
            ),
            "labels": {},
            "start_time_ms": int(self.started * 1000) if local else None,
        }

    def _objects(self) -> list[dict[str, Any]]:
        """What is in this node's store (the owners' reference tables are theirs)."""
        nm = self.nm
        return [
            {
                "object_id": oid.hex(),
                "object_size": seg.size,
                "task_status": "FINISHED",
                "reference_type": "PINNED_IN_MEMORY",
                "call_site": "disabled",
                "type": "WORKER" if "/w-" in seg.owner else "DRIVER",
                "pid": nm.client_pids.get(seg.owner) or None,
                "ip": "127.0.0.1",
                "spilled": seg.spilled,
            }
            for oid, seg in nm.segments.items()
        ]


_COLUMNS = {
    "actors": [
        "actor_id", "class_name", "state", "job_id", "name", "node_id", "pid",
        "ray_namespace", "death_cause", "address",
    ],
    "workers": [
        "worker_id", "is_alive", "worker_type", "exit_type", "node_id", "ip", "pid",
        "state", "actor_id", "log_lines",
    ],
    "nodes": [
        "node_id", "node_ip", "is_head_node", "state", "state_message", "node_name",
        "resources_total", "resources_available", "labels", "start_time_ms",
    ],
    "objects": [
        "object_id", "object_size", "task_status", "reference_type", "call_site", "type",
        "pid", "ip", "spilled",
    ],
}  # fmt: skip


def found_nothing(msg: P.GetLogs) -> str:
    if msg.actor_id:
        what = f"actor {msg.actor_id.hex()}"
    elif msg.task_id:
        what = f"task {msg.task_id.hex()}"
    else:
        what = f"worker pid={msg.pid}"
    return (
        f"no output known for {what} on this node: check the id with "
        "`raylite list actors` or `raylite list workers`."
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
