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

A driver with no node on its machine (core/remote_driver.py) writes its objects into
this node's store the other way round, in frames on its own connection (`pushes`:
object id -> the file being written):

    remote driver ──PushObject(size)──▶ make_room ──Ok──▶ PushChunk(offset, bytes) ...
    ──PushChunk(last)──▶ <store>/<oid>.push.tmp renamed to <oid> (sealed) ──Ok──▶ driver

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
from ..exceptions import ConnectionLost, ProtocolError
from ..transport import receive_stream
from ..transport_async import AsyncConnection

log = logging.getLogger(__name__)


class _Push:
    """A segment a remote driver is writing here: its open file, or why it failed."""

    __slots__ = ("conn", "fd", "final", "reason", "tmp")

    def __init__(self, conn: AsyncConnection, fd: int, tmp: str, final: str) -> None:
        self.conn = conn
        self.fd = fd
        self.tmp = tmp
        self.final = final
        self.reason = ""  # set: a write failed; the last chunk is answered Failed(reason)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class TransferMixin:
    """NodeManager's object transfers; the state below is set by _init_transfer."""

    fetches: dict[bytes, asyncio.Future[Any]]  # objects being pulled here
    pushes: dict[bytes, _Push]  # objects remote drivers are writing here

    def _init_transfer(self) -> None:
        self.fetches = {}
        self.pushes = {}

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
        reserved = False  # a refused reservation has no segment to free
        try:
            where = await self.make_room(oid, msg.size, msg.owner, warm=True)
            if isinstance(where, P.Failed):
                error = where
                return
            reserved = True
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
        except (ConnectionLost, OSError, ProtocolError) as exc:
            error = P.Failed(
                P.FailCode.UNREACHABLE, f"the node holding it ({msg.address}) is unreachable: {exc}"
            )
        except ValueError as exc:  # no address at all (parse_address): the reader's mistake
            error = P.Failed(P.FailCode.BAD_REQUEST, f"cannot pull from {msg.address!r}: {exc}")
        finally:
            if error is not None and reserved:
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

    # --- a remote driver's objects ------------------------------------------------------
    def on_push_object(self, conn: AsyncConnection, msg: P.PushObject, rid: int) -> None:
        self.spawn(self.receive_push(conn, msg, rid))

    async def receive_push(self, conn: AsyncConnection, msg: P.PushObject, rid: int) -> None:
        """Make room for a remote driver's object and open its file; its chunks follow."""
        oid = msg.object_id
        where = await self.make_room(oid, msg.size, msg.owner, warm=True)
        if isinstance(where, P.Failed):
            conn.reply(rid, where)
            return
        final = self.store.path(oid, where[0])
        tmp = f"{final}.push.tmp"
        try:
            if where[1]:
                os.rename(where[1], tmp)
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)
        except OSError as exc:
            self.free_segment(oid)
            conn.reply(rid, P.Failed(P.FailCode.INTERNAL, f"cannot write {tmp}: {exc}"))
            return
        try:
            os.ftruncate(fd, msg.size)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self.free_segment(oid)
            conn.reply(rid, P.Failed(P.FailCode.INTERNAL, f"cannot write {tmp}: {exc}"))
            return
        self.pushes[oid] = _Push(conn, fd, tmp, final)
        conn.reply(rid, P.Ok())

    def on_push_chunk(self, conn: AsyncConnection, msg: P.PushChunk, rid: int) -> None:
        """Write a chunk where it goes (a few MiB into memory: done on the loop, in the
        order the frames came); the last one seals the segment."""
        oid = msg.object_id
        push = self.pushes.get(oid)
        if push is None:
            if rid > 0:
                conn.reply(rid, P.Failed(P.FailCode.NOT_FOUND, "no PushObject for this object"))
            return
        if not push.reason:
            try:
                view = memoryview(msg.data)
                done = 0
                while done < view.nbytes:
                    done += os.pwrite(push.fd, view[done:], msg.offset + done)
            except OSError as exc:
                push.reason = f"cannot write {push.tmp}: {exc}"
        if not msg.last:
            return
        del self.pushes[oid]
        push.close()
        if not push.reason:
            try:
                os.rename(push.tmp, push.final)  # sealed: readers see all of it or nothing
            except OSError as exc:
                push.reason = f"cannot seal {push.final}: {exc}"
        if push.reason:
            with contextlib.suppress(OSError):
                os.unlink(push.tmp)
            self.free_segment(oid)
            conn.reply(rid, P.Failed(P.FailCode.INTERNAL, push.reason))
            return
        conn.reply(rid, P.Ok())

    def drop_pushes(self, conn: AsyncConnection) -> None:
        """A remote driver went mid-push: its half-written files go (its segments go with
        the rest of what it owned)."""
        for oid, push in list(self.pushes.items()):
            if push.conn is conn:
                del self.pushes[oid]
                push.close()
                with contextlib.suppress(OSError):
                    os.unlink(push.tmp)
