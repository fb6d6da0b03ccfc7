"""What a core worker shows of itself: frozen snapshots of its tables.

Owns CoreStatistics and its rows (OwnedTask, OwnedObject), and `snapshot()`,
which copies them out of the worker's tables (the caller holds its lock). The
state API (util.state) and anything else outside core/ reads these, never the
tables. Not the tables themselves (core_worker), not the node's view (node/).

    util.state ──cw.statistics()──▶ CoreStatistics (copied under the lock)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import msgspec

from .lifecycle import TASK_ENDED, TaskState
from .objects import PENDING, RELEASED
from .tasks import task_events_off


class OwnedTask(msgspec.Struct, frozen=True):
    """A task this process submitted that has not ended."""

    task_id: bytes
    name: str
    state: TaskState
    actor_id: bytes | None
    actor_creation: bool
    task_events: bool = True  # False: enable_task_events=False, listed nowhere


class OwnedObject(msgspec.Struct, frozen=True):
    """An object this process owns that has (or will have) a value."""

    object_id: bytes
    pending: bool  # its task has not finished
    inline_size: int  # bytes kept by the owner (0 for a value in a store)
    borrowers: tuple[str, ...]  # addresses of processes that borrow it
    task_argument: bool  # a task that has not ended will read it
    contains: tuple[bytes, ...]  # ids of the refs inside its value


class CoreStatistics(msgspec.Struct, frozen=True):
    mode: str  # "driver" | "worker"
    pid: int
    address: str
    node_id: bytes
    job_id: bytes
    current_task_id: bytes | None
    tasks: tuple[OwnedTask, ...]
    objects: tuple[OwnedObject, ...]
    # Refs this process holds itself, by id: its local refs less those pinned for
    # pending tasks' arguments (owned or borrowed).
    own_refs: Mapping[bytes, int]
    actors_known: int
    leases_held: int


def snapshot(cw: Any) -> CoreStatistics:
    """Copy a core worker's tables (its lock held)."""
    tasks = []
    for spec in cw.running.values():
        entry = cw.objects.get(spec.return_ids[0]) if spec.return_ids else None
        if spec.state in TASK_ENDED or entry is None or entry.kind is not PENDING:
            continue  # ended (an actor's creation task stays in `running` for restarts)
        tasks.append(
            OwnedTask(
                spec.task_id,
                spec.name,
                spec.state,
                spec.actor_id,
                spec.actor_creation,
                not task_events_off(spec.actor_options),
            )
        )
    objects = [
        OwnedObject(
            oid,
            entry.kind is PENDING,
            _inline_size(entry.data),
            tuple(entry.borrowers),
            bool(entry.held or cw.arg_pins.get(oid)),
            tuple(ref.id for ref in entry.contains),
        )
        for oid, entry in cw.objects.items()
        if entry.kind != RELEASED  # only a recipe (lineage) for other objects: no value
    ]
    own = {oid: n - cw.arg_pins.get(oid, 0) for oid, n in cw.local_refs.items()}
    return CoreStatistics(
        mode=cw.mode,
        pid=os.getpid(),
        address=cw.address,
        node_id=getattr(cw, "node_id", b""),
        job_id=getattr(cw, "job_id", b""),
        current_task_id=cw.current_task_id,
        tasks=tuple(tasks),
        objects=tuple(objects),
        own_refs=MappingProxyType({oid: n for oid, n in own.items() if n > 0}),
        actors_known=len(cw.actors),
        leases_held=len(cw.leases),
    )


def _inline_size(data: Any) -> int:
    if isinstance(data, (bytes, bytearray)):
        return len(data)
    if isinstance(data, list) and all(isinstance(d, (bytes, bytearray)) for d in data):
        return sum(len(d) for d in data)
    return 0
