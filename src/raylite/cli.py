"""raylite's command line: memory, list, summary, logs (more commands come with clusters).

    raylite memory                              objects in the store, like `ray memory`
    raylite list tasks|actors|objects|nodes|workers|placement-groups|jobs [--state S] [--name N]
                 [--filter "col=value"]... [--limit N] [--format table|json] [--detail]
    raylite summary tasks|actors [--format table|json]
    raylite logs [--pid N | --actor-id ID | --task-id ID] [--tail N] [--follow]
    raylite job submit | status | logs | stop | list | delete   (cli_jobs.py)

Finds the local node through its session directory (/tmp/raylite/<session>/),
which holds the node's socket and its token (readable by the same user only), and
reads the same records as `raylite.util.state`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from . import protocol as P
from .config import CONFIG
from .exceptions import ConnectionLost
from .transport import Connection
from .util import state

KINDS = ("tasks", "actors", "objects", "nodes", "workers", "placement-groups", "jobs")
# What --name and --state filter on, per kind (None: the option does not apply).
NAME_COLUMN = {
    "tasks": "name",
    "actors": "class_name",
    "nodes": "node_name",
    "placement-groups": "name",
}
STATE_COLUMN = {
    "tasks": "state", "actors": "state", "nodes": "state", "workers": "state",
    "placement-groups": "state", "jobs": "status",
}  # fmt: skip
# The table's columns without --detail (with it: every field).
TABLE_COLUMNS = {
    "tasks": ["task_id", "name", "state", "type", "worker_pid", "actor_id", "error_type"],
    "actors": ["actor_id", "class_name", "state", "name", "pid", "ray_namespace"],
    "objects": ["object_id", "object_size", "type", "pid", "reference_type", "spilled"],
    "nodes": ["node_id", "node_ip", "is_head_node", "state", "node_name", "resources_total"],
    "workers": ["worker_id", "worker_type", "is_alive", "pid", "state", "actor_id"],
    "placement-groups": ["placement_group_id", "name", "state", "strategy", "bundles"],
    "jobs": ["submission_id", "entrypoint", "type", "status", "message", "error_type"],
}
LISTERS = {
    "tasks": state.list_tasks,
    "actors": state.list_actors,
    "objects": state.list_objects,
    "nodes": state.list_nodes,
    "workers": state.list_workers,
    "placement-groups": state.list_placement_groups,
}


def _connect(session: str | None) -> Connection:
    try:
        return state.connect(session)
    except ConnectionError as exc:
        raise SystemExit(f"raylite: {exc}") from None


def cmd_memory(args: argparse.Namespace) -> int:
    from .util.state import format_summary

    conn = _connect(args.session)
    try:
        reply = conn.request(P.GetStoreStats(), timeout=CONFIG.request_timeout_s)
    finally:
        conn.close()
    clients = reply.stats.get("clients", {})
    rows = [
        {
            "object_id": o["object_id"],
            "size": o["size"],
            "owner": f"pid={clients.get(o['owner'], '?')}",
            "referenced_from": [f"owner pid={clients.get(o['owner'], '?')}"],
            "spilled": o["spilled"],
        }
        for o in reply.objects
    ]
    print(format_summary(rows, reply.stats))
    return 0


# --- list ----------------------------------------------------------------------------------
def _parse_filter(text: str) -> tuple[str, str, str]:
    for pred in ("!=", "="):
        key, sep, value = text.partition(pred)
        if sep:
            return key.strip(), pred, value.strip()
    raise SystemExit(f'raylite: a filter is "column=value" or "column!=value", got {text!r}')


def _filters(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    filters = [_parse_filter(f) for f in args.filter or ()]
    for option, columns in (("name", NAME_COLUMN), ("state", STATE_COLUMN)):
        value = getattr(args, option)
        if value is None:
            continue
        column = columns.get(args.kind)
        if column is None:
            raise SystemExit(f"raylite: --{option} does not apply to {args.kind}; use --filter")
        filters.append((column, "=", value))
    return filters


def cmd_list(args: argparse.Namespace) -> int:
    filters = _filters(args)
    try:
        if args.kind == "jobs":
            rows, total = _job_rows(filters, args.limit), None
        elif args.kind == "tasks":
            rows, total = state.task_rows(args.session, filters, args.limit, 30)
        else:
            records = LISTERS[args.kind](address=args.session, filters=filters, limit=args.limit)
            rows, total = [r.asdict() for r in records], None
    except ConnectionError as exc:
        raise SystemExit(f"raylite: {exc}") from None
    except ValueError as exc:
        raise SystemExit(f"raylite: {exc}") from None
    if args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
        return 0
    columns = list(rows[0]) if args.detail and rows else TABLE_COLUMNS[args.kind]
    shown = f"Total: {total if total is not None else len(rows)}"
    if total is not None and total > len(rows):
        shown += f" (showing {len(rows)}; raise --limit to see more)"
    print(shown)
    print(format_table(rows, columns))
    return 0


def _job_rows(filters: list[tuple[str, str, str]], limit: int) -> list[dict[str, Any]]:
    """Submitted jobs, from the job API of this machine's head (RAY_ADDRESS or
    RAY_API_SERVER_ADDRESS: another's), as `ray list jobs` shows them."""
    from .job_submission import JobSubmissionClient

    try:
        details = JobSubmissionClient().list_jobs()
    except RuntimeError as exc:
        raise SystemExit(f"raylite: {exc}") from None
    rows = [d.dict() for d in details]
    for key, pred, value in filters:
        rows = [r for r in rows if (str(r.get(key)) == value) == (pred == "=")]
    return rows[:limit]


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Rows as aligned text columns, headers in capitals; long cells cut to one line."""
    cells = [[c.upper() for c in columns]]
    for row in rows:
        cells.append([_cell(row.get(c)) for c in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in cells
    )


def _cell(value: Any, width: int = 80) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        text = ", ".join(
            f"{k}: {v:g}" if isinstance(v, float) else f"{k}: {v}" for k, v in value.items()
        )
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


# --- summary -------------------------------------------------------------------------------
def cmd_summary(args: argparse.Namespace) -> int:
    try:
        if args.kind == "tasks":
            summary = state.summarize_tasks(address=args.session)
        else:
            summary = state.summarize_actors(address=args.session)
    except ConnectionError as exc:
        raise SystemExit(f"raylite: {exc}") from None
    if args.format == "json":
        print(json.dumps(summary, indent=2, default=str))
        return 0
    cluster = summary["cluster"]
    rows = list(cluster["summary"].values())
    if args.kind == "tasks":
        print(
            f"Tasks: {cluster['total_tasks']}, actor tasks: {cluster['total_actor_tasks']}, "
            f"actors scheduled: {cluster['total_actor_scheduled']}"
        )
        columns = ["func_or_class_name", "type", "state_counts"]
    else:
        print(f"Actors: {cluster['total_actors']}")
        columns = ["class_name", "state_counts"]
    print(format_table(sorted(rows, key=lambda r: r[columns[0]]), columns))
    return 0


# --- logs ----------------------------------------------------------------------------------
def cmd_logs(args: argparse.Namespace) -> int:
    if not (args.pid or args.actor_id or args.task_id):
        return _log_sources(args)
    conn = _connect(args.session)
    try:
        return _print_logs(conn, args)
    except KeyboardInterrupt:
        return 0
    except ConnectionLost:
        print("raylite: the node stopped", file=sys.stderr)
        return 0
    finally:
        conn.close()


def _print_logs(conn: Connection, args: argparse.Namespace) -> int:
    reply = conn.request(
        state.log_request(args.pid, args.actor_id, args.task_id, 0, args.tail),
        timeout=CONFIG.request_timeout_s,
    )
    if isinstance(reply, P.Failed):
        print(f"raylite: {reply.reason}", file=sys.stderr)
        return 1
    pid = reply.pid
    _write(reply.lines)
    while args.follow:
        nxt = reply.next_line
        time.sleep(CONFIG.logs_follow_poll_s)
        reply = conn.request(
            state.log_request(args.pid, args.actor_id, args.task_id, nxt, 0),
            timeout=CONFIG.request_timeout_s,
        )
        if isinstance(reply, P.Failed):  # e.g. the actor's record is gone
            print(f"raylite: {reply.reason}", file=sys.stderr)
            return 1
        if reply.pid != pid:  # the actor restarted in another worker: read it from the start
            print(f"raylite: now following worker pid={reply.pid}", file=sys.stderr)
            pid = reply.pid
            reply = conn.request(
                state.log_request(args.pid, args.actor_id, args.task_id, 1, 0),
                timeout=CONFIG.request_timeout_s,
            )
        _write(reply.lines)
        if not reply.alive and not reply.lines and not args.actor_id:
            print(f"raylite: worker pid={pid} exited", file=sys.stderr)
            return 0
    return 0


def _write(lines: list[P.NumberedLine]) -> None:
    if lines:
        sys.stdout.write("".join(f"{line.text}\n" for line in lines))
        sys.stdout.flush()


def _log_sources(args: argparse.Namespace) -> int:
    try:
        workers = state.list_workers(address=args.session, limit=10_000)
    except ConnectionError as exc:
        raise SystemExit(f"raylite: {exc}") from None
    rows = [w.asdict() for w in workers if w.log_lines]
    print("Workers with recent output (show one with --pid N or --actor-id ID):")
    print(format_table(rows, ["pid", "is_alive", "actor_id", "log_lines"]))
    return 0


# --- the parser ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raylite", description="raylite command line")
    sub = parser.add_subparsers(dest="command", required=True)
    from . import cli_cluster

    cli_cluster.add_commands(sub)  # start, stop, status
    from . import cli_jobs

    cli_jobs.add_commands(sub)  # job submit | status | logs | stop | list | delete
    session_help = "session directory (default: the newest running one)"

    mem = sub.add_parser("memory", help="list the objects in the local node's object store")
    mem.add_argument("--session", help=session_help)
    mem.set_defaults(func=cmd_memory)

    lst = sub.add_parser(
        "list", help="list tasks, actors, objects, nodes, workers, placement groups or jobs"
    )
    lst.add_argument("kind", choices=KINDS)
    lst.add_argument(
        "--filter",
        action="append",
        metavar="COLUMN=VALUE",
        help='keep rows where COLUMN=VALUE (or COLUMN!=VALUE); repeatable, e.g. "state=FAILED"',
    )
    lst.add_argument("--state", help="keep rows in this state (tasks: RUNNING, FINISHED, ...)")
    lst.add_argument("--name", help="keep rows of this task name, actor class or node name")
    lst.add_argument("--limit", type=int, default=state.DEFAULT_LIMIT, help="at most N rows")
    lst.add_argument("--format", choices=("table", "json"), default="table")
    lst.add_argument("--detail", action="store_true", help="every field, not a few")
    lst.add_argument("--session", help=session_help)
    lst.set_defaults(func=cmd_list)

    summ = sub.add_parser("summary", help="counts of tasks or actors by name and state")
    summ.add_argument("kind", choices=("tasks", "actors"))
    summ.add_argument("--format", choices=("table", "json"), default="table")
    summ.add_argument("--session", help=session_help)
    summ.set_defaults(func=cmd_summary)

    logs = sub.add_parser("logs", help="recent output of a worker or actor (--follow: stream)")
    logs.add_argument("--pid", type=int, help="the worker's process id")
    logs.add_argument("--actor-id", help="the actor's id (hex), as `raylite list actors` shows")
    logs.add_argument("--task-id", help="a task's id: the output of the worker that ran it")
    logs.add_argument("--tail", type=int, default=1000, help="the last N lines (default 1000)")
    logs.add_argument("-f", "--follow", action="store_true", help="print new lines until Ctrl-C")
    logs.add_argument("--session", help=session_help)
    logs.set_defaults(func=cmd_logs)

    run = sub.add_parser(
        "run",
        help="run an unmodified Ray program on raylite (`import ray` gives raylite)",
        description="Run SCRIPT (or, with -m, MODULE) as __main__ with `import ray` and "
        "every ray.X answered by raylite.",
    )
    run.add_argument("-m", dest="module", action="store_true", help="TARGET is a module")
    run.add_argument("target", metavar="SCRIPT|MODULE")
    run.add_argument("args", nargs=argparse.REMAINDER, help="the program's own arguments")
    run.set_defaults(func=cmd_run)

    args = parser.parse_args(argv)
    return int(args.func(args))


def cmd_run(args: argparse.Namespace) -> int:
    from .ray_alias import run

    run(args.target, args.args, module=args.module)
    return 0


if __name__ == "__main__":
    sys.exit(main())
