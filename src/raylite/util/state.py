"""What is in the cluster, for people: tasks, actors, objects, nodes, workers, placement groups.

Shaped like Ray's state API (`ray.util.state`): `list_tasks()` and friends return
records (`TaskState`, ...) with Ray's field names, readable as attributes or as
`record["field"]`; `filters` are (column, "=" | "!=", value) with strings compared
case-insensitively; `summarize_tasks()` counts tasks by function and state.
`raylite list`, `raylite summary` and `raylite logs` print the same data.

    this process ──ListState, SummarizeTasks, GetLogs──▶ node manager (task_events.py)
         └── its own tasks that have not started yet (PENDING_*), from its core worker

Objects: the node manager's segment table (GetStoreStats) and, for objects this
process owns, its own reference table; `raylite memory` prints the same data.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from .. import protocol as P
from .. import task_events as TE
from ..config import CONFIG
from ..core import context
from ..core.lifecycle import PUSHED, WAITING_ARGS
from ..object_ref import new_id
from ..transport import Connection

DEFAULT_LIMIT = 100  # as Ray's


class StateSchema:
    """Ray's record behaviour: fields as attributes, and `rec["field"]`, `rec.get()`."""

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def asdict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in row.items() if k in names})


@dataclass
class TaskState(StateSchema):
    task_id: str
    attempt_number: int = 0
    name: str = ""
    state: str = ""  # PENDING_ARGS_AVAIL, PENDING_NODE_ASSIGNMENT, RUNNING, FINISHED, FAILED...
    job_id: str | None = None
    actor_id: str | None = None
    type: str = "NORMAL_TASK"  # or ACTOR_TASK, ACTOR_CREATION_TASK
    func_or_class_name: str = ""
    parent_task_id: str | None = None
    node_id: str | None = None
    worker_id: str | None = None
    worker_pid: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    language: str | None = "PYTHON"
    creation_time_ms: int | None = None
    start_time_ms: int | None = None
    end_time_ms: int | None = None


@dataclass
class ActorState(StateSchema):
    actor_id: str
    class_name: str = ""
    state: str = ""  # PENDING_CREATION, ALIVE, RESTARTING, DEAD
    job_id: str | None = None
    name: str = ""
    node_id: str | None = None
    pid: int | None = None
    ray_namespace: str | None = None
    death_cause: dict[str, Any] | None = None
    address: str = ""  # raylite: where its worker accepts calls


@dataclass
class PlacementGroupState(StateSchema):
    placement_group_id: str
    name: str = ""
    creator_job_id: str | None = None
    state: str = ""  # PENDING, CREATED, REMOVED, RESCHEDULING
    strategy: str = ""  # raylite: PACK, SPREAD, STRICT_PACK, STRICT_SPREAD
    bundles: list[dict[str, Any]] = field(
        default_factory=list
    )  # bundle_id, node_id, unit_resources
    is_detached: bool = False
    stats: dict[str, Any] | None = None


@dataclass
class NodeState(StateSchema):
    node_id: str
    node_ip: str = ""
    is_head_node: bool = False
    state: str = ""  # ALIVE, DEAD
    state_message: str | None = None
    node_name: str = ""
    resources_total: dict[str, float] = field(default_factory=dict)
    resources_available: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    start_time_ms: int | None = None


@dataclass
class WorkerState(StateSchema):
    worker_id: str
    is_alive: bool = True
    worker_type: str = "WORKER"  # or DRIVER
    exit_type: str | None = None
    node_id: str | None = None
    ip: str = ""
    pid: int = 0
    state: str = ""  # raylite: STARTING, IDLE, LEASED, DEAD (drivers: ALIVE, DEAD)
    actor_id: str | None = None  # raylite: the actor this worker hosts
    log_lines: int = 0  # raylite: recent output lines `raylite logs` can show


@dataclass
class ObjectState(StateSchema):
    object_id: str
    object_size: int = 0
    task_status: str = "FINISHED"  # raylite lists finished objects only
    reference_type: str = "LOCAL_REFERENCE"  # or USED_BY_PENDING_TASK, CAPTURED_IN_OBJECT...
    call_site: str = "disabled"
    type: str = "DRIVER"  # the owner: DRIVER or WORKER
    pid: int | None = None  # the owner's
    ip: str = "127.0.0.1"
    # raylite's detail (`raylite memory`): holders as "driver", "worker pid=N", "task
    # argument", "contained in <id>"; whether the value is in the store, or spilled.
    size: int = 0
    owner: str = ""
    referenced_from: list[str] = field(default_factory=list)
    spilled: bool = False
    in_store: bool = False
    pending: bool = False


# --- reaching the node manager -----------------------------------------------------------
def sessions() -> list[str]:
    """Session directories of running nodes on this machine, newest first."""
    base = os.path.join(tempfile.gettempdir(), "raylite")
    found = [os.path.dirname(p) for p in glob.glob(os.path.join(base, "*", "node.sock"))]
    return sorted(found, key=os.path.getmtime, reverse=True)


def _default_sessions() -> list[str]:
    """Where a tool looks without --session: the nodes `raylite start` runs on this host
    (this network namespace: node/local.py) first, newest first, then any other running
    session (an init() of this machine). Without the first, a tool in a testnet host or
    container found the newest session of any namespace on the machine, another
    cluster's (the chaos soak's `raylite list actors` listed other tests' actors)."""
    from ..node import local

    started = [
        n["session_dir"]
        for n in local.local_nodes()
        if n.get("session_dir") and not n.get("head_only")
    ]
    return started + [s for s in sessions() if s not in started]


def connect(session: str | None = None) -> Connection:
    """A connection to the node of `session` (default: this host's newest node)."""
    candidates = [session] if session else _default_sessions()
    errors = []
    for s in candidates:
        try:
            with open(os.path.join(s, "token")) as f:
                token = bytes.fromhex(f.read().strip())
            conn = Connection.connect(f"unix:{s}/node.sock", token, lambda *a: None, name="cli")
            conn.request(
                P.RegisterClient("cli", new_id(), os.getpid(), ""),
                timeout=CONFIG.request_timeout_s,
            )
            return conn
        except Exception as exc:
            errors.append(f"{s}: {exc}")
    detail = "; ".join(errors) if errors else "no session under /tmp/raylite"
    raise ConnectionError(
        f"no running raylite node found ({detail}). Start one with raylite.init()."
    )


def _live_worker() -> Any:
    """This process's core worker if raylite runs here (never starts raylite)."""
    return context.live_worker()


def _ask(msg: Any, address: str | None, timeout: float) -> Any:
    cw = _live_worker() if address is None else None
    if cw is not None:
        reply = cw.ask_node(msg, timeout)
    else:
        conn = connect(address)
        try:
            reply = conn.request(msg, timeout=timeout)
        finally:
            conn.close()
    if isinstance(reply, P.Failed):
        raise ValueError(reply.reason)
    return reply


def _filters(filters: Any) -> list[P.Filter]:
    for f in filters or ():
        if len(f) != 3:
            raise ValueError(f"a filter is (key, predicate, value), got {f!r}")
    return [P.Filter(*f) for f in filters or ()]


def _list(kind: str, address: str | None, filters: Any, limit: int, timeout: float) -> Any:
    return _ask(P.ListState(kind, _filters(filters), int(limit)), address, timeout)


# --- tasks -------------------------------------------------------------------------------
def list_tasks(
    address: str | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
    limit: int = DEFAULT_LIMIT,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
    _explain: bool = False,
) -> list[TaskState]:
    """Tasks the node has seen start (RUNNING, FINISHED, FAILED; the most recent
    `CONFIG.max_task_events` finished ones), with this process's own tasks that
    have not started (PENDING_ARGS_AVAIL, PENDING_NODE_ASSIGNMENT, ...).

    Running tasks come first, then pending ones, then finished ones, newest first.
    """
    rows, _ = task_rows(address, filters, limit, timeout)
    return [TaskState.from_row(r) for r in rows]


def task_rows(
    address: str | None, filters: Any, limit: int, timeout: float
) -> tuple[list[dict[str, Any]], int]:
    """(rows, how many pass the filters): the node's, merged with our pending tasks."""
    cw = _live_worker() if address is None else None
    own = _pending_rows(cw) if cw is not None else []
    checked = TE.check_filters(_filters(filters), TE.TASK_COLUMNS, "tasks")
    own = [r for r in own if TE.matches(r.get, checked)]
    # Ask for more than `limit`: a task of ours the node already saw is listed there.
    reply = _list("tasks", address, checked, limit + len(own), timeout)
    # The node knows a task we submitted as waiting (owners report submissions); we
    # know better which wait it is. Once a worker has reported it, the node knows best.
    started = {r["task_id"] for r in reply.rows if r["state"] != TE.PENDING_NODE_ASSIGNMENT}
    own = [r for r in own if r["task_id"] not in started]
    mine = {r["task_id"] for r in own}
    node_rows = [r for r in reply.rows if r["task_id"] not in mine]
    running = [r for r in node_rows if r["state"] == TE.RUNNING]
    others = [r for r in node_rows if r["state"] != TE.RUNNING]
    total = reply.total + len(own) - (len(reply.rows) - len(node_rows))
    return (running + own + others)[:limit], total


def _pending_rows(cw: Any) -> list[dict[str, Any]]:
    """This process's tasks that are not finished and may not have started: from its
    core worker's statistics (owner-side states the node cannot see)."""
    stats = cw.statistics()
    job = stats.job_id.hex() if stats.job_id else None
    parent = stats.current_task_id.hex() if stats.current_task_id else None
    rows = []
    for task in stats.tasks:
        if not task.task_events:
            continue  # enable_task_events=False
        call = task.actor_id is not None and not task.actor_creation
        if task.state is WAITING_ARGS:
            state = TE.PENDING_ARGS_AVAIL
        elif task.state is PUSHED:
            state = TE.SUBMITTED_TO_WORKER
        elif call:  # queued behind the actor's earlier calls, or for its next life
            state = "PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY"
        else:
            state = TE.PENDING_NODE_ASSIGNMENT
        kind = "actor_creation" if task.actor_creation else ("actor_task" if call else "task")
        rows.append(
            {
                "task_id": task.task_id.hex(),
                "attempt_number": 0,
                "name": task.name,
                "state": state,
                "job_id": job,
                "actor_id": task.actor_id.hex() if task.actor_id else None,
                "type": TE.TASK_TYPES[kind],
                "func_or_class_name": task.name,
                "parent_task_id": parent,
                "node_id": stats.node_id.hex() if stats.node_id else None,
                "worker_id": None,
                "worker_pid": None,
                "error_type": None,
                "error_message": None,
                "language": "PYTHON",
                "creation_time_ms": None,
                "start_time_ms": None,
                "end_time_ms": None,
            }
        )
    return rows


def summarize_tasks(
    address: str | None = None,
    timeout: int = 30,
    raise_on_missing_output: bool = True,
    _explain: bool = False,
) -> dict[str, Any]:
    """Counts of tasks by function name and state, as Ray's summarize_tasks():
    {"cluster": {"summary": {name: {"func_or_class_name", "type", "state_counts"}},
    "total_tasks", "total_actor_tasks", "total_actor_scheduled", "summary_by"}}.

    The counts cover every task the node saw, also those whose records it dropped;
    this process's tasks that have not been sent to a worker are added."""
    summary: dict[str, Any] = _ask(P.SummarizeTasks(), address, timeout).summary
    cw = _live_worker() if address is None else None
    if cw is None:
        return summary
    cluster = summary["cluster"]
    totals = {
        "NORMAL_TASK": "total_tasks",
        "ACTOR_TASK": "total_actor_tasks",
        "ACTOR_CREATION_TASK": "total_actor_scheduled",
    }
    for row in _pending_rows(cw):
        if row["state"] == TE.SUBMITTED_TO_WORKER:
            continue  # it may be running, and counted by the node already
        entry = cluster["summary"].setdefault(
            row["func_or_class_name"],
            {
                "func_or_class_name": row["func_or_class_name"],
                "type": row["type"],
                "state_counts": {},
            },
        )
        counts = entry["state_counts"]
        counts[row["state"]] = counts.get(row["state"], 0) + 1
        cluster[totals[row["type"]]] += 1
    return summary


# --- actors, nodes, workers ------------------------------------------------------------
def list_actors(
    address: str | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
    limit: int = DEFAULT_LIMIT,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
    _explain: bool = False,
) -> list[ActorState]:
    """Actors the head knows: created (ALIVE, RESTARTING, DEAD) or starting."""
    reply = _list("actors", address, filters, limit, timeout)
    return [ActorState.from_row(r) for r in reply.rows]


def summarize_actors(
    address: str | None = None,
    timeout: int = 30,
    raise_on_missing_output: bool = True,
    _explain: bool = False,
) -> dict[str, Any]:
    """Counts of actors by class and state, as Ray's summarize_actors():
    {"cluster": {"summary": {class: {"class_name", "state_counts"}}, "total_actors",
    "summary_by": "class"}}."""
    per_class: dict[str, dict[str, Any]] = {}
    actors = list_actors(address=address, limit=1 << 62, timeout=timeout)
    for a in actors:
        entry = per_class.setdefault(a.class_name, {"class_name": a.class_name, "state_counts": {}})
        entry["state_counts"][a.state] = entry["state_counts"].get(a.state, 0) + 1
    return {"cluster": {"summary": per_class, "total_actors": len(actors), "summary_by": "class"}}


def list_placement_groups(
    address: str | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
    limit: int = DEFAULT_LIMIT,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
    _explain: bool = False,
) -> list[PlacementGroupState]:
    """The cluster's placement groups (the head's table), removed ones included."""
    reply = _list("placement_groups", address, filters, limit, timeout)
    return [PlacementGroupState.from_row(r) for r in reply.rows]


def list_nodes(
    address: str | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
    limit: int = DEFAULT_LIMIT,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
    _explain: bool = False,
) -> list[NodeState]:
    reply = _list("nodes", address, filters, limit, timeout)
    return [NodeState.from_row(r) for r in reply.rows]


def list_workers(
    address: str | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
    limit: int = DEFAULT_LIMIT,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
    _explain: bool = False,
) -> list[WorkerState]:
    """Worker processes of the node (alive and exited) and the drivers connected to it."""
    reply = _list("workers", address, filters, limit, timeout)
    return [WorkerState.from_row(r) for r in reply.rows]


def get_log(
    pid: int | None = None,
    actor_id: str | None = None,
    task_id: str | None = None,
    tail: int = 1000,
    address: str | None = None,
    timeout: int = 30,
) -> list[str]:
    """The recent output lines of a worker (by pid), an actor or a task's worker."""
    reply = _ask(log_request(pid, actor_id, task_id, 0, tail), address, timeout)
    return [line.text for line in reply.lines]


def log_request(
    pid: int | None, actor_id: str | None, task_id: str | None, after: int, tail: int
) -> P.GetLogs:
    if not (pid or actor_id or task_id):
        raise ValueError("name the worker: pid, actor_id or task_id")
    return P.GetLogs(
        int(pid or 0),
        bytes.fromhex(actor_id) if actor_id else None,
        bytes.fromhex(task_id) if task_id else None,
        after,
        tail,
    )


# --- objects -------------------------------------------------------------------------------
def store_stats() -> dict[str, Any]:
    """Shared-memory use, capacity and spilling counters of this node's object store."""
    return _stats().stats


def _stats() -> P.StoreStats:
    return context.global_worker().ask_node(P.GetStoreStats(), CONFIG.request_timeout_s)


def list_objects(
    address: str | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
    limit: int = 10_000,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
    _explain: bool = False,
) -> list[ObjectState]:
    """One record per object: Ray's fields (object_id, object_size, reference_type,
    type and pid of the owner) and raylite's: size, owner, where it is referenced from
    (`referenced_from`), spilled or not.

    `referenced_from` names holders as "driver", "worker pid=N", "task argument"
    (a pending task will read it) and "contained in <id>" (a ref inside another object).
    From a process where raylite does not run (or with `address`), the objects in
    the node's store, as its node manager sees them.
    """
    cw = _live_worker() if address is None else None
    if cw is None:
        reply = _list("objects", address, filters, limit, timeout)
        rows = [
            {**r, "size": r["object_size"], "in_store": True, "owner": f"pid={r['pid']}"}
            for r in reply.rows
        ]
        return [ObjectState.from_row(r) for r in rows]
    checked = TE.check_filters(_filters(filters), ObjectState.__dataclass_fields__, "objects")
    picked = [o for o in _object_rows(cw) if TE.matches(o.get, checked)]
    return [ObjectState.from_row(o) for o in picked[:limit]]


def _object_rows(cw: Any) -> list[dict[str, Any]]:
    stats = cw.statistics()
    reply = _stats()
    clients = reply.stats.get("clients", {})
    segments = {o["object_id"]: o for o in reply.objects}
    me = f"{stats.mode} pid={stats.pid}"
    contained: dict[bytes, list[str]] = {}
    for outer in stats.objects:
        for inner in outer.contains:
            contained.setdefault(inner, []).append(outer.object_id.hex())

    def holders(oid: bytes) -> list[str]:
        """This process, if it holds refs of its own (not task pins, not containment)."""
        if stats.own_refs.get(oid, 0) - len(contained.get(oid, [])) <= 0:
            return []
        return ["driver"] if stats.mode == "driver" else [me]

    rows = []
    for obj in stats.objects:
        oid = obj.object_id
        seg = segments.pop(oid.hex(), None)
        where = holders(oid) + [_who(b, clients) for b in obj.borrowers]
        if obj.task_argument:
            where.append("task argument")
        where += [f"contained in {h}" for h in contained.get(oid, [])]
        rows.append(
            {
                "object_id": oid.hex(),
                "size": seg["size"] if seg else obj.inline_size,
                "owner": me,
                "referenced_from": where,
                "spilled": bool(seg and seg["spilled"]),
                "in_store": seg is not None,
                "pending": obj.pending,
            }
        )
    for hex_id, seg in segments.items():  # owned by other processes
        where = holders(bytes.fromhex(hex_id))
        rows.append(
            {
                "object_id": hex_id,
                "size": seg["size"],
                "owner": _who(seg["owner"], clients),
                "referenced_from": where or [f"owner {_who(seg['owner'], clients)}"],
                "spilled": seg["spilled"],
                "in_store": True,
                "pending": False,
            }
        )
    for r in rows:  # Ray's names for the same facts
        where = r["referenced_from"]
        r["object_size"] = r["size"]
        r["type"] = "DRIVER" if r["owner"].startswith("driver") else "WORKER"
        pid = r["owner"].rpartition("pid=")[2]
        r["pid"] = int(pid) if pid.isdigit() else None
        r["task_status"] = "SUBMITTED_TO_WORKER" if r["pending"] else "FINISHED"
        if any(w == "task argument" for w in where):
            r["reference_type"] = "USED_BY_PENDING_TASK"
        elif where and all(w.startswith("contained in") for w in where):
            r["reference_type"] = "CAPTURED_IN_OBJECT"
        else:
            r["reference_type"] = "LOCAL_REFERENCE"
    return rows


def _who(address: str, clients: dict[str, int]) -> str:
    name = os.path.basename(address)
    kind = "driver" if name.startswith("d-") else "worker"
    pid = clients.get(address)
    return f"{kind} pid={pid}" if pid else f"{kind} {address}"


def memory_summary() -> str:
    """A table of the objects in the store, like `ray memory`."""
    return format_summary(list_objects(limit=1 << 62), store_stats())


def format_summary(rows: list[dict[str, Any]], stats: dict[str, Any]) -> str:
    lines = [
        f"Object store: {stats['used_bytes'] / 2**20:.1f} MiB used of "
        f"{stats['capacity_bytes'] / 2**20:.1f} MiB in shared memory, "
        f"{stats['spilled_bytes'] / 2**20:.1f} MiB spilled to disk "
        f"({stats['spilled_objects']} objects spilled so far)",
        f"{'OBJECT ID':34} {'SIZE':>12} {'SPILLED':8} {'OWNER':22} REFERENCED FROM",
    ]
    for r in sorted(rows, key=lambda r: -r["size"]):
        lines.append(
            f"{r['object_id']:34} {r['size']:>12} {'yes' if r['spilled'] else 'no':8} "
            f"{r['owner'][:22]:22} {', '.join(r['referenced_from']) or '-'}"
        )
    return "\n".join(lines)
