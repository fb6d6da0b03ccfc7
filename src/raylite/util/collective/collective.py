"""The collective API, as Ray's `ray.util.collective` (its CPU part), plus MPI's gather,
scatter and alltoall.

Owns this process's groups (name -> Group), the declaration a driver makes with
create_collective_group (a named actor the ranks read on their first call, as Ray's
"info_<group>" actor), and the checks of every call's arguments; not the sockets
(group.py) nor the schedules (algorithms.py).

Arrays are numpy arrays (or CPU torch tensors, through their numpy view), changed in
place as Ray's gloo backend changes them; a non-contiguous array works through a copy.
Backends: "gloo" (Ray's CPU backend's name) and "raylite" both run raylite's sockets;
"nccl" is not available (raylite has no GPU collectives).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ...core import context
from . import algorithms as alg
from .group import Group
from .shm import allreduce as shm_allreduce
from .types import UFUNCS, Backend, ReduceOp

_groups: dict[str, Group] = {}
_groups_lock = threading.Lock()
_lazy_lock = threading.Lock()  # joins of declared groups, one at a time
# The driver's handles of the groups it declared: a named actor with no handle left
# would end (Ray makes it detached instead, which outlives the driver).
_declared: dict[str, Any] = {}
_DEFAULT_TIMEOUT_MS = 30000


def _info_name(group_name: str) -> str:
    return f"raylite_collective_info_{group_name}"


class _Info:
    """What create_collective_group declared: read by each rank on its first call."""

    def __init__(
        self, ids: list[str], world_size: int, ranks: list[int], backend: str, timeout_ms: int
    ) -> None:
        self.info = (ids, world_size, ranks, backend, timeout_ms)

    def get_info(self) -> tuple[list[str], int, list[int], str, int]:
        return self.info


def nccl_available() -> bool:
    return False


def gloo_available() -> bool:
    return True


def is_backend_available(backend: str) -> bool:
    return Backend(backend) in Backend.AVAILABLE


def _check_inside_actor() -> None:
    cw: Any = context.live_worker()
    if cw is None or cw.mode != "worker":
        raise RuntimeError("The collective APIs shall be only used inside a Ray actor or task.")


def _check_backend(backend: Any, declared: bool = False) -> str:
    """The backend's name, or Ray's error: unknown names are ValueError at init and
    RuntimeError at create_collective_group, as Ray's registry raises them."""
    name = str(getattr(backend, "value", backend)).upper()
    if name not in (Backend.NCCL, Backend.GLOO, Backend.RAYLITE):
        if declared:
            raise RuntimeError(
                f"Backend {name} is not registered. raylite has GLOO and RAYLITE (the same "
                f"sockets)."
            )
        raise ValueError(f"Backend {name} not registered: raylite has GLOO and RAYLITE.")
    if name not in Backend.AVAILABLE:
        raise RuntimeError(
            f"Backend {name} is not available. raylite's collectives run on CPUs: "
            f"use backend='gloo' or 'raylite'."
        )
    return name


def is_group_initialized(group_name: str = "default") -> bool:
    """Whether this process has initialised the group."""
    with _groups_lock:
        return group_name in _groups


def init_collective_group(
    world_size: int,
    rank: int,
    backend: Any = Backend.RAYLITE,
    group_name: str = "default",
    gloo_timeout: int = _DEFAULT_TIMEOUT_MS,
) -> None:
    """Join a collective group from inside an actor (or task); returns once every rank
    has joined and each pair of ranks is connected. gloo_timeout (ms) bounds the wait
    for the others, here and in every call."""
    _check_inside_actor()
    if not group_name or not isinstance(group_name, str):
        raise ValueError(f"group_name '{group_name}' needs to be a string.")
    if not isinstance(world_size, int) or world_size <= 0:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}.")
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}.")
    name = _check_backend(backend)
    with _groups_lock:
        if group_name in _groups:
            raise RuntimeError("Trying to initialize a group a second time.")
        _groups[group_name] = Group(world_size, rank, group_name, gloo_timeout / 1000, name)


def create_collective_group(
    actors: list[Any],
    world_size: int,
    ranks: list[int],
    backend: Any = Backend.RAYLITE,
    group_name: str = "default",
    gloo_timeout: int = _DEFAULT_TIMEOUT_MS,
) -> None:
    """Declare, from the driver, actors as a group: each joins it on its first call."""
    import raylite

    name = _info_name(group_name)
    try:
        raylite.get_actor(name)
        raise RuntimeError("Trying to initialize a group twice.")
    except ValueError:
        pass
    if len(ranks) != len(actors):
        raise RuntimeError(
            f"Each actor should correspond to one rank. Got '{len(ranks)}' ranks but "
            f"'{len(actors)}' actors"
        )
    if set(ranks) != set(range(len(ranks))):
        raise RuntimeError(f"Ranks must be a permutation from 0 to '{len(ranks)}'. Got '{ranks}'.")
    if world_size <= 0:
        raise RuntimeError(f"World size must be greater than zero. Got '{world_size}'.")
    if world_size != len(actors):
        raise RuntimeError(
            f"World size '{world_size}' must equal the number of actors '{len(actors)}'."
        )
    backend_name = _check_backend(backend, declared=True)
    ids = [a._actor_id.hex() for a in actors]
    info = (
        raylite.remote(_Info)
        .options(name=name, num_cpus=0)
        .remote(ids, world_size, list(ranks), backend_name, gloo_timeout)
    )
    raylite.get(info.get_info.remote())
    _declared[group_name] = info


def destroy_collective_group(group_name: str = "default") -> None:
    """Leave the group: its sockets close (peers still in it fail their next call)."""
    _check_inside_actor()
    with _groups_lock:
        group = _groups.pop(group_name, None)
    if group is None:
        return
    group.close()
    import raylite

    try:  # as Ray's: the driver's declaration goes with the group
        raylite.kill(raylite.get_actor(_info_name(group_name)))
    except ValueError:
        pass


def get_rank(group_name: str = "default") -> int:
    """This process's rank in the group; -1 if it is not in it."""
    _check_inside_actor()
    with _groups_lock:
        group = _groups.get(group_name)
    return -1 if group is None else group.rank


def get_collective_group_size(group_name: str = "default") -> int:
    """The group's world size; -1 if this process is not in it."""
    _check_inside_actor()
    with _groups_lock:
        group = _groups.get(group_name)
    return -1 if group is None else group.world_size


def get_group_handle(group_name: str = "default") -> Group:
    """The group, joined now if the driver declared it (create_collective_group)."""
    _check_inside_actor()
    with _groups_lock:
        group = _groups.get(group_name)
    if group is not None:
        return group
    with _lazy_lock:  # two threads of a threaded actor: one joins, the other waits
        return _join_declared(group_name)


def _join_declared(group_name: str) -> Group:
    with _groups_lock:
        group = _groups.get(group_name)
    if group is not None:
        return group
    import raylite

    try:
        info = raylite.get_actor(_info_name(group_name))
    except ValueError:
        raise RuntimeError(
            f"The collective group '{group_name}' is not initialized in the process."
        ) from None
    ids, world_size, ranks, backend, timeout_ms = raylite.get(info.get_info.remote())
    me = raylite.get_runtime_context().get_actor_id()
    if me not in ids:
        raise RuntimeError(
            f"The collective group '{group_name}' is not initialized in the process "
            f"(this actor is not one of the group's)."
        )
    init_collective_group(world_size, ranks[ids.index(me)], backend, group_name, timeout_ms)
    return _groups[group_name]


# --- arrays ------------------------------------------------------------------------
def _array(tensor: Any) -> np.ndarray:
    if isinstance(tensor, np.ndarray):
        return tensor
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu":
        return np.asarray(tensor.numpy())
    raise RuntimeError(
        f"Unrecognized tensor type '{type(tensor)}'. Supported types are: np.ndarray and "
        f"CPU torch.Tensor."
    )


def _arrays(tensor_list: Any) -> list[np.ndarray]:
    if not isinstance(tensor_list, list):
        raise RuntimeError(f"The input must be a list of tensors. Got '{type(tensor_list)}'.")
    if not tensor_list:
        raise RuntimeError("Got an empty list of tensors.")
    return [_array(t) for t in tensor_list]


def _flat_in(arr: np.ndarray) -> np.ndarray:
    """A 1-D C-contiguous array of arr's elements (a view where arr allows it)."""
    return np.ascontiguousarray(arr).reshape(-1)


class _Out:
    """A 1-D contiguous buffer for an array written in place; copied back if it is not
    contiguous itself."""

    def __init__(self, arr: np.ndarray, op: str) -> None:
        if not arr.flags.writeable:
            raise ValueError(
                f"{op} writes into its array in place, but this one is read-only (arrays "
                f"from ray.get are): pass a copy (np.array(x))."
            )
        self.arr = arr
        self.flat = _flat_in(arr)
        self.copied = not np.shares_memory(self.flat, arr) and arr.size > 0

    def done(self) -> None:
        if self.copied:
            self.arr[...] = self.flat.reshape(self.arr.shape)


def _rank_arg(group: Group, rank: int, what: str) -> int:
    if not isinstance(rank, (int, np.integer)):
        raise TypeError(f"{what} must be an int, got {type(rank).__name__}.")
    if rank < 0:
        raise ValueError(f"rank '{rank}' is negative.")
    if rank >= group.world_size:
        raise ValueError(f"rank '{rank}' must be less than world size '{group.world_size}'")
    return int(rank)


def _ufunc(op: Any) -> np.ufunc:
    if not isinstance(op, ReduceOp):
        raise ValueError(f"op must be a ReduceOp (SUM, PRODUCT, MIN, MAX), got {op!r}.")
    return UFUNCS[op]


def _same_shapes(arrays: list[np.ndarray], like: np.ndarray | None, what: str) -> None:
    for a in arrays:
        if like is not None and (a.size != like.size or a.dtype != like.dtype):
            raise RuntimeError(
                f"{what}: every tensor in the list must have the size and dtype of the "
                f"tensor ({like.size} x {like.dtype}), got {a.size} x {a.dtype}."
            )


def _list_len(group: Group, arrays: list[np.ndarray], what: str) -> None:
    if len(arrays) != group.world_size:
        raise RuntimeError(
            f"The length of the tensor list operands to {what} must be equal to world_size."
        )


def _run(
    group: Group, op: str, make: Callable[[], alg.Schedule], dtype: np.dtype, outs: list[_Out]
) -> None:
    group.run(op, make(), dtype)
    for out in outs:
        out.done()


# --- operations --------------------------------------------------------------------
def allreduce(tensor: Any, group_name: str = "default", op: ReduceOp = ReduceOp.SUM) -> None:
    """tensor becomes the reduction (op) of every rank's tensor, on every rank."""
    arr = _array(tensor)
    g = get_group_handle(group_name)
    uf, out = _ufunc(op), _Out(arr, "allreduce")
    shm = g.shm
    if shm is not None and out.flat.nbytes > alg.SMALL_BYTES:  # every rank on this node

        def make() -> alg.Schedule:
            assert shm is not None
            return shm_allreduce(g.rank, g.world_size, out.flat, uf, shm)

    else:

        def make() -> alg.Schedule:
            return alg.allreduce(g.rank, g.world_size, out.flat, uf)

    _run(g, "allreduce", make, arr.dtype, [out])


def reduce(
    tensor: Any, dst_rank: int = 0, group_name: str = "default", op: ReduceOp = ReduceOp.SUM
) -> None:
    """dst_rank's tensor becomes the reduction; the others' are left as they were."""
    arr = _array(tensor)
    g = get_group_handle(group_name)
    root, uf = _rank_arg(g, dst_rank, "dst_rank"), _ufunc(op)
    if g.rank == root:
        out = _Out(arr, "reduce")
        _run(
            g,
            "reduce",
            lambda: alg.reduce(g.rank, g.world_size, out.flat, uf, root),
            arr.dtype,
            [out],
        )
    else:
        flat = _flat_in(arr)
        _run(g, "reduce", lambda: alg.reduce(g.rank, g.world_size, flat, uf, root), arr.dtype, [])


def broadcast(tensor: Any, src_rank: int = 0, group_name: str = "default") -> None:
    """Every rank's tensor becomes src_rank's."""
    arr = _array(tensor)
    g = get_group_handle(group_name)
    root = _rank_arg(g, src_rank, "src_rank")
    if g.rank == root:
        flat = _flat_in(arr)
        _run(g, "broadcast", lambda: alg.broadcast(g.rank, g.world_size, flat, root), arr.dtype, [])
    else:
        out = _Out(arr, "broadcast")
        _run(
            g,
            "broadcast",
            lambda: alg.broadcast(g.rank, g.world_size, out.flat, root),
            arr.dtype,
            [out],
        )


def allgather(tensor_list: list[Any], tensor: Any, group_name: str = "default") -> None:
    """tensor_list[p] becomes rank p's tensor, on every rank."""
    arr, arrays = _array(tensor), _arrays(tensor_list)
    g = get_group_handle(group_name)
    _list_len(g, arrays, "allgather")
    _same_shapes(arrays, arr, "allgather")
    outs = [_Out(a, "allgather") for a in arrays]
    flat = _flat_in(arr)
    bufs = [o.flat for o in outs]
    _run(g, "allgather", lambda: alg.allgather(g.rank, g.world_size, flat, bufs), arr.dtype, outs)


def reducescatter(
    tensor: Any, tensor_list: list[Any], group_name: str = "default", op: ReduceOp = ReduceOp.SUM
) -> None:
    """tensor becomes the reduction over ranks of their tensor_list[rank]."""
    arr, arrays = _array(tensor), _arrays(tensor_list)
    g = get_group_handle(group_name)
    _list_len(g, arrays, "reducescatter")
    _same_shapes(arrays, arr, "reducescatter")
    uf, out = _ufunc(op), _Out(arr, "reducescatter")
    ins = [_flat_in(a) for a in arrays]
    _run(
        g,
        "reducescatter",
        lambda: alg.reducescatter(g.rank, g.world_size, ins, out.flat, uf),
        arr.dtype,
        [out],
    )


reduce_scatter = reducescatter


def barrier(group_name: str = "default") -> None:
    """Returns once every rank of the group has called barrier."""
    g = get_group_handle(group_name)
    g.run("barrier", alg.barrier(g.rank, g.world_size), np.dtype(np.uint8))


def send(tensor: Any, dst_rank: int, group_name: str = "default") -> None:
    """Send tensor to dst_rank (which calls recv); returns once it has taken it."""
    arr = _array(tensor)
    g = get_group_handle(group_name)
    dst = _rank_arg(g, dst_rank, "dst_rank")
    if dst == g.rank:
        raise RuntimeError(f"The destination rank '{dst_rank}' is self.")
    flat = _flat_in(arr)
    g.run("send/recv", alg.send(dst, flat), arr.dtype)


def recv(tensor: Any, src_rank: int, group_name: str = "default") -> None:
    """Fill tensor with what src_rank sends (send)."""
    arr = _array(tensor)
    g = get_group_handle(group_name)
    src = _rank_arg(g, src_rank, "src_rank")
    if src == g.rank:
        raise RuntimeError(f"The destination rank '{src_rank}' is self.")
    out = _Out(arr, "recv")
    _run(g, "send/recv", lambda: alg.recv(src, out.flat), arr.dtype, [out])


def gather(
    tensor_list: list[Any] | None, tensor: Any, dst_rank: int = 0, group_name: str = "default"
) -> None:
    """MPI's gather: dst_rank's tensor_list[p] becomes rank p's tensor (the other ranks
    pass None or any list; it is not touched)."""
    arr = _array(tensor)
    g = get_group_handle(group_name)
    root = _rank_arg(g, dst_rank, "dst_rank")
    flat = _flat_in(arr)
    if g.rank != root:
        g.run("gather", alg.gather(g.rank, g.world_size, flat, None, root), arr.dtype)
        return
    arrays = _arrays(tensor_list)
    _list_len(g, arrays, "gather")
    _same_shapes(arrays, arr, "gather")
    outs = [_Out(a, "gather") for a in arrays]
    bufs = [o.flat for o in outs]
    _run(g, "gather", lambda: alg.gather(g.rank, g.world_size, flat, bufs, root), arr.dtype, outs)


def scatter(
    tensor: Any, tensor_list: list[Any] | None, src_rank: int = 0, group_name: str = "default"
) -> None:
    """MPI's scatter: tensor becomes src_rank's tensor_list[rank] (only src_rank's list
    is read)."""
    arr = _array(tensor)
    g = get_group_handle(group_name)
    root = _rank_arg(g, src_rank, "src_rank")
    out = _Out(arr, "scatter")
    ins = None
    if g.rank == root:
        arrays = _arrays(tensor_list)
        _list_len(g, arrays, "scatter")
        _same_shapes(arrays, arr, "scatter")
        ins = [_flat_in(a) for a in arrays]
    _run(
        g,
        "scatter",
        lambda: alg.scatter(g.rank, g.world_size, out.flat, ins, root),
        arr.dtype,
        [out],
    )


def alltoall(
    output_tensor_list: list[Any], input_tensor_list: list[Any], group_name: str = "default"
) -> None:
    """MPI's alltoall: output_tensor_list[p] becomes rank p's input_tensor_list[rank]."""
    outs_a, ins_a = _arrays(output_tensor_list), _arrays(input_tensor_list)
    g = get_group_handle(group_name)
    _list_len(g, outs_a, "alltoall")
    _list_len(g, ins_a, "alltoall")
    _same_shapes(outs_a + ins_a, ins_a[0], "alltoall")
    outs = [_Out(a, "alltoall") for a in outs_a]
    ins = [_flat_in(a) for a in ins_a]
    bufs = [o.flat for o in outs]
    _run(g, "alltoall", lambda: alg.alltoall(g.rank, g.world_size, bufs, ins), ins_a[0].dtype, outs)


# --- GPU calls and backends raylite does not have: Ray's errors where cupy is absent --
def _no_multigpu(*_args: Any, **_kwargs: Any) -> None:
    raise RuntimeError("Multigpu calls requires NCCL and Cupy.")


allreduce_multigpu = reduce_multigpu = broadcast_multigpu = _no_multigpu
allgather_multigpu = reducescatter_multigpu = _no_multigpu


def send_multigpu(*_args: Any, **_kwargs: Any) -> None:
    raise RuntimeError("send_multigpu call requires NCCL.")


def recv_multigpu(*_args: Any, **_kwargs: Any) -> None:
    raise RuntimeError("recv_multigpu call requires NCCL.")


def synchronize(gpu_id: int) -> None:
    raise RuntimeError("synchronize call requires CUDA and NCCL.")


def register_collective_backend(name: str, group_cls: Any) -> None:
    raise NotImplementedError(
        f"register_collective_backend('{name}', ...): raylite's collectives have one "
        f"backend of their own (GLOO and RAYLITE name it); other backends cannot be plugged in."
    )
