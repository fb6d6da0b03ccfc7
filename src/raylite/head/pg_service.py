"""Placement groups, the head's shell: requests in, the table's actions sent to nodes.

Owns the PlacementGroupTable (placement_groups.py: the decisions) and its rows in the
head's storage (a head started again on it finds its groups), the requests
waiting for a group (`waiters`: WaitPlacementGroup until created, removed or timed
out) and the running of the table's actions: PrepareBundles to each chosen node
(its reply is the table's `prepared` event; no reply counts as no), CommitBundles,
CancelBundles; the head's node table learns what a commit adds to a node (and the
other nodes at once, by a ClusterView), so lease requests for a group's resources
find their node. On its own node the head calls the node manager (NodePort); other
nodes are reached over their connections. On one machine the head runs in the node
manager's process, so there every step is a call.

    driver ──CreatePlacementGroup──▶ head ──PrepareBundles──▶ nodes ──Ok/Failed──▶ head
         ◀──PlacementGroupCreated──       ──CommitBundles | CancelBundles──▶ nodes
    driver ──WaitPlacementGroup──▶ head ──PlacementGroupReady (created | timeout)──▶
    driver ──RemovePlacementGroup──▶ head ──CancelBundles(removed)──▶ every node ──Ok──▶

Groups waiting for room are tried again when room may have come: a node joined or
reported (heartbeat), the head's node gave resources back, a group was removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import msgpack

from .. import bundles as B
from .. import protocol as P
from ..config import CONFIG, from_units
from ..exceptions import ConnectionLost
from ..labels import NODE_ID_LABEL
from .placement_groups import (
    REMOVED,
    Cancel,
    Commit,
    Created,
    Infeasible,
    PGAction,
    PGRec,
    PlacementGroupTable,
    Prepare,
    Removed,
    restored,
)

if TYPE_CHECKING:
    from ..transport_async import AsyncConnection

# head.head's Head: it makes this service, so naming it here (even for type checking)
# would be an import cycle.
Head = Any

log = logging.getLogger("raylite.head")


JOB_NAMESPACE = "_raylite_jobs"  # the groups that hold jobs' entrypoint resources


class _FutureReply:
    """Stands for a connection among `waiters`: the answer goes to a future."""

    closed = False

    def __init__(self, fut: asyncio.Future[bool]) -> None:
        self.fut = fut

    def reply(self, rid: int, msg: Any) -> None:
        if not self.fut.done():
            self.fut.set_result(isinstance(msg, P.PlacementGroupReady) and msg.ready)


def _not_found(pg_id: bytes) -> P.Failed:
    return P.Failed(
        P.FailCode.NOT_FOUND, f"Placement group PlacementGroupID({pg_id.hex()}) does not exist."
    )


class PlacementGroupService:
    """The head's placement groups; see the module docstring."""

    def __init__(self, head: Head) -> None:
        self.head = head
        self.storage = head.storage
        self.table = PlacementGroupTable()
        self.waiters: dict[bytes, list[tuple[Any, int, asyncio.TimerHandle | None]]] = {}
        self._kicked = False
        self.handlers: dict[type, Any] = {
            P.CreatePlacementGroup: self.on_create,
            P.RemovePlacementGroup: self.on_remove,
            P.WaitPlacementGroup: self.on_wait,
            P.GetPlacementGroups: self.on_get,
        }

    # ------------------------------------------------------------------ storage
    def load(self) -> int:
        """The groups of a head started again on the same storage (their nodes rejoin
        with the bundles they hold; a node that does not is marked dead, and its
        bundles are placed again)."""
        for blob in self.storage.scan("placement_groups").values():
            self.table.create(restored(msgpack.unpackb(blob, raw=False, strict_map_key=False)))
        return len(self.table.groups)

    def save(self, pg: PGRec) -> None:
        blob = msgpack.packb(pg.row(), use_bin_type=True)
        self.storage.put("placement_groups", pg.pg_id, blob)
        forgotten, self.table.forgotten = self.table.forgotten, []
        for pg_id in forgotten:  # the oldest removed ones, no longer shown
            self.storage.delete("placement_groups", pg_id)

    # ------------------------------------------------------------------ requests
    def on_create(self, conn: AsyncConnection, msg: P.CreatePlacementGroup, rid: int) -> None:
        if msg.name and self.table.named(msg.namespace, msg.name) is not None:
            conn.reply(
                rid,
                P.Failed(
                    P.FailCode.BAD_REQUEST,
                    f"Failed to create placement group '{msg.pg_id.hex()}' because name "
                    f"'{msg.name}' already exists.",
                ),
            )
            return
        node = conn.peer if conn is not None else None
        pg = PGRec(
            msg.pg_id,
            [dict(b) for b in msg.bundles],
            msg.strategy,
            msg.name,
            msg.namespace,
            msg.detached,
            msg.owner,
            getattr(node, "node_id", self.head.nm.node_id),
            job=msg.job_id,
            created_at=time.time(),
            selectors=[dict(s) for s in msg.bundle_label_selector],
        )
        self.table.create(pg)
        self.save(pg)
        actions = self.table.schedule(self.views(), time.time())
        conn.reply(rid, P.PlacementGroupCreated(not any(
            isinstance(a, Infeasible) and a.pg is pg for a in actions
        )))  # fmt: skip
        self.run(actions)

    def on_remove(self, conn: AsyncConnection, msg: P.RemovePlacementGroup, rid: int) -> None:
        self.run(self.table.remove(msg.pg_id))
        conn.reply(rid, P.Ok())

    def on_wait(self, conn: AsyncConnection, msg: P.WaitPlacementGroup, rid: int) -> None:
        pg = self.table.groups.get(msg.pg_id)
        if pg is None or pg.state is REMOVED:
            conn.reply(rid, _not_found(msg.pg_id))
            return
        if pg.state == "CREATED":
            conn.reply(rid, P.PlacementGroupReady(True))
            return
        timer = None
        if msg.timeout_s >= 0:
            entry: list[Any] = []

            def expire() -> None:
                waiting = self.waiters.get(msg.pg_id, [])
                if entry and entry[0] in waiting:
                    waiting.remove(entry[0])
                    if not conn.closed:
                        conn.reply(rid, P.PlacementGroupReady(False))

            timer = asyncio.get_running_loop().call_later(msg.timeout_s, expire)
            entry.append((conn, rid, timer))
            self.waiters.setdefault(msg.pg_id, []).append(entry[0])
            return
        self.waiters.setdefault(msg.pg_id, []).append((conn, rid, timer))

    def on_get(self, conn: AsyncConnection, msg: P.GetPlacementGroups, rid: int) -> None:
        if msg.pg_id is not None:
            one = self.table.groups.get(msg.pg_id)
            groups = [one] if one is not None else []
        elif msg.name:
            named = self.table.named(msg.namespace, msg.name)
            groups = [named] if named is not None else []
        else:  # a job's entrypoint group is no user's (Ray's table has no such group)
            groups = [g for g in self.table.groups.values() if g.namespace != JOB_NAMESPACE]
        conn.reply(rid, P.PlacementGroupRows([g.row() for g in groups]))

    # ------------------------------------------------------------------ in-process
    def reserve(
        self, pg_id: bytes, bundle: dict[str, int], node_id: bytes, name: str
    ) -> asyncio.Future[bool]:
        """A one-bundle group pinned to `node_id` (its ray.io/node-id label), for a
        caller in the head's process (a job's entrypoint resources, job_supervisor.py):
        the future is True once it is created, False if it was removed first. It stays
        pending while the node has no room; the caller removes it (release)."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        pg = PGRec(
            pg_id,
            [dict(bundle)],
            "STRICT_PACK",
            name,
            JOB_NAMESPACE,
            True,  # detached: no driver or job owns it, the supervisor removes it
            "",
            self.head.nm.node_id,
            created_at=time.time(),
            selectors=[{NODE_ID_LABEL: node_id.hex()}],
        )
        self.table.create(pg)
        self.save(pg)
        self.waiters.setdefault(pg_id, []).append((_FutureReply(fut), 0, None))
        self.run(self.table.schedule(self.views(), time.time()))
        return fut

    def release(self, pg_id: bytes) -> None:
        """Remove a group made by reserve (its resources are free at once)."""
        self.run(self.table.remove(pg_id))

    # ------------------------------------------------------------------ events
    def kick(self) -> None:
        """Room may have come: try the waiting groups soon (once, however often asked)."""
        if self._kicked or not self.table.waiting():
            return
        self._kicked = True

        def run() -> None:
            self._kicked = False
            self.run(self.table.schedule(self.views(), time.time()))

        asyncio.get_running_loop().call_soon(run)

    def node_died(self, node_id: bytes) -> None:
        moved = [g for g in self.table.groups.values() if node_id in g.nodes.values()]
        self.run(self.table.node_died(node_id))
        self.run(self.table.owner_gone(node_id=node_id))
        for pg in moved:
            self.save(pg)
        self.kick()

    def client_died(self, address: str) -> None:
        self.run(self.table.owner_gone(address=address))

    def job_finished(self, job_id: bytes) -> None:
        self.run(self.table.owner_gone(job=job_id))

    def views(self) -> list[Any]:
        head = self.head
        own = head.nodes.get(head.nm.node_id)
        if own is not None:
            own.available = dict(head.nm.available)
        return head.node_views()

    # ------------------------------------------------------------------ actions
    def run(self, actions: list[PGAction]) -> None:
        for action in actions:
            if isinstance(action, (Created, Removed)):
                self.save(action.pg)
            if isinstance(action, Prepare):
                self.prepare(action)
            elif isinstance(action, Commit):
                self.commit(action.node_id, action.pg, action.indices)
            elif isinstance(action, Cancel):
                self.cancel(action.node_id, action.pg, action.indices, action.attempt)
            elif isinstance(action, Removed):
                self.removed(action.pg)
            elif isinstance(action, Created):
                self.answer(action.pg.pg_id, P.PlacementGroupReady(True))
                self.tell_nodes()
            elif isinstance(action, Infeasible):
                shapes = [{k: from_units(v) for k, v in b.items()} for b in action.pg.bundles]
                log.info(  # the creator warns (placement_group())
                    "placement group %s (%s, %s) cannot be placed on any set of the "
                    "cluster's nodes; it stays pending until nodes that can hold it join",
                    action.pg.pg_id.hex(),
                    action.pg.strategy,
                    shapes,
                )

    def prepare(self, action: Prepare) -> None:
        pg, node_id = action.pg, action.node_id
        nm = self.head.nm
        if node_id == nm.node_id:
            ok = nm.prepare_bundles(pg.pg_id, action.attempt, action.bundles)
            self.run(self.table.prepared(pg.pg_id, action.attempt, node_id, ok, time.time()))
            return
        rec = self.head.nodes.get(node_id)
        msg = P.PrepareBundles(pg.pg_id, action.attempt, action.bundles)

        async def ask() -> None:
            reply: Any = None
            if rec is not None and rec.alive and rec.conn is not None:
                with contextlib.suppress(ConnectionLost, OSError, TimeoutError):
                    reply = await asyncio.wait_for(
                        rec.conn.request(msg), CONFIG.node_answer_timeout_s
                    )
            ok = isinstance(reply, P.Ok)
            self.run(self.table.prepared(pg.pg_id, action.attempt, node_id, ok, time.time()))

        nm.spawn(ask())

    def commit(self, node_id: bytes, pg: PGRec, indices: list[int]) -> None:
        nm = self.head.nm
        if node_id == nm.node_id:
            nm.commit_bundles(pg.pg_id, indices)
            return
        rec = self.head.nodes.get(node_id)
        if rec is None or rec.conn is None or rec.conn.closed:
            return  # its death reschedules the group (node_died)
        rec.conn.send(P.CommitBundles(pg.pg_id, indices))
        # The head's view of it now, not at its next heartbeat: requests placed by
        # this view find the group's resources there.
        names = B.node_resources({i: pg.bundles[i] for i in indices}, pg.pg_id.hex())
        for k, v in names.items():
            rec.total[k] = rec.total.get(k, 0) + v
            rec.available[k] = rec.available.get(k, 0) + v

    def cancel(self, node_id: bytes, pg: PGRec, indices: list[int], attempt: int) -> None:
        nm = self.head.nm
        if node_id == nm.node_id:
            nm.cancel_bundles(pg.pg_id, indices, attempt, False)
            return
        rec = self.head.nodes.get(node_id)
        if rec is None or rec.conn is None or rec.conn.closed:
            return
        rec.conn.send(P.CancelBundles(pg.pg_id, indices, attempt, False))
        if not attempt:
            self._forget(rec, pg, indices)

    def removed(self, pg: PGRec) -> None:
        """Every live node frees what it holds of the group and fails what waits for it."""
        nm = self.head.nm
        msg = P.CancelBundles(pg.pg_id, [], 0, True)
        for rec in self.head.nodes.values():
            if rec.node_id == nm.node_id:
                continue
            if rec.alive and rec.conn is not None and not rec.conn.closed:
                rec.conn.send(msg)
                self._forget(rec, pg, [i for i, n in pg.nodes.items() if n == rec.node_id])
        if not nm.head_only:
            nm.cancel_bundles(pg.pg_id, [], 0, True)
        self.answer(pg.pg_id, _not_found(pg.pg_id))
        self.tell_nodes()
        self.kick()  # what it held may place a waiting group

    def _forget(self, rec: Any, pg: PGRec, indices: list[int]) -> None:
        names = B.node_resources({i: pg.bundles[i] for i in indices}, pg.pg_id.hex())
        for k, v in names.items():
            left = rec.total.get(k, 0) - v
            if left <= 0:
                rec.total.pop(k, None)
                rec.available.pop(k, None)
            else:
                rec.total[k] = left
                rec.available[k] = rec.available.get(k, 0) - v

    def answer(self, pg_id: bytes, reply: Any) -> None:
        for conn, rid, timer in self.waiters.pop(pg_id, []):
            if timer is not None:
                timer.cancel()
            if not conn.closed:
                conn.reply(rid, reply)

    def tell_nodes(self) -> None:
        """The nodes' totals changed: every node places waiting requests by the news."""
        head = self.head
        view = head.view()
        head.broadcast(P.ClusterView(view), local=False)
        head.nm.view_refreshed()

    def statistics(self) -> tuple[dict[str, Any], ...]:
        return tuple(g.row() for g in self.table.groups.values())
