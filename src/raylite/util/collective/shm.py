"""Allreduce through shared memory, for a group whose ranks all run on one node.

Owns this rank's segment (a file in /dev/shm, unlinked as soon as every peer has mapped
it) and its maps of the peers' segments; not the sockets, which still carry the three
small messages that order the steps (group.py runs the schedule like any other).

    rank r: copy its array into its segment -- names --> every peer   (barrier 1)
            reduce chunk r reading chunk r of every segment, in rank order, and write
            it back into its own segment        -- done --> every peer   (barrier 2)
            copy every other chunk from its reducer's segment -- done --> (barrier 3)

Each byte crosses memory about three times instead of the five of a socket ring (a
send and a receive copy each step), and ranks reduce their chunks in parallel. Every
chunk is reduced by one rank, in rank order, so all ranks get the same bits.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import uuid
from collections.abc import Generator

import numpy as np

from .algorithms import Exchange, chunk_bounds
from .types import MismatchError

SHM_DIR = "/dev/shm"
_NAME = struct.Struct("<48sQ")  # segment file name, the op's byte count


class ShmArea:
    """This rank's segment and its maps of the peers' (reused while big enough)."""

    def __init__(self) -> None:
        self.own: mmap.mmap | None = None
        self.own_name = ""
        self.own_path = ""
        self.peers: dict[int, tuple[str, mmap.mmap]] = {}

    def own_array(self, dtype: np.dtype, count: int) -> np.ndarray:
        nbytes = dtype.itemsize * count
        if self.own is None or len(self.own) < nbytes:
            self._drop_own()
            self.own_name = f"raylite-coll-{uuid.uuid4().hex[:16]}"
            self.own_path = os.path.join(SHM_DIR, self.own_name)
            fd = os.open(self.own_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.ftruncate(fd, max(nbytes, 1))
                self.own = mmap.mmap(fd, max(nbytes, 1))
            finally:
                os.close(fd)
        return np.frombuffer(self.own, dtype, count)

    def peer_array(self, peer: int, name: str, dtype: np.dtype, count: int) -> np.ndarray:
        known = self.peers.get(peer)
        if known is None or known[0] != name:
            if known is not None:
                _close(known[1])
            fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR)
            try:
                self.peers[peer] = (name, mmap.mmap(fd, 0))
            finally:
                os.close(fd)
        return np.frombuffer(self.peers[peer][1], dtype, count)

    def unlink_own(self) -> None:
        """Every peer has mapped the segment: its name can go (no file outlives us)."""
        if self.own_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.own_path)
            self.own_path = ""

    def _drop_own(self) -> None:
        self.unlink_own()
        if self.own is not None:
            _close(self.own)
            self.own = None

    def close(self) -> None:
        self._drop_own()
        for _, m in self.peers.values():
            _close(m)
        self.peers.clear()


def _close(m: mmap.mmap) -> None:
    with contextlib.suppress(BufferError):  # a view still alive: the collector closes it
        m.close()


def _all_peers(rank: int, size: int, send: np.ndarray, bufs: dict[int, np.ndarray]) -> Exchange:
    peers = [p for p in range(size) if p != rank]
    return Exchange([(p, send) for p in peers], [(p, bufs[p]) for p in peers])


def allreduce(
    rank: int, size: int, flat: np.ndarray, ufunc: np.ufunc, area: ShmArea
) -> Generator[Exchange, None, None]:
    """flat (1-D, in place) becomes the reduction of every rank's flat (module doc)."""
    mine = area.own_array(flat.dtype, flat.size)
    mine[...] = flat
    note = np.frombuffer(_NAME.pack(area.own_name.encode(), flat.nbytes), np.uint8).copy()
    notes = {p: np.empty_like(note) for p in range(size) if p != rank}
    yield _all_peers(rank, size, note, notes)  # 1: every segment holds its rank's array
    segs = {rank: mine}
    for p, got in notes.items():
        name, nbytes = _NAME.unpack(got.tobytes())
        if nbytes != flat.nbytes:
            raise MismatchError(
                f"allreduce: rank {p} passed {nbytes} bytes, rank {rank} {flat.nbytes}; every "
                f"rank must pass arrays of the same shape and dtype"
            )
        segs[p] = area.peer_array(p, name.rstrip(b"\0").decode(), flat.dtype, flat.size)
    bounds = chunk_bounds(flat.size, size)
    lo, hi = bounds[rank]
    out = flat[lo:hi]
    ufunc(segs[0][lo:hi], segs[1][lo:hi], out=out)
    for q in range(2, size):
        ufunc(out, segs[q][lo:hi], out=out)
    mine[lo:hi] = out
    tick, ticks = np.zeros(1, np.uint8), {p: np.empty(1, np.uint8) for p in notes}
    yield _all_peers(rank, size, tick, ticks)  # 2: every chunk reduced; all mapped
    area.unlink_own()
    for p in notes:
        plo, phi = bounds[p]
        flat[plo:phi] = segs[p][plo:phi]
    del segs, mine
    yield _all_peers(rank, size, tick, ticks)  # 3: nobody reads a segment any more
