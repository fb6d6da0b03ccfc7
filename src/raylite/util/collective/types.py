"""The collective API's small types: ReduceOp, Backend, and the errors a group raises.

Owns the names Ray's `ray.util.collective.types` has (ReduceOp, Backend); the errors
of raylite's own backend are re-exported from raylite.exceptions (the one hierarchy:
they are RayErrors, and RuntimeErrors as Ray's collective calls raise).

    CollectiveError (RuntimeError)
    ├── CollectiveTimeoutError                         a peer did not answer in time
    ├── PeerGoneError                                  a peer closed its connection
    └── MismatchError                                  ranks passed different shapes
"""

from __future__ import annotations

import enum

import numpy as np

from ...exceptions import (  # the one hierarchy; re-exported here
    CollectiveError as CollectiveError,
)
from ...exceptions import (
    CollectiveTimeoutError as CollectiveTimeoutError,
)
from ...exceptions import (
    MismatchError as MismatchError,
)
from ...exceptions import (
    PeerGoneError as PeerGoneError,
)


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
