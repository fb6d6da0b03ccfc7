"""Detached actors, the node's half: start a life of one the head creates or restarts.

The head's half (head/detached.py) decides that the head, not the owner, creates a
detached actor (CreateDetached) or restarts one whose owner is gone, and picks the
node. That node gets StartActor
and does what an owner would: lease itself a worker (a Lease whose connection is
a _SelfOwner), push the creation task, keep the connection while the actor lives
(`kept_actors`, cluster_link.py) and report the new life to the head. Owns no state.

    head ──StartActor──▶ node: lease ─▶ worker ─PushTask─▶ TaskDone
    node ──ActorStateChanged(ALIVE | DEAD)──▶ head
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec

from .. import protocol as P
from ..exceptions import ConnectionLost
from ..object_ref import new_id
from ..runtime_env.spec import env_key
from ..serialization import loads_inline
from ..transport_async import async_connect
from .lease_book import Lease

# manager.py imports this module (through cluster_link): naming it here, even for type checking, would be an import cycle.
NodeManager = Any

log = logging.getLogger(__name__)


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
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    owner = _SelfOwner(fut)
    lease = Lease(new_id(), msg.shape, msg.actor_id, owner, 1, detached=True)
    if msg.runtime_env is not None:  # its worker is of the actor's env
        lease.runtime_env, lease.env_key = msg.runtime_env, env_key(msg.runtime_env)
    nm.request_lease_here(lease)
    # It waits for resources as any actor's creation does (a pinned lease, warned
    # about by the lease book if it waits long); a worker that cannot start fails it.
    granted = await fut
    if not isinstance(granted, P.LeaseGranted):
        owner.closed = True  # a request still pending is dropped
        nm.schedule()
        why = granted.reason if isinstance(granted, P.Failed) else repr(granted)
        _report(nm, msg, "DEAD", cause=f"It could not be started: {why}")
        return
    # This node is the life's owner (clusters only: detached actors), on its lease.
    push = msgspec.structs.replace(msg.push, owner=nm.tcp_address, gpu_ids=list(granted.gpu_ids))
    try:
        conn = await async_connect(granted.address, nm.token)
        nm.spawn(conn.read_loop(lambda c, m, r: None))
        reply = await conn.request(push)
    except ConnectionLost:
        return  # the worker died: its node reports PROCESS_DIED, the head decides again
    done = reply.returns[0] if isinstance(reply, P.TaskDone) and reply.returns else None
    if done is not None and done.kind != P.ERROR:
        nm.kept_actors[msg.actor_id] = conn  # the lease's owner: held while it lives
        _report(nm, msg, "ALIVE", granted.address, reply.worker_pid)
        return
    error = "no answer" if done is None else str(loads_inline(done.data))
    conn.close()
    _report(nm, msg, "DEAD", cause=f"The actor {msg.class_name} died in its constructor: {error}")


def _report(
    nm: NodeManager, msg: P.StartActor, state: str, address: str = "", pid: int = 0, cause: str = ""
) -> None:
    log.info("detached actor %s started by the head: %s", msg.actor_id.hex()[:12], state)
    restarts_left = msg.restarts_left if state == "ALIVE" else 0
    nm.to_head(
        P.ActorStateChanged(msg.actor_id, state, msg.class_name, address, pid, cause, restarts_left)
    )
