"""Detached actors whose owner is gone: the head restarts them, as Ray's GCS does.

This is the head's half: deciding that the head (not the owner) restarts an actor,
and where. Owns no state of its own: it reads and writes ActorRec fields (owner,
owner_gone, restart) in the head's actor table. The node's half, leasing a worker
and running the constructor on it, is node/detached.py (on the node that gets
StartActor).

An owner restarts its own actors (core/actor_client.py, _life_ended). A detached actor
outlives its owner, so at creation the owner registers with the head what it takes
to start the actor again (RegisterDetached: the creation task, the class's code and
its inline arguments). Once the head has heard that the owner is gone (ClientDied),
a death of the actor's process with restarts left makes the head pick a node and send
it StartActor. That node leases itself a worker, pushes the creation task and reports
the new life to the head, as an owner would; callers find it through the head.

    owner ──RegisterDetached──▶ head ◀──ClientDied(owner)── its node
    actor's node ──ActorStateChanged(PROCESS_DIED)──▶ head ──StartActor──▶ a node
    that node: lease ─▶ worker ─PushTask─▶ TaskDone ─▶ ActorStateChanged(ALIVE)──▶ head

A detached actor whose constructor takes no refs (and has no scheduling strategy)
is created by the head from the start (CreateDetached, `create`): its creator hands
over the creation task before `.remote()` returns and finds the actor through the
head like a borrower, so killing the creator right after does not end the actor, as
on Ray. The head owns all its lives then (owner_gone from the start).

A detached actor whose constructor took refs is created by its creator and, if it
may restart, registered: those objects are its owner's and go with it; once the
owner is gone it is not restarted and ends DEAD with that cause.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .. import protocol as P
from .. import scheduling
from ..core.lifecycle import DEAD, RESTARTING

# head.head's Head and ActorRec: head.head calls this module, so naming them here
# (even for type checking) would be an import cycle.
Head = Any
ActorRec = Any


def restored(restart: dict[str, Any] | None) -> dict[str, Any] | None:
    """An actor's `restart` record as the head's storage gave it back: its push, stored
    as the PushTask's fields (protocol.nested), a PushTask again."""
    if restart is None:
        return None
    return {**restart, "push": P.from_fields(P.PushTask, list(restart["push"]))}


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
        if actor.state is RESTARTING:  # the owner died before it restarted it
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
        head.set_actor(actor, DEAD, cause)
        return True
    restart(head, actor, cause)
    return True


def create(head: Head, actor: ActorRec, msg: P.CreateDetached, owner_node: bytes) -> None:
    """A creator hands over a detached actor (CreateDetached): the head starts its
    first life and owns the later ones."""
    actor.class_name = msg.class_name
    actor.owner, actor.owner_node, actor.owner_gone = msg.creator, owner_node, True
    actor.restarts_left = msg.restarts_left
    actor.restart = {"push": msg.push, "shape": msg.shape, "runtime_env": msg.runtime_env}
    head.save_actor(actor)
    if actor.state is not DEAD:  # killed before it got here: nothing to start
        _start(head, actor, msg.push, "")


def restart(head: Head, actor: ActorRec, cause: str) -> None:
    if actor.restart is None or not actor.restarts_left:
        head.set_actor(actor, DEAD, cause)
        return
    if actor.restarts_left > 0:
        actor.restarts_left -= 1
    actor.restarts += 1
    head.set_actor(actor, RESTARTING, cause)
    push = actor.restart["push"]
    options = {**(push.actor_options or {}), "reconstructed": True}
    _start(head, actor, msgspec.structs.replace(push, actor_options=options), cause)


def _start(head: Head, actor: ActorRec, push: P.PushTask, cause: str) -> None:
    """Pick a node for a life of the actor and send it StartActor."""
    nm = head.nm
    shape = actor.restart["shape"]
    where = nm.place_shape(shape, actor.actor_id)
    env = actor.restart.get("runtime_env")
    msg = P.StartActor(actor.actor_id, actor.class_name, push, shape, actor.restarts_left, env)
    if where.kind == "here" and nm.head_only:  # the head runs no work: another node
        fits = [v for v in nm.other_nodes() if scheduling.fits(shape, v.available)]
        fits = fits or [v for v in nm.other_nodes() if scheduling.fits(shape, v.total)]
        best = max(fits, key=lambda v: v.available.get("CPU", 0), default=None)
        where = scheduling.Placement(best, "spill" if best else "infeasible")
    if where.kind == "here":
        nm.start_detached_actor(msg)
        return
    rec = head.nodes.get(where.node.node_id) if where.node is not None else None
    if rec is None or rec.conn is None or rec.conn.closed:
        why = f"No node can run it: {where.reason}"
        head.set_actor(actor, DEAD, f"{cause} {why}" if cause else why)
        return
    rec.conn.send(msg)
