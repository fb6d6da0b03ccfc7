"""raylite's command line: `raylite memory` (more commands come with clusters).

Finds the local node through its session directory (/tmp/raylite/<session>/),
which holds the node's socket and its token (readable by the same user only).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile

from . import protocol as P
from .object_ref import new_id
from .transport import Connection


def _sessions() -> list[str]:
    base = os.path.join(tempfile.gettempdir(), "raylite")
    found = [os.path.dirname(p) for p in glob.glob(os.path.join(base, "*", "node.sock"))]
    return sorted(found, key=os.path.getmtime, reverse=True)


def _connect(session: str | None) -> Connection:
    sessions = [session] if session else _sessions()
    errors = []
    for s in sessions:
        try:
            with open(os.path.join(s, "token")) as f:
                token = bytes.fromhex(f.read().strip())
            conn = Connection.connect(f"unix:{s}/node.sock", token, lambda *a: None, name="cli")
            conn.request(P.RegisterClient("cli", new_id(), os.getpid(), "", None), timeout=10)
            return conn
        except Exception as exc:
            errors.append(f"{s}: {exc}")
    detail = "; ".join(errors) if errors else "no session under /tmp/raylite"
    raise SystemExit(
        f"raylite: no running raylite node found ({detail}). Start one with raylite.init()."
    )


def cmd_memory(args: argparse.Namespace) -> int:
    from .util.state import format_summary

    conn = _connect(args.session)
    try:
        reply = conn.request(P.GetStoreStats(), timeout=30)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raylite", description="raylite command line")
    sub = parser.add_subparsers(dest="command", required=True)
    mem = sub.add_parser("memory", help="list the objects in the local node's object store")
    mem.add_argument("--session", help="session directory (default: the newest running one)")
    mem.set_defaults(func=cmd_memory)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
