"""Objects between nodes: pulling a copy into this node, sending one to another.

Owns the pulls in flight here (`fetches`: object id -> the future its readers wait
on), so an object is pulled once however many readers ask for it. The copy is a
segment like any other (store.py accounts it); its bytes travel raw over a
connection of their own: the holder sends the file with sendfile, the puller
splices them from the socket into the segment file in a thread
(transport.receive_stream), so they never pass through Python.

    reader ──FetchObject(holder)──▶ this node ──PullObject, own connection──▶ holder's node
    holder ──ObjectStream(size), then the raw bytes──▶ <store>/<oid>.pull.tmp
    this node: rename to <oid> (sealed: all of it or nothing) ──Ok──▶ reader maps it

Not which node holds an object (its owner says so in FetchObject), not freeing a
copy (the holder's free_segment tells the nodes that pulled one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from .. import protocol as P
from ..exceptions import ConnectionLost
from ..transport import receive_stream
from ..transport_async import AsyncConnection

log = logging.getLogger(__name__)


class TransferMixin:
    """NodeManager's object transfers; the state below is set by _init_transfer."""

    fetches: dict[bytes, asyncio.Future[Any]]  # objects being pulled here

    def _init_transfer(self) -> None:
        self.fetches = {}

    def on_pull_object(self, conn: AsyncConnection, msg: P.PullObject, rid: int) -> None:
        self.spawn(self.send_object(conn, msg, rid))

    async def send_object(self, conn: AsyncConnection, msg: P.PullObject, rid: int) -> None:
        """Send a segment raw with sendfile: no copy of it in this process's memory."""
        oid = msg.object_id
        seg = self.segments.get(oid)
        f = None
        for _ in range(2):  # it may move to the spill dir between locate and open
            path = self.store.locate(oid)
            if seg is None or path is None:
                break
            with contextlib.suppress(FileNotFoundError):
                f = open(path, "rb")  # noqa: ASYNC230 - closed below; a local file
                break
        if f is None:
            conn.reply(
                rid,
                P.Failed(
                    P.FailCode.NOT_FOUND, f"object {oid.hex()} is not on node {self.tcp_address}"
                ),
            )
            return
        if msg.requester:
            seg.copies.add(msg.requester)  # type: ignore[union-attr]
        try:
            size = os.fstat(f.fileno()).st_size
            conn.reply(rid, P.ObjectStream(size))
            await conn.writer.drain()
            loop = asyncio.get_running_loop()
            await loop.sendfile(conn.writer.transport, f, 0, size)
        except (OSError, ConnectionError, RuntimeError) as exc:
            log.warning("sending object %s failed: %s", oid.hex()[:12], exc)
        finally:
            f.close()
            conn.close()  # one stream per connection

    def on_fetch_object(self, conn: AsyncConnection, msg: P.FetchObject, rid: int) -> None:
        self.spawn(self.fetch(conn, msg, rid))

    async def fetch(self, conn: AsyncConnection, msg: P.FetchObject, rid: int) -> None:
        """A reader here needs an object another node holds: pull it (once) and answer."""
        oid = msg.object_id
        if oid in self.segments and self.store.contains(oid):
            conn.reply(rid, P.Ok())
            return
        fut = self.fetches.get(oid)
        if fut is None:
            fut = self.fetches[oid] = asyncio.get_running_loop().create_future()
            self.spawn(self.pull(msg, fut))
        failed = await asyncio.shield(fut)
        conn.reply(rid, failed or P.Ok())

    async def pull(self, msg: P.FetchObject, fut: asyncio.Future[Any]) -> None:
        """Copy an object from the node that holds it into this node's store.

        The copy goes into a recycled segment file when one fits: writing into memory
        that is already allocated is what makes a pull run near the network's speed
        (allocating fresh tmpfs pages costs as much as the transfer itself).
        """
        oid = msg.object_id
        error: P.Failed | None = None
        tmp = ""
        try:
            where = await self.make_room(oid, msg.size, msg.owner, warm=True)
            if isinstance(where, P.Failed):
                error = where
                return
            final = self.store.path(oid, where[0])
            tmp = f"{final}.pull.tmp"
            if where[1]:
                os.rename(where[1], tmp)
            request = P.PullObject(oid, self.tcp_address)
            reply = await asyncio.to_thread(self.receive_into, msg.address, request, tmp)
            if isinstance(reply, P.Failed):
                error = reply
            else:
                os.rename(tmp, final)  # sealed: readers see all of it or nothing
        except (ConnectionLost, OSError) as exc:
            error = P.Failed(
                P.FailCode.UNREACHABLE, f"the node holding it ({msg.address}) is unreachable: {exc}"
            )
        finally:
            if error is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                self.free_segment(oid)
            self.fetches.pop(oid, None)
            fut.set_result(error)

    def receive_into(self, address: str, request: P.PullObject, path: str) -> Any:
        """(In a thread.) The raw stream, written into the segment file at `path`.

        No O_TRUNC: a recycled file keeps its pages, and receive_stream sets the size.
        """
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            return receive_stream(address, self.token, request, fd, self.node_timeout_s)
        finally:
            os.close(fd)
