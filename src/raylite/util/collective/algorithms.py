"""Schedules of the collective operations: which rank sends what to whom, step by step.

Owns the algorithms only (ring reduce-scatter and allgather, binomial-tree broadcast,
dissemination barrier, direct exchanges); not sockets, rendezvous or the API's checks
(group.py, __init__.py). Each schedule is a generator run by one rank: it yields an
`Exchange` (arrays to send to peers, buffers to fill from peers) and resumes once that
step's sends and receives are all done, so a test can run every rank's schedule in one
process over in-memory channels, and group.py runs them over sockets:

    rank r: schedule --yield Exchange(sends, recvs)--> executor --bytes--> peers
            schedule <--resume (recvs filled)--------- executor

A step's sends and receives progress together, so a ring step (send to the next rank,
receive from the previous) cannot deadlock. Every rank reduces in the same order, so
all ranks end with bitwise identical results (floating point sums included).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import numpy as np

# Below this many bytes allreduce and reduce exchange whole arrays directly (one step,
# latency-bound); above it they run the ring (bandwidth-bound).
SMALL_BYTES = 64 * 1024


@dataclass(slots=True)
class Exchange:
    """One step: send each array to its peer, fill each buffer from its peer.

    Arrays are 1-D and C-contiguous; at most one send and one receive per peer."""

    sends: list[tuple[int, np.ndarray]] = field(default_factory=list)
    recvs: list[tuple[int, np.ndarray]] = field(default_factory=list)


Schedule = Generator[Exchange, None, None]


def chunk_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """[lo, hi) of `parts` near-equal chunks of n elements (np.array_split's split)."""
    base, extra = divmod(n, parts)
    bounds, lo = [], 0
    for i in range(parts):
        hi = lo + base + (1 if i < extra else 0)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def ring_reduce_scatter(
    rank: int, size: int, flat: np.ndarray, ufunc: np.ufunc, bounds: Sequence[tuple[int, int]]
) -> Schedule:
    """Afterwards flat[bounds[rank]] holds chunk `rank` reduced over all ranks (the other
    chunks hold partial sums). size - 1 steps, each sending one chunk to the next rank."""
    nxt, prv = (rank + 1) % size, (rank - 1) % size
    tmp = np.empty(max((hi - lo for lo, hi in bounds), default=0), dtype=flat.dtype)
    for s in range(size - 1):
        slo, shi = bounds[(rank - s - 1) % size]
        rlo, rhi = bounds[(rank - s - 2) % size]
        buf = tmp[: rhi - rlo]
        yield Exchange([(nxt, flat[slo:shi])], [(prv, buf)])
        ufunc(flat[rlo:rhi], buf, out=flat[rlo:rhi])


def ring_allgather_chunks(rank: int, size: int, chunks: Sequence[np.ndarray]) -> Schedule:
    """Rank r starts holding chunks[r]; afterwards every rank holds every chunk."""
    nxt, prv = (rank + 1) % size, (rank - 1) % size
    for s in range(size - 1):
        yield Exchange([(nxt, chunks[(rank - s) % size])], [(prv, chunks[(rank - s - 1) % size])])


def _reduce_in_rank_order(parts: Sequence[np.ndarray], ufunc: np.ufunc, out: np.ndarray) -> None:
    acc = parts[0].copy()
    for part in parts[1:]:
        ufunc(acc, part, out=acc)
    out[...] = acc


def _direct_all(
    rank: int, size: int, flat: np.ndarray
) -> Generator[Exchange, None, list[np.ndarray]]:
    """Every rank's whole array to every rank: the list of them in rank order."""
    parts = [flat if p == rank else np.empty_like(flat) for p in range(size)]
    peers = [p for p in range(size) if p != rank]
    yield Exchange([(p, flat) for p in peers], [(p, parts[p]) for p in peers])
    return parts


def allreduce(rank: int, size: int, flat: np.ndarray, ufunc: np.ufunc) -> Schedule:
    """flat (1-D, in place) becomes the reduction of every rank's flat."""
    if size == 1:
        return
    if flat.nbytes <= SMALL_BYTES or flat.size < size:
        parts = yield from _direct_all(rank, size, flat)
        _reduce_in_rank_order(parts, ufunc, flat)
        return
    bounds = chunk_bounds(flat.size, size)
    yield from ring_reduce_scatter(rank, size, flat, ufunc, bounds)
    yield from ring_allgather_chunks(rank, size, [flat[lo:hi] for lo, hi in bounds])


def reduce(rank: int, size: int, flat: np.ndarray, ufunc: np.ufunc, root: int) -> Schedule:
    """The root's flat becomes the reduction; the others' flats are left as they were."""
    if size == 1:
        return
    peers = [p for p in range(size) if p != root]
    if flat.nbytes <= SMALL_BYTES or flat.size < size:
        if rank != root:
            yield Exchange([(root, flat)], [])
            return
        parts = [flat if p == root else np.empty_like(flat) for p in range(size)]
        yield Exchange([], [(p, parts[p]) for p in peers])
        _reduce_in_rank_order(parts, ufunc, flat)
        return
    # Reduce-scatter, then each rank's reduced chunk to the root (bandwidth-optimal).
    work = flat if rank == root else flat.copy()
    bounds = chunk_bounds(flat.size, size)
    yield from ring_reduce_scatter(rank, size, work, ufunc, bounds)
    if rank != root:
        lo, hi = bounds[rank]
        yield Exchange([(root, work[lo:hi])], [])
    else:
        yield Exchange([], [(p, flat[bounds[p][0] : bounds[p][1]]) for p in peers])


def broadcast(rank: int, size: int, flat: np.ndarray, root: int) -> Schedule:
    """Binomial tree from the root: ceil(log2(size)) steps."""
    v = (rank - root) % size  # rank relative to the root
    mask = 1
    while mask < size:
        if v < mask and v + mask < size:
            yield Exchange([((v + mask + root) % size, flat)], [])
        elif mask <= v < 2 * mask:
            yield Exchange([], [((v - mask + root) % size, flat)])
        mask <<= 1


def allgather(rank: int, size: int, flat: np.ndarray, outs: Sequence[np.ndarray]) -> Schedule:
    """outs[p] becomes rank p's flat, on every rank (ring)."""
    outs[rank][...] = flat
    yield from ring_allgather_chunks(rank, size, outs)


def reducescatter(
    rank: int, size: int, ins: Sequence[np.ndarray], out: np.ndarray, ufunc: np.ufunc
) -> Schedule:
    """out becomes the reduction over ranks of their ins[rank] (ins are left as they were)."""
    if size == 1:
        out[...] = ins[0]
        return
    work = np.concatenate(ins)
    bounds, lo = [], 0
    for part in ins:
        bounds.append((lo, lo + part.size))
        lo += part.size
    yield from ring_reduce_scatter(rank, size, work, ufunc, bounds)
    out[...] = work[bounds[rank][0] : bounds[rank][1]]


def gather(
    rank: int, size: int, flat: np.ndarray, outs: Sequence[np.ndarray] | None, root: int
) -> Schedule:
    """The root's outs[p] becomes rank p's flat (outs is the root's only)."""
    if rank != root:
        yield Exchange([(root, flat)], [])
        return
    assert outs is not None
    outs[root][...] = flat
    peers = [p for p in range(size) if p != root]
    if peers:
        yield Exchange([], [(p, outs[p]) for p in peers])


def scatter(
    rank: int, size: int, out: np.ndarray, ins: Sequence[np.ndarray] | None, root: int
) -> Schedule:
    """out becomes the root's ins[rank] (ins is the root's only)."""
    if rank != root:
        yield Exchange([], [(root, out)])
        return
    assert ins is not None
    out[...] = ins[root]
    peers = [p for p in range(size) if p != root]
    if peers:
        yield Exchange([(p, ins[p]) for p in peers], [])


def alltoall(
    rank: int, size: int, outs: Sequence[np.ndarray], ins: Sequence[np.ndarray]
) -> Schedule:
    """outs[p] becomes rank p's ins[rank]: one step, every pair at once."""
    outs[rank][...] = ins[rank]
    peers = [p for p in range(size) if p != rank]
    if peers:
        yield Exchange([(p, ins[p]) for p in peers], [(p, outs[p]) for p in peers])


def barrier(rank: int, size: int) -> Schedule:
    """Dissemination barrier: ceil(log2(size)) steps of one byte; no rank leaves before
    every rank has arrived."""
    token, got = np.zeros(1, np.uint8), np.empty(1, np.uint8)
    dist = 1
    while dist < size:
        yield Exchange([((rank + dist) % size, token)], [((rank - dist) % size, got)])
        dist <<= 1


def send(dst: int, flat: np.ndarray) -> Schedule:
    yield Exchange([(dst, flat)], [])


def recv(src: int, flat: np.ndarray) -> Schedule:
    yield Exchange([], [(src, flat)])
