"""Utilities on top of the core API: ActorPool, a progress bar, state listings (util.state),
metrics (util.metrics) and custom serializers."""

from .actor_pool import ActorPool
from .progress_bar import progress
from .serialization import deregister_serializer, register_serializer

__all__ = ["ActorPool", "deregister_serializer", "progress", "register_serializer"]
