"""Collectives among actors, as Ray's `ray.util.collective` (CPU), plus MPI's gather,
scatter and alltoall: data moves between the actors' processes over sockets, and
through shared memory for a large allreduce among ranks of one node.

Re-exports only: the API is collective.py, the sockets group.py, the schedules
algorithms.py, the shared-memory allreduce shm.py, the small types types.py.
"""

from .collective import (
    allgather,
    allreduce,
    alltoall,
    barrier,
    broadcast,
    create_collective_group,
    destroy_collective_group,
    gather,
    get_collective_group_size,
    get_group_handle,
    get_rank,
    gloo_available,
    init_collective_group,
    is_backend_available,
    is_group_initialized,
    nccl_available,
    recv,
    reduce,
    reduce_scatter,
    reducescatter,
    scatter,
    send,
)
from .types import (
    Backend,
    CollectiveError,
    CollectiveTimeoutError,
    MismatchError,
    PeerGoneError,
    ReduceOp,
)

__all__ = [
    "Backend",
    "CollectiveError",
    "CollectiveTimeoutError",
    "MismatchError",
    "PeerGoneError",
    "ReduceOp",
    "allgather",
    "allreduce",
    "alltoall",
    "barrier",
    "broadcast",
    "create_collective_group",
    "destroy_collective_group",
    "gather",
    "get_collective_group_size",
    "get_group_handle",
    "get_rank",
    "gloo_available",
    "init_collective_group",
    "is_backend_available",
    "is_group_initialized",
    "nccl_available",
    "recv",
    "reduce",
    "reduce_scatter",
    "reducescatter",
    "scatter",
    "send",
]
