"""The owner's lease queues: ready tasks by resource shape, and the leases that run them.

Owns Lease and SchedulingClass, and LeaseQueues: every scheduling class (its queue of
ready tasks, its idle leases with the time each went idle, its lease requests not yet
granted and where each waits), the leases this owner holds, and whether the linger
timer is set. It decides which idle lease runs which queued task, how many leases to
ask for (config.max_pending_leases a class), when to cancel requests (the queue is
empty), when to give back idle leases of other shapes (a class needs their resources),
which idle leases have lingered past config.lease_linger_s, what a dead node takes
with it and when a class's queue can never run (hard affinity to a missing node).

Pure: events in, actions out (Push, Ask, Cancel, GiveBack, ArmLinger, FailQueue); no
lock, no I/O, no clock: the time comes in as an argument. Not the messages, the
spillback hops, the timer or the pushes themselves (leasing, submission run the
actions under the CoreWorker's lock), not what runs on a lease (submission), not the
node's side of a lease (node/lease_book).

    enqueue ──▶ Push(idle lease, task) ... | Ask(class, lease_id) ... (up to the cap)
                                           | GiveBack(other shapes' idle leases)
    granted ──▶ Push + dispatch | idle (ArmLinger) | GiveBack (cancelled meanwhile)
    task_ended ──▶ Push(lease, next queued task) | idle (ArmLinger if none is set)
    lease_gone (its worker exits) ──▶ Ask (tasks wait) | nothing
    refused ──▶ dispatch (ask again) | FailQueue (hard affinity)
    queue empty ──▶ Cancel(each pending request, at the node it waits on)
    linger_over(now) ──▶ GiveBack(each lease idle past its linger) | ArmLinger(next)
"""

from __future__ import annotations

import collections
from typing import Any

import msgspec

from .. import protocol as P
from ..config import CONFIG, Config
from ..labels import Selected
from ..object_ref import new_id
from .tasks import TaskSpec

ShapeKey = tuple[Any, ...]  # sorted (resource, units) pairs, and ("@strategy", repr) if any


class Lease:
    """A worker leased by this owner, from its grant until it is given back."""

    __slots__ = (
        "address",
        "busy",
        "gpu_ids",
        "idle_at",
        "lease_id",
        "mark",
        "nm",
        "node_id",
        "pid",
        "queued",
        "returned",
        "sclass",
        "worker_id",
    )

    def __init__(self, grant: P.LeaseGranted, sclass: SchedulingClass, nm: str = "") -> None:
        self.lease_id = grant.lease_id
        self.node_id = grant.node_id
        self.nm = nm  # the node manager that granted it ("": ours)
        self.worker_id = grant.worker_id
        self.address = grant.address
        self.pid = grant.pid
        self.gpu_ids = grant.gpu_ids
        self.sclass = sclass
        self.busy: TaskSpec | None = None  # the task it runs (the first pushed of them)
        # Tasks pushed behind `busy` (pipelined: see LeaseQueues.pipeline), in order.
        self.queued: list[TaskSpec] = []
        self.mark = 0.0  # the shell's clock when `busy` began (its push or the last TaskDone)
        self.returned = False
        self.idle_at = 0.0  # the shell's clock (time.monotonic()) when it last went idle


class SchedulingClass:
    """Queued tasks of one resource shape and the worker leases serving them."""

    __slots__ = (
        "fast",
        "idle",
        "key",
        "label_selector",
        "pace",
        "pending",
        "queue",
        "retriable",
        "runtime_env",
        "shape",
        "strategy",
    )

    def __init__(
        self,
        key: ShapeKey,
        strategy: Any = None,
        runtime_env: dict[str, Any] | None = None,
        pace: float = CONFIG.pipeline_task_s,
    ) -> None:
        self.key = key
        self.shape: dict[str, int] = dict(k for k in key if k[0] not in ("@strategy", "@env"))
        self.runtime_env = runtime_env  # RequestLease.runtime_env (its key is in `key`)
        self.label_selector: dict[str, str] | None = None  # RequestLease.label_selector
        if type(strategy) is Selected:
            self.label_selector = dict(strategy.selector)
            strategy = strategy.strategy
        self.strategy = strategy
        self.queue: collections.deque[TaskSpec] = collections.deque()
        self.idle: list[Lease] = []
        # Its last task took under config.pipeline_task_s: pushes may run ahead.
        self.fast = False
        # Seconds between a lease's TaskDones, averaged (the last ones weigh most):
        # how long its tasks take at a worker. It bounds how many queue behind a
        # running one (LeaseQueues.pipeline); a new class starts cautious (at
        # pipeline_task_s: one task behind the running one).
        self.pace = pace
        # Lease ids requested, not yet granted -> the node manager asked ("": ours).
        self.pending: dict[bytes, str] = {}
        # RequestLease.retriable when no task is queued (a request takes its first
        # queued task's, as Ray's lease spec): the memory monitor kills those first.
        self.retriable = True


# Actions: what the queues ask their shell (leasing.py, the CoreWorker's lock held) to do.


class Push(msgspec.Struct, frozen=True, gc=False):
    """Run `spec` on `lease`. One per task on the hot path: a Struct builds in C
    (about 0.06 us; a frozen slots dataclass about 0.5 us), untracked by the cyclic
    collector (it is dropped as soon as it is run: never part of a cycle)."""

    lease: Lease
    spec: TaskSpec


class Ask(msgspec.Struct, frozen=True):
    """Request a lease for `sclass` from our node manager, under `lease_id` (already
    pending in the class): RequestLease, following spillbacks."""

    sclass: SchedulingClass
    lease_id: bytes


class Cancel(msgspec.Struct, frozen=True):
    """The request is no longer wanted: CancelLease to the node it waits on ("": ours)."""

    lease_id: bytes
    nm: str


class GiveBack(msgspec.Struct, frozen=True):
    """Return an idle lease to the node that granted it (its worker stays)."""

    lease: Lease


class ArmLinger(msgspec.Struct, frozen=True):
    """Call linger_over in `delay` seconds."""

    delay: float


class FailQueue(msgspec.Struct, frozen=True):
    """These tasks can never be placed: fail them with TaskUnschedulableError(reason),
    or TaskPlacementGroupRemoved (`group_removed`: their placement group is gone) or
    RuntimeEnvSetupError(reason) (`env_failed`: their runtime env failed to build)."""

    specs: list[TaskSpec]
    reason: str
    group_removed: bool = False
    env_failed: bool = False


Action = Push | Ask | Cancel | GiveBack | ArmLinger | FailQueue


class LeaseQueues:
    """The scheduling classes and leases of one owner; see the module docstring.

    `leases` holds every granted lease not yet given back, actor leases too: the shell
    adds an actor's (it is granted outside the queues) and drops a lease whose worker
    is killed; the queues drop the ones they give back.
    """

    __slots__ = (
        "classes",
        "depth",
        "leases",
        "linger_armed",
        "linger_s",
        "max_pending",
        "pipeline_s",
    )

    def __init__(self, config: Config = CONFIG) -> None:
        self.classes: dict[ShapeKey, SchedulingClass] = {}
        self.leases: dict[bytes, Lease] = {}
        self.linger_armed = False  # an ArmLinger is out: linger_over will be called
        self.linger_s = config.lease_linger_s
        self.max_pending = config.max_pending_leases
        self.pipeline_s = config.pipeline_task_s
        self.depth = config.pipeline_depth

    # -- tasks -------------------------------------------------------------------

    def enqueue(self, spec: TaskSpec) -> list[Action]:
        """A task is ready to run: an idle lease of its shape takes it, or it waits."""
        sc = self.classes.get(spec.shape_key)
        if sc is None:
            sc = self.classes[spec.shape_key] = SchedulingClass(
                spec.shape_key, spec.strategy, spec.runtime_env, self.pipeline_s
            )
            sc.retriable = spec.max_retries != 0
        elif sc.idle and not sc.queue and not sc.pending:  # the hot path, as _dispatch would
            return [Push(sc.idle.pop(), spec)]
        sc.queue.append(spec)
        actions: list[Action] = []
        self._dispatch(sc, actions)
        return actions

    def task_ended(self, lease: Lease, now: float) -> Push | ArmLinger | None:
        """A task on `lease` ended (the shell has moved lease.busy to the next task
        pushed to it, if any) and the lease is still ours: it runs the next queued task
        of its class, or goes idle at `now`."""
        sc = lease.sclass
        interval = now - lease.mark
        sc.fast = interval < self.pipeline_s
        sc.pace += (interval - sc.pace) * 0.25
        lease.mark = now
        if lease.busy is not None:  # a pipelined task runs now: keep one more queued
            return self.pipeline(lease)
        if sc.queue:
            return Push(lease, sc.queue.popleft())
        sc.idle.append(lease)  # _idle, inlined: this is the hot path of a roundtrip loop
        lease.idle_at = now
        if self.linger_armed:
            return None
        self.linger_armed = True
        return ArmLinger(self.linger_s)

    def pipeline(self, lease: Lease) -> Push | None:
        """One more queued task for a busy lease, pushed behind its running one, if its
        class's tasks are short and retriable (a pushed task the worker never began
        is retried if the worker dies) and others still wait for it.

        Behind the running task wait at most pipeline_task_s of work at the class's
        pace (one task at least, depth - 1 at most): enough that the worker never
        idles while its owner reads a batch of replies and pushes the next tasks,
        and little enough that a lease never holds much work other leases could run.
        """
        sc = lease.sclass
        if not sc.fast or not sc.queue:
            return None
        waiting = len(lease.queued)
        if waiting >= self.depth - 1 or (waiting and (waiting + 1) * sc.pace > self.pipeline_s):
            return None
        if sc.strategy is not None:  # SPREAD, affinity: its tasks go to their own leases
            return None
        busy, spec = lease.busy, sc.queue[0]
        if (
            busy is None
            or busy.max_retries == 0
            or spec.max_retries == 0
            or spec.generator
            or busy.generator
            or not spec.pipelinable
            or not busy.pipelinable
        ):
            return None
        return Push(lease, sc.queue.popleft())

    def lease_gone(self, lease: Lease) -> list[Action]:
        """A task on `lease` ended and its worker exits (max_calls): the lease is no
        longer ours (the shell gives it back); its class asks for another if tasks wait."""
        lease.returned = True
        self.leases.pop(lease.lease_id, None)
        actions: list[Action] = []
        if lease.sclass.queue:
            self._dispatch(lease.sclass, actions)
        return actions

    def dequeue(self, spec: TaskSpec) -> None:
        """A queued task was cancelled: it leaves its class's queue (if it is there)."""
        sc = self.classes.get(spec.shape_key)
        if sc is not None and spec in sc.queue:
            sc.queue.remove(spec)

    def fail_queue(self, sc: SchedulingClass) -> list[TaskSpec]:
        """Empty a class's queue: its tasks can never be placed."""
        queued = list(sc.queue)
        sc.queue.clear()
        return queued

    # -- lease requests ----------------------------------------------------------

    def granted(self, lease: Lease, now: float) -> list[Action]:
        """A request of lease.sclass was granted (lease.lease_id is the request's id)."""
        sc = lease.sclass
        self.leases[lease.lease_id] = lease
        actions: list[Action] = []
        if sc.pending.pop(lease.lease_id, None) is None:  # cancelled meanwhile
            self._give_back(lease, actions)
        elif sc.queue:
            actions.append(Push(lease, sc.queue.popleft()))
            self._dispatch(sc, actions)
        else:
            arm = self._idle(lease, now)
            if arm is not None:
                actions.append(arm)
        return actions

    def spilled(self, sc: SchedulingClass, lease_id: bytes, address: str) -> bool:
        """The request is sent on to the node manager at `address`; False if it was
        cancelled meanwhile (then it is not followed)."""
        if lease_id not in sc.pending:
            return False
        sc.pending[lease_id] = address
        return True

    def refused(
        self,
        sc: SchedulingClass,
        lease_id: bytes,
        *,
        gone: bool,
        unplaceable: str | None = None,
        group_removed: bool = False,
        env_failed: bool = False,
    ) -> list[Action]:
        """The request failed: ask again if tasks still wait, unless nothing would
        answer (`gone`: our node manager is gone), or fail them if they can never be
        placed (`unplaceable`: why, for hard affinity to a node that is not there)."""
        actions: list[Action] = []
        if sc.pending.pop(lease_id, None) is not None and sc.queue and not gone:
            if unplaceable is not None:
                actions.append(
                    FailQueue(self.fail_queue(sc), unplaceable, group_removed, env_failed)
                )
            else:
                self._dispatch(sc, actions)
        return actions

    # -- idle leases -------------------------------------------------------------

    def linger_over(self, now: float) -> list[Action]:
        """The linger timer fired: give back the leases idle for linger_s by `now`, and
        set the timer for the next one due (one timer serves every idle lease, so a
        lease going idle after each task costs a time stamp, not a timer)."""
        actions: list[Action] = []
        linger = self.linger_s
        first: float | None = None
        for sc in self.classes.values():
            if not sc.idle:
                continue
            kept = []
            for lease in sc.idle:
                if lease.idle_at + linger <= now:
                    self._give_back(lease, actions)
                else:
                    kept.append(lease)
                    if first is None or lease.idle_at < first:
                        first = lease.idle_at
            if len(kept) != len(sc.idle):
                sc.idle[:] = kept
        if first is None:
            self.linger_armed = False
        else:
            actions.append(ArmLinger(first + linger - now))
        return actions

    def release_idle(self) -> list[Action]:
        """Give back every idle lease (so the cluster's resource view is exact)."""
        actions: list[Action] = []
        for sc in self.classes.values():
            while sc.idle:
                self._give_back(sc.idle.pop(), actions)
        return actions

    def node_died(self, node_id: bytes) -> set[str]:
        """A node is gone: its idle leases are dropped (there is nothing to give back
        them to). Returns the worker addresses of all its leases: the shell closes those
        connections, which fails the tasks running there into their retries."""
        on_node = {lease.address for lease in self.leases.values() if lease.node_id == node_id}
        if on_node:
            for sc in self.classes.values():
                kept = []
                for lease in sc.idle:
                    if lease.node_id == node_id:
                        lease.returned = True
                        self.leases.pop(lease.lease_id, None)
                    else:
                        kept.append(lease)
                sc.idle = kept
        return on_node

    # -- the steps ---------------------------------------------------------------

    def _dispatch(self, sc: SchedulingClass, actions: list[Action]) -> None:
        """Idle leases take queued tasks; ask for leases for the rest (at most
        max_pending in flight); cancel the requests once nothing waits."""
        queue, idle = sc.queue, sc.idle
        while queue and idle:
            actions.append(Push(idle.pop(), queue.popleft()))
        want = min(len(queue), self.max_pending) - len(sc.pending)
        if want > 0:
            # Idle leases of other shapes hold resources these tasks may need: give
            # them back now rather than after their linger time.
            for other in self.classes.values():
                while other is not sc and other.idle:
                    self._give_back(other.idle.pop(), actions)
            for _ in range(want):
                lease_id = new_id()
                sc.pending[lease_id] = ""
                actions.append(Ask(sc, lease_id))
        if not queue and sc.pending:
            actions.extend(Cancel(lease_id, nm) for lease_id, nm in sc.pending.items())
            sc.pending.clear()

    def _idle(self, lease: Lease, now: float) -> ArmLinger | None:
        lease.sclass.idle.append(lease)
        lease.idle_at = now
        if self.linger_armed:
            return None
        self.linger_armed = True
        return ArmLinger(self.linger_s)

    def _give_back(self, lease: Lease, actions: list[Action]) -> None:
        if not lease.returned:
            lease.returned = True
            self.leases.pop(lease.lease_id, None)
            actions.append(GiveBack(lease))
