"""Utilities on top of the core API: ActorPool, state listings."""

from .actor_pool import ActorPool

__all__ = ["ActorPool"]
