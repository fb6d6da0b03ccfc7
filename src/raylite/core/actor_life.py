"""Each actor's lifecycle as this process sees it: its lives, and what ends them.

Owns ActorClient (one actor's record: its lifecycle state, which life it is on
(incarnation), the restart budget, why it died, where it lives, the calls queued,
in flight, or waiting for its next life) and ActorLives, the rules that move it:
a life ended, the constructor answered, the head said where a borrowed actor is,
a call's connection broke. Every way the end of a life is learned (the node's
ClientDied or NodeDied, a call whose connection broke, a failed reconnect, the
constructor's push, its exception, a refused lease, raylite.kill(), the head
saying a borrowed actor is dead) comes in through the one event, life_ended; a
word about an older life than the current one is ignored there.

Pure: events in, actions out (KillLease, ReportState, RestartActor, FailCalls,
Flush, Resolve); no lock, no I/O. The shell (actor_client, the CoreWorker's
lock held around each event) runs the actions once it has let go of the lock.
Not the sends of calls in order and their replies (the hot path: actor_client),
not the creation's lease (actor_client, leasing), not the head's actor table.

    life_ended ─▶ stale (older life, or DEAD): nothing
       │ creator, restarts left ─▶ RESTARTING: KillLease, ReportState, RestartActor
       │ borrower ─▶ RESTARTING: Resolve (ask the head where it is now)
       └ final, or no restarts left ─▶ DEAD: ReportState, FailCalls (+ the constructor)
    created ─▶ ALIVE: ReportState, Flush (the calls kept for this life first)
            └ the constructor raised ─▶ life_ended(final)
    located ─▶ ALIVE: Flush          call_lost ─▶ retry or FailCalls; life_ended
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgspec

from ..object_ref import ObjectRef
from .lease_queue import Lease
from .lifecycle import (
    ACTOR_TRANSITIONS,
    ALIVE,
    DEAD,
    FAILED,
    FINISHED,
    PENDING,
    PUSHED,
    QUEUED,
    RESTARTING,
    ActorState,
    spend_retry,
    transition,
)
from .tasks import TaskSpec, retry_task, task_transition

if TYPE_CHECKING:
    from ..transport import Connection


class ActorClient:
    """This process's view of one actor: where it is and calls not yet sent."""

    __slots__ = (
        "actor_id",
        "address",
        "class_name",
        "conn",
        "creation_ref",
        "creation_spec",
        "creator",
        "dead_cause",
        "end_when_idle",
        "failed_address",
        "incarnation",
        "inflight",
        "lease",
        "out_of_order",
        "queue",
        "resolving",
        "restarts_left",
        "retry_buffer",
        "state",
    )

    def __init__(self, actor_id: bytes, class_name: str, address: str | None = None) -> None:
        self.actor_id = actor_id
        self.class_name = class_name
        self.address = address
        self.conn: Connection | None = None
        self.queue: collections.deque[TaskSpec] = collections.deque()
        self.dead_cause: str | None = None
        self.lease: Lease | None = None
        self.resolving = False
        self.creator = False
        # lifecycle.py's table. A borrower's ALIVE: the head told it where the actor
        # is (an address that came with the handle may be stale); RESTARTING: it asks
        # again after a call failed.
        self.state = PENDING
        # Restarts (owner side): budget left (-1: unlimited), the creation task to
        # rerun, calls sent and not answered, calls to resend after the restart.
        self.restarts_left = 0
        self.incarnation = 0  # which life: a word about an older one is stale
        self.creation_spec: TaskSpec | None = None
        self.inflight: list[TaskSpec] = []
        self.retry_buffer: list[TaskSpec] = []
        self.failed_address: str | None = None
        self.creation_ref: ObjectRef | None = None
        # allow_out_of_order_execution: a call goes once its arguments are ready, not
        # after the calls made before it (actor_client._flush_actor_locked).
        self.out_of_order = False
        # No handle is left but calls are: the actor ends once they have (a call that
        # raised may be retried after the others were sent; actor_client).
        self.end_when_idle = False


def actor_transition(client: ActorClient, new: ActorState, cause: str) -> None:
    transition(client, new, ACTOR_TRANSITIONS, cause=cause, who=client.actor_id)


def process_died(client: ActorClient) -> str:
    return (
        f"The actor {client.class_name}'s worker process died unexpectedly "
        "(the process crashed or was killed)."
    )


# Actions: what the lives ask their shell (actor_client.py, no lock held) to do.


class KillLease(msgspec.Struct, frozen=True):
    """Give back the lease of a life that ended, its worker killed (ReturnLease)."""

    lease: Lease


class ReportState(msgspec.Struct, frozen=True):
    """Tell the head (ActorStateChanged, through our node manager) the actor's new
    state, where it lives now ("": nowhere), its worker's pid (0: none) and why."""

    client: ActorClient
    state: ActorState
    address: str
    pid: int
    cause: str
    restarts_left: int


class RestartActor(msgspec.Struct, frozen=True):
    """Run the constructor again for the actor's next life: a new lease, a new push."""

    client: ActorClient
    creation: TaskSpec


class FailCalls(msgspec.Struct, frozen=True):
    """Fail these calls for good with ActorDiedError(cause), and `creation`, the
    constructor, if it has not ended."""

    client: ActorClient
    specs: list[TaskSpec]
    cause: str
    creation: TaskSpec | None = None


class Flush(msgspec.Struct, frozen=True):
    """Send the actor's queued calls (or fail them, if it is dead)."""

    client: ActorClient


class Resolve(msgspec.Struct, frozen=True):
    """Ask the head where a borrowed actor lives now."""

    client: ActorClient


Action = KillLease | ReportState | RestartActor | FailCalls | Flush | Resolve


class ActorLives:
    """The actors this process knows (created or borrowed) and their lives; see the
    module docstring.

    `leases` is the lease queues' table of granted leases (a restart drops the old
    life's); `running` the shell's unfinished tasks by first return id (a constructor
    whose arguments are not ready yet is only there). Both are the shell's, written
    here only as said.
    """

    __slots__ = ("actors", "leases", "running")

    def __init__(self, leases: dict[bytes, Lease], running: Mapping[bytes, TaskSpec]) -> None:
        self.actors: dict[bytes, ActorClient] = {}
        self.leases = leases
        self.running = running

    def life_ended(
        self,
        client: ActorClient,
        incarnation: int | None,
        cause: str,
        *,
        final: bool = False,
        report: bool = True,
    ) -> list[Action]:
        """Life `incarnation` of the actor has ended (None: the current one, whichever):
        the one path for every way that is learned.

        A death is often reported by several sources, possibly after the restart it
        asks for has begun: only the first word about a given life counts. An actor
        this process created restarts if its budget allows, unless the end is `final`
        (killed, the constructor raised, no worker to be had, the head says it is
        dead); a borrowed one is looked for again. `report`: tell the head (not when it
        told us, or raylite.kill() tells it)."""
        if client.state is DEAD:
            return []
        if incarnation is not None and incarnation != client.incarnation:
            return []
        if not final and not client.creator:  # it may live on elsewhere: ask the head
            if client.address is not None:
                client.failed_address, client.address = client.address, None
                client.conn = None
                if client.state is not RESTARTING:
                    actor_transition(client, RESTARTING, cause)
            return [Resolve(client)]
        creation = client.creation_spec
        if final or creation is None or not spend_retry(client, "restarts_left"):
            return self._died(client, cause, report)
        if creation.state is PUSHED:
            task_transition(creation, FAILED, "its process died in the constructor")
        actor_transition(client, RESTARTING, cause)
        task_transition(creation, QUEUED, "the actor restarts")
        client.incarnation += 1
        client.conn, client.address = None, None
        actions: list[Action] = []
        old, client.lease = client.lease, None
        if old is not None:
            self.leases.pop(old.lease_id, None)
            actions.append(KillLease(old))
        actions.append(ReportState(client, RESTARTING, "", 0, "restarting", client.restarts_left))
        actions.append(RestartActor(client, creation))
        return actions

    def process_died(self, address: str, cause: str = "") -> list[Action]:
        """The process at `address` died: each actor we created that lived there ended
        its life (restart it now, not at its next call). `cause`: why, if its node
        said (the memory monitor killed it), else the generic words."""
        actions: list[Action] = []
        for client in list(self.actors.values()):
            if client.creator and client.address == address:
                why = cause or process_died(client)
                actions += self.life_ended(client, client.incarnation, why)
        return actions

    def node_died(self, node_id: bytes, address: str, prefix: str) -> list[Action]:
        """A node is gone: each actor we created that lived on it (its process at
        `address` or under `prefix`, "tcp:IP:", or its lease from that node) ended its
        life there."""
        actions: list[Action] = []
        for client in list(self.actors.values()):
            if not client.creator:
                continue
            where = client.address or ""
            lease = client.lease
            if (where and (where == address or (prefix and where.startswith(prefix)))) or (
                lease is not None and lease.node_id == node_id
            ):
                actions += self.life_ended(client, client.incarnation, process_died(client))
        return actions

    def created(
        self, client: ActorClient, spec: TaskSpec, pid: int, error: str | None
    ) -> list[Action]:
        """The constructor `spec` finished (`error`: it raised, as this text) in the
        worker `pid`: the actor is ALIVE and the calls kept for this life go first."""
        if client.state is DEAD or spec.incarnation != client.incarnation:
            return []
        task_transition(spec, FAILED if error is not None else FINISHED, "constructed")
        if error is not None:
            cause = f"The actor {client.class_name} died in its constructor: {error}"
            return self.life_ended(client, spec.incarnation, cause, final=True)
        actor_transition(client, ALIVE, "its constructor finished")
        client.queue.extendleft(reversed(client.retry_buffer))
        client.retry_buffer = []
        report = ReportState(client, ALIVE, client.address or "", pid, "", client.restarts_left)
        return [report, Flush(client)]

    def granted(self, client: ActorClient, spec: TaskSpec, lease: Lease) -> list[Action]:
        """The worker leased for the life that `spec` (the constructor) starts is ready:
        the actor lives there, unless it was killed while the worker started."""
        if client.state is DEAD:
            return [KillLease(lease)]
        client.lease = lease
        client.address = lease.address
        self.leases[lease.lease_id] = lease
        spec.pushed = True
        task_transition(spec, PUSHED, "pushed to the actor's worker")
        return []

    def located(self, client: ActorClient, address: str) -> list[Action]:
        """The head says a borrowed actor lives at `address`: send what waits for it."""
        client.address = address
        if client.state is not ALIVE and client.state is not DEAD:
            actor_transition(client, ALIVE, "the head says where it is")
        client.queue.extendleft(reversed(client.retry_buffer))
        client.retry_buffer = []
        return [Flush(client)]

    def call_lost(
        self, client: ActorClient, spec: TaskSpec, closed: bool, oom: str = ""
    ) -> list[Action]:
        """The connection of a call in flight broke: its process is gone, but the actor
        may come back (a restart, or a borrower finding it again). The call is sent
        again if it has retries (`closed`: this process is shutting down: no retry),
        else it fails; later calls wait for the new life. `oom`: the node's message
        if its memory monitor killed the process (the call fails with it)."""
        if spec not in client.inflight:
            # Its send failed and it was queued again (the connection's close can
            # fail the request too): this word is about a call never made.
            return []
        client.inflight.remove(spec)
        cause = oom or f"The actor {client.class_name}'s process died while running this call."
        if client.state is DEAD:
            return [FailCalls(client, [spec], client.dead_cause or cause)]
        # A call sent to a life that has since been replaced (restarted): its failure
        # says nothing of the actor now, whatever restarts are left.
        old_life = client.creator and spec.incarnation != client.incarnation
        retry = (not client.creator or client.restarts_left != 0 or old_life) and retry_task(
            spec, cause, closed
        )
        if retry:
            if old_life and client.state is ALIVE:  # the new life runs: send it there
                client.queue.appendleft(spec)
            else:
                client.retry_buffer.append(spec)
        ended = self.life_ended(client, spec.incarnation, oom or process_died(client))
        failed: list[Action] = (
            [] if retry else [FailCalls(client, [spec], client.dead_cause or cause)]
        )
        if not client.creator:
            return failed + ended
        return ended + failed + ([Flush(client)] if old_life else [])

    def _died(self, client: ActorClient, cause: str, report: bool) -> list[Action]:
        """The actor is dead for good: its queued calls and an unfinished constructor
        fail with ActorDiedError."""
        actor_transition(client, DEAD, cause)
        client.dead_cause = cause
        queued = client.retry_buffer + list(client.queue)
        client.queue.clear()
        client.retry_buffer = []
        creation = client.creation_spec
        if creation is None and client.creation_ref is not None:  # args not ready yet
            creation = self.running.get(client.creation_ref.id)
        actions: list[Action] = []
        if report:
            actions.append(ReportState(client, DEAD, client.address or "", 0, cause, 0))
        actions.append(FailCalls(client, queued, cause, creation))
        return actions
