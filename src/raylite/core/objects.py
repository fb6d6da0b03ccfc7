"""The owner's record of one object: its state, holders and lineage pins.

Owns ObjectEntry and the entry kinds an owner uses beyond protocol's INLINE,
IN_STORE and ERROR: PENDING (the value is not there yet) and RELEASED (nothing
refers to the value, but a kept lineage needs its recipe). Not the table of
entries or the lock (core_worker), not what frees them (lineage, refs)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..object_ref import ObjectRef
from .tasks import (
    TaskSpec,
)

log = logging.getLogger("raylite")


PENDING = None  # entry.kind while the value is not there yet
RELEASED = -1  # entry.kind once nothing refers to the value but a kept lineage needs its recipe


class ObjectEntry:
    """An object this process owns."""

    __slots__ = (
        "borrowers",
        "contains",
        "data",
        "held",
        "kind",
        "lineage",
        "lineage_refs",
        "seq",
        "waiters",
    )

    def __init__(self) -> None:
        self.kind: int | None = PENDING
        self.data: Any = None
        self.waiters: list[Callable[[int, Any], None]] = []
        self.seq = 0  # completion order, for wait()
        self.held = 0  # pending tasks that read this value from the store
        self.borrowers: dict[str, int] = {}  # borrower address -> registrations
        self.contains: list[ObjectRef] = []  # refs pickled inside this value
        self.lineage: TaskSpec | None = None  # the task to rerun if the value is lost
        self.lineage_refs = 0  # kept lineages that read this object: its recipe must stay
