"""Why a lease request waits at this node, in words for its owner: resources that
actors hold (a tree of actors that wait on work they cannot get hangs in silence
otherwise). Pure: reads a LeaseBook's pending requests and grants; the book marks what
it told. Not the waiting at the worker cap (worker_cap), not the placing (lease_book).
"""

from __future__ import annotations

from typing import Any, Protocol

from .. import bundles


class LeaseBook(Protocol):
    """What this reads of lease_book.LeaseBook (which imports this module)."""

    available: dict[str, int]
    pending: list[Any]
    leases: dict[bytes, Any]

    def held_now(self, lease: Any) -> dict[str, int]: ...


def waiting_on_actors(book: LeaseBook, now: float, after: float) -> list[tuple[Any, str]]:
    """Requests waiting here over `after` s for resources that actors hold (each
    once), with who holds them: a tree of actors that wait on work they cannot get
    hangs in silence otherwise. Resources held by tasks alone are a backlog, not a
    hang (a running task ends; one blocked in get lends its CPUs back): no warning."""
    out: list[tuple[Any, str]] = []
    available = book.available
    for lease in book.pending:
        if lease.warned or now - lease.waiting_since < after:
            continue
        if bundles.group_of(lease.shape) is not None:
            continue  # tasks queue on their bundle by design: no hang to warn of
        short = [k for k, v in lease.shape.items() if available.get(k, 0) < v]
        if not short:
            continue  # it waits for a worker to start, not for resources
        if not any(
            held.actor_id is not None and any(book.held_now(held).get(k, 0) for k in short)
            for held in book.leases.values()
        ):
            continue  # tasks hold them: they free them as they end
        lease.warned = True
        out.append((lease, _holders(book, short)))
    return out


def _holders(book: LeaseBook, kinds: list[str]) -> str:
    actors: list[str] = []
    tasks = 0
    for held in book.leases.values():
        if not any(book.held_now(held).get(k, 0) for k in kinds):
            continue
        if held.actor_id is not None:
            actors.append(held.actor_id.hex()[:12])
        else:
            tasks += 1
    parts = []
    if actors:
        shown = ", ".join(actors[:5]) + (", ..." if len(actors) > 5 else "")
        parts.append(f"{len(actors)} actor(s) ({shown})")
    if tasks:
        parts.append(f"{tasks} task(s)")
    return " and ".join(parts) or "nothing granted here (requests ahead of it)"
