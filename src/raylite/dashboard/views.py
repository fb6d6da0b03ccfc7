"""The dashboard's JSON answers, built from snapshots and the task records.

Pure functions (no HTTP here, see server.py) of the node's statistics
(node/statistics.py: workers, resources, the store and its objects), the head's
(head/statistics.py: nodes, actors, jobs), the task records (task_events.py's
TaskEventStore, read through its queries) and the workers' recent output
(WorkerLogs.get). Nothing here reads a live table of the node manager or the head,
so a test renders every view from snapshots made by hand. Every answer is bounded:
lists take a `limit` (capped by MAX_LIMIT), counts come from the tables' own
counters, and nothing walks more task records than a listing needs, so a page
polled every second costs the same with 100 recorded tasks as with 100,000.

    browser ──GET /api/tasks?state=FAILED&limit=100──▶ server ──tasks(records, ...)──▶ dict
    browser ──GET /api/cluster──▶ server ──cluster(nm.statistics(), head statistics)──▶ dict
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from .. import protocol as P
from .. import task_events as TE
from ..config import RESOURCE_UNIT
from ..head.statistics import HeadStatistics
from ..node.statistics import NodeStatistics, StoreStat

MAX_LIMIT = 1000  # rows of one listing
MAX_TIMELINE = 10_000  # bars of one timeline answer
DEFAULT_TIMELINE = 2000
MAX_FUNCTIONS = 200  # rows of the per-function task summary
MAX_WORKERS = 500
# Finished records are kept in the order they reached the node, which is their end
# order up to the workers' event batching (event_flush_s); a window's scan, newest
# first, stops this long before the window starts.
ARRIVAL_SLACK_S = 10.0
BYTE_RESOURCES = ("memory", "object_store_memory")


def _hex(b: bytes | None) -> str | None:
    return b.hex() if b else None


def _display(res: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in res.items():
        if k.startswith("node:"):
            continue  # the node's own marker resource
        out[k] = max(v, 0) / RESOURCE_UNIT
    return out


def clamp(value: Any, default: int, high: int) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return default
    return max(0, min(n, high))


# --------------------------------------------------------------------- cluster
def cluster(node: NodeStatistics, head: HeadStatistics) -> dict[str, Any]:
    nodes = []
    for r in head.nodes:
        total = _display(r.total)
        available = _display(r.available) if r.alive else {}
        used = {k: max(v - available.get(k, 0.0), 0.0) for k, v in total.items()}
        own = r.node_id == node.node_id
        nodes.append(
            {
                "node_id": r.node_id.hex(),
                "address": r.address or r.info.get("unix_address", ""),
                "ip": r.ip,
                "hostname": r.info.get("hostname", ""),
                "alive": r.alive,
                "is_head": r.is_head,
                "cause": r.cause,
                "total": total,
                "used": used if r.alive else {},
                "pending": len(r.pending),
                "store": _store(node.store) if own else None,  # others': the server asks them
                "workers": sum(1 for w in node.workers if w.alive) if own else None,
            }
        )
    totals = _display(head.total)
    available = _display(head.available)
    return {
        "nodes": nodes,
        "total": totals,
        "used": {k: max(v - available.get(k, 0.0), 0.0) for k, v in totals.items()},
        "byte_resources": list(BYTE_RESOURCES),
        "store": _store(node.store),
        "head": {
            "node_id": node.node_id.hex(),
            "address": node.tcp_address or node.address,
            "storage": head.storage,
            "uptime_s": time.time() - head.started,
            "jobs": head.jobs,
            "actors_alive": sum(1 for a in head.actors if a.state == "ALIVE"),
        },
        "tasks": dict(node.task_states),
        "now": time.time(),
    }


def _store(s: StoreStat) -> dict[str, Any]:
    return {
        "used_bytes": s.used_bytes,
        "capacity_bytes": s.capacity_bytes,
        "spilled_bytes": s.spilled_bytes,
        "num_objects": s.num_objects,
        "spilled_objects": s.spilled_objects,
        "restored_objects": s.restored_objects,
    }


# ----------------------------------------------------------------------- tasks
def task_row(te: TE.TaskEventStore, rec: TE.TaskEvent) -> dict[str, Any]:
    error = rec.error
    end = rec.end
    return {
        "task_id": rec.task_id.hex(),
        "name": rec.name,
        "func": rec.func,
        "type": TE.TASK_TYPES.get(rec.kind, "NORMAL_TASK"),
        "state": TE.state_of(rec),
        "attempt": te.attempts.get(rec.task_id, 0),
        "pid": rec.pid,
        "worker_id": _hex(rec.worker_id),
        "actor_id": _hex(rec.actor_id),
        "parent_task_id": _hex(rec.parent),
        "job_id": _hex(rec.job_id),
        "start": rec.start,
        "end": end,
        "duration_s": (end - rec.start) if end is not None else None,
        "error_type": error[0] if error else None,
        # The error's text: for a task that raised, its remote traceback.
        "error": error[1] if error else None,
    }


def tasks(
    te: TE.TaskEventStore, state: str = "", func: str = "", limit: int = 100, offset: int = 0
) -> dict[str, Any]:
    state = state.upper()
    functions: dict[str, dict[str, Any]] = {}
    for (name, kind), by_state in te.counts.items():
        if not by_state:
            continue
        entry = functions.setdefault(name, {"func": name, "type": kind, "counts": {}, "total": 0})
        for s, n in by_state.items():
            entry["counts"][s] = entry["counts"].get(s, 0) + n
            entry["total"] += n
    # Exact, also for records the table has dropped: the counts outlive them.
    matching = 0
    for (name, _), by_state in te.counts.items():
        if func and name != func:
            continue
        matching += by_state.get(state, 0) if state else sum(by_state.values())
    picked: Iterable[TE.TaskEvent] = te.newest_first(state)
    if func:
        picked = (r for r in picked if r.func == func)
    rows = [task_row(te, r) for r in itertools.islice(picked, offset, offset + limit)]
    top = heapq.nlargest(MAX_FUNCTIONS, functions.values(), key=lambda e: e["total"])
    return {
        "functions": top,
        "functions_total": len(functions),
        "states": te.state_totals(),
        "rows": rows,
        "matching": matching,
        "offset": offset,
        "limit": limit,
        "recorded": te.recorded(),
        "evicted": te.evicted,
    }


def task(te: TE.TaskEventStore, task_id: str) -> dict[str, Any] | None:
    try:
        tid = bytes.fromhex(task_id)
    except ValueError:
        return None
    rec = te.find(tid)
    return task_row(te, rec) if rec is not None else None


# ---------------------------------------------------------------------- actors
def actors(
    node: NodeStatistics, head: HeadStatistics, state: str = "", limit: int = 100
) -> dict[str, Any]:
    addresses = {n.node_id: n.address or n.ip for n in head.nodes}
    rows: list[dict[str, Any]] = []
    by_state: dict[str, int] = {}
    by_class: dict[str, dict[str, int]] = {}
    known = set()
    state = state.upper()

    def add(row: dict[str, Any]) -> None:
        s = row["state"]
        by_state[s] = by_state.get(s, 0) + 1
        per = by_class.setdefault(row["class_name"] or "?", {})
        per[s] = per.get(s, 0) + 1
        if (not state or s == state) and len(rows) < limit:
            rows.append(row)

    # Newest first: the table is in creation order.
    for actor in reversed(head.actors):
        known.add(actor.actor_id)
        if not actor.created:
            continue  # only asked about (GetActorInfo), never created
        add(
            {
                "actor_id": actor.actor_id.hex(),
                "class_name": actor.class_name,
                "state": TE.ACTOR_STATES.get(actor.state, str(actor.state)),
                "name": actor.name or "",
                "namespace": actor.namespace,
                "node_id": _hex(actor.node_id),
                "node": addresses.get(actor.node_id, ""),
                "pid": actor.pid or None,
                "address": actor.address,
                "restarts": actor.restarts,
                "restarts_left": actor.restarts_left,
                "cause": actor.cause,
            }
        )
    for w in node.workers:  # starting here: nobody reported them yet
        if w.actor_id is not None and w.actor_id not in known and w.alive:
            add(
                {
                    "actor_id": w.actor_id.hex(),
                    "class_name": "",
                    "state": "PENDING_CREATION",
                    "name": "",
                    "namespace": None,
                    "node_id": node.node_id.hex(),
                    "node": addresses.get(node.node_id, ""),
                    "pid": w.pid,
                    "address": w.address,
                    "restarts": 0,
                    "restarts_left": 0,
                    "cause": "",
                }
            )
    classes = heapq.nlargest(
        MAX_FUNCTIONS,
        ({"class_name": c, "counts": s, "total": sum(s.values())} for c, s in by_class.items()),
        key=lambda e: e["total"],
    )
    return {
        "rows": rows,
        "states": by_state,
        "classes": classes,
        "total": sum(by_state.values()),
    }


# --------------------------------------------------------------------- objects
# ----------------------------------------------------------- placement groups
def placement_groups(head: HeadStatistics, limit: int = 100) -> dict[str, Any]:
    """The head's placement groups, newest first, with each bundle's node."""
    addresses = {n.node_id: n.address or n.ip for n in head.nodes}
    by_state: dict[str, int] = {}
    rows = []
    for pg in reversed(head.placement_groups):
        by_state[pg["state"]] = by_state.get(pg["state"], 0) + 1
        if len(rows) >= limit:
            continue
        nodes = pg["nodes"]
        rows.append(
            {
                "placement_group_id": pg["pg_id"].hex(),
                "name": pg["name"],
                "state": pg["state"],
                "strategy": pg["strategy"],
                "detached": pg["detached"],
                "bundles": [
                    {
                        "resources": _display(b),
                        "node_id": _hex(nodes.get(i)),
                        "node": addresses.get(nodes.get(i, b""), ""),
                    }
                    for i, b in enumerate(pg["bundles"])
                ],
            }
        )
    return {"rows": rows, "states": by_state, "total": sum(by_state.values())}


def _owner(node: NodeStatistics, address: str) -> tuple[str, int | None]:
    pid = node.clients.get(address)
    kind = "driver" if os.path.basename(address).startswith("d-") else "worker"
    return (f"{kind} pid={pid}" if pid else f"{kind} {address}"), pid


def objects(node: NodeStatistics, sort: str = "recent", limit: int = 100) -> dict[str, Any]:
    """The store's objects; `node` must carry them (statistics(objects=True))."""
    segments = node.objects or ()
    if sort == "size":
        chosen = heapq.nlargest(limit, segments, key=lambda seg: seg.size)
    else:  # least recently used last: newest first
        chosen = list(itertools.islice(reversed(segments), limit))
    rows = []
    for seg in chosen:
        owner, pid = _owner(node, seg.owner)
        rows.append(
            {
                "object_id": seg.object_id.hex(),
                "size": seg.size,
                "owner": owner,
                "owner_pid": pid,
                "spilled": seg.spilled,
                "readers": seg.readers,
                "copies": seg.copies,
            }
        )
    return {
        "rows": rows,
        "store": _store(node.store),
        "total": len(segments),
        "sort": sort,
        "node_id": node.node_id.hex(),
    }


async def other_stores(
    connect: Callable[[str], Awaitable[Any]],
    node: NodeStatistics,
    head: HeadStatistics,
    wait_s: float = 2.0,
) -> dict[str, Any]:
    """Each other live node's StoreStats, by node id hex (those that answer in time);
    `connect` is the node manager's connect_nm."""

    async def one(entry: Any) -> tuple[str, Any] | None:
        try:
            conn = await connect(entry.address)
            reply = await asyncio.wait_for(conn.request(P.GetStoreStats()), wait_s)
        except Exception:  # unreachable or gone: shown as not reported
            return None
        return (entry.node_id.hex(), reply) if isinstance(reply, P.StoreStats) else None

    others = [n for n in head.nodes if n.alive and n.address and n.node_id != node.node_id]
    found = await asyncio.gather(*(one(n) for n in others))
    return dict(x for x in found if x is not None)


STORE_SUMS = ("used_bytes", "capacity_bytes", "spilled_bytes", "num_objects", "spilled_objects",
              "restored_objects")  # fmt: skip


def merge_objects(
    local: dict[str, Any], stores: dict[str, Any], sort: str, limit: int
) -> dict[str, Any]:
    """The head's objects and every other node's, one table, the store totals summed."""
    rows = [{**r, "node_id": local.get("node_id", "")} for r in local["rows"]]
    total = local["total"]
    store = dict(local["store"])
    for node_hex, reply in stores.items():
        clients = reply.stats.get("clients", {})
        for o in reply.objects:
            rows.append(
                {
                    "object_id": o["object_id"],
                    "size": o["size"],
                    "owner": f"pid={clients.get(o['owner'], '?')}",
                    "owner_pid": o.get("owner_pid", 0),
                    "spilled": o["spilled"],
                    "readers": "",
                    "copies": "",
                    "node_id": node_hex,
                }
            )
        total += reply.stats.get("num_objects", 0)
        for key in STORE_SUMS:
            store[key] = store.get(key, 0) + reply.stats.get(key, 0)
    if sort == "size":
        rows.sort(key=lambda r: r["size"], reverse=True)
    return {"rows": rows[:limit], "store": store, "total": total, "sort": sort}


# ----------------------------------------------------------------- workers, logs
def workers(
    node: NodeStatistics, head: HeadStatistics | None, limit: int = MAX_WORKERS
) -> dict[str, Any]:
    actor_class = head.actor_classes() if head is not None else {}
    rows = []
    for w in itertools.islice(reversed(node.workers), limit):
        rows.append(
            {
                "pid": w.pid,
                "worker_id": w.worker_id.hex(),
                "kind": "worker",
                "state": w.state.upper(),
                "alive": w.alive,
                "actor_id": _hex(w.actor_id),
                "actor_class": actor_class.get(w.actor_id, "") if w.actor_id else "",
                "log_lines": w.log_lines,
            }
        )
    rows.sort(key=lambda r: (not r["alive"], r["pid"]))  # live workers first
    return {"rows": rows, "total": len(node.workers)}


def logs(
    node: NodeStatistics, wl: TE.WorkerLogs, pid: int, after: int = 0, tail: int = 500
) -> dict[str, Any] | None:
    worker = node.worker_by_pid(pid)
    if worker is None and not wl.knows(pid):
        return None
    lines, nxt = wl.get(pid, after, tail)
    if len(lines) > tail > 0:
        lines = lines[-tail:]
    return {
        "pid": pid,
        "lines": [[seq, stream, text] for seq, stream, text in lines],
        "next": nxt,
        "alive": worker is not None and worker.alive,
    }


# -------------------------------------------------------------------- timeline
def timeline(
    te: TE.TaskEventStore,
    node: NodeStatistics,
    head: HeadStatistics | None,
    start: float | None = None,
    end: float | None = None,
    limit: int = DEFAULT_TIMELINE,
) -> dict[str, Any]:
    """Tasks overlapping [start, end] (default: all), newest first, at most `limit`.

    Each task is [task_id, name, start, end | None, pid, state, kind, error_type,
    func]; a running task has no end (the page draws it up to now). `flows` are
    [producer index, consumer index] pairs: an argument of the consumer that the
    producer returned, both in this answer (task_events' dependency data).
    """
    now = time.time()
    lo = float("-inf") if start is None else start
    hi = float("inf") if end is None else end
    picked: list[TE.TaskEvent] = []
    truncated = False
    for rec in te.newest_first(TE.RUNNING):
        if rec.start <= hi:
            picked.append(rec)
    for rec in te.finished_newest_first():
        rec_end = rec.end
        if rec_end < lo:
            if rec_end < lo - ARRIVAL_SLACK_S:
                break
            continue
        if rec.start > hi:
            continue
        if len(picked) >= limit:
            truncated = True
            break
        picked.append(rec)
    produced: dict[bytes, int] = {}
    for i, rec in enumerate(picked):
        for oid in rec.returns:
            produced[oid] = i
    flows = []
    for i, rec in enumerate(picked):
        for oid in rec.deps:
            src = produced.get(oid)
            if src is not None and src != i:
                flows.append([src, i])
    pids = {rec.pid for rec in picked}
    lanes = []
    actor_class = head.actor_classes() if head is not None else {}
    by_pid = {w.pid: w for w in node.workers}
    pids.update(w.pid for w in node.workers if w.alive)
    for pid in sorted(pids):
        lane = by_pid.get(pid)
        label = f"worker {pid}"
        if lane is not None and lane.actor_id is not None and actor_class.get(lane.actor_id):
            label += f" ({actor_class[lane.actor_id]})"
        lanes.append({"pid": pid, "label": label, "alive": lane is not None and lane.alive})
    oldest = te.oldest_finished()
    return {
        "tasks": [
            [
                rec.task_id.hex(),
                rec.name,
                rec.start,
                rec.end,
                rec.pid,
                TE.state_of(rec),
                rec.kind,
                rec.error[0] if rec.error else None,
                rec.func,
            ]
            for rec in picked
        ],
        "flows": flows,
        "lanes": lanes,
        "truncated": truncated,
        "first": oldest.start if oldest is not None else None,
        "now": now,
        "node": node.ip,
    }


def jobs(records: Any, limit: int = MAX_LIMIT) -> dict[str, Any]:
    """Submitted jobs (head/jobs.py's records), newest first: the Jobs tab. Env var
    values are left out: a browser sees a job's runtime_env keys, not its secrets."""
    rows = []
    for rec in sorted(records, key=lambda r: r.info.start_time or 0, reverse=True)[:limit]:
        info = rec.info
        rows.append(
            {
                "submission_id": rec.submission_id,
                "status": str(info.status),
                "entrypoint": info.entrypoint[:200],
                "start_time": info.start_time,
                "end_time": info.end_time,
                "driver_exit_code": info.driver_exit_code,
                "message": (info.message or "")[:500],
            }
        )
    return {"total": len(records), "rows": rows}
