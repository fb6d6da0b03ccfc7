"""`raylite start`, `raylite stop`, `raylite status`: the cluster's command line.

    raylite start --head [--port=6380] [--num-cpus=N] [--num-gpus=N] [--resources=JSON]
                  [--labels=zone=a,tier=gold]
                  [--node-ip-address=IP] [--storage=redis://H:P | sqlite:///PATH] [--block]
                  [--dashboard-port=8265] [--dashboard-host=127.0.0.1] [--include-dashboard=false]
    raylite start --address=HOST:PORT [--token-file=F] [resource options] [--block]
    raylite stop                      stops the nodes started on this host, by pid
    raylite status [--address=HOST:PORT]

`start` spawns a node manager, waits until it listens, records it in
/tmp/raylite/nodes/ (node/local.py) and returns. For --head it first spawns the head
in a process of its own (a node manager with --head-only: no resources, no workers, no
drivers), so the head can be killed and restarted without touching the machine's
node; `start --head` on a machine whose node of that cluster still runs starts the
head alone, and the node rejoins it. --block stays in the foreground and stops what it
started on Ctrl-C. The cluster token: the head
uses RAYLITE_TOKEN if set, else a random one, written to a 0600 file whose path is
printed; joiners read --token-file or RAYLITE_TOKEN (or the head's file when the
head runs on the same machine). The head serves the web dashboard on
127.0.0.1:8265 (another free port if that one is taken) unless --include-dashboard=false;
`start` prints its link, which carries a login token that opens the dashboard only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import psutil

from . import dashboard
from . import protocol as P
from .bundles import is_group_resource
from .config import CONFIG, RESOURCE_UNIT, to_units
from .labels import parse_labels_flag
from .node import local
from .object_ref import new_id
from .transport import Connection

DEFAULT_PORT = 6380  # Ray's GCS uses 6379; this keeps the two (and Redis) apart
HEAD_STORE_BYTES = 64 << 20  # the head's own process stores nothing of note
DASHBOARD_PORT = dashboard.DEFAULT_PORT  # 8265, as Ray's


def add_commands(sub: Any) -> None:
    start = sub.add_parser("start", help="start a node: the head of a new cluster, or a joiner")
    start.add_argument("--head", action="store_true", help="start the head of a new cluster")
    start.add_argument("--address", help="HOST:PORT of the head to join")
    start.add_argument("--port", type=int, default=None, help=f"head port (default {DEFAULT_PORT})")
    start.add_argument("--num-cpus", type=int, default=None)
    start.add_argument("--num-gpus", type=int, default=None)
    start.add_argument("--resources", default=None, help="custom resources, JSON: '{\"a\": 1}'")
    start.add_argument(
        "--labels", default=None, help="the node's labels, as Ray's: 'zone=a,tier=gold'"
    )
    start.add_argument("--object-store-memory", type=int, default=None)
    start.add_argument(
        "--max-workers",
        type=int,
        default=None,
        help="cap on this node's worker processes (default: from memory, CPUs, fds)",
    )
    start.add_argument("--node-ip-address", default=None, help="address to listen on")
    start.add_argument("--storage", default=None, help="head storage: sqlite:///PATH, redis://H:P")
    start.add_argument("--token-file", default=None, help="file with the cluster token (joiners)")
    start.add_argument("--node-timeout-s", type=float, default=None, help="dead after this silence")
    start.add_argument("--block", action="store_true", help="stay in the foreground")
    start.add_argument(
        "--tls",
        action="store_true",
        help="head: a cluster CA, and TLS on every TCP connection; joiner: refuse a head "
        "without TLS (joiners of a TLS head use it anyway)",
    )
    start.add_argument(
        "--include-dashboard",
        type=_flag,
        default=True,
        metavar="BOOL",
        help="head: serve the web dashboard (default true)",
    )
    start.add_argument(
        "--dashboard-port",
        type=int,
        default=None,
        help=f"head: dashboard port (default {DASHBOARD_PORT}, a free one if taken; 0: any)",
    )
    start.add_argument(
        "--dashboard-host",
        default="127.0.0.1",
        help="head: address the dashboard listens on (default loopback only)",
    )
    start.set_defaults(func=cmd_start)
    stop = sub.add_parser("stop", help="stop the raylite nodes started on this host")
    stop.add_argument("--grace-s", type=float, default=10.0)
    stop.set_defaults(func=cmd_stop)
    status = sub.add_parser("status", help="nodes, resources used and total, pending demand")
    status.add_argument("--address", default=None, help="HOST:PORT of any node of the cluster")
    status.add_argument("--format", choices=["table", "json"], default="table")
    status.set_defaults(func=cmd_status)


# ----------------------------------------------------------------------- start
def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"want true or false, got {text!r}")


def _route_ip(host: str) -> str:
    """This host's address on the route to `host` (loopback for a loopback head)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, 9))
        return s.getsockname()[0]
    return "127.0.0.1"


def _check_tls_support() -> None:
    try:
        import cryptography  # noqa: F401 - only whether it is there
    except ImportError:
        raise SystemExit(
            "raylite start --tls: the 'cryptography' package is missing (it makes the "
            "cluster's certificates): pip install cryptography"
        ) from None


def _token(args: argparse.Namespace, head: str | None) -> bytes:
    if args.token_file:
        return local.read_token(args.token_file)
    env = local.token_from_env()
    if env is not None:
        return env
    if head is None:
        return os.urandom(32)
    for node in local.local_nodes() + _all_nodes():
        if head in (node.get("tcp_address"), node.get("head_address")):
            return local.read_token(node["token_file"])
    raise SystemExit(
        f"raylite start: no cluster token for {head}. Pass --token-file=FILE (the path the "
        "head printed) or set RAYLITE_TOKEN."
    )


def _all_nodes() -> list[dict[str, Any]]:
    """Node files of any host (testnet hosts and containers may share /tmp)."""
    out = []
    for name in os.listdir(local.nodes_dir()):
        with (
            contextlib.suppress(OSError, ValueError),
            open(os.path.join(local.nodes_dir(), name)) as f,
        ):
            out.append(json.load(f))
    return out


def _resources(args: argparse.Namespace) -> tuple[dict[str, int], int, int]:
    cpus = args.num_cpus if args.num_cpus is not None else (os.cpu_count() or 1)
    gpus = args.num_gpus or 0
    mem = psutil.virtual_memory()
    store = args.object_store_memory or int(mem.available * 0.3)
    total = {
        "CPU": to_units(cpus),
        "memory": to_units(int(mem.available * 0.7)),
        "object_store_memory": to_units(store),
    }
    if gpus:
        total["GPU"] = to_units(gpus)
    if args.resources:
        try:
            custom = json.loads(args.resources)
        except ValueError as exc:
            raise SystemExit(f"raylite start: --resources is not JSON: {exc}") from None
        if not isinstance(custom, dict):
            raise SystemExit("raylite start: --resources must be a JSON object")
        for k, v in custom.items():
            total[k] = to_units(v)
    return total, gpus, cpus


def cmd_start(args: argparse.Namespace) -> int:
    if args.head == bool(args.address):
        raise SystemExit("raylite start: pass exactly one of --head or --address=HOST:PORT")
    head = local.normalize(args.address) if args.address else None
    if head is not None:
        ip = args.node_ip_address or _route_ip(head[4:].rpartition(":")[0])
    else:
        ip = args.node_ip_address or "127.0.0.1"
    token = _token(args, head)
    if args.tls:
        _check_tls_support()
    total, gpus, cpus = _resources(args)
    total[f"node:{ip}"] = to_units(1)
    labels: list[str] = []
    if args.labels:
        try:
            labels = ["--labels", json.dumps(parse_labels_flag(args.labels))]
        except ValueError as exc:
            raise SystemExit(f"raylite start: --labels: {exc}") from None
    extra = ["--tls"] if args.tls else []
    if args.node_timeout_s is not None:
        extra += ["--node-timeout-s", str(args.node_timeout_s)]
    if args.max_workers is not None:
        if args.max_workers < 1:
            raise SystemExit("raylite start: --max-workers must be 1 or more")
        extra += ["--max-workers", str(args.max_workers)]
    started = []
    if head is None:
        # The head runs in a process of its own, beside this machine's node: killing or
        # restarting it kills no worker, and the node rejoins the new head.
        head_cmd = [
            "--head-only",
            "--port",
            str(args.port if args.port is not None else DEFAULT_PORT),
        ]
        if args.storage:
            head_cmd += ["--storage", _absolute_storage(args.storage)]
        if args.include_dashboard:
            port = DASHBOARD_PORT if args.dashboard_port is None else args.dashboard_port
            head_cmd += ["--dashboard-port", str(port), "--dashboard-host", args.dashboard_host]
        store = {"object_store_memory": to_units(HEAD_STORE_BYTES)}
        head_info = _spawn(ip, token, store, 0, 0, head_cmd + extra, head=None)
        head_info["head_only"] = True
        started.append(head_info)
        head_info["file"] = local.write_node(head_info)
        node_cmd = ["--head-address", head_info["tcp_address"], "--head-node"]
    else:
        node_cmd = ["--head-address", head]
    # A head restarted on its machine: the node already there rejoins it by itself.
    info = _node_of(started[0]["tcp_address"]) if head is None else None
    if info is None:
        try:
            info = _spawn(
                ip,
                token,
                total,
                gpus,
                cpus,
                node_cmd + extra + labels,
                head=head or started[0]["tcp_address"],
            )
        except SystemExit:
            for other in started:
                _stop_node(other, 10.0)
            raise
        if head is None and started[0]["dashboard_url"]:  # drivers here find it there
            with open(os.path.join(info["session_dir"], dashboard.URL_FILE), "w") as f:
                f.write(started[0]["dashboard_url"])
            info["dashboard_url"] = started[0]["dashboard_url"]
        info["file"] = local.write_node(info)
        started.append(info)
    hostport = info["head_address"][4:]
    if head is None:
        head_info = started[0]
        print(
            f"raylite head started at {hostport} (pid {head_info['pid']}), with a node (pid {info['pid']})."
        )
        print(f"  The cluster token is in {head_info['token_file']} (mode 0600).")
        if args.tls:
            from .tls import head_dir

            storage = _absolute_storage(args.storage) if args.storage else None
            tls_dir = head_dir(head_info["session_dir"], storage)
            print(f"  TLS on every TCP connection; the cluster CA is in {tls_dir} (mode 0600).")
        print("  To join another machine to this cluster, run there:")
        print(
            f"    RAYLITE_TOKEN=$(cat {head_info['token_file']}) raylite start --address={hostport}"
        )
        print("  or copy the token file and pass --token-file=FILE.")
        print(f"  Drivers on this machine: raylite.init(address='{hostport}') or 'auto'.")
        if head_info["dashboard_url"]:
            print(
                f"  View the dashboard at {dashboard.login_url(head_info['dashboard_url'], token)}"
            )
        elif args.include_dashboard:
            print(f"  The dashboard did not start: see {head_info['log_file']}.")
    else:
        print(
            f"raylite node started at {info['tcp_address'][4:]} (pid {info['pid']}), joined {hostport}."
        )
    print("  `raylite status` shows the cluster; `raylite stop` stops the nodes of this machine.")
    sys.stdout.flush()
    if not args.block:
        return 0
    return _block(started)


def _node_of(head: str) -> dict[str, Any] | None:
    """The node of this machine that already belongs to the cluster at `head`."""
    for node in local.local_nodes():
        if node.get("head_address") == head and not node.get("head_only") and _answers(node):
            return node
    return None


def _answers(node: dict[str, Any]) -> bool:
    """Whether a node's process still takes connections (a killed one may linger)."""
    try:
        if psutil.Process(int(node["pid"])).status() == psutil.STATUS_ZOMBIE:
            return False
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(node["unix_address"][len("unix:") :])
        return True
    except (OSError, psutil.Error):
        return False


def _spawn(
    ip: str,
    token: bytes,
    total: dict[str, int],
    gpus: int,
    cpus: int,
    extra: list[str],
    head: str | None,
) -> dict[str, Any]:
    """Start a node manager (or the head alone) and wait until it says READY."""
    from .node_start import new_session, node_manager_command, store_root

    root = store_root(total["object_store_memory"] // RESOURCE_UNIT)
    session_dir, store_dir, token_file = new_session("n", root, token)
    cmd = node_manager_command(session_dir, store_dir, total, gpus, cpus, "--cluster", "--ip", ip)
    cmd += extra
    log_path = os.path.join(session_dir, "node.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    assert proc.stdin is not None
    proc.stdin.write(token.hex().encode() + b"\n")
    proc.stdin.close()
    line = _ready_line(proc)
    if not line.startswith("READY "):
        proc.kill()
        proc.wait()
        detail = line.strip() or _tail(log_path)
        shutil.rmtree(session_dir, ignore_errors=True)
        shutil.rmtree(store_dir, ignore_errors=True)
        raise SystemExit(f"raylite start: the node did not start: {detail}")
    _, unix_address, tcp_address = line.split()
    _PROCS[proc.pid] = proc
    return {
        "pid": proc.pid,
        "ip": ip,
        "tcp_address": tcp_address,
        "unix_address": unix_address,
        "head_address": head or tcp_address,
        "is_head": head is None,
        "session_dir": session_dir,
        "store_dir": store_dir,
        "token_file": token_file,
        "log_file": log_path,
        "started": time.time(),
        "dashboard_url": dashboard.read_url(session_dir),
    }


_PROCS: dict[int, subprocess.Popen[bytes]] = {}  # what this command started (for --block)


def _block(started: list[dict[str, Any]]) -> int:
    """--block: stay until stopped (SIGINT, SIGTERM: stop them all) or one of them ends."""

    def stop(signum: int, frame: Any) -> None:
        for info in reversed(started):
            _stop_node(info, 10.0)
        raise SystemExit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    by_pid = {info["pid"]: info for info in started}
    while True:
        pid, status = os.wait()  # our children only: the processes started above
        info = by_pid.get(pid)
        if info is None:
            continue
        _PROCS.pop(pid).returncode = os.waitstatus_to_exitcode(status)
        # One ended on its own (killed, or its head refused it): stop the rest, say so.
        for other in started:
            if other is not info:
                _stop_node(other, 10.0)
        local.remove_dirs(info)
        code = os.waitstatus_to_exitcode(status)
        print(f"raylite: pid {pid} exited with status {code}.", file=sys.stderr)
        return code or 1


def _absolute_storage(url: str) -> str:
    if url.startswith("sqlite://") and not url.startswith("sqlite:///"):
        return "sqlite:///" + os.path.abspath(url[len("sqlite://") :])
    return url


def _ready_line(proc: subprocess.Popen[bytes]) -> str:
    from .node_start import read_line

    try:
        return read_line(proc, CONFIG.start_timeout_s)
    except Exception as exc:
        return f"FAILED {exc}"


def _tail(path: str) -> str:
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        return f.read()[-2000:]
    return ""


# ------------------------------------------------------------------------ stop
def _stop_node(info: dict[str, Any], grace_s: float) -> bool:
    pid = int(info["pid"])
    try:
        proc = psutil.Process(pid)
        if "raylite.node" not in proc.cmdline():
            raise psutil.NoSuchProcess(pid)  # the pid was reused: not ours
        proc.terminate()
        try:
            proc.wait(grace_s)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        stopped = True
    except psutil.NoSuchProcess:
        stopped = False
    local.remove_dirs(info)
    return stopped


def cmd_stop(args: argparse.Namespace) -> int:
    nodes = local.local_nodes()
    for info in nodes:
        _stop_node(info, args.grace_s)
        print(f"stopped the raylite node at {info['tcp_address'][4:]} (pid {info['pid']})")
    if not nodes:
        print("no raylite node runs on this host")
    return 0


# ---------------------------------------------------------------------- status
def _tls_for(target: str, token: bytes) -> None:
    """TLS if the cluster at `target` speaks it: the certificate of a node of this
    machine, else one enrolled for this command (tls.py), whose files go at once."""
    from . import tls

    for node in local.local_nodes():
        ours = target in (node.get("tcp_address"), node.get("head_address"))
        if ours and tls.activate_for(node.get("session_dir", "")):
            return
    tls_dir = tls.remote_dir()
    try:  # a failure here (a wrong token): the dial below says it the usual way
        with contextlib.suppress(Exception):
            tls.join(target, token, tls_dir)
    finally:
        shutil.rmtree(tls_dir, ignore_errors=True)


def node_status(address: str | None = None) -> P.NodeStatus:
    """The head's view of the cluster, through a local node (or `address` with a token)."""
    if address is None:
        node = local.find_local_node("auto")
        target, token = node["unix_address"], local.read_token(node["token_file"])
    else:
        target = local.normalize(address)
        token = local.token_from_env() or b""
        for node in local.local_nodes() + _all_nodes():
            if target in (node.get("tcp_address"), node.get("head_address")) and not token:
                token = local.read_token(node["token_file"])
        if not token:
            raise SystemExit("raylite status: set RAYLITE_TOKEN to the cluster's token")
        _tls_for(target, token)
    conn = Connection.connect(target, token, lambda *a: None, name="cli", cluster=True)
    try:
        conn.request(
            P.RegisterClient("cli", new_id(), os.getpid(), ""),
            timeout=CONFIG.request_timeout_s,
        )
        reply = conn.request(P.GetNodeStatus(), timeout=CONFIG.request_timeout_s)
    finally:
        conn.close()
    if isinstance(reply, P.Failed):
        raise SystemExit(f"raylite status: {reply.reason}")
    return reply


def cmd_status(args: argparse.Namespace) -> int:
    try:
        status = node_status(args.address)
    except ConnectionError as exc:
        raise SystemExit(f"raylite status: {exc}") from None
    if args.format == "json":
        print(json.dumps({"head": status.head, "nodes": _jsonable(status.nodes)}, indent=2))
        return 0
    alive = [n for n in status.nodes if n["alive"]]
    dead = [n for n in status.nodes if not n["alive"]]
    print(f"======== raylite cluster: head {status.head['address'][4:]} ========")
    print(f"Head storage: {status.head['storage']}")
    print(f"Active nodes: {len(alive)}")
    for n in alive:
        role = " (head)" if n["is_head"] else ""
        print(f"  {n['node_id'].hex()[:16]}  {n['address'][4:]}{role}")
    if dead:
        print(f"Dead nodes: {len(dead)}")
        for n in dead:
            print(f"  {n['node_id'].hex()[:16]}  {n['address'][4:]}  ({n['cause']})")
    total: dict[str, int] = {}
    avail: dict[str, int] = {}
    for n in alive:
        for k, v in n["total"].items():
            total[k] = total.get(k, 0) + v
        for k, v in n["available"].items():
            avail[k] = avail.get(k, 0) + max(v, 0)
    print("Resources (used / total):")
    for k in sorted(total):
        if k.startswith("node:") or is_group_resource(k):
            continue
        used, tot = (total[k] - avail.get(k, 0)) / RESOURCE_UNIT, total[k] / RESOURCE_UNIT
        if k in ("memory", "object_store_memory"):
            print(f"  {used / 2**30:.2f}/{tot / 2**30:.2f} GiB {k}")
        else:
            print(f"  {used:g}/{tot:g} {k}")
    pending = [shape for n in alive for shape in n.get("pending", [])]
    print("Pending demand:")
    if not pending:
        print("  (no resource demands)")
    for shape in pending[:20]:
        print("  " + json.dumps({k: v / RESOURCE_UNIT for k, v in shape.items()}))
    _print_groups(status.head.get("placement_groups", []))
    return 0


def _print_groups(groups: list[dict[str, Any]]) -> None:
    """Placement groups: how many in each state, and the bundles of those that wait."""
    counts: dict[str, int] = {}
    for pg in groups:
        counts[pg["state"]] = counts.get(pg["state"], 0) + 1
    shown = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "none"
    print(f"Placement groups: {shown}")
    for pg in groups:
        if pg["state"] in ("PENDING", "RESCHEDULING"):
            bundles = [{k: v / RESOURCE_UNIT for k, v in b.items()} for b in pg["bundles"]]
            name = f" {pg['name']!r}" if pg["name"] else ""
            print(
                f"  {pg['pg_id'][:16]}{name} {pg['strategy']} {json.dumps(bundles)}: {pg['state'].lower()}"
            )


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value
