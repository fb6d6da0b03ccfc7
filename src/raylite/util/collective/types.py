"""The collective API's small types: ReduceOp, Backend, and the errors a group raises.

Owns the names Ray's `ray.util.collective.types` has (ReduceOp, Backend) and the
errors of raylite's own backend. The errors subclass RuntimeError, as Ray's collective
calls raise RuntimeError; they live here, not in raylite/exceptions.py, because they
belong to this optional package and nothing below the tools layer raises them.

    CollectiveError (RuntimeError)
    ├── CollectiveTimeoutError (also a TimeoutError)   a peer did not answer in time
    ├── PeerGoneError                                  a peer closed its connection
    └── MismatchError                                  ranks passed different shapes
"""

from __future__ import annotations

import enum

import numpy as np


class ReduceOp(enum.Enum):
    SUM = 0
    PRODUCT = 1
    MIN = 2
    MAX = 3


UFUNCS: dict[ReduceOp, np.ufunc] = {
    ReduceOp.SUM: np.add,
    ReduceOp.PRODUCT: np.multiply,
    ReduceOp.MIN: np.minimum,
    ReduceOp.MAX: np.maximum,
}


class Backend:
    """Backend names, as Ray's: a string in, an upper-case name out."""

    NCCL = "NCCL"
    GLOO = "GLOO"
    RAYLITE = "RAYLITE"
    UNRECOGNIZED = "unrecognized"

    # gloo is Ray's CPU backend: raylite's sockets serve a program that asks for it.
    AVAILABLE = frozenset({GLOO, RAYLITE})

    def __new__(cls, name: str) -> str:  # type: ignore[misc]
        upper = str(getattr(name, "value", name)).upper()
        if upper not in (cls.NCCL, cls.GLOO, cls.RAYLITE):
            raise ValueError(f"Unrecognized backend: '{name}'. Only NCCL, GLOO and RAYLITE.")
        return upper


class CollectiveError(RuntimeError):
    """A collective call failed; the group is broken until destroyed and made again."""


class CollectiveTimeoutError(CollectiveError, TimeoutError):
    """A peer sent or took nothing within the group's timeout."""


class PeerGoneError(CollectiveError):
    """A peer's connection closed (its process exited, or it broke the group)."""


class MismatchError(CollectiveError):
    """Ranks passed arrays of different sizes or dtypes, or called different ops."""
