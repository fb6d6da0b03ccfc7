"""Placement groups, the head's table: which groups exist, where their bundles go.

Owns every group's record (bundles, strategy, name, owner, state, the node of each
bundle, the prepare in flight) and its names, the choice of nodes for bundles
(`place_bundles`: PACK, SPREAD, STRICT_PACK, STRICT_SPREAD over the nodes' free
resources, each bundle only on a node its label selector matches: labels.py), and the two-phase reservation: prepare on every chosen node, commit
once all said yes, roll back (Cancel) on any no. Pure: events in, actions out; no
I/O, no clock but what comes in. The shell (pg_service.py) sends the actions to the
nodes, where node/bundle_book.py reserves; what a bundle adds to a node is
bundles.py's.

    create ──▶ PENDING ──schedule: Prepare(node, bundles) each──▶ prepared(ok) ...
      all ok ──▶ Commit each ──▶ CREATED (waiters answered)
      one no ──▶ Cancel each other node ──▶ PENDING (tried again at the next change)
    CREATED ──node_died (a bundle there)──▶ RESCHEDULING ──schedule──▶ ... CREATED
    any ──remove | owner_gone──▶ REMOVED (Removed: every node frees what it holds)

Group:  PENDING ──▶ CREATED | REMOVED;  CREATED ──▶ RESCHEDULING | REMOVED;
        RESCHEDULING ──▶ CREATED | REMOVED
A group that no node set can ever hold (by total resources) says so once
(Infeasible) and stays PENDING: a node may join that holds it.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..labels import Condition, matches, parse_selector
from ..scheduling import NodeView, fits
from ..transitions import transition

log = logging.getLogger("raylite.head")


class PGState(enum.StrEnum):
    PENDING = "PENDING"
    CREATED = "CREATED"
    REMOVED = "REMOVED"
    RESCHEDULING = "RESCHEDULING"


PENDING, CREATED, REMOVED, RESCHEDULING = PGState

PG_TRANSITIONS: dict[PGState, frozenset[PGState]] = {
    PENDING: frozenset({CREATED, REMOVED}),
    CREATED: frozenset({RESCHEDULING, REMOVED}),
    RESCHEDULING: frozenset({CREATED, REMOVED}),
    REMOVED: frozenset(),
}

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
KEEP_REMOVED = 1000  # removed groups the table still shows (then forgotten, oldest first)


@dataclass(eq=False)
class PGRec:
    pg_id: bytes
    bundles: list[dict[str, int]]  # units (config.RESOURCE_UNIT)
    strategy: str
    name: str = ""
    namespace: str = ""
    detached: bool = False
    owner: str = ""  # its creator's address ("": its job's): it goes with it unless detached
    owner_node: bytes = b""
    job: bytes = b""  # the job it was made in: it goes when the job ends (Ray's scope)
    state: PGState = PENDING
    nodes: dict[int, bytes] = field(default_factory=dict)  # bundle index -> node (placed)
    attempt: int = 0  # the prepare in flight (0: none)
    attempts: int = 0  # prepares tried (the table's scheduling_attempt)
    preparing: dict[bytes, dict[int, dict[str, int]]] = field(default_factory=dict)
    prepared: set[bytes] = field(default_factory=set)  # nodes that said yes this attempt
    warned: bool = False  # told once that no node set can ever hold it
    created_at: float = 0.0
    placed_at: float = 0.0
    cause: str = ""
    # Ray's bundle_label_selector: bundle i goes only to a node whose labels match
    # selectors[i] ([] or {}: any node).
    selectors: list[dict[str, str]] = field(default_factory=list)

    def conditions(self, indices: Any) -> dict[int, tuple[Condition, ...]]:
        """The parsed selectors of these bundles (none: {}, the unlabelled path)."""
        if not self.selectors:
            return {}
        return {i: parse_selector(self.selectors[i]) for i in indices if self.selectors[i]}

    def row(self) -> dict[str, Any]:
        return {
            "pg_id": self.pg_id,
            "name": self.name,
            "namespace": self.namespace,
            "bundles": [dict(b) for b in self.bundles],
            "strategy": self.strategy,
            "state": str(self.state),
            "nodes": {i: n for i, n in self.nodes.items()},
            "detached": self.detached,
            "owner": self.owner,
            "owner_node": self.owner_node,
            "job": self.job,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "placed_at": self.placed_at,
            "bundle_label_selector": [dict(s) for s in self.selectors],
        }


def restored(row: dict[str, Any]) -> PGRec:
    """A group as the head's storage gave its row back (a head started again): no
    prepare is in flight any more; a CREATED group's nodes still hold its bundles."""
    return PGRec(
        row["pg_id"],
        [dict(b) for b in row["bundles"]],
        row["strategy"],
        row["name"],
        row["namespace"],
        row["detached"],
        row["owner"],
        row.get("owner_node", b""),
        row.get("job", b""),
        state=PGState(row["state"]),
        nodes={int(i): n for i, n in row["nodes"].items()},
        attempts=row["attempts"],
        created_at=row["created_at"],
        placed_at=row["placed_at"],
        selectors=[dict(s) for s in row.get("bundle_label_selector") or []],
    )


# --- actions: what the shell does ----------------------------------------------------
class Prepare(msgspec.Struct, frozen=True):
    """Reserve these bundles on the node (all or none); answer prepared()."""

    node_id: bytes
    pg: PGRec
    attempt: int
    bundles: dict[int, dict[str, int]]


class Commit(msgspec.Struct, frozen=True):
    """The reserved bundles become the group's resources on the node."""

    node_id: bytes
    pg: PGRec
    indices: list[int]


class Cancel(msgspec.Struct, frozen=True):
    """Give back bundles on the node: those reserved by prepare `attempt` (a roll
    back), or, attempt 0, the committed ones of `indices`."""

    node_id: bytes
    pg: PGRec
    indices: list[int]
    attempt: int = 0


class Removed(msgspec.Struct, frozen=True):
    """Every node frees what it holds of the group and fails what waits for it."""

    pg: PGRec


class Created(msgspec.Struct, frozen=True):
    """The group holds all its bundles: answer who waits for it."""

    pg: PGRec


class Infeasible(msgspec.Struct, frozen=True):
    """No set of nodes can ever hold the group (by total resources): say so once."""

    pg: PGRec


PGAction = Prepare | Commit | Cancel | Removed | Created | Infeasible


# --- placement -------------------------------------------------------------------------
def _add(into: dict[str, int], shape: dict[str, int], sign: int = 1) -> None:
    for k, v in shape.items():
        into[k] = into.get(k, 0) + sign * v


def place_bundles(
    bundles: dict[int, dict[str, int]],
    strategy: str,
    nodes: list[NodeView],
    fixed: dict[int, bytes] | None = None,
    by_total: bool = False,
    selectors: dict[int, tuple[Condition, ...]] | None = None,
) -> dict[int, bytes] | None:
    """A node for each bundle by `strategy`, on what the nodes have free (their totals
    if `by_total`), or None. `fixed`: where the group's other bundles are already
    (a reschedule): STRICT_SPREAD avoids those nodes, PACK prefers them. `selectors`:
    bundle i only on a node whose labels match selectors[i]."""
    fixed = fixed or {}
    room = {n.node_id: dict(n.total if by_total else n.available) for n in nodes if n.alive}
    conds = selectors or {}
    labels = {n.node_id: n.labels for n in nodes if n.alive}

    def allowed(i: int, node: bytes) -> bool:
        c = conds.get(i)
        return c is None or matches(c, labels[node])

    order = sorted(bundles, key=lambda i: -sum(bundles[i].values()))  # the big ones first
    used = set(fixed.values())

    def free_cpu(node: bytes) -> int:
        return room[node].get("CPU", 0)

    if strategy in ("PACK", "STRICT_PACK"):
        total: dict[str, int] = {}
        for shape in bundles.values():
            _add(total, shape)
        # One node for all: the group's own node first, then the fullest that fits
        # (packing keeps the emptier nodes whole for others).
        candidates = sorted(room, key=lambda n: (n not in used, free_cpu(n), n))
        for node in candidates:
            if fits(total, room[node]) and all(allowed(i, node) for i in bundles):
                return dict.fromkeys(bundles, node)
        if strategy == "STRICT_PACK":
            return None
        # As few nodes as it takes: fill the node with most room first, then the next.
        out: dict[int, bytes] = {}
        for node in sorted(room, key=lambda n: (n not in used, -free_cpu(n), n)):
            for i in order:
                if i not in out and fits(bundles[i], room[node]) and allowed(i, node):
                    _add(room[node], bundles[i], -1)
                    out[i] = node
        return out if len(out) == len(bundles) else None
    out = {}
    count = {n: 0 for n in room}
    for node in used:
        if node in count:
            count[node] += 1
    for i in order:
        able = [n for n in room if fits(bundles[i], room[n]) and allowed(i, n)]
        if strategy == "STRICT_SPREAD":
            able = [n for n in able if count[n] == 0]
        if not able:
            return None
        node = min(able, key=lambda n: (count[n], -free_cpu(n), n))
        _add(room[node], bundles[i], -1)
        count[node] += 1
        out[i] = node
    return out


# --- the table ---------------------------------------------------------------------------
class PlacementGroupTable:
    """Every group of the cluster; see the module docstring."""

    def __init__(self, keep_removed: int = KEEP_REMOVED) -> None:
        self.groups: dict[bytes, PGRec] = {}
        self.names: dict[tuple[str, str], PGRec] = {}
        # PENDING and RESCHEDULING groups, oldest first: what schedule() tries. The
        # shell asks whether any waits at every resource change, so it is kept, not found.
        self.waiting_groups: dict[bytes, PGRec] = {}
        self.removed: list[bytes] = []  # removed groups still shown, oldest first
        self.forgotten: list[bytes] = []  # removed groups dropped since the shell looked
        self.keep_removed = keep_removed

    def waiting(self) -> bool:
        """Some group waits for resources (the shell then schedules on changes)."""
        return bool(self.waiting_groups)

    def create(self, pg: PGRec) -> None:
        """A new group, or one restored from storage in the state it had."""
        self.groups[pg.pg_id] = pg
        if pg.state is REMOVED:
            self.removed.append(pg.pg_id)
            return
        if pg.state in (PENDING, RESCHEDULING):
            self.waiting_groups[pg.pg_id] = pg
        if pg.name:
            self.names[(pg.namespace, pg.name)] = pg

    def named(self, namespace: str, name: str) -> PGRec | None:
        pg = self.names.get((namespace, name))
        return pg if pg is not None and pg.state is not REMOVED else None

    def schedule(self, nodes: list[NodeView], now: float) -> list[PGAction]:
        """Try the waiting groups, oldest first, on the nodes' free resources (each
        plan debits what it takes, so two groups never count the same room)."""
        actions: list[PGAction] = []
        views = [
            NodeView(n.node_id, n.address, n.total, dict(n.available), n.alive, n.labels)
            for n in nodes
            if n.alive
        ]
        for pg in list(self.waiting_groups.values()):
            if pg.attempt:
                continue
            missing = {i: b for i, b in enumerate(pg.bundles) if i not in pg.nodes}
            conds = pg.conditions(missing)
            plan = place_bundles(missing, pg.strategy, views, pg.nodes, selectors=conds)
            if plan is None:
                if not pg.warned and (
                    place_bundles(missing, pg.strategy, views, pg.nodes, True, conds) is None
                ):
                    pg.warned = True
                    actions.append(Infeasible(pg))
                continue
            pg.attempts += 1
            pg.attempt = pg.attempts
            pg.prepared = set()
            pg.preparing = {}
            for i, node in plan.items():
                pg.preparing.setdefault(node, {})[i] = missing[i]
            by_id = {v.node_id: v for v in views}
            for node, bundles in pg.preparing.items():
                for shape in bundles.values():
                    _add(by_id[node].available, shape, -1)
                actions.append(Prepare(node, pg, pg.attempt, bundles))
        return actions

    def prepared(
        self, pg_id: bytes, attempt: int, node_id: bytes, ok: bool, now: float
    ) -> list[PGAction]:
        """A node answered a Prepare: all yes commits, one no rolls the others back."""
        pg = self.groups.get(pg_id)
        if pg is None or pg.attempt != attempt or node_id not in pg.preparing:
            # Stale (removed, or rolled back meanwhile): give back what it reserved.
            if ok and pg is not None:
                return [Cancel(node_id, pg, [], attempt)]
            return []
        if not ok:
            actions: list[PGAction] = [
                Cancel(node, pg, list(b), attempt)
                for node, b in pg.preparing.items()
                if node != node_id
            ]
            pg.attempt = 0
            pg.preparing = {}
            pg.prepared = set()
            return actions
        pg.prepared.add(node_id)
        if len(pg.prepared) < len(pg.preparing):
            return []
        actions = []
        for node, bundles in pg.preparing.items():
            for i in bundles:
                pg.nodes[i] = node
            actions.append(Commit(node, pg, sorted(bundles)))
        pg.attempt = 0
        pg.preparing = {}
        pg.prepared = set()
        pg.placed_at = now
        transition(pg, CREATED, PG_TRANSITIONS, cause="all bundles committed", who=pg.pg_id)
        self.waiting_groups.pop(pg.pg_id, None)
        actions.append(Created(pg))
        return actions

    def remove(self, pg_id: bytes, cause: str = "removed") -> list[PGAction]:
        pg = self.groups.get(pg_id)
        if pg is None or pg.state is REMOVED:
            return []
        transition(pg, REMOVED, PG_TRANSITIONS, cause=cause, who=pg_id)
        pg.cause = cause
        self.waiting_groups.pop(pg_id, None)
        self.removed.append(pg_id)
        while len(self.removed) > self.keep_removed:  # the table shows the recent ones
            old = self.removed.pop(0)
            self.groups.pop(old, None)
            self.forgotten.append(old)
        pg.attempt = 0
        pg.preparing = {}
        if pg.name and self.names.get((pg.namespace, pg.name)) is pg:
            del self.names[(pg.namespace, pg.name)]
        return [Removed(pg)]

    def node_died(self, node_id: bytes) -> list[PGAction]:
        """A node is gone with what it held: its groups' bundles there are placed again
        (a STRICT_PACK group's all of them), a prepare that waited on it fails."""
        actions: list[PGAction] = []
        for pg in self.groups.values():
            if pg.attempt and node_id in pg.preparing:
                actions.extend(self.prepared(pg.pg_id, pg.attempt, node_id, False, 0.0))
            lost = [i for i, n in pg.nodes.items() if n == node_id]
            if not lost or pg.state is REMOVED:
                continue
            if pg.strategy == "STRICT_PACK":  # together or not at all
                others: dict[bytes, list[int]] = {}
                for i, n in pg.nodes.items():
                    if n != node_id:
                        others.setdefault(n, []).append(i)
                actions.extend(Cancel(n, pg, idx) for n, idx in others.items())
                pg.nodes = {}
            else:
                for i in lost:
                    del pg.nodes[i]
            if pg.state is CREATED:
                transition(pg, RESCHEDULING, PG_TRANSITIONS, cause="its node died", who=pg.pg_id)
                self.waiting_groups[pg.pg_id] = pg
        return actions

    def owner_gone(
        self, address: str = "", node_id: bytes = b"", job: bytes = b""
    ) -> list[PGAction]:
        """What groups are scoped to is gone: their creator's process (a driver, a
        detached actor), every process of a node, or their job. Detached groups stay."""
        actions: list[PGAction] = []
        for pg in list(self.groups.values()):
            if pg.detached or pg.state is REMOVED:
                continue
            if pg.owner:
                gone = (address and pg.owner == address) or (node_id and pg.owner_node == node_id)
            else:
                gone = bool(job) and pg.job == job
            if gone:
                actions.extend(self.remove(pg.pg_id, "its creator is gone"))
        return actions
