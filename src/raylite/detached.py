"""Detached actors whose owner is gone: the head restarts them, as Ray's GCS does.

An owner restarts its own actors (core_worker._restart_actor). A detached actor
outlives its owner, so at creation the owner registers with the head what it takes
to start the actor again (RegisterDetached: the creation task, the class's code and
its inline arguments). Once the head has heard that the owner is gone (ClientDied),
a death of the actor's process with restarts left makes the head pick a node and send
it StartActor. That node leases itself a worker, pushes the creation task and reports
the new life to the head, as an owner would; callers find it through the head.

    owner ──RegisterDetached──▶ head ◀──ClientDied(owner)── its node
    actor's node ──ActorStateChanged(PROCESS_DIED)──▶ head ──StartActor──▶ a node
    that node: lease ─▶ worker ─PushTask─▶ TaskDone ─▶ ActorStateChanged(ALIVE)──▶ head

A detached actor whose constructor took refs is not registered: those objects were
its owner's and are gone with it; it ends DEAD with that cause.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from . import protocol as P
from . import scheduling
from .exceptions import ConnectionLost
from .object_ref import new_id
from .serialization import loads_inline
from .transport import async_connect

if TYPE_CHECKING:
    from .head import ActorRec, Head
    from .node_manager import NodeManager

log = logging.getLogger("raylite")

START_TIMEOUT_S = 60.0  # a restarted life's worker must come up within this


# ------------------------------------------------------------------- the head
def owner_gone(head: Head, address: str = "", node_id: bytes = b"") -> None:
    """A process is gone (or every process of a node): the detached actors it owned
    are the head's to restart now."""
    for actor in head.actors.values():
        if actor.owner_gone or not actor.owner:
            continue
        if actor.owner != address and (not node_id or actor.owner_node != node_id):
            continue
        actor.owner_gone = True
        head.save_actor(actor)
        if actor.state == "RESTARTING":  # the owner died before it restarted it
            restart(head, actor, actor.cause)


def process_died(head: Head, actor: ActorRec, cause: str) -> bool:
    """The head's part when an actor's process died: True if it restarts it (or ends
    it) itself, False if the owner is alive and does."""
    if not actor.owner_gone:
        return False
    if actor.restarts_left and actor.restart is None:
        cause += (
            " It was not restarted: its owner is gone, and its constructor's arguments"
            " (object refs) went with it."
        )
        actor.restarts_left = 0
    if not actor.restarts_left:
        head.set_actor(actor, "DEAD", cause)
        return True
    restart(head, actor, cause)
    return True


def restart(head: Head, actor: ActorRec, cause: str) -> None:
    if actor.restart is None or not actor.restarts_left:
        head.set_actor(actor, "DEAD", cause)
        return
    if actor.restarts_left > 0:
        actor.restarts_left -= 1
    actor.restarts += 1
    head.set_actor(actor, "RESTARTING", cause)
    nm = head.nm
    shape = actor.restart["shape"]
    from .node_manager import LeaseReq

    where = nm.place(LeaseReq(b"", shape, actor.actor_id, None, 0))  # type: ignore[arg-type]
    msg = P.StartActor(
        actor.actor_id, actor.class_name, actor.restart["push"], shape, actor.restarts_left
    )
    if where.kind == "here" and nm.head_only:  # the head runs no work: another node
        fits = [v for v in nm.other_nodes() if scheduling.fits(shape, v.available)]
        fits = fits or [v for v in nm.other_nodes() if scheduling.fits(shape, v.total)]
        best = max(fits, key=lambda v: v.available.get("CPU", 0), default=None)
        where = scheduling.Placement(best, "spill" if best else "infeasible")
    if where.kind == "here":
        nm.spawn(start_actor(nm, msg))
        return
    rec = head.nodes.get(where.node.node_id) if where.node is not None else None
    if rec is None or rec.conn is None or rec.conn.closed:
        head.set_actor(actor, "DEAD", f"{cause} No node can run it again: {where.reason}")
        return
    rec.conn.send(msg)


# ------------------------------------------------------------------- a node
class _SelfOwner:
    """Stands in for an owner's connection on the lease a node gives itself."""

    def __init__(self, fut: asyncio.Future[Any]) -> None:
        self.fut = fut
        self.closed = False
        self.peer = None

    def reply(self, rid: int, msg: Any) -> None:
        if not self.fut.done():
            self.fut.set_result(msg)

    def send(self, msg: Any) -> None:
        self.reply(0, msg)


async def start_actor(nm: NodeManager, msg: P.StartActor) -> None:
    """Lease a worker here, run the actor's constructor on it, tell the head."""
    from .node_manager import MAX_HOPS, LeaseReq

    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    owner = _SelfOwner(fut)
    req = LeaseReq(new_id(), msg.shape, msg.actor_id, owner, 1, spilled=MAX_HOPS, detached=True)  # type: ignore[arg-type]
    nm.pending.append(req)
    nm.schedule()
    try:
        granted = await asyncio.wait_for(fut, START_TIMEOUT_S)
    except TimeoutError:
        granted = P.Failed(f"no worker started within {START_TIMEOUT_S:.0f} s")
    if not isinstance(granted, P.LeaseGranted):
        owner.closed = True  # a request still pending is dropped
        nm.schedule()
        _report(nm, msg, "DEAD", cause=f"It could not be restarted: {granted}")
        return
    fields = list(msg.push)
    fields[7] = nm.tcp_address  # owner: this node (clusters only: detached actors)
    fields[10] = list(granted.gpu_ids)
    try:
        conn = await async_connect(granted.address, nm.token)
        nm.spawn(conn.read_loop(lambda c, m, r: None))
        reply = await conn.request(P.PushTask(*fields))
    except ConnectionLost:
        return  # the worker died: its node reports PROCESS_DIED, the head decides again
    if isinstance(reply, P.TaskDone) and reply.returns and reply.returns[0][1] != P.ERROR:
        nm.kept_actors[msg.actor_id] = conn  # the lease's owner: held while it lives
        _report(nm, msg, "ALIVE", granted.address, reply.worker_pid)
        return
    error = "no answer"
    if isinstance(reply, P.TaskDone) and reply.returns:
        error = str(loads_inline(reply.returns[0][2]))
    conn.close()
    _report(nm, msg, "DEAD", cause=f"The actor {msg.class_name} died in its constructor: {error}")


def _report(
    nm: NodeManager, msg: P.StartActor, state: str, address: str = "", pid: int = 0, cause: str = ""
) -> None:
    log.info("detached actor %s restarted by the head: %s", msg.actor_id.hex()[:12], state)
    restarts_left = msg.restarts_left if state == "ALIVE" else 0
    nm.to_head(
        P.ActorStateChanged(msg.actor_id, state, msg.class_name, address, pid, cause, restarts_left)
    )
