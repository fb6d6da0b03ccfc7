"""The node's object store accounting: segments, the byte budget, spilling, recycling.

Owns the table of this node's segments (`segments`, Segment, least recently used
first), the bytes in memory and on disk against `capacity` and `max_spill_bytes`,
the spill directory, the spill counters and freed segment files kept for the next
put of their size (`warm`). The files themselves are object_store.py's (ObjectStore:
paths, spill, delete). Not reference counts (owners), not where other copies are
(owners; `Segment.copies` only so freeing the object frees them too).

    owner ──ReserveObject──▶ make_room (spills LRU segments when full) ──ObjectReserved(dir)──▶
    owner ──FreeObject──▶ free_segment: deleted or kept warm; copies pulled elsewhere go too
    reader ──ObjectMapped / ObjectUnmapped──▶ not reused while mapped; moved to the LRU end
    reader ──ObjectRestored──▶ the next spilled files are read ahead

Spill copies run in threads (asyncio.to_thread, SPILL_THREADS at once); spill_lock
orders make_room, so one reservation at a time decides what to spill.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from .. import protocol as P
from ..config import RESOURCE_UNIT
from ..object_store import ObjectStore
from ..transport import AsyncConnection

WARM_MIN = 8 << 20  # freed segments this large keep their memory for the next put
WARM_MAX = 1 << 30  # at most this much freed shared memory is kept for reuse
SPILL_THREADS = 4  # segments copied to the spill dir at once
SPILL_BATCH = 100 << 20  # when the store is full, spill this much more than needed
PREFETCH_AHEAD = 3  # spilled segments read ahead when one is restored


@dataclass(eq=False)
class Segment:
    size: int
    owner: str
    spilled: bool = False
    mapped: int = 0  # read-only mappings processes hold (its memory cannot be reused)
    copies: set[str] = field(default_factory=set)  # node managers that pulled a copy
    prefetched: bool = False  # spilled, and its file already asked to be read ahead


class StoreMixin:
    """NodeManager's store accounting; the state below is set by _init_store (and the
    loop's locks by _start_store, on the loop)."""

    store_dir: str
    spill_dir: str
    capacity: int
    max_spill_bytes: int | None
    store: ObjectStore
    segments: collections.OrderedDict[bytes, Segment]
    used_bytes: int
    spilled_bytes: int
    spilled_total: int  # objects ever spilled
    restored_total: int  # reads served from the spill dir
    burst: list[Any]  # bytes, objects, seconds spent spilling since the last log
    burst_timer: asyncio.TimerHandle | None
    spill_lock: asyncio.Lock | None
    spill_slots: asyncio.Semaphore
    warm: list[tuple[str, int]]  # files whose shared memory is allocated ahead: (path, size)
    warm_bytes: int
    warm_seq: int

    def _init_store(
        self, session_dir: str, store_dir: str, total: dict[str, int], max_spill_bytes: int | None
    ) -> None:
        self.store_dir = store_dir
        self.capacity = total.get("object_store_memory", 0) // RESOURCE_UNIT
        self.spill_dir = os.path.join(session_dir, "spill")
        self.max_spill_bytes = max_spill_bytes
        self.store = ObjectStore(store_dir, self.spill_dir)
        self.segments = collections.OrderedDict()
        self.used_bytes = 0
        self.spilled_bytes = 0
        self.spilled_total = 0
        self.restored_total = 0
        self.burst = [0, 0, 0.0]
        self.burst_timer = None
        self.spill_lock = None
        self.spill_slots = asyncio.Semaphore(1)  # replaced in _start_store, on the loop
        self.warm = []
        self.warm_bytes = 0
        self.warm_seq = 0

    def _start_store(self) -> None:
        """On the loop, before serving: its locks, and the spill dir."""
        self.spill_lock = asyncio.Lock()
        self.spill_slots = asyncio.Semaphore(SPILL_THREADS)
        os.makedirs(self.spill_dir, mode=0o700, exist_ok=True)

    def spill_room(self) -> int:
        if self.max_spill_bytes is not None:
            return self.max_spill_bytes - self.spilled_bytes
        return shutil.disk_usage(self.spill_dir).free

    def on_reserve_object(self, conn: AsyncConnection, msg: P.ReserveObject, rid: int) -> None:
        self.spawn(self.reserve(conn, msg, rid))

    async def reserve(self, conn: AsyncConnection, msg: P.ReserveObject, rid: int) -> None:
        where = await self.make_room(msg.object_id, msg.size, msg.owner, warm=True)
        if isinstance(where, P.Failed):
            conn.reply(rid, where)
        else:
            directory, prealloc = where
            conn.reply(rid, P.ObjectReserved(directory, prealloc))

    async def make_room(
        self, oid: bytes, size: int, owner: str, warm: bool = False
    ) -> tuple[str, str] | P.Failed:
        """Account a new segment, spilling the least recently used ones if needed.

        Returns (directory to write it in, a pre-allocated file or ""), or Failed.
        """
        assert self.spill_lock is not None
        async with self.spill_lock:
            old = self.segments.pop(oid, None)
            if old is not None:  # stored again (rebuilt by lineage): count it once
                if old.spilled:
                    self.spilled_bytes -= old.size
                else:
                    self.used_bytes -= old.size
            room = self.spill_room()
            if size > self.capacity + room:
                return P.Failed(
                    P.FailCode.STORE_FULL,
                    f"Cannot put an object of {size / 2**20:.1f} MiB: it is larger than the object "
                    f"store ({self.capacity / 2**20:.1f} MiB) plus the free spill space "
                    f"({room / 2**20:.1f} MiB). Start raylite with a larger "
                    "object_store_memory, free disk space, or split the object.",
                )
            if size > self.capacity:  # never fits in memory: it lives on disk from the start
                self.segments[oid] = Segment(size, owner, spilled=True)
                self.spilled_bytes += size
                return self.spill_dir, ""
            prealloc = self.take_warm(size) if warm else ""
            if self.used_bytes + self.warm_bytes + size > self.capacity:
                self.drop_warm()
            if self.used_bytes + size > self.capacity:
                # Spill a batch, not just enough for this object: the copies run in
                # parallel, and the next puts find room without waiting.
                batch = min(SPILL_BATCH, self.capacity // 4)
                await self.spill_until(self.capacity - size - batch)
            self.segments[oid] = Segment(size, owner)
            self.used_bytes += size
            return self.store_dir, prealloc

    def take_warm(self, size: int) -> str:
        """A pre-allocated file that fits `size` with little waste, or ""."""
        for i, (path, n) in enumerate(self.warm):
            if size <= n <= size + size // 4:
                del self.warm[i]
                self.warm_bytes -= n
                return path
        return ""

    def drop_warm(self) -> None:
        for path, _ in self.warm:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.warm, self.warm_bytes = [], 0

    async def spill_until(self, target: int) -> None:
        """Spill least recently used segments until at most `target` bytes are in memory.

        The victims are copied to disk in parallel: a cold page cache on this kind of disk
        takes writes from several threads about twice as fast as from one.
        """
        loop = asyncio.get_running_loop()
        victims: list[tuple[bytes, Segment]] = []
        freeing, room = 0, self.spill_room()
        for oid, seg in self.segments.items():
            if self.used_bytes - freeing <= target:
                break
            if seg.spilled or seg.size > room:
                continue
            victims.append((oid, seg))
            freeing += seg.size
            room -= seg.size
        if not victims:
            return
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
            self.burst_timer = loop.call_later(1.0, self.log_spill_burst)

    async def spill_one(self, oid: bytes, seg: Segment) -> bool:
        async with self.spill_slots:
            try:
                await asyncio.to_thread(self.store.spill, oid)
            except FileNotFoundError:  # still being written, or freed meanwhile
                return False
        if self.segments.get(oid) is not seg:  # freed while we copied
            self.store.delete(oid)
            return False
        seg.spilled = True
        self.used_bytes -= seg.size
        self.spilled_bytes += seg.size
        self.spilled_total += 1
        return True

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
        """A spilled object was read: have the disk read the next spilled ones ahead.

        Readers often go through spilled data in the order it was spilled; asking the
        kernel to read the next few files now overlaps the disk with the reader.
        """
        self.restored_total += 1
        ahead = 0
        for oid, seg in self.segments.items():
            if ahead >= PREFETCH_AHEAD:
                break
            if not seg.spilled or seg.prefetched or oid == msg.object_id:
                continue
            seg.prefetched = True
            ahead += 1
            with contextlib.suppress(OSError, AttributeError):
                fd = os.open(self.store.path(oid, self.spill_dir), os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, seg.size, os.POSIX_FADV_WILLNEED)
                finally:
                    os.close(fd)

    def on_free_object(self, conn: AsyncConnection, msg: P.FreeObject, rid: int) -> None:
        self.free_segment(msg.object_id)

    def on_object_mapped(self, conn: AsyncConnection, msg: P.ObjectMapped, rid: int) -> None:
        seg = self.segments.get(msg.object_id)
        if seg is not None:
            seg.mapped += 1
            self.segments.move_to_end(msg.object_id)  # recently used: spilled last
        conn.reply(rid, P.Ok())

    def on_object_unmapped(self, conn: AsyncConnection, msg: P.ObjectUnmapped, rid: int) -> None:
        seg = self.segments.get(msg.object_id)
        if seg is not None:
            seg.mapped -= 1

    def free_segment(self, oid: bytes) -> None:
        seg = self.segments.pop(oid, None)
        if seg is not None:
            for address in seg.copies:  # other nodes pulled it: their copies go too
                self.spawn(self.tell_node(address, P.FreeObject(oid)))
            if seg.spilled:
                self.spilled_bytes -= seg.size
            else:
                self.used_bytes -= seg.size
                if seg.mapped <= 0 and seg.size >= WARM_MIN and self.recycle(oid, seg.size):
                    return
        self.store.delete(oid)

    def recycle(self, oid: bytes, size: int) -> bool:
        """Keep a freed segment's memory for the next put of its size, if nobody maps it."""
        if (
            self.warm_bytes + size > WARM_MAX
            or self.used_bytes + self.warm_bytes + size > self.capacity
        ):
            return False
        self.warm_seq += 1
        path = os.path.join(self.store_dir, f".warm-{self.warm_seq}")
        try:
            os.rename(self.store.path(oid), path)
        except OSError:
            return False
        self.warm.append((path, size))
        self.warm_bytes += size
        return True

    def on_store_stats(self, conn: AsyncConnection, msg: Any, rid: int) -> None:
        stats = {
            "used_bytes": self.used_bytes,
            "capacity_bytes": self.capacity,
            "spilled_bytes": self.spilled_bytes,
            "spilled_objects": self.spilled_total,
            "num_objects": len(self.segments),
            "store_dir": self.store_dir,
            "spill_dir": self.spill_dir,
            "restored_objects": self.restored_total,
            "recycled_bytes": self.warm_bytes,  # freed memory kept for the next put or pull
            "clients": dict(self.client_pids),
        }
        objects = [
            {
                "object_id": oid.hex(),
                "size": seg.size,
                "owner": seg.owner,
                "owner_pid": self.client_pids.get(seg.owner, 0),
                "spilled": seg.spilled,
            }
            for oid, seg in self.segments.items()
        ]
        conn.reply(rid, P.StoreStats(stats, objects))
