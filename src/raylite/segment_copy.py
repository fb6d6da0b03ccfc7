"""How bytes go into and out of segment files: a put's copy into a mapping (a large
buffer in parallel pieces, on copy threads), pwrite loops for a file written without
one, and a spilled segment's copy to disk. Not the segment layout, naming or mappings
(object_store)."""

from __future__ import annotations

import fcntl
import functools
import mmap
import os
import shutil
import sys
from typing import Any

from .config import CONFIG

DIRECT_CHUNK = 8 << 20


def copy_to_disk(src: str, dst: str) -> None:
    """Copy a shared-memory segment to a file, bypassing the page cache where possible.

    A buffered copy must first allocate page-cache pages for the whole file, which on a
    machine that hands free memory back to its host runs at a few hundred MB/s; O_DIRECT
    writes go from the already-mapped segment straight to the disk (measured 283 MB/s
    buffered vs 1.9 GB/s direct for 1 GiB on this project's VMs). Filesystems without
    O_DIRECT (tmpfs, some overlays) get the plain copy.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_DIRECT", 0)
    try:
        out = os.open(dst, flags, 0o600)
    except OSError:
        shutil.copyfile(src, dst)
        return
    try:
        with open(src, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return
            with mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) as mm:
                view = memoryview(mm)
                try:
                    aligned = size & ~(mmap.PAGESIZE - 1)
                    done = 0
                    try:
                        while done < aligned:
                            done += os.write(out, view[done : min(done + DIRECT_CHUNK, aligned)])
                    except OSError:  # no O_DIRECT here: finish buffered
                        pass
                    if done < size:
                        fl = fcntl.fcntl(out, fcntl.F_GETFL)
                        fcntl.fcntl(out, fcntl.F_SETFL, fl & ~getattr(os, "O_DIRECT", 0))
                        pwrite_all(out, view[done:], done)
                finally:
                    view.release()
    finally:
        os.close(out)


def copy_into(mm: mmap.mmap, offset: int, b: memoryview) -> None:
    """Copy the bytes `b` into the mapping at `offset`: a large buffer in parallel
    pieces (numpy's copy, which lets go of the GIL), one in this thread and the others
    in the copy threads. One core does not reach the memory's bandwidth: 100 MB took
    12.6 ms in one thread here and 7.6 ms in two."""
    n = b.nbytes
    np = sys.modules.get("numpy")
    threads = copy_threads() if np is not None and n >= PARALLEL_COPY_BYTES else 1
    if threads < 2:  # (a small buffer asks nothing more: most puts)
        mm[offset : offset + n] = b
        return
    dst = np.frombuffer(mm, np.uint8, n, offset)
    src = np.frombuffer(b, np.uint8)
    step = (-(-n // threads) + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
    pool = _copy_pool(threads - 1)
    others = []
    try:
        for start in range(step, n, step):
            others.append(
                pool.submit(np.copyto, dst[start : start + step], src[start : start + step])
            )
    except RuntimeError:  # the threads were stopped meanwhile (a store closed)
        taken = step * (len(others) + 1)
        np.copyto(dst[taken:], src[taken:])
    try:
        np.copyto(dst[:step], src[:step])
    finally:
        for piece in others:
            piece.result()


PARALLEL_COPY_BYTES = 8 << 20
_POOL: list[Any] = []  # [the copy threads' executor] once made (not in a forked child)


def copy_threads() -> int:
    """How many threads copy a large buffer into a segment: config put_copy_threads, or
    (0) this process's CPUs, at most 4."""
    if CONFIG.put_copy_threads:
        return int(CONFIG.put_copy_threads)
    return min(4, _cpus())


@functools.cache
def _cpus() -> int:
    """This process's CPUs, asked once (a system call)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def _copy_pool(workers: int) -> Any:
    if not _POOL:
        from concurrent.futures import ThreadPoolExecutor

        _POOL.append(ThreadPoolExecutor(workers, thread_name_prefix="raylite-copy"))
    return _POOL[0]


if hasattr(os, "register_at_fork"):  # a child has none of its parent's threads
    os.register_at_fork(after_in_child=_POOL.clear)


def pwrite_all(fd: int, buf: memoryview, offset: int) -> None:
    view = buf.cast("B") if buf.format != "B" or buf.ndim != 1 else buf
    done = 0
    n = view.nbytes
    while done < n:
        done += os.pwrite(fd, view[done:], offset + done)


def stop_copy_threads() -> None:
    """The copy threads end (a put after makes them again)."""
    if _POOL:
        _POOL.pop().shutdown(wait=True)
