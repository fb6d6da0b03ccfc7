"""ray.util.collective's API where no backend runs: the names, ReduceOp, and the errors
of calls made in the wrong place or with the wrong arguments.

Ray's CPU backend (gloo) needs pygloo, which is not installed beside Ray here, so the
operations themselves are tested on raylite alone (tests/multiprocess/test_collective.py).
Run against Ray with RAY_ADDRESS=local where another Ray cluster runs on the machine.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests._engine import AGAINST_RAY, ray

if AGAINST_RAY:
    import ray.util.collective as col
    from ray.util.collective.types import ReduceOp
else:
    import raylite.util.collective as col
    from raylite.util.collective.types import ReduceOp

RAY_INIT = {"num_cpus": 1}


def test_reduce_ops_and_names():
    assert [(op.name, op.value) for op in ReduceOp] == [
        ("SUM", 0),
        ("PRODUCT", 1),
        ("MIN", 2),
        ("MAX", 3),
    ]
    for name in ("init_collective_group", "create_collective_group", "destroy_collective_group",
                 "get_rank", "get_collective_group_size", "is_group_initialized", "allreduce",
                 "reduce", "broadcast", "allgather", "reducescatter", "barrier", "send", "recv",
                 "get_group_handle", "nccl_available", "gloo_available", "register_collective_backend",
                 "allreduce_multigpu", "send_multigpu", "recv_multigpu"):  # fmt: skip
        assert callable(getattr(col, name)), name
    assert col.nccl_available() is False  # no GPUs, no cupy


def test_gpu_calls_need_nccl_and_cupy():
    for name in ("allreduce_multigpu", "reduce_multigpu", "broadcast_multigpu"):
        with pytest.raises(RuntimeError) as info:
            getattr(col, name)([np.ones(2)])
        assert str(info.value) == "Multigpu calls requires NCCL and Cupy."
    for name in ("allgather_multigpu", "reducescatter_multigpu"):
        with pytest.raises(RuntimeError) as info:
            getattr(col, name)([[np.ones(2)]], [np.ones(2)])
        assert str(info.value) == "Multigpu calls requires NCCL and Cupy."
    with pytest.raises(RuntimeError, match="send_multigpu call requires NCCL"):
        col.send_multigpu(np.ones(2), 1, 0)
    with pytest.raises(RuntimeError, match="recv_multigpu call requires NCCL"):
        col.recv_multigpu(np.ones(2), 1, 0)
    with pytest.raises(RuntimeError, match="synchronize call requires CUDA and NCCL"):
        col.collective.synchronize(0)  # not among the package's names, as in Ray


def test_the_driver_may_not_call_them(ray_start):
    message = "The collective APIs shall be only used inside a Ray actor or task."
    with pytest.raises(RuntimeError) as info:
        col.allreduce(np.ones(2))
    assert str(info.value) == message
    with pytest.raises(RuntimeError, match="shall be only used inside"):
        col.init_collective_group(2, 0, backend="gloo")


@ray.remote(num_cpus=0)
class Member:
    def outside_any_group(self):
        out = [col.is_group_initialized("default"), col.get_rank(), col.get_collective_group_size()]
        try:
            col.allreduce(np.ones(2))
        except RuntimeError as exc:
            out.append(str(exc))
        col.destroy_collective_group("nope")  # a group this process is not in: nothing
        try:
            col.init_collective_group(2, 0, backend="bogus")
        except ValueError as exc:
            out.append("BOGUS" in str(exc))
        return out


def test_an_actor_outside_any_group(ray_start):
    got = ray.get(Member.remote().outside_any_group.remote(), timeout=60)
    assert got == [
        False,
        -1,
        -1,
        "The collective group 'default' is not initialized in the process.",
        True,
    ]


def test_create_collective_group_checks_its_arguments(ray_start):
    actors = [Member.remote(), Member.remote()]
    with pytest.raises(RuntimeError) as info:
        col.create_collective_group(actors, 2, [0, 1, 2], backend="gloo", group_name="x")
    assert (
        str(info.value) == "Each actor should correspond to one rank. Got '3' ranks but '2' actors"
    )
    with pytest.raises(RuntimeError, match="Ranks must be a permutation from 0 to '2'"):
        col.create_collective_group(actors, 2, [0, 2], backend="gloo", group_name="x")
    with pytest.raises(RuntimeError, match="Backend BOGUS is not registered"):
        col.create_collective_group(actors, 2, [0, 1], backend="bogus", group_name="x")
