"""The node's object store, the shell: messages to store book events, file work done.

Owns the node's StoreBook (`store_book`, store_book.py: the segments, the byte
budget, what to spill, what to keep warm), the ObjectStore whose files it acts on
(`store`, object_store.py: paths, spill, delete), the spill directory, the spill
threads and the log of spill bursts. Not the decisions (the book's), not reference
counts (owners), not where other copies are (owners).

    owner ──ReserveObject──▶ make_room: book.reserve ──▶ Spill (copies in threads) ──▶
                             book.admit ──ObjectReserved(dir, warm file)──▶ owner
    owner ──FreeObject──▶ free_segment: book.freed ──▶ Delete | Recycle | FreeCopies
    writer ──DropReturn──▶ book.withdrawn (a return its caller never heard of)
    reader ──ObjectMapped / ObjectUnmapped──▶ book.mapped / unmapped
    reader ──ObjectRestored──▶ book.restored ──▶ Prefetch (posix_fadvise WILLNEED)

Spill copies run in threads (asyncio.to_thread, config.spill_threads at once);
spill_lock orders make_room, so one reservation at a time decides what to spill.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from typing import Any

from .. import protocol as P
from ..config import CONFIG, RESOURCE_UNIT
from ..object_store import ObjectStore, readers, release_memory
from ..transport_async import AsyncConnection
from .statistics import SegmentStat, StoreStat
from .store_book import (
    Admit,
    Delete,
    FreeCopies,
    Prefetch,
    Recycle,
    Refuse,
    Segment,
    Spill,
    StoreAction,
    StoreBook,
    Unlink,
)


class StoreMixin:
    """NodeManager's object store; the state below is set by _init_store (and the
    loop's locks by _start_store, on the loop)."""

    store_dir: str
    spill_dir: str
    max_spill_bytes: int | None
    store: ObjectStore
    store_book: StoreBook
    burst: list[Any]  # bytes, objects, seconds spent spilling since the last log
    burst_timer: asyncio.TimerHandle | None
    spill_lock: asyncio.Lock | None
    spill_slots: asyncio.Semaphore

    def _init_store(
        self, session_dir: str, store_dir: str, total: dict[str, int], max_spill_bytes: int | None
    ) -> None:
        self.store_dir = store_dir
        self.spill_dir = os.path.join(session_dir, "spill")
        self.max_spill_bytes = max_spill_bytes
        self.store = ObjectStore(store_dir, self.spill_dir)
        capacity = total.get("object_store_memory", 0) // RESOURCE_UNIT
        self.store_book = StoreBook(store_dir, self.spill_dir, capacity, max_spill_bytes)
        self.burst = [0, 0, 0.0]
        self.burst_timer = None
        self.spill_lock = None
        self.spill_slots = asyncio.Semaphore(1)  # replaced in _start_store, on the loop

    def _start_store(self) -> None:
        """On the loop, before serving: its locks, and the spill dir."""
        self.spill_lock = asyncio.Lock()
        self.spill_slots = asyncio.Semaphore(CONFIG.spill_threads)
        os.makedirs(self.spill_dir, mode=0o700, exist_ok=True)

    # What transfer.py, the state views and the dashboard read.
    @property
    def segments(self) -> dict[bytes, Segment]:
        return self.store_book.segments

    @property
    def capacity(self) -> int:
        return self.store_book.capacity

    @property
    def used_bytes(self) -> int:
        return self.store_book.used_bytes

    @property
    def spilled_bytes(self) -> int:
        return self.store_book.spilled_bytes

    @property
    def spilled_total(self) -> int:
        return self.store_book.spilled_total

    @property
    def restored_total(self) -> int:
        return self.store_book.restored_total

    def run_store_actions(self, actions: list[StoreAction]) -> None:
        """The actions that need no waiting (not Spill, Admit or Refuse: make_room's)."""
        for action in actions:
            if isinstance(action, Delete):
                self.store.delete(action.oid, action.unmapped)
            elif isinstance(action, Recycle):
                try:
                    os.rename(self.store.path(action.oid), action.path)
                    # Looked at after the rename: a reader pins the file before it maps
                    # it (object_store), and no pin can be made once it is renamed.
                    if readers(action.path):
                        os.unlink(action.path)  # not reused: the reader's memory
                        raise FileExistsError(action.path)
                except OSError:
                    self.run_store_actions(self.store_book.recycle_failed(action.oid, action.path))
            elif isinstance(action, FreeCopies):
                for address in action.nodes:
                    self.spawn(self.tell_node(address, P.FreeObject(action.oid)))
            elif isinstance(action, Unlink):
                for path in action.paths:
                    release_memory(path)  # (processes may keep idle mappings of it)
                    with contextlib.suppress(OSError):
                        os.unlink(path)
            elif isinstance(action, Prefetch):
                for oid, size in action.segments:
                    with contextlib.suppress(OSError, AttributeError):
                        fd = os.open(self.store.path(oid, self.spill_dir), os.O_RDONLY)
                        try:
                            os.posix_fadvise(fd, 0, size, os.POSIX_FADV_WILLNEED)
                        finally:
                            os.close(fd)

    def on_reserve_object(self, conn: AsyncConnection, msg: P.ReserveObject, rid: int) -> None:
        book, oid, size = self.store_book, msg.object_id, msg.size
        lock = self.spill_lock
        if lock is not None and not lock.locked() and oid and book.fits_now(oid, size):
            # No reservation waits, and no spill is needed: answered now, without a
            # task and the lock (no free disk space to read either).
            writer = conn.serial  # (the reserving connection: DropReturn's check)
            for action in book.reserve(oid, size, msg.owner, disk_free=0, warm=True, writer=writer):
                where = self._room_action(action)
                if where is not None:
                    conn.reply(rid, self._reserved(where))
                    return
            raise AssertionError("StoreBook.reserve ends with Admit or Refuse")
        self.spawn(self.reserve(conn, msg, rid))

    @staticmethod
    def _reserved(where: tuple[str, str] | P.Failed) -> P.ObjectReserved | P.Failed:
        return where if isinstance(where, P.Failed) else P.ObjectReserved(*where)

    async def reserve(self, conn: AsyncConnection, msg: P.ReserveObject, rid: int) -> None:
        where = await self.make_room(msg.object_id, msg.size, msg.owner, True, conn.serial)
        conn.reply(rid, self._reserved(where))

    async def make_room(
        self, oid: bytes, size: int, owner: str, warm: bool = False, writer: int = 0
    ) -> tuple[str, str] | P.Failed:
        """Account a new segment, spilling the least recently used ones if needed.

        Returns (directory to write it in, a pre-allocated file or ""), or Failed.
        """
        assert self.spill_lock is not None
        if size < 0 or not oid:  # it would add to the free bytes, or be the store's dir
            return P.Failed(P.FailCode.BAD_REQUEST, f"an object {oid.hex()!r} of {size} bytes")
        async with self.spill_lock:
            book = self.store_book
            disk_free = 0 if book.max_spill_bytes is not None else self.disk_free()
            actions = book.reserve(oid, size, owner, disk_free=disk_free, warm=warm, writer=writer)
            for action in actions:
                if isinstance(action, Spill):
                    await self.spill(action.victims)
                    continue
                where = self._room_action(action)
                if where is not None:
                    return where
            raise AssertionError("StoreBook.reserve ends with Admit or Refuse")

    def _room_action(self, action: StoreAction) -> tuple[str, str] | P.Failed | None:
        """Carry out one of reserve's actions but Spill: the answer (Admit, Refuse), or
        None to go on."""
        if isinstance(action, Admit):
            self.store_book.admit(action)
            return action.directory, action.prealloc
        if isinstance(action, Refuse):
            return P.Failed(P.FailCode.STORE_FULL, action.reason)
        self.run_store_actions([action])
        return None

    def disk_free(self) -> int:
        return shutil.disk_usage(self.spill_dir).free

    async def spill(self, victims: list[tuple[bytes, Segment]]) -> None:
        """Copy the victims to disk in parallel: a cold page cache on this kind of disk
        takes writes from several threads about twice as fast as from one."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        done = await asyncio.gather(
            *(self.spill_one(oid, seg) for oid, seg in victims), return_exceptions=True
        )
        seconds = loop.time() - start
        for (_, seg), ok in zip(victims, done, strict=True):
            if ok is True:
                self.burst[0] += seg.size
                self.burst[1] += 1
        self.burst[2] += seconds
        if self.burst[1] and self.burst_timer is None:
            self.burst_timer = loop.call_later(CONFIG.spill_log_s, self.log_spill_burst)

    async def spill_one(self, oid: bytes, seg: Segment) -> bool:
        if readers(self.store.path(oid)):
            # A borrower maps it (its pin, object_store): a copy on disk would free no
            # memory until it lets go, so it stays; a later reservation spills it.
            return False
        async with self.spill_slots:
            try:
                await asyncio.to_thread(self.store.spill, oid)
            except FileNotFoundError:  # still being written, or freed meanwhile
                return False
        self.run_store_actions(self.store_book.spill_finished(oid, seg))
        return seg.spilled

    def log_spill_burst(self) -> None:
        nbytes, n, seconds = self.burst
        self.burst, self.burst_timer = [0, 0, 0.0], None
        mib = nbytes / 2**20
        self.forward_logs(
            [
                [
                    "err",
                    f"(raylite) Spilled {mib:.0f} MiB, {n} objects, write "
                    f"throughput {mib / max(seconds, 1e-9):.0f} MiB/s.\n",
                ]
            ]
        )

    def on_object_restored(self, conn: AsyncConnection, msg: P.ObjectRestored, rid: int) -> None:
        self.run_store_actions(self.store_book.restored(msg.object_id))

    def on_free_object(self, conn: AsyncConnection, msg: P.FreeObject, rid: int) -> None:
        self.free_segment(msg.object_id)

    def on_drop_return(self, conn: AsyncConnection, msg: P.DropReturn, rid: int) -> None:
        self.run_store_actions(self.store_book.withdrawn(msg.object_id, conn.serial))

    def on_object_mapped(self, conn: AsyncConnection, msg: P.ObjectMapped, rid: int) -> None:
        self.store_book.mapped(msg.object_id)
        conn.reply(rid, P.Ok())

    def on_object_unmapped(self, conn: AsyncConnection, msg: P.ObjectUnmapped, rid: int) -> None:
        self.store_book.unmapped(msg.object_id)

    def free_segment(self, oid: bytes, views_unknown: bool = False) -> None:
        self.run_store_actions(self.store_book.freed(oid, views_unknown))

    def _store_stats(self, objects: bool) -> tuple[StoreStat, tuple[SegmentStat, ...] | None]:
        """The budget and counters, and the segments if `objects`, copied (for statistics)."""
        stat = StoreStat(
            self.used_bytes,
            self.capacity,
            self.spilled_bytes,
            len(self.segments),
            self.spilled_total,
            self.restored_total,
            self.store_book.warm_bytes,
            self.store_dir,
            self.spill_dir,
        )
        if not objects:
            return stat, None
        path = self.store.path
        return stat, tuple(
            SegmentStat(
                oid,
                seg.size,
                seg.owner,
                seg.spilled,
                # Told (owners, unpinned readers) and pinned (borrowers: object_store).
                max(seg.mapped, 0) + (0 if seg.spilled else readers(path(oid))),
                len(seg.copies),
            )
            for oid, seg in self.segments.items()
        )
