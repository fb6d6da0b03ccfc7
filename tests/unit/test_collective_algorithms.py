"""The collective schedules (util/collective/algorithms.py), every rank in one process.

`run_ranks` matches each rank's sends with its peers' receives the way sockets would,
but stricter: a send completes only when the peer has posted the matching receive
(no buffering), so a schedule that passes here cannot deadlock on full sockets.
"""

from __future__ import annotations

import numpy as np
import pytest

from raylite.util.collective import algorithms as A
from raylite.util.collective.types import UFUNCS, ReduceOp

SIZES = [1, 2, 3, 4, 5, 7, 8]
DTYPES = [np.float32, np.float64, np.int32, np.int64, np.uint8, np.complex64]


class Deadlock(AssertionError):
    pass


def run_ranks(schedules: list[A.Schedule]) -> int:
    """Run every rank's schedule to its end; the number of steps taken."""
    n = len(schedules)
    sends: list[dict[int, np.ndarray] | None] = [None] * n
    recvs: list[dict[int, np.ndarray] | None] = [None] * n
    steps = 0

    def advance(r: int) -> None:
        nonlocal steps
        while True:
            try:
                step = next(schedules[r])
            except StopIteration:
                sends[r] = recvs[r] = None
                return
            steps += 1
            for peer, arr in step.sends + step.recvs:
                assert 0 <= peer < n, f"rank {r} talks to {peer}"
                assert peer != r, f"rank {r} talks to itself"
                assert arr.ndim == 1
                assert arr.flags.c_contiguous
            assert len({p for p, _ in step.sends}) == len(step.sends), "one send per peer"
            assert len({p for p, _ in step.recvs}) == len(step.recvs), "one recv per peer"
            sends[r], recvs[r] = dict(step.sends), dict(step.recvs)
            if sends[r] or recvs[r]:
                return

    for r in range(n):
        advance(r)
    while any(s is not None for s in sends):
        progress = False
        for r in range(n):
            for p in list((sends[r] or {}).keys()):
                peer_recvs = recvs[p]
                if peer_recvs is not None and r in peer_recvs:
                    src, dst = sends[r].pop(p), peer_recvs.pop(r)  # type: ignore[union-attr]
                    assert src.nbytes == dst.nbytes, (r, p)
                    assert src.dtype == dst.dtype, (r, p)
                    dst[...] = src
                    progress = True
        for r in range(n):
            if sends[r] is not None and not sends[r] and not recvs[r]:
                advance(r)
                progress = True
        if not progress:
            raise Deadlock(
                [(r, sends[r] and list(sends[r]), recvs[r] and list(recvs[r])) for r in range(n)]
            )
    return steps


def inputs(size: int, n: int, dtype: type, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.complexfloating):
        return [
            (rng.integers(1, 4, n) + 1j * rng.integers(1, 4, n)).astype(dtype) for _ in range(size)
        ]
    return [rng.integers(1, 4, n).astype(dtype) for _ in range(size)]


def expected(arrays: list[np.ndarray], op: ReduceOp) -> np.ndarray:
    return UFUNCS[op].reduce(np.stack(arrays), axis=0)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("n", [0, 1, 5, 1000, 50_000])  # 50_000 float32 is past SMALL_BYTES
@pytest.mark.parametrize("op", list(ReduceOp))
def test_allreduce(size, n, op):
    arrays = inputs(size, n, np.float64)
    want = expected(arrays, op)
    run_ranks([A.allreduce(r, size, arrays[r], UFUNCS[op]) for r in range(size)])
    for r in range(size):
        np.testing.assert_allclose(arrays[r], want, rtol=1e-12)
        assert arrays[r].tobytes() == arrays[0].tobytes(), "every rank gets the same bits"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [7, 100_000])
def test_allreduce_dtypes(dtype, n):
    size = 3
    arrays = inputs(size, n, dtype)
    want = expected(arrays, ReduceOp.SUM)
    run_ranks([A.allreduce(r, size, arrays[r], np.add) for r in range(size)])
    for a in arrays:
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, want)


def test_large_allreduce_takes_the_ring():
    size, n = 4, 100_000
    arrays = inputs(size, n, np.float32)
    steps = run_ranks([A.allreduce(r, size, arrays[r], np.add) for r in range(size)])
    assert steps == size * 2 * (size - 1)  # reduce-scatter then allgather, per rank


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("n", [3, 40_000])
@pytest.mark.parametrize("op", [ReduceOp.SUM, ReduceOp.MAX])
def test_reduce_to_every_root(size, n, op):
    for root in range(size):
        arrays = inputs(size, n, np.int64, seed=root)
        before = [a.copy() for a in arrays]
        want = expected(arrays, op)
        run_ranks([A.reduce(r, size, arrays[r], UFUNCS[op], root) for r in range(size)])
        np.testing.assert_array_equal(arrays[root], want)
        for r in range(size):
            if r != root:
                np.testing.assert_array_equal(arrays[r], before[r])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", [np.float32, np.int8, np.bool_])
def test_broadcast_from_every_root(size, dtype):
    for root in range(size):
        arrays = [
            np.full(11, r % 2 if dtype is np.bool_ else r + 1, dtype=dtype) for r in range(size)
        ]
        want = arrays[root].copy()
        steps = run_ranks([A.broadcast(r, size, arrays[r], root) for r in range(size)])
        for a in arrays:
            np.testing.assert_array_equal(a, want)
        assert steps == 2 * (size - 1)  # a tree: size - 1 edges, a send and a receive each


@pytest.mark.parametrize("size", SIZES)
def test_allgather(size):
    arrays = inputs(size, 9, np.int32)
    outs = [[np.zeros(9, np.int32) for _ in range(size)] for _ in range(size)]
    run_ranks([A.allgather(r, size, arrays[r], outs[r]) for r in range(size)])
    for r in range(size):
        for p in range(size):
            np.testing.assert_array_equal(outs[r][p], arrays[p])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("op", list(ReduceOp))
def test_reducescatter(size, op):
    # every rank passes lists of the same shapes: list index p has 6+p elements
    ins = [
        [inputs(1, 6 + p, np.float64, seed=10 * r + p)[0] for p in range(size)] for r in range(size)
    ]
    before = [[a.copy() for a in row] for row in ins]
    outs = [np.zeros(6 + r) for r in range(size)]
    run_ranks([A.reducescatter(r, size, ins[r], outs[r], UFUNCS[op]) for r in range(size)])
    for r in range(size):
        np.testing.assert_allclose(outs[r], expected([ins[q][r] for q in range(size)], op))
        for a, b in zip(ins[r], before[r], strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("size", SIZES)
def test_gather_and_scatter_at_every_root(size):
    for root in range(size):
        arrays = inputs(size, 4, np.uint8, seed=root)
        outs = [np.zeros(4, np.uint8) for _ in range(size)]
        run_ranks(
            [A.gather(r, size, arrays[r], outs if r == root else None, root) for r in range(size)]
        )
        for p in range(size):
            np.testing.assert_array_equal(outs[p], arrays[p])
        got = [np.zeros(4, np.uint8) for _ in range(size)]
        run_ranks(
            [A.scatter(r, size, got[r], arrays if r == root else None, root) for r in range(size)]
        )
        for p in range(size):
            np.testing.assert_array_equal(got[p], arrays[p])


@pytest.mark.parametrize("size", SIZES)
def test_alltoall(size):
    ins = [[np.full(3, 10 * r + p, np.int16) for p in range(size)] for r in range(size)]
    outs = [[np.zeros(3, np.int16) for _ in range(size)] for _ in range(size)]
    run_ranks([A.alltoall(r, size, outs[r], ins[r]) for r in range(size)])
    for r in range(size):
        for p in range(size):
            np.testing.assert_array_equal(outs[r][p], ins[p][r])


@pytest.mark.parametrize("size", SIZES)
def test_barrier_and_send_recv(size):
    run_ranks([A.barrier(r, size) for r in range(size)])
    if size > 1:
        a, b = np.arange(5.0), np.zeros(5)
        run_ranks([A.send(1, a), A.recv(0, b)])
        np.testing.assert_array_equal(a, b)


def test_a_barrier_missing_a_rank_deadlocks_here():
    with pytest.raises(Deadlock):
        run_ranks(
            [A.barrier(r, 3) for r in range(2)]
            + [iter([A.Exchange([], [(0, np.empty(1, np.uint8))])])]
        )


def test_mismatched_sizes_are_caught():
    with pytest.raises(AssertionError):
        run_ranks([A.send(1, np.zeros(4)), A.recv(0, np.zeros(5))])


def test_chunk_bounds_match_array_split():
    for n in (0, 1, 7, 100):
        for parts in (1, 3, 8):
            got = [hi - lo for lo, hi in A.chunk_bounds(n, parts)]
            assert got == [len(c) for c in np.array_split(np.arange(n), parts)]


@pytest.mark.parametrize("size", [2, 3, 4, 5])
@pytest.mark.parametrize("op", list(ReduceOp))
def test_shared_memory_allreduce_leaves_no_file(size, op):
    import glob

    from raylite.util.collective import shm

    before = set(glob.glob(f"{shm.SHM_DIR}/raylite-coll-*"))
    areas = [shm.ShmArea() for _ in range(size)]
    try:
        for n in (100_000, 50_000, 200_001):  # a smaller op reuses the segment, a larger grows it
            arrays = inputs(size, n, np.float64, seed=n)
            want = expected(arrays, op)
            run_ranks(
                [shm.allreduce(r, size, arrays[r], UFUNCS[op], areas[r]) for r in range(size)]
            )
            for a in arrays:
                np.testing.assert_allclose(a, want, rtol=1e-12)
                assert a.tobytes() == arrays[0].tobytes()
            assert set(glob.glob(f"{shm.SHM_DIR}/raylite-coll-*")) == before  # unlinked once mapped
    finally:
        for area in areas:
            area.close()


def test_shared_memory_allreduce_with_mismatched_sizes_raises():
    from raylite.util.collective import shm
    from raylite.util.collective.types import MismatchError

    areas = [shm.ShmArea() for _ in range(2)]
    try:
        with pytest.raises(MismatchError, match="same shape"):
            run_ranks([shm.allreduce(0, 2, np.ones(10), np.add, areas[0]),
                       shm.allreduce(1, 2, np.ones(12), np.add, areas[1])])  # fmt: skip
    finally:
        for area in areas:
            area.close()
