"""The store book: one node's object store accounting, as data.

Owns the table of the node's segments (`segments`: Segment, least recently used
first), the bytes in memory and on disk against `capacity` and `max_spill_bytes`,
the spill and restore counters, and the freed segment files kept for the next put of
their size (`warm`). Decides what to spill (least recently used first, a batch more
than needed), what to read ahead, and what to keep warm. Pure: events in, actions
out; no I/O, no asyncio, no locks. The shell (store.py) copies, renames and deletes
the files (object_store.py) and orders reservations (its spill_lock). Not reference
counts (owners), not where other copies are (owners; `Segment.copies` only so
freeing the object frees them too).

    reserve(oid, size) ──▶ Refuse(reason)
                       └─▶ [Unlink(warm files)] [Spill(LRU victims)] Admit(directory, prealloc)
    admit ──▶ the segment is in the table (after the spill copies, in the shell)
    spill_finished(oid, seg) ──▶ counted on disk | Delete (it was freed while copied)
    freed(oid) ──▶ [FreeCopies(nodes)] Recycle(oid, warm path) | Delete(oid)
    withdrawn(oid, writer) ──▶ freed(oid) | Delete(oid) (freed already) | nothing
    mapped / unmapped ──▶ not recycled while mapped; a mapped one is used last in LRU
    restored(oid) ──▶ Prefetch(the next spilled segments, in LRU order)

A mapped segment may still be spilled: a reader's mapping stays valid after its file
moves (object_store.py). Nothing else pins a segment in memory, but a process's idle
mapping of a large segment's file (object_store: ObjectStore._idle) keeps a spilled or
deleted file's pages until that process looks again (within 0.1 s: ObjectStore.tidy;
256 MiB a process at most); a file deleted with no view anywhere is truncated first
(Delete.unmapped), which takes them back. Segments are booked to their owner: a
task's return to its caller, not to the worker that wrote it. A borrower says
ObjectMapped when it maps a segment; its owner only when it frees it while it still
maps it (core/refs.py: an owner's get sends nothing), so an owner's reads do not move
a segment in the LRU order.
"""

from __future__ import annotations

import collections
import os

import msgspec

from ..config import CONFIG, Config


class Segment(msgspec.Struct, eq=False):
    size: int
    owner: str  # the owner's address: its objects go when it dies
    writer: int = 0  # the client that reserved it (the shell's key; 0: none kept)
    spilled: bool = False
    mapped: int = 0  # read-only mappings processes hold (its memory cannot be reused)
    copies: set[str] = msgspec.field(default_factory=set)  # node managers that pulled a copy
    prefetched: bool = False  # spilled, and its file already asked to be read ahead


# --- actions: what the shell does for the book ----------------------------------------
class Refuse(msgspec.Struct, frozen=True):
    """The object cannot be stored here at all: answer Failed(reason)."""

    reason: str


class Unlink(msgspec.Struct, frozen=True):
    """Remove these warm files: their memory is needed for objects."""

    paths: list[str]


class Spill(msgspec.Struct, frozen=True):
    """Copy these segments to the spill dir, then tell spill_finished for each copied."""

    victims: list[tuple[bytes, Segment]]


class Admit(msgspec.Struct, frozen=True):
    """Room is made: call admit(), then answer with where to write and a warm file."""

    oid: bytes
    size: int
    owner: str
    on_disk: bool  # larger than the store: it lives in the spill dir from the start
    directory: str
    prealloc: str  # a warm file to write it in, or ""
    writer: int = 0


class Delete(msgspec.Struct, frozen=True):
    """Delete the object's file (in memory or spilled). `unmapped`: in memory, and no
    view of it lives (as for Recycle): its memory may be taken back from processes that
    keep an idle mapping of the file (object_store: ObjectStore._idle)."""

    oid: bytes
    unmapped: bool = False


class Recycle(msgspec.Struct, frozen=True):
    """Rename the freed object's file to `path`, kept warm; recycle_failed() if that fails."""

    oid: bytes
    path: str


class FreeCopies(msgspec.Struct, frozen=True):
    """Other nodes pulled a copy of the freed object: tell them to free it too."""

    oid: bytes
    nodes: tuple[str, ...]


class Prefetch(msgspec.Struct, frozen=True):
    """Ask the disk to read these spilled files ahead: (object id, size)."""

    segments: list[tuple[bytes, int]]


StoreAction = Refuse | Unlink | Spill | Admit | Delete | Recycle | FreeCopies | Prefetch


class StoreBook:
    """The node's segments and byte budget; see the module doc."""

    def __init__(
        self,
        store_dir: str,
        spill_dir: str,
        capacity: int,
        max_spill_bytes: int | None,
        config: Config = CONFIG,
    ) -> None:
        self.store_dir = store_dir
        self.spill_dir = spill_dir
        self.capacity = capacity
        self.max_spill_bytes = max_spill_bytes  # None: the spill dir's free disk space
        self.segments: collections.OrderedDict[bytes, Segment] = collections.OrderedDict()
        self.used_bytes = 0
        self.spilled_bytes = 0
        self.spilled_total = 0  # objects ever spilled
        self.restored_total = 0  # reads served from the spill dir
        self.warm: list[tuple[str, int]] = []  # files whose memory is allocated: (path, size)
        self.warm_bytes = 0
        self.warm_seq = 0
        self.warm_min = config.warm_min_bytes
        self.warm_max = config.warm_max_bytes
        self.warm_max_files = config.warm_max_files
        self.spill_batch = config.spill_batch_bytes
        self.prefetch_ahead = config.prefetch_ahead

    # ------------------------------------------------------------------ events
    def reserve(
        self, oid: bytes, size: int, owner: str, *, disk_free: int, warm: bool, writer: int = 0
    ) -> list[StoreAction]:
        """A new segment of `size` bytes (a put, or a pull from another node).

        `disk_free`: the spill dir's free space (read only without max_spill_bytes).
        `warm`: it may be written into a warm file. `writer`: the client that writes it
        (withdrawn). The last action is Admit or Refuse.
        """
        old = self.segments.pop(oid, None)
        if old is not None:  # stored again (rebuilt by lineage): count it once
            if old.spilled:
                self.spilled_bytes -= old.size
            else:
                self.used_bytes -= old.size
        room = self.spill_room(disk_free)
        capacity = self.capacity
        if size > capacity + room:
            return [
                Refuse(
                    f"Cannot put an object of {size / 2**20:.1f} MiB: it is larger than the "
                    f"object store ({capacity / 2**20:.1f} MiB) plus the free spill space "
                    f"({room / 2**20:.1f} MiB). Start raylite with a larger "
                    "object_store_memory, free disk space, or split the object."
                )
            ]
        if size > capacity:  # never fits in memory: it lives on disk from the start
            return [Admit(oid, size, owner, True, self.spill_dir, "", writer)]
        actions: list[StoreAction] = []
        prealloc = self._take_warm(size) if warm else ""
        if self.used_bytes + self.warm_bytes + size > capacity and self.warm:
            actions.append(Unlink([path for path, _ in self.warm]))
            self.warm, self.warm_bytes = [], 0
        if self.used_bytes + size > capacity:
            # Spill a batch, not just enough for this object: the copies run in
            # parallel, and the next puts find room without waiting.
            batch = min(self.spill_batch, capacity // 4)
            victims = self._victims(capacity - size - batch, room)
            if victims:
                actions.append(Spill(victims))
        actions.append(Admit(oid, size, owner, False, self.store_dir, prealloc, writer))
        return actions

    def admit(self, action: Admit) -> None:
        """The reserved segment enters the table (most recently used)."""
        self.segments[action.oid] = Segment(
            action.size, action.owner, action.writer, spilled=action.on_disk
        )
        if action.on_disk:
            self.spilled_bytes += action.size
        else:
            self.used_bytes += action.size

    def spill_finished(self, oid: bytes, seg: Segment) -> list[StoreAction]:
        """A victim's file was copied to the spill dir."""
        if self.segments.get(oid) is not seg:  # freed while we copied
            return [Delete(oid)]
        seg.spilled = True
        self.used_bytes -= seg.size
        self.spilled_bytes += seg.size
        self.spilled_total += 1
        return []

    def freed(self, oid: bytes, views_unknown: bool = False) -> list[StoreAction]:
        """The owner freed the object (or died): its file goes, or is kept warm.
        `views_unknown`: the owner left and may live on (a driver that disconnected),
        with views of its objects it never told of (an owner's gets send nothing): the
        file is neither reused nor its memory taken back under them."""
        seg = self.segments.pop(oid, None)
        if seg is None:
            return [Delete(oid)]
        actions: list[StoreAction] = []
        if seg.copies:  # other nodes pulled it: their copies go too
            actions.append(FreeCopies(oid, tuple(seg.copies)))
        if seg.spilled:
            self.spilled_bytes -= seg.size
        else:
            self.used_bytes -= seg.size
            unmapped = seg.mapped <= 0 and not views_unknown
            if unmapped and seg.size >= self.warm_min and self._can_keep(seg.size):
                self.warm_seq += 1
                path = os.path.join(self.store_dir, f".warm-{self.warm_seq}")
                self.warm.append((path, seg.size))
                self.warm_bytes += seg.size
                actions.append(Recycle(oid, path))
                return actions
        actions.append(Delete(oid, not seg.spilled and seg.mapped <= 0 and not views_unknown))
        return actions

    def withdrawn(self, oid: bytes, writer: int) -> list[StoreAction]:
        """The client `writer` stored a task's return whose caller never heard of it
        (DropReturn): freed if its reservation still holds the object; deleted if the
        object is freed already (its owner died while it was written: the file was
        sealed after); left alone if another client reserved it since (a rerun)."""
        seg = self.segments.get(oid)
        if seg is None:
            return [Delete(oid)]
        if seg.writer != writer or not writer:
            return []
        # views_unknown: should a reply the worker took for unsent have reached its
        # caller after all, the memory under the caller's views is neither reused nor
        # taken back (the object is lost to it, never overwritten).
        return self.freed(oid, views_unknown=True)

    def recycle_failed(self, oid: bytes, path: str) -> list[StoreAction]:
        """The freed file could not be renamed to `path`: it is deleted instead."""
        for i, (p, n) in enumerate(self.warm):
            if p == path:
                del self.warm[i]
                self.warm_bytes -= n
                break
        return [Delete(oid, True)]  # (unmapped, as Recycle was)

    def mapped(self, oid: bytes) -> None:
        """A reader mapped the object: its memory is not reused, it is spilled last."""
        seg = self.segments.get(oid)
        if seg is not None:
            seg.mapped += 1
            self.segments.move_to_end(oid)

    def unmapped(self, oid: bytes) -> None:
        seg = self.segments.get(oid)
        if seg is not None:
            seg.mapped -= 1

    def restored(self, oid: bytes) -> list[StoreAction]:
        """A spilled object was read: have the disk read the next spilled ones ahead.

        Readers often go through spilled data in the order it was spilled; asking the
        kernel to read the next few files now overlaps the disk with the reader.
        """
        self.restored_total += 1
        ahead: list[tuple[bytes, int]] = []
        for other, seg in self.segments.items():
            if len(ahead) >= self.prefetch_ahead:
                break
            if not seg.spilled or seg.prefetched or other == oid:
                continue
            seg.prefetched = True
            ahead.append((other, seg.size))
        return [Prefetch(ahead)] if ahead else []

    # ----------------------------------------------------------------- queries
    def fits_now(self, oid: bytes, size: int) -> bool:
        """Whether reserve() would admit this new segment without a spill (and so
        without reading the free disk space): the shell may answer it at once."""
        return size >= 0 and oid not in self.segments and self.used_bytes + size <= self.capacity

    def spill_room(self, disk_free: int) -> int:
        if self.max_spill_bytes is not None:
            return self.max_spill_bytes - self.spilled_bytes
        return disk_free

    def owned_by(self, owner: str) -> list[bytes]:
        """The objects a (dead) owner stored here."""
        return [oid for oid, seg in self.segments.items() if seg.owner == owner]

    # --------------------------------------------------------------- internals
    def _take_warm(self, size: int) -> str:
        """A warm file that fits `size` with little waste, or "". The most recently
        freed first: processes keep mappings of the last few files they wrote or read
        (object_store: _wcache, _idle), which taking the oldest would always miss once
        a size has more warm files than those keep."""
        for i in range(len(self.warm) - 1, -1, -1):
            path, n = self.warm[i]
            if size <= n <= size + size // 4:
                del self.warm[i]
                self.warm_bytes -= n
                return path
        return ""

    def _victims(self, target: int, room: int) -> list[tuple[bytes, Segment]]:
        """Least recently used segments to spill until at most `target` bytes are in
        memory, each fitting the spill room left."""
        victims: list[tuple[bytes, Segment]] = []
        freeing = 0
        for oid, seg in self.segments.items():
            if self.used_bytes - freeing <= target:
                break
            if seg.spilled or seg.size > room:
                continue
            victims.append((oid, seg))
            freeing += seg.size
            room -= seg.size
        return victims

    def _can_keep(self, size: int) -> bool:
        """Whether a freed segment's memory may be kept warm."""
        return (
            self.warm_bytes + size <= self.warm_max
            and len(self.warm) < self.warm_max_files
            and self.used_bytes + self.warm_bytes + size <= self.capacity
        )
