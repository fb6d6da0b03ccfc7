"""The one `transition()` of every lifecycle table in raylite.

Owns the check that a record's move is in its table (InvalidTransition if not) and
the debug line that logs it, when RAYLITE_TRACE_TRANSITIONS=1 (TRACE.on). Not the tables themselves: tasks and actors as their
owner sees them (core/lifecycle.py), the head's actor table (head/head.py, with
core's ActorState), leases and workers on a node (node/lease_book.py). Pure: no
locks, no I/O; the caller holds whatever lock guards the record.

    record.state ──transition(record, new, TABLE, cause=...)──▶ new   (or raise)
"""

from __future__ import annotations

import enum
import logging
from typing import Protocol, TypeVar

from .config import CONFIG
from .exceptions import InvalidTransition

log = logging.getLogger("raylite")


class Trace:
    """Whether moves are logged (config.trace_transitions): the hot paths that move a
    task inline check it (core/submission.py), so a test may turn it on here."""

    on = bool(CONFIG.trace_transitions)


TRACE = Trace()

S = TypeVar("S", bound=enum.Enum)


class Record(Protocol[S]):
    """Anything with a lifecycle: a TaskSpec, an ActorClient, a head's ActorRec, a
    node's Lease or Worker."""

    state: S


def transition(
    record: Record[S], new: S, table: dict[S, frozenset[S]], *, cause: str, who: bytes = b""
) -> None:
    """Move `record` to `new` if its table allows it, else raise InvalidTransition."""
    old = record.state
    if new not in table[old]:
        raise InvalidTransition(
            f"{type(record).__name__} {who.hex()[:12]}: {old.name} -> {new.name} ({cause}) "
            "is not a move its lifecycle allows"
        )
    record.state = new
    if TRACE.on and log.isEnabledFor(logging.DEBUG):
        log.debug("%s %s: %s -> %s (%s)", type(record).__name__, who.hex()[:12], old.name,
                  new.name, cause)  # fmt: skip
