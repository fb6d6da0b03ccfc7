"""Shared-memory object store for one node.

Owns the segment files in the store directory (a tmpfs: /dev/shm when usable):
their layout, creation and sealing, and mapping them read-only. Not reference
counts (core_worker: the owner frees), not locations (head).

    producer --write tmp, rename (seal)--> <store_dir>/<object id hex>
    readers on this node --mmap read-only--> zero-copy views (numpy arrays etc.)

Segment layout (little endian): b"RLOBJ001", u64 meta_len, u64 n_buffers, then
n_buffers x (u64 offset, u64 length), zeroes, then the pickle stream and the buffers,
each at a 64-byte aligned offset. The last byte before the pickle (always padding: the
header never fills its 64-byte block) is the node's mark that the file was spilled
(`spill`): its owner's first get reads it instead of asking the file system. A
reader's mapping stays valid after the file is unlinked, so a freed object never pulls
memory from under a live view.

A process maps each object once while any view of it lives (`Mappings`): a second
`get` rebuilds the value on the same mapping (no open, mmap or message to the node
manager), so two gets of one array share one buffer, as Ray's do. The node manager
hears when the first view comes and when the last goes (on_mapped / on_unmapped); the
mapping goes with the last view, except a large segment's (a file the node manager
recycles): that one stays idle (`_idle`, a few a process), and a later object written
into the same file is read through it, with no open, no mmap and no page faults (a
task's get and sum of 100 MB a fresh put fills: 22.6 -> 13 ms). The node manager
truncates a file it knows no view uses before it unlinks it, which takes its pages from
idle mappings; one spilled, or deleted while a view may live, keeps them until each
process that keeps it idle looks again: at its core worker's release loop (`tidy`,
every 0.1 s), or when it next maps or lets go of a large segment (_settle_idle).
An object this process wrote into a recycled file through its cached writable mapping
(`_wcache`) is read there by its first get, through a read-only view (`_written`):
no open, no mmap and no page faults, ~30 us of a first get of 100 MB on the caches
its copy leaves cold.

A reader that does not own the object pins the segment while it maps it: a hard link
in its pins directory (`<store dir>/.pins-<pid>/<id hex>.<n>`), made before the
mapping and removed with it. The node manager reuses a freed segment's file for a
later put (its "warm" files) only when no pin names it (`st_nlink` is 1): so a borrower
needs no round trip to the node manager before it reads, and a reader's memory is
never written under it. A reader that dies leaves its pins directory; its node manager
removes it (`drop_pins`).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import mmap
import os
import shutil
import struct
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from .config import CONFIG
from .exceptions import ObjectLostError
from .segment_copy import copy_into, copy_to_disk, pwrite_all, stop_copy_threads
from .serialization import SerializedValue, loads_buffers

MAGIC = b"RLOBJ001"
_HEAD = struct.Struct("<8sQQ")
_ENTRY = struct.Struct("<QQ")
_HEAD_ONE = struct.Struct("<8sQQQQ")  # the header of a segment of one buffer (an array's)
ALIGN = 64
WRITE_CACHE_ENTRIES = 4
# Read-only mappings of large segment files a process keeps after their views are gone
# (ObjectStore._idle), and the least size that is kept: that of a recycled file.
IDLE_ENTRIES = CONFIG.idle_mappings
IDLE_MIN_BYTES = CONFIG.warm_min_bytes
# What idle mappings may hold at most (of files that went since, until this process
# looks again: a file spilled under them, see tidy and _settle_idle).
IDLE_MAX_BYTES = CONFIG.idle_mapping_bytes
PINS_PREFIX = ".pins-"  # + a reader's pid: the directory of its pins
# This process's pid, kept up to date across forks: os.getpid() is a system call (glibc
# caches it no more), and a get would make one or two.
_PID = [os.getpid()]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


def _align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


# Where a one-buffer segment's pickle starts (past _HEAD_ONE: the header and its entry).
_META_ONE = _align(_HEAD.size + _ENTRY.size)


class Mappings:
    """This process's read-only mappings of segments: one per object while any view
    of it (a memoryview, a numpy array on it) lives.

    A mapping is an mmap of the segment's file, a ctypes array over the writable
    mapping this process wrote the segment through (ObjectStore._written), or a numpy
    uint8 array over a large segment's region (ObjectStore._map_region): each
    exports the views, so a weak reference to it tells when the last view is gone;
    then `on_unmapped(id)` runs (in whichever thread dropped that view: it must only
    queue work). A value with no out-of-band buffers keeps no view, and its mapping
    goes as soon as it is rebuilt.
    """

    def __init__(self, on_unmapped: Callable[[bytes], None] | None = None) -> None:
        self.on_unmapped = on_unmapped
        self._maps: dict[bytes, weakref.ref[Any]] = {}
        # Two threads' first gets of one object: one mapping is kept, the other undone.
        # Reentrant: the collector may run a mapping's `gone` in a thread that holds it.
        self._lock = threading.RLock()

    def lookup(self, object_id: bytes) -> Any:
        """The object's mapping (an mmap, a ctypes array or a numpy array), or None."""
        wr = self._maps.get(object_id)
        return wr() if wr is not None else None

    def add(
        self,
        object_id: bytes,
        mm: Any,
        pin: str = "",
        release: Callable[[], None] | None = None,
    ) -> Any:
        """Keep `mm` as the object's mapping; returns the one to read (another thread's,
        when it mapped the object first: `mm` then goes, and on_unmapped runs for it).
        `pin`: the link that pins the segment while `mm` lives (removed with it).
        `release`: called when it goes, after the pin (the store's idle mappings)."""
        maps = self._maps
        pid = _PID[0]

        def gone(wr: weakref.ref[mmap.mmap], object_id: bytes = object_id) -> None:
            with self._lock:
                if maps.get(object_id) is wr:
                    del maps[object_id]
            # A syscall: safe wherever the collector runs this. Not in a child
            # forked meanwhile (its copy of the view going is not the parent's).
            if pin and _PID[0] == pid:
                _unlink(pin)
            if release is not None:
                release()
            if self.on_unmapped is not None:
                self.on_unmapped(object_id)

        with self._lock:
            current = self.lookup(object_id)
            if current is None:
                maps[object_id] = weakref.ref(mm, gone)
                return mm
        # Another thread mapped it first: this one is undone.
        if isinstance(mm, mmap.mmap):
            mm.close()  # no view of it was made
        if pin:
            _unlink(pin)
        if release is not None:
            release()
        if self.on_unmapped is not None:
            self.on_unmapped(object_id)
        return current

    def __len__(self) -> int:
        return len(self._maps)

    def clear(self) -> None:
        """Forget the mappings (their views stay valid; on_unmapped no longer runs)."""
        self._maps.clear()


class ObjectStore:
    """The node's segment files; any process on the node may create and map them.

    A segment lives in `directory` (shared memory) or, once the node manager has
    spilled it, in `spill_dir` (disk). Readers try the first, then the second: the
    node manager copies a segment to the spill dir before it unlinks the original,
    so a reader always finds one of them. A spilled segment is mapped straight from
    its file, so "restoring" it costs what reading it through the page cache costs.
    """

    def __init__(self, directory: str, spill_dir: str | None = None) -> None:
        self.directory = directory
        self.spill_dir = spill_dir
        self.on_spilled_read: Any = None  # called with the id when a read hits the spill dir
        # Called with the id (and whether a pin holds the segment) when this process
        # maps a segment, and with the id when its last view is gone (on_unmapped:
        # from any thread, so it only queues).
        self.on_mapped: Callable[[bytes, bool], None] | None = None
        self.mappings = Mappings(self._unmapped)
        self.on_unmapped: Callable[[bytes], None] | None = None
        # Writable mappings of recycled files this process filled before, by inode:
        # writing into them again costs a memcpy, not a page-table rebuild.
        self._wcache: dict[tuple[int, int], tuple[int, mmap.mmap]] = {}
        # The objects written through one of those mappings, and what their first get
        # here reads (one per cached mapping at most; the get takes it: _get_written):
        # (the mapping, where the segment's spill mark is, the holder, pickle, buffers).
        self._written: dict[bytes, tuple[mmap.mmap, int, Any, memoryview, list[memoryview]]] = {}
        # Read-only mappings of large segment files whose views are gone, by inode, least
        # recently used first: the file may be recycled for another object of its size,
        # which a get then reads with no mmap and no page faults (_map_region).
        self._idle: dict[tuple[int, int], _Region] = {}
        self._released: collections.deque[_Region] = collections.deque()  # (_idle_put)
        self._ilock = threading.Lock()
        _STORES.add(self)  # (its locks are made anew in a forked child)
        # Both, for puts from several threads of one process (joblib's backend puts from
        # its callbacks' threads): its iterations and evictions ran into each other.
        self._wlock = threading.Lock()
        self._pins_dir = ""  # this process's (made at its first pin; per pid: a fork
        self._pins_pid = 0  # makes its own)
        self._pins_prefix = ""  # _pins_dir + "/"
        self._pin_seq = itertools.count()
        self._prefix = os.path.join(directory, "")  # (a get's path: no join, cold)

    def path(self, object_id: bytes, directory: str | None = None) -> str:
        if not directory:
            return self._prefix + object_id.hex()
        return os.path.join(directory, object_id.hex())

    @staticmethod
    def segment_size(value: SerializedValue) -> int:
        offset = _align(_HEAD.size + _ENTRY.size * len(value.buffers))
        offset = _align(offset + len(value.meta))
        for b in value.buffers:
            offset = _align(offset + b.nbytes)
        return max(offset, 1)

    def put(
        self,
        object_id: bytes,
        value: SerializedValue,
        directory: str | None = None,
        prealloc: str = "",
        own: bool = False,
    ) -> int:
        """Write and seal a segment; returns its size in bytes.

        `prealloc` names a file whose pages the node manager allocated ahead of time
        (allocating and zeroing fresh tmpfs pages costs more than copying into them).
        `own`: this process owns the object (its put, not a task's return, which its
        caller owns): its first get here may read it through the mapping that wrote it.
        """
        meta, buffers = value.meta, value.buffers
        header, meta_off, entries, total = _layout(value)
        final = self.path(object_id, directory)
        tmp = f"{final}.{_PID[0]}.tmp"
        self._written.pop(object_id, None)  # (an object rebuilt: its earlier copy)
        if prealloc:
            try:
                os.rename(prealloc, tmp)
            except OSError:
                prealloc = ""
        fd = os.open(tmp, os.O_RDWR if prealloc else os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        taken = None
        try:
            taken = self._writable_mapping(fd, total) if prealloc else None
            mm = taken[2] if taken is not None else None
            if mm is not None:
                # Memory this process wrote before (the same file, recycled after its
                # object was freed and unmapped everywhere): a plain memcpy.
                mm[: len(header)] = header
                mm[meta_off : meta_off + len(meta)] = meta
                for (off, _), b in zip(entries, buffers, strict=True):
                    copy_into(mm, off, b.cast("B") if b.format != "B" or b.ndim != 1 else b)
            else:
                os.ftruncate(fd, total)
                os.pwrite(fd, bytes(header), 0)
                # In a loop: one pwrite writes at most ~2 GiB (a large bytes value's pickle).
                pwrite_all(fd, memoryview(meta), meta_off)
                for (off, _), b in zip(entries, buffers, strict=True):
                    pwrite_all(fd, b, off)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if taken is not None:
                self._cache_mapping(*taken)
            raise
        os.close(fd)
        try:
            os.rename(tmp, final)  # sealed: readers see the whole segment or nothing
            if taken is not None and own:
                self._keep_written(object_id, taken[2], meta_off, len(meta), entries)
        finally:
            if taken is not None:
                self._cache_mapping(*taken)
        return total

    def _keep_written(
        self,
        object_id: bytes,
        mm: mmap.mmap,
        meta_off: int,
        meta_len: int,
        entries: list[tuple[int, int]],
    ) -> None:
        """What the first get of an object just written through `mm` reads (_get_written)."""
        import ctypes  # (numpy loads it anyway)

        holder = (ctypes.c_ubyte * len(mm)).from_buffer(mm)
        view = memoryview(holder).cast("B").toreadonly()
        parts = [view[off : off + n] for off, n in entries]
        meta = view[meta_off : meta_off + meta_len]
        with self._wlock:
            self._written[object_id] = (mm, meta_off - 1, holder, meta, parts)

    def _writable_mapping(
        self, fd: int, total: int
    ) -> tuple[tuple[int, int], int, mmap.mmap] | None:
        """(its cache key, the file open, a writable mapping) of this recycled file: the
        cached one, taken out of the cache while its put writes (another thread's
        put could evict and close it meanwhile; _cache_mapping puts it back), or a new
        one; None if the file is too small."""
        st = os.fstat(fd)
        if st.st_size < total:
            return None
        cache = self._wcache
        key = (st.st_dev, st.st_ino)
        with self._wlock:
            for gone in [k for k, (wfd, _) in cache.items() if os.fstat(wfd).st_nlink == 0]:
                self._evict(gone)  # its file is gone: give the memory back
            hit = cache.pop(key, None)
            if hit is not None:
                self._forget_written(hit[1])  # what it held before is freed and unmapped
        if hit is None:  # (made unlocked: the node manager hands a file to one put)
            mm = mmap.mmap(fd, st.st_size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
            hit = (os.dup(fd), mm)
        return key, *hit

    def _cache_mapping(self, key: tuple[int, int], wfd: int, mm: mmap.mmap) -> None:
        """A put is done with the mapping: cached, most recently used."""
        with self._wlock:
            cache = self._wcache
            cache[key] = (wfd, mm)
            while len(cache) > WRITE_CACHE_ENTRIES:
                self._evict(next(iter(cache)))

    def _forget_written(self, mm: mmap.mmap) -> None:
        for object_id in [o for o, (m, *_) in list(self._written.items()) if m is mm]:
            self._written.pop(object_id, None)  # (a get may have taken it meanwhile)

    def _evict(self, key: tuple[int, int]) -> None:  # (_wlock held)
        wfd, mm = self._wcache.pop(key)
        self._forget_written(mm)
        with contextlib.suppress(BufferError):  # views read through it live: it goes with them
            mm.close()
        os.close(wfd)

    def close(self) -> None:
        self.mappings.clear()
        with self._wlock:
            for key in list(self._wcache):
                self._evict(key)
        with self._ilock:
            self._settle_idle()
            while self._idle:
                self._idle.pop(next(iter(self._idle))).close()
        stop_copy_threads()  # with the session (made again if needed)
        if self._pins_pid == _PID[0]:  # the session is over: no reuse will follow
            shutil.rmtree(self._pins_dir, ignore_errors=True)
            self._pins_pid = 0

    def _unmapped(self, object_id: bytes) -> None:
        if self.on_unmapped is not None:
            self.on_unmapped(object_id)

    def mapped(self, object_id: bytes) -> bool:
        """Whether this process maps the object now (a get needs no file, no fetch)."""
        return self.mappings.lookup(object_id) is not None

    def get(self, object_id: bytes, pin: bool = False) -> Any:
        """The value, rebuilt on this process's read-only mapping of its segment (made
        now if no view of the object lives). `pin`: hold the segment's file while the
        mapping lives (a reader that is not its owner)."""
        if not pin:
            written = self._written.pop(object_id, None)
            # Not spilled since (the node marks it before it unlinks it): a byte of the
            # mapping, not an fstat (~10 us of a first get of 100 MB, cold).
            if written is not None and not written[0][written[1]]:
                return self._get_written(object_id, *written[2:])
        mm = self.mappings.lookup(object_id)
        if mm is None:
            mm = self._map(object_id, pin)
        return load_segment(object_id, mm)

    def _get_written(
        self, object_id: bytes, holder: Any, meta: memoryview, buffers: list[memoryview]
    ) -> Any:
        """The first get of an object this process wrote through a cached writable
        mapping: rebuilt on the read-only views of it that put() made, on a ctypes array
        over the mapping (made there: on the caches a large put leaves cold, one takes
        ~10 us to make, the views and the parsed layout ~10 more), which the views keep
        alive (Mappings tracks it). Later gets, once no view lives, map the file. The
        node manager recycles the file only when no view of it lives (ObjectMapped
        before the owner's FreeObject: lineage._free_segment), so no later put writes
        into it under them."""
        if self.on_mapped is not None:
            self.on_mapped(object_id, False)
        mm = self.mappings.add(object_id, holder)
        if mm is not holder:  # another thread mapped it meanwhile: read that
            return load_segment(object_id, mm)
        return loads_buffers(meta, buffers)

    def _pin(self, object_id: bytes) -> str | None:
        """A new link to the segment in this process's pins directory (None when the
        segment is not in memory, "" when links cannot be made here)."""
        if self._pins_pid != _PID[0]:
            self._pins_dir = pins_dir(self.directory, _PID[0])
            with contextlib.suppress(FileExistsError):
                os.mkdir(self._pins_dir, 0o700)
            self._pins_prefix = os.path.join(self._pins_dir, "")
            self._pins_pid = _PID[0]
        name = object_id.hex()
        pin = f"{self._pins_prefix}{name}.{next(self._pin_seq)}"
        try:
            os.link(self._prefix + name, pin)
        except FileNotFoundError:  # spilled or freed: not in memory
            return None
        except OSError:  # a file system without hard links
            return ""
        return pin

    def map_here(self, object_id: bytes) -> Any:
        """A borrower's mapping of an object in this node's store (pinned), or of its
        spilled copy; None when neither is here (its owner says where it is).

        One attempt at the pin tells whether the segment is in memory: no stat first."""
        mm = self.mappings.lookup(object_id)
        if mm is None and self.directory:
            mm = self._map(object_id, True, lost_ok=True)
        return mm

    def _map(self, object_id: bytes, pin: bool = False, lost_ok: bool = False) -> Any:
        """The object's mapping: this one, or another thread's made meanwhile
        (Mappings.add). Not here: ObjectLostError, or None if `lost_ok`."""
        pinned = self._pin(object_id) if pin else ""
        mapped = None
        if pinned is not None:  # (None: it is not in memory)
            try:
                mapped = self._map_memory(pinned or self.path(object_id))
            except FileNotFoundError:
                pass
            except BaseException:
                if pinned:
                    _unlink(pinned)
                raise
        if mapped is None:
            if pinned:
                _unlink(pinned)
            pinned = ""
            mapped = self._map_spilled(object_id)
            if mapped is None:
                if lost_ok:
                    return None
                raise ObjectLostError(
                    object_id.hex(),
                    f"Object {object_id.hex()} is not in the node's object store any more "
                    "(it was freed, or the store was removed at shutdown).",
                )
        if self.on_mapped is not None:
            self.on_mapped(object_id, bool(pinned))  # before on_unmapped can run for it
        return self.mappings.add(object_id, mapped[0], pinned or "", mapped[1])

    def _map_memory(self, path: str) -> tuple[Any, Callable[[], None] | None]:
        """(a mapping, what gives it back when its views are gone) of the segment file at
        `path` in shared memory. A large one (numpy loaded: its views are arrays) is read
        through an idle mapping of the same file if this process keeps one (_idle)."""
        np = sys.modules.get("numpy") if IDLE_ENTRIES else None
        if np is not None:
            st = os.stat(path)
            if st.st_size >= IDLE_MIN_BYTES:
                return self._map_region(np, path, (st.st_dev, st.st_ino), st.st_size)
        fd = os.open(path, os.O_RDONLY)
        try:
            return mmap.mmap(fd, 0, access=mmap.ACCESS_READ), None  # all of it (never empty)
        finally:
            os.close(fd)

    def _map_region(
        self, np: Any, path: str, key: tuple[int, int], size: int
    ) -> tuple[Any, Callable[[], None]]:
        """A large segment's file mapped once, for as long as this process keeps it: each
        get's views are on a new uint8 array over the mapping (Mappings tracks that
        array), and when they are gone the mapping is kept idle (_idle_put), so the next
        object written into the same recycled file is read with no open, no mmap and no
        page faults. `key` names the file: a pin (or the owner's ref) keeps it the
        object's while it is read."""
        with self._ilock:
            if self._released:
                self._settle_idle()
            region = self._idle.pop(key, None)
            if region is None:
                self._settle_idle()  # (a miss: a look for idle mappings whose file went)
        if region is not None and len(region.mm) != size:  # (resized: not this mapping)
            region.close()
            region = None
        if region is None:
            region = _Region(path)
        return np.frombuffer(region.mm, np.uint8), functools.partial(self._idle_put, region)

    def _idle_put(self, region: _Region) -> None:
        """A large segment's views are gone (in any thread, the collector's too, so
        perhaps in one that holds _ilock: then it is queued): its mapping is kept idle."""
        self._released.append(region)
        if self._ilock.acquire(blocking=False):
            try:
                self._settle_idle()
            finally:
                self._ilock.release()

    def tidy(self) -> None:
        """Close idle mappings whose files went since (spilled, deleted under a view),
        so that their memory goes within the core worker's release loop (0.1 s), not
        at this process's next large get, which an idle worker may never make. A look
        at each (fstat, up to IDLE_ENTRIES) only when there are any; skipped when a get
        holds the lock (it settles them itself)."""
        if (self._idle or self._released) and self._ilock.acquire(blocking=False):
            try:
                self._settle_idle()
            finally:
                self._ilock.release()

    def _settle_idle(self) -> None:  # (_ilock held)
        """Released mappings join the idle ones, most recently used last, if their files
        are still there. Idle mappings of files gone since (freed, spilled, a warm file
        dropped) are closed: they would hold the file's memory."""
        idle, released = self._idle, self._released
        while released:
            region = released.popleft()
            if region.key in idle or not region.linked():
                region.close()
            else:
                idle[region.key] = region
        for key in [k for k, r in idle.items() if not r.linked()]:
            idle.pop(key).close()
        total = sum(len(r.mm) for r in idle.values())
        while len(idle) > IDLE_ENTRIES or (idle and total > IDLE_MAX_BYTES):
            total -= len(idle[next(iter(idle))].mm)
            idle.pop(next(iter(idle))).close()

    def _map_spilled(self, object_id: bytes) -> tuple[mmap.mmap, None] | None:
        """A mapping of the object's spilled copy, read ahead; None if there is none."""
        if self.spill_dir is None:
            return None
        try:
            fd = os.open(self.path(object_id, self.spill_dir), os.O_RDONLY)
        except FileNotFoundError:
            return None
        if self.on_spilled_read is not None:
            self.on_spilled_read(object_id)
        try:
            # Read the whole file ahead, in large requests, instead of faulting it in a
            # few pages at a time as the reader touches it.
            with contextlib.suppress(OSError, AttributeError):
                os.posix_fadvise(fd, 0, os.fstat(fd).st_size, os.POSIX_FADV_WILLNEED)
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            with contextlib.suppress(OSError, AttributeError):
                mm.madvise(mmap.MADV_SEQUENTIAL)
        finally:
            os.close(fd)
        return mm, None

    def delete(self, object_id: bytes, unmapped: bool = False) -> None:
        """Remove the segment's files. `unmapped`: no view of it lives anywhere its
        node does not know of (its owner told of its own before it freed it), so if no
        reader pins it either, its memory is taken back first from processes that keep
        an idle mapping of the file (release_memory)."""
        if unmapped and self.directory:
            # Renamed first: no pin can be made after it, so none comes between the
            # look for pins and the truncation (a reader's pin is a link of the name).
            path = self.path(object_id)
            doomed = f"{path}.{_PID[0]}.freed"
            with contextlib.suppress(OSError):
                os.rename(path, doomed)
                if not readers(doomed):
                    release_memory(doomed)
                os.unlink(doomed)
        for directory in (self.directory, self.spill_dir):
            if directory is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path(object_id, directory))

    def locate(self, object_id: bytes) -> str | None:
        """The segment's file, in memory or spilled; None when it is in neither."""
        for directory in (self.directory, self.spill_dir):
            if directory is not None:
                path = self.path(object_id, directory)
                if os.path.exists(path):
                    return path
        return None

    def contains(self, object_id: bytes) -> bool:
        return os.path.exists(self.path(object_id)) or (
            self.spill_dir is not None and os.path.exists(self.path(object_id, self.spill_dir))
        )

    def spill(self, object_id: bytes) -> int:
        """Move a segment to the spill dir (copy, mark, unlink); returns bytes moved."""
        assert self.spill_dir is not None
        src = self.path(object_id)
        dst = self.path(object_id, self.spill_dir)
        tmp = f"{dst}.spill.tmp"
        ino = os.stat(src).st_ino
        copy_to_disk(src, tmp)
        os.rename(tmp, dst)  # readers find the spilled copy before the original goes
        size = os.path.getsize(dst)
        _mark_spilled(src, ino)  # (after the copy: the copy is unmarked)
        os.unlink(src)
        return size


class _Region:
    """A read-only mapping of a whole segment file, with the file kept open (to ask
    whether it is still there: _linked). The file closes when the region is dropped,
    so a region whose views outlive the store (close) leaks nothing."""

    __slots__ = ("fd", "key", "mm")

    def __init__(self, path: str) -> None:
        self.fd = -1
        self.fd = os.open(path, os.O_RDONLY)
        try:
            st = os.fstat(self.fd)
            self.key = (st.st_dev, st.st_ino)
            self.mm = mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ)
        except BaseException:
            os.close(self.fd)
            self.fd = -1
            raise

    def linked(self) -> bool:
        return self.fd >= 0 and _linked(self.fd)

    def close(self) -> None:
        """Unmapped now, or, from a view's going (the collector: the array going still
        exports the mapping), when that array is freed."""
        with contextlib.suppress(BufferError):
            self.mm.close()
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)


def _mark_spilled(path: str, ino: int) -> None:
    """Set the spill mark of the segment file `ino` at `path` (the byte before its
    pickle: the module doc), which its owner's first get reads where it wrote it
    (_written). Not another file that took the name meanwhile."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDWR)
        try:
            st = os.fstat(fd)
            if st.st_ino != ino:
                return
            head = os.pread(fd, _HEAD.size, 0)
            if len(head) == _HEAD.size and head.startswith(MAGIC):
                at = _align(_HEAD.size + _ENTRY.size * _HEAD.unpack(head)[2]) - 1
                if at < st.st_size:  # (a sound header: never past the end)
                    os.pwrite(fd, b"\x01", at)
        finally:
            os.close(fd)


def _linked(fd: int) -> bool:
    """Whether the open file is still in a directory (a spilled or deleted segment's
    is not: an idle mapping of it is closed, _settle_idle)."""
    try:
        return os.fstat(fd).st_nlink > 0
    except OSError:
        return False


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def readers(path: str) -> int:
    """How many mappings of other readers pin the segment file at `path` (its links in
    their pins directories); 0 when it is gone."""
    try:
        return os.stat(path).st_nlink - 1
    except OSError:
        return 0


def release_memory(path: str) -> None:
    """Give back a segment file's memory that no view uses, before it is unlinked:
    truncated, its pages go even from idle mappings of it (ObjectStore._idle), which
    would otherwise keep them until their process looks again (ObjectStore.tidy)."""
    with contextlib.suppress(OSError):
        os.truncate(path, 0)


def pins_dir(directory: str, pid: int) -> str:
    """Where the reader `pid` keeps its pins in the store `directory`."""
    return os.path.join(directory, f"{PINS_PREFIX}{pid}")


def drop_pins(directory: str, pid: int) -> None:
    """Remove the pins of a reader that is gone (its mappings went with it)."""
    shutil.rmtree(pins_dir(directory, pid), ignore_errors=True)


def _layout(value: SerializedValue) -> tuple[bytearray, int, list[tuple[int, int]], int]:
    """A segment's header, where its pickle starts, (offset, length) of each buffer,
    and its total size."""
    meta, buffers = value.meta, value.buffers
    offset = _align(_HEAD.size + _ENTRY.size * len(buffers))
    meta_off = offset
    offset = _align(offset + len(meta))
    entries = []
    for b in buffers:
        entries.append((offset, b.nbytes))
        offset = _align(offset + b.nbytes)
    header = bytearray(_HEAD.pack(MAGIC, len(meta), len(buffers)))
    for off, n in entries:
        header += _ENTRY.pack(off, n)
    header += bytes(meta_off - len(header))  # (a recycled file's old bytes: its spill mark)
    return header, meta_off, entries, max(offset, 1)


def segment_pieces(value: SerializedValue) -> tuple[int, list[tuple[int, memoryview]]]:
    """A segment as (offset, bytes) pieces and its total size, for a writer that is not
    on this node (a remote driver streams them to its node: the gaps are zeroes)."""
    header, meta_off, entries, total = _layout(value)
    pieces = [(0, memoryview(bytes(header))), (meta_off, memoryview(value.meta))]
    for (off, _), b in zip(entries, value.buffers, strict=True):
        pieces.append((off, b.cast("B") if b.format != "B" or b.ndim != 1 else b))
    return total, pieces


def load_segment(object_id: bytes, mm: Any) -> Any:
    """The value of a segment's bytes (a mapping of its file): zero-copy views on `mm`,
    read-only."""
    view = memoryview(mm)
    if not view.readonly:  # a ctypes array over a writable mapping (_get_written)
        view = view.cast("B").toreadonly()
    if len(view) < _HEAD_ONE.size:  # (every segment is _META_ONE bytes at least)
        raise ObjectLostError(object_id.hex(), f"segment {object_id.hex()} is corrupt")
    magic, meta_len, nbuf, off, n = _HEAD_ONE.unpack_from(view, 0)
    if magic != MAGIC:
        raise ObjectLostError(object_id.hex(), f"segment {object_id.hex()} is corrupt")
    if nbuf == 1:  # one read of the header, not a loop (a first get runs cold)
        meta = view[_META_ONE : _META_ONE + meta_len]
        return loads_buffers(meta, [view[off : off + n]])
    pos = _HEAD.size
    entries = []
    for _ in range(nbuf):
        entries.append(_ENTRY.unpack_from(view, pos))
        pos += _ENTRY.size
    meta_off = _align(_HEAD.size + _ENTRY.size * nbuf)
    meta = view[meta_off : meta_off + meta_len]
    buffers = [view[off : off + n] for off, n in entries]
    return loads_buffers(meta, buffers)


_STORES: weakref.WeakSet[ObjectStore] = weakref.WeakSet()


def _new_locks_after_fork() -> None:
    """A child forked while another thread held a store's lock would wait for it
    forever (that thread is not in the child)."""
    for store in list(_STORES):
        store._ilock = threading.Lock()
        store._wlock = threading.Lock()
        store.mappings._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks_after_fork)
