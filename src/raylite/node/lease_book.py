"""The lease book: one node's resources, lease requests, leases and workers, as data.

Owns the node's resources (`total`, `available`, `gpu_free` per GPU; in units of
config.RESOURCE_UNIT), the lease requests waiting here (`pending`), the granted
leases (`leases`), the idle workers (`idle`), how many pool workers are starting
(`starting`), and the lease and worker lifecycles below. Pure: events in, actions
out; no I/O, no asyncio, no locks. The shell (leases.py) turns messages into events
and runs the actions: pool.py forks (StartWorker), connections reply (Grant,
Spillback, Reject). Not the placement policy (scheduling.py), not the processes
(pool.py's WorkerRec carries the fields this book moves: state, lease_id,
for_request), not the view of the other nodes: the book reads it through `view`
(the NodeManager: the head's table on the head node, the last ClusterView elsewhere).
Placement groups' bundles are resources here like any other (bundles.py's names,
added and taken away by bundle_book.py); the book also keeps the GPU ids of those
bundles (`group_gpus`) and the groups removed (`removed_groups`: a request for one
fails), and does not announce as infeasible a request for a group not placed yet.

    request ──place: here──▶ pending ──schedule──▶ Grant(lease, an idle worker)
       │                                      ├──▶ StartWorker(lease): an actor's own worker
       │                                      └──▶ StartWorker(None): the pool is short
       └──elsewhere──▶ Spillback(lease, node) | Reject(lease, reason) (hard affinity)
    worker_started ──▶ Grant (the actor lease it was started for) | idle, schedule
    lease_returned ──▶ resources back, the worker idle (an actor's: KillWorker), schedule
    worker_died ──▶ its lease's resources back, the actor lease it was started for
                    Rejected, schedule;  process_exited ──▶ room under the cap, schedule
    owner_gone ──▶ its waiting requests dropped, KillWorker for its leases (not detached)

Lease:  PENDING ──▶ GRANTED ⇄ BLOCKED (its task waits in get: its CPUs lent back)
        PENDING ──▶ STARTING (resources held, its actor's worker starting) ──▶ GRANTED
        GRANTED | BLOCKED ──▶ RETURNED (by its owner) | REVOKED (its worker or owner died)
        PENDING ──▶ SPILLED | CANCELLED | FAILED;   STARTING ──▶ FAILED (its worker died)
Worker: STARTING ──▶ IDLE ⇄ LEASED;  STARTING ──▶ LEASED (an actor's);  any ──▶ DEAD

Runtime envs. A request with a runtime env (`env_key`, RequestLease.runtime_env) is
served by a worker of that env only: those idle by env in `idle_env`, started by env
(`starting_env`, StartWorker(None, key, env): the shell builds the env first and
answers env_failed if it cannot, which rejects that env's waiting requests). The
default path reads neither. Idle env workers exit when the shell says (retire_idle).

A request waiting here is sent on (spillback) to a node with room. Views of other
nodes are late, so a request can land where the room is gone: after `max_hops` such
hops it moves on only at a fresh view (`view_refreshed`: a heartbeat's), at most once
per view, and never to wait elsewhere, so requests cannot chase stale room around the
cluster, nor wait at a full node while another has room. A pinned request (SPREAD's,
placed once; the node's own) waits where it is. A lease's owner is its requester's
connection: the book reads only its `closed`.
"""

from __future__ import annotations

import enum
import logging
from typing import Any, Protocol

import msgspec

from .. import bundles, labels, scheduling
from ..config import CONFIG, RESOURCE_UNIT, Config
from ..protocol import FailCode, NodeAffinity
from ..scheduling import NodeView, Placement
from ..transitions import transition
from . import lease_waits
from .worker_cap import WorkerCap

log = logging.getLogger("raylite")


class LeaseState(enum.StrEnum):
    PENDING = "PENDING"  # waits here for resources or a worker
    STARTING = "STARTING"  # resources held; the actor's own worker is starting
    GRANTED = "GRANTED"  # a worker is the owner's
    BLOCKED = "BLOCKED"  # granted; its task waits in get/wait, its CPUs lent back
    RETURNED = "RETURNED"  # its owner gave it back
    REVOKED = "REVOKED"  # its worker died, or its owner was gone at the grant
    SPILLED = "SPILLED"  # sent on to another node
    CANCELLED = "CANCELLED"  # its owner cancelled it or went away while it waited
    FAILED = "FAILED"  # it cannot be served (hard affinity), or its worker died at start


L_PENDING, L_STARTING, GRANTED, BLOCKED, RETURNED, REVOKED, SPILLED, CANCELLED, FAILED = LeaseState

LEASE_TRANSITIONS: dict[LeaseState, frozenset[LeaseState]] = {
    L_PENDING: frozenset({L_STARTING, GRANTED, SPILLED, CANCELLED, FAILED}),
    L_STARTING: frozenset({GRANTED, FAILED}),
    GRANTED: frozenset({BLOCKED, RETURNED, REVOKED}),
    BLOCKED: frozenset({GRANTED, RETURNED, REVOKED}),
    RETURNED: frozenset(),
    REVOKED: frozenset(),
    SPILLED: frozenset(),
    CANCELLED: frozenset(),
    FAILED: frozenset(),
}


class WorkerState(enum.StrEnum):  # lower case: the state API and dashboard show it
    STARTING = "starting"  # forked, not registered yet
    IDLE = "idle"
    LEASED = "leased"  # serves a lease (or, its lease ended, is being killed)
    DEAD = "dead"  # its process exited


W_STARTING, IDLE, LEASED, DEAD = WorkerState

WORKER_TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    W_STARTING: frozenset({IDLE, LEASED, DEAD}),
    IDLE: frozenset({LEASED, DEAD}),
    LEASED: frozenset({IDLE, DEAD}),
    DEAD: frozenset(),
}


class Owner(Protocol):
    """A lease's requester: its connection. The book reads only `closed`; the shell
    answers through `reply` and `send`."""

    @property
    def closed(self) -> bool: ...

    def reply(self, rid: int, msg: Any) -> None: ...

    def send(self, msg: Any) -> None: ...


class Worker(Protocol):
    """A worker process (pool.py's WorkerRec). The book moves `state`, `lease_id` and
    `for_request`; it reads the rest."""

    worker_id: bytes
    pid: int
    address: str
    state: WorkerState
    lease_id: bytes | None
    for_request: Lease | None  # the actor lease it was started for, until it registers
    actor_id: bytes | None
    env_key: str  # its runtime env's (runtime_env/spec.env_key); "": the default


class ClusterView(Protocol):
    """What placement reads of the cluster (the NodeManager)."""

    @property
    def node_id(self) -> bytes: ...

    @property
    def tcp_address(self) -> str: ...

    def other_nodes(self) -> list[NodeView]: ...


class Lease(msgspec.Struct, eq=False):
    """A lease from its request to its end (see the lifecycle above)."""

    lease_id: bytes
    shape: dict[str, int]
    actor_id: bytes | None  # set: it gets a worker of its own, started for it
    owner: Owner
    rid: int  # the request's id on `owner`: the grant answers it
    strategy: str | NodeAffinity | None = None  # RequestLease.strategy
    spilled: int = 0  # times nodes sent it on: after max_hops it moves on only at fresh views
    pinned: bool = False  # placed for good: it waits where it is
    detached: bool = False  # a detached actor's: its owner may go, it stays
    state: LeaseState = L_PENDING
    gpu_ids: list[int] = msgspec.field(default_factory=list)
    worker: Worker | None = None  # once granted
    waiting_since: float = 0.0  # when it reached this node (the shell's clock)
    warned: bool = False  # its owner was told it waits on resources others hold
    # RequestLease.label_selector (None for nearly every request: no cost for them);
    # its parsed conditions once the book has it.
    label_selector: dict[str, str] | None = None
    conditions: tuple[labels.Condition, ...] = ()
    # RequestLease.runtime_env and its key: only a worker of that env may serve it.
    env_key: str = ""
    runtime_env: dict[str, Any] | None = None
    # RequestLease.retriable: the memory monitor kills retriable workers first.
    retriable: bool = True


# --- actions: what the shell does for the book ----------------------------------------
class StartWorker(msgspec.Struct, frozen=True):
    lease: Lease | None  # the actor lease it is started for (WorkerRec.for_request), or the pool
    # A pool worker of a runtime env (the shell builds the env first): its key and env.
    env_key: str = ""
    runtime_env: dict[str, Any] | None = None


class Grant(msgspec.Struct, frozen=True):
    lease: Lease
    worker: Worker


class Spillback(msgspec.Struct, frozen=True):
    lease: Lease
    node: NodeView
    # The node's resources with this lease's taken, until its next report: a burst of
    # requests spreads over the free nodes instead of all landing on the first.
    available: dict[str, int]


class Reject(msgspec.Struct, frozen=True):
    lease: Lease
    code: FailCode
    reason: str


class Infeasible(msgspec.Struct, frozen=True):
    """A warning for the owner: no node has the resources (or, `missing` empty, no
    node's labels match its label_selector). The request waits here."""

    lease: Lease
    missing: dict[str, int]


class KillWorker(msgspec.Struct, frozen=True):
    worker: Worker


class ResourcesChanged(msgspec.Struct, frozen=True):
    """Tell the head soon: other nodes place work by this node's numbers."""


RESOURCES_CHANGED = ResourcesChanged()

LeaseAction = StartWorker | Grant | Spillback | Reject | Infeasible | KillWorker | ResourcesChanged

_HERE = Placement(None, scheduling.HERE)
_PG_REMOVED = "The placement group corresponding to this task has been removed."
_INFEASIBLE = Placement(None, "infeasible")


class _Nobody:
    """The owner of a lease that is only placed, never requested (place_shape)."""

    closed = True

    def reply(self, rid: int, msg: Any) -> None:
        pass

    def send(self, msg: Any) -> None:
        pass


class LeaseBook:
    """The node's resources, lease requests, leases and workers; see the module doc."""

    def __init__(
        self,
        total: dict[str, int],
        num_gpus: int,
        view: ClusterView,
        *,
        cluster: bool,
        config: Config = CONFIG,
        max_workers: int = 0,
    ) -> None:
        self.total = dict(total)
        self.available = dict(total)
        # Each GPU's free share (units): a fractional request packs onto the first GPU
        # with room for it, as Ray does (0.5, 0.5 -> GPU 0, 0); a whole one takes whole GPUs.
        self.gpu_free = dict.fromkeys(range(num_gpus), RESOURCE_UNIT)
        self.pending: list[Lease] = []
        # This node's labels (the shell sets them: ray.io/node-id and the user's), and
        # the requests whose label_selector no node matches: they wait for one to join.
        self.labels: dict[str, str] = {}
        self.unmatched: list[Lease] = []
        self.leases: dict[bytes, Lease] = {}
        self.idle: list[Worker] = []
        self.starting = 0  # pool workers asked for (StartWorker(None)), not registered yet
        # The same for the workers of each runtime env (by env key): a lease of env X
        # gets a worker of X only, and the default path above never looks here.
        self.idle_env: dict[str, list[Worker]] = {}
        self.starting_env: dict[str, int] = {}
        self.spread_seq = 0  # SPREAD requests placed so far (round-robin)
        self.stopping = False
        self.view = view
        self.cluster = cluster  # other nodes may exist: waiting requests may move on
        self.max_hops = config.max_hops
        # Spillbacks of the event being handled: placement sees them at once, the
        # shell applies them to the view (Spillback.available) when it runs the actions.
        self._debited: dict[bytes, NodeView] = {}
        # Placement groups removed (hex ids; bundle_book.py adds them): a request for
        # one fails, checked only for requests no node can serve (never the hot path).
        self.removed_groups: dict[str, None] = {}  # (an ordered set: the oldest go first)
        # GPU ids of committed bundles (bundles.take_gpus): bundle's GPU resource name
        # -> {GPU id: units free}.
        self.group_gpus: dict[str, dict[int, int]] = {}
        self.cap = WorkerCap(max_workers)  # worker processes vs their cap (worker_cap.py)

    # ------------------------------------------------------------------ events
    def request(self, lease: Lease) -> list[LeaseAction]:
        """An owner asks for a worker (RequestLease)."""
        actions: list[LeaseAction] = []
        if lease.label_selector is not None:
            lease.conditions = labels.parse_selector(lease.label_selector)
        if not (lease.spilled or lease.pinned):
            where = self._place(lease)
            if where.kind == "spill" or where.kind == "fail":
                self._redirect(lease, where, actions)
                self._debited.clear()
                return actions
            if (
                where.kind == "infeasible"
                and lease.conditions
                and not labels.matches(lease.conditions, self.labels)
            ):
                self.unmatched.append(lease)  # never granted here: it waits for a node
                actions.append(Infeasible(lease, {}))
                return actions
            if where.kind == "infeasible":
                group = bundles.group_of(lease.shape)
                if group is None:
                    missing = {k: v for k, v in lease.shape.items() if self.total.get(k, 0) < v}
                    actions.append(Infeasible(lease, missing))
                elif group in self.removed_groups:
                    transition(lease, FAILED, LEASE_TRANSITIONS, cause="group removed",
                               who=lease.lease_id)  # fmt: skip
                    actions.append(Reject(lease, FailCode.PG_REMOVED, _PG_REMOVED))
                    return actions
                # else its group is not placed yet (or again): it waits, unannounced
        self.pending.append(lease)
        self._schedule(actions)
        return actions

    def prestart(self, n: int) -> list[LeaseAction]:
        """Start `n` pool workers ahead of any request (as many as the cap allows)."""
        n = max(0, min(n, self.cap.room()))
        self.cap.add(n)
        self.starting += n
        return [StartWorker(None) for _ in range(n)]

    def worker_started(self, worker: Worker) -> list[LeaseAction]:
        """A worker registered: it takes the actor lease it was started for, or is idle."""
        actions: list[LeaseAction] = []
        lease = worker.for_request
        if lease is not None:
            worker.for_request = None
            self._grant(lease, worker, actions)
            return actions
        transition(worker, IDLE, WORKER_TRANSITIONS, cause="registered", who=worker.worker_id)
        if worker.env_key:
            self.starting_env[worker.env_key] -= 1
            self.idle_env.setdefault(worker.env_key, []).append(worker)
        else:
            self.starting -= 1
            self.idle.append(worker)
        self._schedule(actions)
        return actions

    def env_failed(self, env_key: str, lease: Lease | None, reason: str) -> list[LeaseAction]:
        """A worker of env `env_key` could not start: its env failed to build. The
        actor lease it was for (`lease`) and every request waiting for that env fail
        with `reason` (the build log), as will later ones (the shell keeps the failure)."""
        actions: list[LeaseAction] = []
        self.cap.exited(None)  # the worker it counted was never forked
        if lease is not None:
            transition(lease, FAILED, LEASE_TRANSITIONS, cause="env failed", who=lease.lease_id)
            self._release(lease.shape, lease.gpu_ids, actions)
            actions.append(Reject(lease, FailCode.RUNTIME_ENV_SETUP_FAILED, reason))
        else:
            self.starting_env[env_key] -= 1
        still = []
        for waiting in self.pending:
            if waiting.env_key == env_key and waiting.actor_id is None:
                transition(waiting, FAILED, LEASE_TRANSITIONS, cause="env failed",
                           who=waiting.lease_id)  # fmt: skip
                actions.append(Reject(waiting, FailCode.RUNTIME_ENV_SETUP_FAILED, reason))
            else:
                still.append(waiting)
        self.pending = still
        self._schedule(actions)
        return actions

    def retire_idle(self, worker_ids: set[bytes]) -> list[LeaseAction]:
        """Of the runtime envs' idle workers, those in `worker_ids` exit (they were
        idle at the shell's last look too): an env no task uses keeps no process."""
        actions: list[LeaseAction] = []
        for key, pool in list(self.idle_env.items()):
            keep = [w for w in pool if w.worker_id not in worker_ids]
            for w in pool:
                if w.worker_id in worker_ids:
                    transition(w, LEASED, WORKER_TRANSITIONS, cause="retired", who=w.worker_id)
                    actions.append(KillWorker(w))
            if keep:
                self.idle_env[key] = keep
            else:
                del self.idle_env[key]
        return actions

    def lease_returned(self, lease_id: bytes, kill: bool) -> list[LeaseAction]:
        """The owner gives a lease back (kill: its worker must not serve again)."""
        lease = self.leases.get(lease_id)
        if lease is None:
            return []
        actions: list[LeaseAction] = []
        self._end(lease, RETURNED, kill, actions)
        return actions

    def cancel(self, lease_id: bytes) -> list[LeaseAction]:
        """The owner no longer wants a request that still waits here."""
        for lease in (*self.pending, *self.unmatched):
            if lease.lease_id == lease_id:
                (self.pending if lease in self.pending else self.unmatched).remove(lease)
                transition(lease, CANCELLED, LEASE_TRANSITIONS, cause="cancel", who=lease_id)
                return [Reject(lease, FailCode.CANCELLED, "cancelled")]
        return []

    def worker_blocked(self, lease_id: bytes) -> list[LeaseAction]:
        """The lease's task waits in get/wait: lend its CPUs to other work meanwhile."""
        lease = self.leases.get(lease_id)
        if lease is None or lease.state is not GRANTED:
            return []
        transition(lease, BLOCKED, LEASE_TRANSITIONS, cause="blocked in get", who=lease_id)
        self.available["CPU"] = self.available.get("CPU", 0) + lease.shape.get("CPU", 0)
        actions: list[LeaseAction] = []
        self._schedule(actions)
        return actions

    def worker_unblocked(self, lease_id: bytes) -> None:
        """The lease's task runs again: it takes its CPUs back (no action)."""
        lease = self.leases.get(lease_id)
        if lease is not None and lease.state is BLOCKED:
            transition(lease, GRANTED, LEASE_TRANSITIONS, cause="unblocked", who=lease_id)
            self.available["CPU"] = self.available.get("CPU", 0) - lease.shape.get("CPU", 0)

    def worker_died(self, worker: Worker, why: str) -> list[LeaseAction]:
        """A worker's process exited: its lease ends, resources come back."""
        if worker.state is DEAD:
            return []
        actions: list[LeaseAction] = []
        if worker.state is W_STARTING and worker.for_request is None:
            if worker.env_key:
                self.starting_env[worker.env_key] -= 1
            else:
                self.starting -= 1
        elif worker.state is IDLE:
            pool = self.idle_env.get(worker.env_key, []) if worker.env_key else self.idle
            if worker in pool:
                pool.remove(worker)
        transition(worker, DEAD, WORKER_TRANSITIONS, cause=why, who=worker.worker_id)
        if worker.lease_id is not None:
            lease = self.leases.pop(worker.lease_id, None)
            worker.lease_id = None
            if lease is not None:
                shape = self.held_now(lease)
                transition(lease, REVOKED, LEASE_TRANSITIONS, cause=why, who=lease.lease_id)
                self._release(shape, lease.gpu_ids, actions)
        lease = worker.for_request
        if lease is not None:
            worker.for_request = None
            transition(lease, FAILED, LEASE_TRANSITIONS, cause=why, who=lease.lease_id)
            self._release(lease.shape, lease.gpu_ids, actions)
            actions.append(
                Reject(
                    lease, FailCode.WORKER_DIED, f"the worker for the actor died at start ({why})"
                )
            )
        self._schedule(actions)
        return actions

    def process_exited(self, worker: Worker) -> list[LeaseAction]:
        """A worker's process was reaped (worker_died may come first, at its connection's
        close, while it still exits): only now its place under the cap is free."""
        self.cap.exited(worker.worker_id)
        actions: list[LeaseAction] = []
        self._schedule(actions)
        return actions

    def owner_gone(self, owner: Owner) -> list[LeaseAction]:
        """A connection closed: what it waits for is dropped; whatever its workers run
        now has nobody to report to, so they are killed (a detached actor's stays)."""
        actions: list[LeaseAction] = []
        still = []
        for lease in self.pending:
            if lease.owner is owner:
                transition(lease, CANCELLED, LEASE_TRANSITIONS, cause="owner gone",
                           who=lease.lease_id)  # fmt: skip
            else:
                still.append(lease)
        self.pending = still
        if self.unmatched:
            self.unmatched = [r for r in self.unmatched if r.owner is not owner]
        for lease in self.leases.values():
            if lease.owner is owner and not lease.detached and lease.worker is not None:
                actions.append(KillWorker(lease.worker))
        self._schedule(actions)
        return actions

    def schedule(self) -> list[LeaseAction]:
        """Something outside changed (an owner's connection closed): try the waiting
        requests again."""
        actions: list[LeaseAction] = []
        self._schedule(actions)
        return actions

    def view_refreshed(self) -> list[LeaseAction]:
        """Fresh numbers from the other nodes arrived (a heartbeat's): the waiting
        requests are tried again, and those out of hops may move to a node with room."""
        actions: list[LeaseAction] = []
        if self.unmatched:  # a node with matching labels may have joined
            self._place_unmatched(actions)
        self._schedule(actions, fresh_view=True)
        return actions

    def stop(self) -> None:
        """The node is shutting down: grant and start nothing more."""
        self.stopping = True

    # ----------------------------------------------------------------- queries
    def place_shape(self, shape: dict[str, int], actor_id: bytes) -> Placement:
        """Where a lease of `shape` for the actor would go (the head's detached restarts)."""
        return self._place(Lease(b"", shape, actor_id, _Nobody(), 0))

    def waiting_long(self, now: float, after: float) -> list[tuple[Lease, str]]:
        """Requests waiting over `after` s for resources that actors hold (lease_waits)."""
        return lease_waits.waiting_on_actors(self, now, after)

    def pending_shapes(self, limit: int) -> list[dict[str, int]]:
        return [r.shape for r in self.pending[:limit]]

    # --------------------------------------------------------------- internals
    def _place(self, lease: Lease) -> Placement:
        if lease.conditions:
            return self._place_labeled(lease)
        view = self.view
        others = view.other_nodes()
        if not others and lease.strategy is None:  # one node: no choice
            return _HERE if scheduling.fits(lease.shape, self.total) else _INFEASIBLE
        if self._debited:
            others = [self._debited.get(n.node_id, n) for n in others]
        if lease.strategy == "SPREAD":
            self.spread_seq += 1
            lease.pinned = True  # placed once, round-robin: it waits where it lands
            lease.spilled = self.max_hops
        local = NodeView(view.node_id, view.tcp_address, self.total, self.available)
        return scheduling.place(lease.shape, lease.strategy, local, others, self.spread_seq)

    def _place_labeled(self, lease: Lease) -> Placement:
        others = self.view.other_nodes()
        if self._debited:
            others = [self._debited.get(n.node_id, n) for n in others]
        if lease.strategy == "SPREAD":
            self.spread_seq += 1
            lease.pinned = True
            lease.spilled = self.max_hops
        view = self.view
        local = NodeView(
            view.node_id, view.tcp_address, self.total, self.available, True, self.labels
        )
        return labels.place_labeled(
            lease.shape, lease.strategy, lease.conditions, local, others, self.spread_seq
        )

    def _place_unmatched(self, actions: list[LeaseAction]) -> None:
        still = []
        for lease in self.unmatched:
            if lease.owner.closed:
                transition(lease, CANCELLED, LEASE_TRANSITIONS, cause="owner gone",
                           who=lease.lease_id)  # fmt: skip
                continue
            where = self._place(lease)
            if where.kind in ("spill", "fail"):
                self._redirect(lease, where, actions)
            else:
                still.append(lease)
        self.unmatched = still

    def _redirect(self, lease: Lease, where: Placement, actions: list[LeaseAction]) -> None:
        """Answer a request with another node (spillback) or a failure."""
        node = where.node
        if where.kind == "fail" or node is None:
            transition(lease, FAILED, LEASE_TRANSITIONS, cause=where.kind, who=lease.lease_id)
            actions.append(Reject(lease, FailCode.AFFINITY_UNAVAILABLE, where.reason))
            return
        avail = dict(node.available)
        for k, v in lease.shape.items():
            avail[k] = avail.get(k, 0) - v
        self._debited[node.node_id] = NodeView(
            node.node_id, node.address, node.total, avail, node.alive, node.labels
        )
        transition(lease, SPILLED, LEASE_TRANSITIONS, cause="spillback", who=lease.lease_id)
        actions.append(Spillback(lease, node, avail))

    def _schedule(self, actions: list[LeaseAction], fresh_view: bool = False) -> None:
        if self.stopping:
            return
        waiting_for_pool = 0
        waiting_env: dict[str, list[Lease]] | None = None  # runtime envs' (rare: made lazily)
        capped = 0  # requests that would start a process but the cap is reached
        told = False
        still = []
        available = self.available
        for lease in self.pending:
            if lease.owner.closed:
                transition(lease, CANCELLED, LEASE_TRANSITIONS, cause="owner gone",
                           who=lease.lease_id)  # fmt: skip
                continue
            shape = lease.shape
            if not all(available.get(k, 0) >= v for k, v in shape.items()) or (
                "GPU" in shape and not self._gpus_fit(shape["GPU"])
            ):
                hops_left = lease.spilled < self.max_hops or fresh_view
                if self.cluster and hops_left and not lease.pinned:  # another node may have room
                    where = self._place(lease)
                    # Sent here already: move on again only to a node with room now
                    # (the view that sent it may have been stale), never to wait elsewhere.
                    moving = where.kind == "fail" or (
                        where.kind == "spill"
                        and where.node is not None
                        and (not lease.spilled or scheduling.fits(shape, where.node.available))
                    )
                    if moving:
                        self._redirect(lease, where, actions)
                        continue
                    if not told:  # a fresh view may find it room elsewhere
                        told = True
                        actions.append(RESOURCES_CHANGED)
                still.append(lease)
                continue
            if lease.actor_id is not None:
                if not self.cap.take():  # its process waits for room (resources not held)
                    capped += 1
                    still.append(lease)
                    continue
                lease.gpu_ids = self._acquire(shape)
                transition(lease, L_STARTING, LEASE_TRANSITIONS, cause="its worker starts",
                           who=lease.lease_id)  # fmt: skip
                actions.append(StartWorker(lease))
                continue
            if lease.env_key:  # only a worker of its env serves it
                pool = self.idle_env.get(lease.env_key)
                if pool:
                    lease.gpu_ids = self._acquire(shape)
                    self._grant(lease, pool.pop(), actions)
                    continue
                if waiting_env is None:
                    waiting_env = {}
                waiting_env.setdefault(lease.env_key, []).append(lease)
                still.append(lease)
                continue
            if self.idle:
                lease.gpu_ids = self._acquire(shape)
                self._grant(lease, self.idle.pop(), actions)
                continue
            waiting_for_pool += 1
            still.append(lease)
        self.pending = still
        self._debited.clear()
        for n in range(waiting_for_pool - self.starting, 0, -1):
            if not self.cap.take():
                capped += n
                break
            self.starting += 1
            actions.append(StartWorker(None))
        if waiting_env:
            for key, leases in waiting_env.items():
                for n in range(len(leases) - self.starting_env.get(key, 0), 0, -1):
                    if not self.cap.take():
                        capped += n
                        break
                    self.starting_env[key] = self.starting_env.get(key, 0) + 1
                    actions.append(StartWorker(None, key, leases[0].runtime_env))
        if capped > len(self.cap.reclaimed):
            self._reclaim(capped - len(self.cap.reclaimed), actions)

    def _reclaim(self, n: int, actions: list[LeaseAction]) -> None:
        """At the cap: kill up to `n` idle workers (other envs' first) for waiting requests;
        an idle worker left after _schedule serves none of them (else it was granted)."""
        for pool in [*self.idle_env.values(), self.idle]:
            while n and pool:
                worker = pool.pop(0)  # the longest idle
                transition(worker, LEASED, WORKER_TRANSITIONS, cause="reclaimed for the cap",
                           who=worker.worker_id)  # fmt: skip
                self.cap.reclaim(worker.worker_id)
                actions.append(KillWorker(worker))
                n -= 1
        for key in [k for k, pool in self.idle_env.items() if not pool]:
            del self.idle_env[key]

    def _grant(self, lease: Lease, worker: Worker, actions: list[LeaseAction]) -> None:
        """Give `worker` to `lease` (its resources are acquired already)."""
        transition(worker, LEASED, WORKER_TRANSITIONS, cause="granted", who=worker.worker_id)
        worker.lease_id = lease.lease_id
        lease.worker = worker
        transition(lease, GRANTED, LEASE_TRANSITIONS, cause="granted", who=lease.lease_id)
        self.leases[lease.lease_id] = lease
        if lease.owner.closed:  # gone while its worker started
            self._end(lease, REVOKED, lease.actor_id is not None, actions)
            return
        actions.append(Grant(lease, worker))

    def _end(self, lease: Lease, new: LeaseState, kill: bool, actions: list[LeaseAction]) -> None:
        del self.leases[lease.lease_id]
        shape = self.held_now(lease)
        transition(lease, new, LEASE_TRANSITIONS, cause="lease ended", who=lease.lease_id)
        self._release(shape, lease.gpu_ids, actions)
        worker = lease.worker
        assert worker is not None
        worker.lease_id = None
        if kill or worker.actor_id is not None:
            actions.append(KillWorker(worker))
        elif worker.state is LEASED:
            transition(worker, IDLE, WORKER_TRANSITIONS, cause="lease ended",
                       who=worker.worker_id)  # fmt: skip
            if worker.env_key:
                self.idle_env.setdefault(worker.env_key, []).append(worker)
            else:
                self.idle.append(worker)
        self._schedule(actions)

    @staticmethod
    def held_now(lease: Lease) -> dict[str, int]:
        """What a granted lease holds now: a blocked one lent its CPUs back."""
        if lease.state is BLOCKED:
            return {k: v for k, v in lease.shape.items() if k != "CPU"}
        return lease.shape

    def _acquire(self, shape: dict[str, int]) -> list[int]:
        available = self.available
        for k, v in shape.items():
            available[k] = available.get(k, 0) - v
        units = shape.get("GPU", 0)
        if not units:  # in a placement group: the bundle's GPUs, if it asks some
            return bundles.take_gpus(self.group_gpus, shape) if self.group_gpus else []
        free = self.gpu_free
        if units < RESOURCE_UNIT:  # a share of one GPU: the first with room (packing)
            gpu = next(i for i in sorted(free) if free[i] >= units)
            free[gpu] -= units
            return [gpu]
        ids = [i for i in sorted(free) if free[i] == RESOURCE_UNIT][: -(-units // RESOURCE_UNIT)]
        for i in ids:
            free[i] = 0
        return ids

    def fits_now(self, shape: dict[str, int]) -> bool:
        """The node has `shape` free now (a bundle's prepare, bundle_book.py)."""
        available = self.available
        return all(available.get(k, 0) >= v for k, v in shape.items()) and (
            "GPU" not in shape or self._gpus_fit(shape["GPU"])
        )

    def give_back(self, shape: dict[str, int], gpu_ids: list[int]) -> None:
        """Resources held outside a lease (a bundle's) come back; the caller schedules."""
        self._release(shape, gpu_ids, [])

    def _gpus_fit(self, units: int) -> bool:
        """A share fits on one GPU with room; whole GPUs must be wholly free."""
        free = self.gpu_free.values()
        if units < RESOURCE_UNIT:
            return any(v >= units for v in free)
        return sum(v == RESOURCE_UNIT for v in free) >= -(-units // RESOURCE_UNIT)

    def _release(
        self, shape: dict[str, int], gpu_ids: list[int], actions: list[LeaseAction]
    ) -> None:
        available = self.available
        for k, v in shape.items():
            available[k] = available.get(k, 0) + v
        if gpu_ids:
            units = shape.get("GPU", 0)
            if not units:  # a placement group's: back to its bundle
                bundles.give_gpus(self.group_gpus, shape, gpu_ids)
                actions.append(RESOURCES_CHANGED)
                return
            share = units if units < RESOURCE_UNIT else RESOURCE_UNIT
            for i in gpu_ids:
                self.gpu_free[i] = min(self.gpu_free[i] + share, RESOURCE_UNIT)
        actions.append(RESOURCES_CHANGED)
