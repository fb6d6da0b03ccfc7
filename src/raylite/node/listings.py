"""Answers to the state requests (`raylite list`, util.state): rows from snapshots.

Owns the handlers for ListState, SummarizeTasks and GetLogs, and the row builders
they use: pure functions of the node's statistics (node/statistics.py) and the
head's (head/statistics.py), so the rows never read a live table and a test builds
them from snapshots made by hand. Task rows and worker output come from the task
records and log rings (task_events.py), through their query methods. Not where the
requests are routed (manager.py: the head answers for the cluster's tasks, actors and
nodes), not the records themselves.

    cli, util.state ──ListState──▶ manager ──▶ Listings ──nm.statistics()──▶ rows ──▶ StateList
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from .. import protocol as P
from ..config import RESOURCE_UNIT
from ..head.statistics import HeadStatistics
from ..task_events import ACTOR_STATES, check_filters, matches
from .statistics import NodeStatistics

log = logging.getLogger(__name__)


class Listings:
    """The state requests' handlers. `nm` is the node manager: it gives the snapshots
    (statistics, head_statistics), the task records and log rings, and runs coroutines
    (spawn) and flushes its workers' task events (flush_workers)."""

    def __init__(self, nm: Any) -> None:
        self.nm = nm
        self.started = time.time()

    def on_list_state(self, conn: Any, msg: P.ListState, rid: int) -> None:
        self.nm.spawn(self._list_state(conn, msg, rid))

    async def _list_state(self, conn: Any, msg: P.ListState, rid: int) -> None:
        tasks = self.nm.task_events
        if msg.kind == "tasks":
            await self.nm.flush_workers()
        try:
            if msg.kind == "tasks":
                tasks.node_id = self.nm.node_id  # a node that joined again has a new id
                rows, total = tasks.list_tasks(msg.filters, msg.limit)
            else:
                lister = LISTERS.get(msg.kind)
                if lister is None:
                    raise ValueError(
                        f"cannot list {msg.kind!r}: choose tasks, actors, objects, nodes, workers "
                        "or placement_groups"
                    )
                filters = check_filters(msg.filters, COLUMNS[msg.kind], msg.kind)
                node = self.nm.statistics(objects=msg.kind == "objects")
                everything = lister(node, self.nm.head_statistics(), self.started)
                picked = [r for r in everything if matches(r.get, filters)]
                rows, total = picked[: msg.limit], len(picked)
        except ValueError as exc:
            conn.reply(rid, P.Failed(P.FailCode.BAD_REQUEST, str(exc)))
            return
        except Exception as exc:  # a bug in a lister: say so rather than never reply
            log.exception("listing %s failed", msg.kind)
            conn.reply(
                rid, P.Failed(P.FailCode.INTERNAL, f"raylite could not list {msg.kind}: {exc!r}")
            )
            return
        conn.reply(rid, P.StateList(rows, total))

    def on_summarize_tasks(self, conn: Any, msg: P.SummarizeTasks, rid: int) -> None:
        self.nm.spawn(self._summarize(conn, rid))

    async def _summarize(self, conn: Any, rid: int) -> None:
        await self.nm.flush_workers()
        conn.reply(rid, P.TaskSummary(self.nm.task_events.summary()))

    def on_get_logs(self, conn: Any, msg: P.GetLogs, rid: int) -> None:
        logs = self.nm.worker_logs
        node = self.nm.statistics()
        pid, found = log_pid(msg, node, self.nm.head_statistics(), self.nm.task_events, logs)
        if not found:
            conn.reply(rid, P.Failed(P.FailCode.NOT_FOUND, found_nothing(msg)))
            return
        lines, nxt = logs.get(pid, msg.after, msg.tail)
        worker = node.worker_by_pid(pid)
        # Another node's worker (the head keeps their output): alive as far as we know.
        alive = worker.alive if worker is not None else logs.knows(pid)
        conn.reply(rid, P.Logs(pid, lines, nxt, alive))


def log_pid(
    msg: P.GetLogs, node: NodeStatistics, head: HeadStatistics | None, tasks: Any, logs: Any
) -> tuple[int, bool]:
    """(the pid whose output GetLogs asks for, whether it is known here)."""
    if msg.actor_id:
        for actor in head.actors if head is not None else ():
            if actor.actor_id == msg.actor_id and actor.pid:
                return actor.pid, True
        for w in node.workers:  # starting, or never reported alive
            if w.actor_id == msg.actor_id:
                return w.pid, True
        return 0, False
    if msg.task_id:
        rec = tasks.find(msg.task_id)
        return (rec.pid, True) if rec is not None and rec.pid else (0, False)
    return msg.pid, logs.knows(msg.pid) or node.worker_by_pid(msg.pid) is not None


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


# --- rows, in Ray's state-API names ------------------------------------------------------------
def _hex(b: bytes | None) -> str | None:
    return b.hex() if b else None


def actor_rows(
    node: NodeStatistics, head: HeadStatistics | None, started: float
) -> list[dict[str, Any]]:
    rows = {}
    for actor in head.actors if head is not None else ():
        if not actor.created:
            continue  # only asked about (GetActorInfo), never created
        rows[actor.actor_id] = {
            "actor_id": actor.actor_id.hex(),
            "class_name": actor.class_name,
            "state": ACTOR_STATES.get(actor.state, str(actor.state)),
            "job_id": None,
            "name": actor.name or "",
            "node_id": _hex(actor.node_id) or node.node_id.hex(),
            "pid": actor.pid or None,
            "ray_namespace": actor.namespace,
            "death_cause": {"message": actor.cause} if actor.state == "DEAD" else None,
            "address": actor.address,
        }
    for w in node.workers:  # actors whose worker starts: nobody reported them yet
        if w.actor_id is not None and w.actor_id not in rows and w.alive:
            rows[w.actor_id] = {
                "actor_id": w.actor_id.hex(),
                "class_name": "",
                "state": "PENDING_CREATION",
                "job_id": None,
                "name": "",
                "node_id": node.node_id.hex(),
                "pid": w.pid,
                "ray_namespace": None,
                "death_cause": None,
                "address": w.address,
            }
    return list(rows.values())


def worker_rows(
    node: NodeStatistics,
    head: HeadStatistics | None,
    started: float,
    pid_alive: Callable[[int], bool] | None = None,
) -> list[dict[str, Any]]:
    """This node's workers, and the drivers that registered here (alive or not)."""
    alive_check = pid_alive or _pid_alive
    rows = []
    addresses = set()
    for w in node.workers:
        addresses.add(w.address)
        rows.append(
            {
                "worker_id": w.worker_id.hex(),
                "is_alive": w.alive,
                "worker_type": "WORKER",
                "exit_type": None if w.alive else "SYSTEM_ERROR",
                "node_id": node.node_id.hex(),
                "ip": "127.0.0.1",
                "pid": w.pid,
                "state": w.state.upper(),
                "actor_id": _hex(w.actor_id),
                "log_lines": w.log_lines,
            }
        )
    for address, pid in node.clients.items():
        if address in addresses or not os.path.basename(address).startswith("d-"):
            continue
        alive = alive_check(pid)
        rows.append(
            {
                "worker_id": os.path.basename(address)[2:].split(".")[0],
                "is_alive": alive,
                "worker_type": "DRIVER",
                "exit_type": None if alive else "INTENDED_USER_EXIT",
                "node_id": node.node_id.hex(),
                "ip": "127.0.0.1",
                "pid": pid,
                "state": "ALIVE" if alive else "DEAD",
                "actor_id": None,
                "log_lines": 0,
            }
        )
    return rows


def _units(res: Any) -> dict[str, float]:
    return {k: max(v, 0) / RESOURCE_UNIT for k, v in res.items()}


def node_rows(
    node: NodeStatistics, head: HeadStatistics | None, started: float
) -> list[dict[str, Any]]:
    """The cluster's nodes (the head's view); a node without the head lists itself."""
    if head is not None and head.nodes:
        rows = []
        for n in head.nodes:
            own = n.node_id == node.node_id
            rows.append(
                {
                    "node_id": n.node_id.hex(),
                    "node_ip": n.ip,
                    "is_head_node": n.is_head,
                    "state": "ALIVE" if n.alive else "DEAD",
                    "state_message": None,
                    "node_name": n.info.get("hostname") or n.ip,
                    "resources_total": {k: v / RESOURCE_UNIT for k, v in n.total.items()}
                    if n.alive
                    else {},
                    "resources_available": _units(node.available) if own else {},
                    "labels": dict(n.info.get("labels") or {}),
                    "start_time_ms": int(started * 1000) if own else None,
                }
            )
        return rows
    return [
        {
            "node_id": node.node_id.hex(),
            "node_ip": "127.0.0.1",
            "is_head_node": True,
            "state": "ALIVE",
            "state_message": None,
            "node_name": socket.gethostname(),
            "resources_total": {k: v / RESOURCE_UNIT for k, v in node.total.items()},
            "resources_available": _units(node.available),
            "labels": {},
            "start_time_ms": int(started * 1000),
        }
    ]


def object_rows(
    node: NodeStatistics, head: HeadStatistics | None, started: float
) -> list[dict[str, Any]]:
    """What is in this node's store (the owners' reference tables are theirs)."""
    return [
        {
            "object_id": seg.object_id.hex(),
            "object_size": seg.size,
            "task_status": "FINISHED",
            "reference_type": "PINNED_IN_MEMORY",
            "call_site": "disabled",
            "type": "WORKER" if "/w-" in seg.owner else "DRIVER",
            "pid": node.clients.get(seg.owner) or None,
            "ip": "127.0.0.1",
            "spilled": seg.spilled,
        }
        for seg in node.objects or ()
    ]


def placement_group_rows(
    node: NodeStatistics, head: HeadStatistics | None, started: float
) -> list[dict[str, Any]]:
    """The head's placement groups, as Ray's list_placement_groups() shows them."""
    if head is None:
        return []
    return [placement_group_row(pg) for pg in head.placement_groups]


def placement_group_row(pg: Any) -> dict[str, Any]:
    pg_hex = pg["pg_id"].hex()
    nodes = pg["nodes"]
    return {
        "placement_group_id": pg_hex,
        "name": pg["name"],
        "creator_job_id": None,
        "state": pg["state"],
        "strategy": pg["strategy"],
        "bundles": [
            {
                "bundle_id": f"{pg_hex}_{i}",
                "node_id": nodes[i].hex() if i in nodes else None,
                "unit_resources": {k: v / RESOURCE_UNIT for k, v in b.items()},
            }
            for i, b in enumerate(pg["bundles"])
        ],
        "is_detached": pg["detached"],
        "stats": {"scheduling_attempt": pg["attempts"]},
    }


LISTERS: dict[str, Callable[[NodeStatistics, HeadStatistics | None, float], list[Any]]] = {
    "actors": actor_rows,
    "placement_groups": placement_group_rows,
    "workers": worker_rows,
    "nodes": node_rows,
    "objects": object_rows,
}

COLUMNS = {
    "placement_groups": [
        "placement_group_id", "name", "creator_job_id", "state", "strategy", "bundles",
        "is_detached", "stats",
    ],
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
