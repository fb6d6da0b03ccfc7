"""raylite.util.collective among 4 actors on one node: every operation against numpy,
the errors, destroy and re-create, and a dead or absent peer (an error, not a hang).

raylite's own tests: Ray's CPU backend (gloo) needs pygloo, which is not installed, so
these cannot run against Ray; the API's names and errors follow Ray's collective.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests._engine import AGAINST_RAY, ray

pytestmark = [
    pytest.mark.skipif(AGAINST_RAY, reason="raylite's own (Ray's gloo backend needs pygloo)"),
    pytest.mark.timeout(180),
]
RAY_INIT = {"num_cpus": 2}
N = 4
SMALL, LARGE = 1000, 300_000  # elements: LARGE float64 runs the ring (past SMALL_BYTES)


@ray.remote(num_cpus=0)
class Member:
    def run(self, fn, *args):
        return fn(*args)


def col():
    import raylite.util.collective as collective

    return collective


def join(world_size, rank, group="default", backend="gloo", timeout_ms=30000):
    c = col()
    c.init_collective_group(
        world_size, rank, backend=backend, group_name=group, gloo_timeout=timeout_ms
    )
    return c.get_rank(group), c.get_collective_group_size(group), c.is_group_initialized(group)


def data(rank, n, dtype=np.float64):
    return ((np.arange(n) % 5) + rank + 1).astype(dtype)


def members(n=N):
    return [Member.remote() for _ in range(n)]


def run_all(actors, fn, *args):
    return ray.get([a.run.remote(fn, *args) for a in actors], timeout=120)


def _join_by_order(ranks_by_pid):
    import os

    return join(N, ranks_by_pid[os.getpid()])


def _pid():
    import os

    return os.getpid()


@pytest.fixture
def group4(ray_start):
    actors = members()
    pids = run_all(actors, _pid)
    ranks = {pid: r for r, pid in enumerate(pids)}
    assert run_all(actors, _join_by_order, ranks) == [(r, N, True) for r in range(N)]
    yield actors
    for a in actors:
        ray.kill(a)


# --- every operation -------------------------------------------------------------
def do_allreduce(n, dtype, op):
    c = col()
    a = data(c.get_rank(), n, dtype)
    c.allreduce(a, op=c.ReduceOp[op])
    return a


@pytest.mark.parametrize("n", [SMALL, LARGE])
@pytest.mark.parametrize("op", ["SUM", "PRODUCT", "MIN", "MAX"])
def test_allreduce(group4, n, op):
    ufunc = {"SUM": np.add, "PRODUCT": np.multiply, "MIN": np.minimum, "MAX": np.maximum}[op]
    want = ufunc.reduce(np.stack([data(r, n) for r in range(N)]), axis=0)
    for got in run_all(group4, do_allreduce, n, np.float64, op):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def ring_allreduce(n, op):
    c = col()
    g = c.get_group_handle()
    used_shm = g.shm is not None  # every rank on this node: large allreduces use it
    g.shm = None  # this rank's large allreduces take the socket ring instead
    return used_shm, do_allreduce(n, np.float64, op)


@pytest.mark.parametrize("op", ["SUM", "MIN"])
def test_allreduce_over_the_socket_ring(group4, op):
    ufunc = {"SUM": np.add, "MIN": np.minimum}[op]
    want = ufunc.reduce(np.stack([data(r, LARGE) for r in range(N)]), axis=0)
    for used_shm, got in run_all(group4, ring_allreduce, LARGE, op):
        assert used_shm
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8, np.complex128, np.bool_])
def test_allreduce_dtypes_and_shapes(group4, dtype):
    def body(dtype):
        c = col()
        r = c.get_rank()
        a = data(r, 6000, dtype).reshape(20, 300)
        c.allreduce(a)
        strided = data(r, 200, dtype)[::2]  # not contiguous: works through a copy
        c.allreduce(strided, op=c.ReduceOp.MAX)
        return a, strided

    want = np.add.reduce(np.stack([data(r, 6000, dtype) for r in range(N)]), axis=0, dtype=dtype)
    want_strided = np.maximum.reduce(np.stack([data(r, 200, dtype)[::2] for r in range(N)]))
    for a, strided in run_all(group4, body, dtype):
        assert a.dtype == dtype
        assert a.shape == (20, 300)
        np.testing.assert_array_equal(a.reshape(-1), want)
        np.testing.assert_array_equal(strided, want_strided)


def test_reduce_and_broadcast_at_every_root(group4):
    def body():
        c = col()
        r, out = c.get_rank(), []
        for root in range(N):
            for n in (SMALL, LARGE):
                a = data(r, n)
                c.reduce(a, dst_rank=root, op=c.ReduceOp.SUM)
                out.append(float(a.sum()))
                b = data(r, n)
                c.broadcast(b, src_rank=root)
                out.append(float(b.sum()))
        return out

    results = run_all(group4, body)
    for r, got in enumerate(results):
        i = 0
        for root in range(N):
            for n in (SMALL, LARGE):
                total = sum(data(q, n) for q in range(N)).sum()
                assert got[i] == (total if r == root else data(r, n).sum())
                assert got[i + 1] == data(root, n).sum()
                i += 2


def test_allgather_reducescatter_gather_scatter_alltoall(group4):
    def body():
        c = col()
        r = c.get_rank()
        gathered = [np.zeros(7) for _ in range(N)]
        c.allgather(gathered, data(r, 7))
        rs = np.zeros(50_000)
        c.reducescatter(rs, [data(r * 10 + p, 50_000) for p in range(N)], op=c.ReduceOp.SUM)
        g = [np.zeros(3, np.int32) for _ in range(N)] if r == 2 else None
        c.gather(g, data(r, 3, np.int32), dst_rank=2)
        sc = np.zeros(4, np.int16)
        c.scatter(
            sc, [np.full(4, 100 + p, np.int16) for p in range(N)] if r == 1 else None, src_rank=1
        )
        outs = [np.zeros(2, np.int64) for _ in range(N)]
        c.alltoall(outs, [np.full(2, 10 * r + p, np.int64) for p in range(N)])
        return gathered, rs, g, sc, outs

    for r, (gathered, rs, g, sc, outs) in enumerate(run_all(group4, body)):
        for p in range(N):
            np.testing.assert_array_equal(gathered[p], data(p, 7))
            np.testing.assert_array_equal(outs[p], np.full(2, 10 * p + r))
        np.testing.assert_array_equal(rs, sum(data(q * 10 + r, 50_000) for q in range(N)))
        if r == 2:
            for p in range(N):
                np.testing.assert_array_equal(g[p], data(p, 3, np.int32))
        else:
            assert g is None
        np.testing.assert_array_equal(sc, np.full(4, 100 + r, np.int16))


def test_send_recv_and_barrier(group4):
    def body():
        c = col()
        r = c.get_rank()
        c.barrier()
        if r == 0:
            c.send(np.arange(10.0), dst_rank=3)
            big = np.zeros(LARGE)
            c.recv(big, src_rank=3)
            return float(big.sum())
        if r == 3:
            got = np.zeros(10)
            c.recv(got, src_rank=0)
            c.send(got.repeat(LARGE // 10), dst_rank=0)
            return float(got.sum())
        c.barrier()  # ranks 1 and 2 wait here for 0 and 3's second barrier
        return None

    def second_barrier():
        c = col()
        if c.get_rank() in (0, 3):
            c.barrier()
        return c.get_rank()

    refs = [a.run.remote(body) for a in group4]
    # 0 and 3 finish their exchange, then join 1 and 2 in a second barrier
    assert ray.get([a.run.remote(second_barrier) for a in (group4[0], group4[3])], timeout=120) == [
        0,
        3,
    ]
    assert ray.get(refs, timeout=120) == [45.0 * LARGE // 10, None, None, 45.0]


# --- the driver's declaration, destroy and re-create ------------------------------
def lazy_sum(group):
    c = col()
    assert not c.is_group_initialized(group)
    a = np.ones(5)
    c.allreduce(a, group_name=group)  # joins the declared group first, as Ray's does
    return c.get_rank(group), float(a[0])


def leave(group):
    c = col()
    c.destroy_collective_group(group)
    return c.is_group_initialized(group), c.get_rank(group), c.get_collective_group_size(group)


def test_create_collective_group_from_the_driver_then_destroy_and_again(ray_start):
    from raylite.util import collective

    actors = members(3)
    collective.create_collective_group(actors, 3, [2, 0, 1], backend="gloo", group_name="decl")
    with pytest.raises(RuntimeError, match="twice"):
        collective.create_collective_group(actors, 3, [0, 1, 2], group_name="decl")
    assert run_all(actors, lazy_sum, "decl") == [(2, 3.0), (0, 3.0), (1, 3.0)]
    assert run_all(actors, leave, "decl") == [(False, -1, -1)] * 3
    collective.create_collective_group(actors, 3, [0, 1, 2], group_name="decl")
    assert run_all(actors, lazy_sum, "decl") == [(0, 3.0), (1, 3.0), (2, 3.0)]
    for bad_ranks, match in [([0, 1], "Each actor"), ([0, 1, 3], "permutation")]:
        with pytest.raises(RuntimeError, match=match):
            collective.create_collective_group(actors, 3, bad_ranks, group_name="other")
    with pytest.raises(RuntimeError, match="not available"):
        collective.create_collective_group(actors, 3, [0, 1, 2], backend="nccl", group_name="other")


def rejoin_and_sum(world_size, rank, group):
    c = col()
    c.destroy_collective_group(group)
    join(world_size, rank, group)
    a = np.full(3, rank + 1.0)
    c.allreduce(a, group_name=group)
    return float(a[0])


def test_destroy_and_init_again_many_times(ray_start):
    actors = members(3)
    for _ in range(3):  # each round a new mesh; stale ranks never mix rounds
        got = ray.get(
            [a.run.remote(rejoin_and_sum, 3, r, "again") for r, a in enumerate(actors)], timeout=120
        )
        assert got == [6.0, 6.0, 6.0]


# --- errors ----------------------------------------------------------------------
def expect_error(fn, *args):
    try:
        fn(*args)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return None


def test_misuse_gets_ray_s_errors(group4, ray_start):
    from raylite.util import collective

    with pytest.raises(RuntimeError, match="shall be only used inside a Ray actor or task"):
        collective.allreduce(np.ones(2))
    with pytest.raises(RuntimeError, match="inside a Ray actor"):
        collective.init_collective_group(2, 0)

    def body():
        c = col()
        out = {
            "second init": expect_error(join, N, 0),
            "wrong rank": expect_error(join, 4, 4, "other"),
            "negative rank": expect_error(join, 4, -1, "other"),
            "unknown group": expect_error(c.allreduce, np.ones(2), "nope"),
            "dst out of range": expect_error(c.reduce, np.ones(2), N),
            "send to self": expect_error(c.send, np.ones(2), c.get_rank()),
            "short list": expect_error(c.allgather, [np.ones(2)], np.ones(2)),
            "not an array": expect_error(c.allreduce, [1.0, 2.0]),
            "read-only": expect_error(c.allreduce, _ro()),
            "nccl": expect_error(join, 2, 0, "gpu", "nccl"),
            "rank of unknown": c.get_rank("nope"),
        }
        c.barrier()  # the group still works after refused calls
        return out

    got = run_all(group4, body)[0]
    assert got["second init"] == ("RuntimeError", "Trying to initialize a group a second time.")
    assert got["wrong rank"][0] == "ValueError"
    assert "rank must be an int in [0, 4)" in got["wrong rank"][1]
    assert got["negative rank"][0] == "ValueError"
    assert got["unknown group"] == (
        "RuntimeError",
        "The collective group 'nope' is not initialized in the process.",
    )
    assert got["dst out of range"] == ("ValueError", "rank '4' must be less than world size '4'")
    assert got["send to self"] == ("RuntimeError", "The destination rank '0' is self.")
    assert (
        got["short list"][1]
        == "The length of the tensor list operands to allgather must be equal to world_size."
    )
    assert got["not an array"][1].startswith("Unrecognized tensor type")
    assert got["read-only"][0] == "ValueError"
    assert "read-only" in got["read-only"][1]
    assert got["nccl"][0] == "RuntimeError"
    assert "Backend NCCL is not available" in got["nccl"][1]
    assert got["rank of unknown"] == -1


def _ro():
    a = np.ones(2)
    a.setflags(write=False)
    return a


def mismatched(n_by_rank):
    c = col()
    r = c.get_rank()
    first = expect_error(c.allreduce, np.ones(n_by_rank[r]))
    second = expect_error(c.barrier)
    c.destroy_collective_group()
    return first, second


def test_mismatched_sizes_fail_every_rank_and_the_group_can_be_made_again(group4):
    got = run_all(group4, mismatched, [10, 10, 11, 10])
    for first, second in got:
        assert first is not None
        assert first[0] in ("MismatchError", "PeerGoneError"), first
        assert second[0] == "CollectiveError"
        assert "is broken" in second[1]
    assert any(first[0] == "MismatchError" and "expected" in first[1] for first, _ in got)
    pids = run_all(group4, _pid)
    ranks = {pid: r for r, pid in enumerate(pids)}
    assert run_all(group4, _join_by_order, ranks) == [(r, N, True) for r in range(N)]
    for a in run_all(group4, do_allreduce, 100, np.float64, "SUM"):
        np.testing.assert_array_equal(a, sum(data(r, 100) for r in range(N)))


def test_a_killed_peer_is_an_error_not_a_hang(ray_start):
    actors = members(3)
    ray.get(
        [a.run.remote(join, 3, r, "dying", "gloo", 60000) for r, a in enumerate(actors)],
        timeout=120,
    )
    ray.kill(actors[2])
    got = run_all(actors[:2], expect_error, do_allreduce_in, "dying")
    for name, message in got:
        assert name == "PeerGoneError", message
        assert "closed its connection" in message


def do_allreduce_in(group):
    c = col()
    c.allreduce(np.ones(LARGE), group_name=group)


def set_timeout(group, seconds):
    col().get_group_handle(group).timeout_s = seconds


def test_a_rank_that_does_not_call_times_out(ray_start):
    actors = members(2)
    ray.get([a.run.remote(join, 2, r, "slow") for r, a in enumerate(actors)], timeout=120)
    # Joined with the default timeout (a loaded machine may start one actor late); the
    # calls' timeout is then made short, as gloo_timeout=1500 would make it.
    ray.get(actors[0].run.remote(set_timeout, "slow", 1.5), timeout=60)
    name, message = ray.get(actors[0].run.remote(expect_error, do_allreduce_in, "slow"), timeout=60)
    assert name == "CollectiveTimeoutError"
    assert "no progress with ranks [1]" in message


def test_a_rank_that_never_joins_times_out(ray_start):
    (a,) = members(1)
    name, message = ray.get(
        a.run.remote(expect_error, join, 2, 0, "alone", "gloo", 1500), timeout=60
    )
    assert name == "CollectiveTimeoutError"
    assert "ranks [1] did not join" in message
