"""What is in the cluster, for people: objects in the store and where they are referenced.

Reads the node manager's segment table (GetStoreStats) and, for objects this
process owns, its own reference table; `raylite memory` prints the same data.
"""

from __future__ import annotations

import os
from typing import Any

from .. import core_worker
from .. import protocol as P


def store_stats() -> dict[str, Any]:
    """Shared-memory use, capacity and spilling counters of this node's object store."""
    return _stats().stats


def _stats() -> P.StoreStats:
    cw = core_worker.global_worker()
    cw._process_released()
    return cw.nm.request(P.GetStoreStats(), timeout=30)


def list_objects() -> list[dict[str, Any]]:
    """One dict per object: id, size, owner, where it is referenced from, spilled or not.

    `referenced_from` names holders as "driver", "worker pid=N", "task argument"
    (a pending task will read it) and "contained in <id>" (a ref inside another object).
    """
    cw = core_worker.global_worker()
    reply = _stats()
    clients = reply.stats.get("clients", {})
    segments = {o["object_id"]: o for o in reply.objects}
    rows = []
    with cw.lock:
        owned = list(cw.objects.items())
        contained: dict[bytes, list[str]] = {}
        for outer_id, outer in owned:
            for ref in outer.contains:
                contained.setdefault(ref.id, []).append(outer_id.hex())
        for oid, entry in owned:
            seg = segments.pop(oid.hex(), None)
            where = _holders(cw, oid, contained, clients)
            where += [_who(b, clients) for b in entry.borrowers]
            if entry.held or cw.arg_pins.get(oid):
                where.append("task argument")
            where += [f"contained in {h}" for h in contained.get(oid, [])]
            rows.append(
                {
                    "object_id": oid.hex(),
                    "size": seg["size"] if seg else _inline_size(entry.data),
                    "owner": f"{_me(cw)}",
                    "referenced_from": where,
                    "spilled": bool(seg and seg["spilled"]),
                    "in_store": seg is not None,
                    "pending": entry.kind is None,
                }
            )
        for hex_id, seg in segments.items():  # owned by other processes
            where = _holders(cw, bytes.fromhex(hex_id), contained, clients)
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
    return rows


def _me(cw: Any) -> str:
    return "driver" + f" pid={os.getpid()}" if cw.mode == "driver" else f"worker pid={os.getpid()}"


def _who(address: str, clients: dict[str, int]) -> str:
    name = os.path.basename(address)
    kind = "driver" if name.startswith("d-") else "worker"
    pid = clients.get(address)
    return f"{kind} pid={pid}" if pid else f"{kind} {address}"


def _holders(
    cw: Any, oid: bytes, contained: dict[bytes, list[str]], clients: dict[str, int]
) -> list[str]:
    """This process, if it holds refs of its own (not task pins, not containment)."""
    n = cw.local_refs.get(oid, 0) - cw.arg_pins.get(oid, 0) - len(contained.get(oid, []))
    if n <= 0:
        return []
    return ["driver"] if cw.mode == "driver" else [f"worker pid={os.getpid()}"]


def _inline_size(data: Any) -> int:
    if isinstance(data, (bytes, bytearray)):
        return len(data)
    if isinstance(data, list):
        return sum(len(d) for d in data)
    return 0


def memory_summary() -> str:
    """A table of the objects in the store, like `ray memory`."""
    return format_summary(list_objects(), store_stats())


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
