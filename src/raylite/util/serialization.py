"""ray.util.register_serializer and deregister_serializer (Ray's "Custom Serializers").

Owns the public functions and their keyword-only signature. Not the pickling
(serialization.py keeps the registry: cloudpickle's dispatch table, per process).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import serialization


def register_serializer(
    cls: type, *, serializer: Callable[[Any], Any], deserializer: Callable[[Any], Any]
) -> None:
    """Serialize instances of `cls` with `serializer` and rebuild them with
    `deserializer` (which must itself pickle). Applies to this process only: a task
    that returns such values registers the serializer in its worker too."""
    serialization.register_serializer(cls, serializer, deserializer)


def deregister_serializer(cls: type) -> None:
    """Forget the serializer of `cls`; no effect if there is none."""
    serialization.deregister_serializer(cls)


__all__ = ["deregister_serializer", "register_serializer"]
