"""Utilities on top of the core API: ActorPool, a progress bar, state listings (util.state)."""

from .actor_pool import ActorPool
from .progress_bar import progress

__all__ = ["ActorPool", "progress"]
