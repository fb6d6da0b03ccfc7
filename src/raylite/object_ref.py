"""ObjectRef and the ids.

An id is 16 bytes: an 8-byte random prefix chosen once per process and an 8-byte
counter, so making one costs a counter bump, and ids from different processes
never collide. ObjectRef knows its owner's address (the process that made it), as
Ray's ownership model requires: whoever holds a ref can ask the owner for the value.

The live core worker installs itself in `_hooks` so refs can count themselves
(local reference counting) and notice when they are pickled (they escape the
process: a borrower may ask for the value later).
"""

from __future__ import annotations

import itertools
import os
from typing import Any

ID_SIZE = 16
_prefix = os.urandom(8)
_counter = itertools.count(1)


def _forked() -> None:
    """A forked child never reuses its parent's prefix (nor its ids)."""
    global _prefix
    _prefix = os.urandom(8)


os.register_at_fork(after_in_child=_forked)


def new_id() -> bytes:
    """A fresh 16-byte id, unique across processes."""
    return _prefix + next(_counter).to_bytes(8, "little")


class _Hooks:
    """Replaced by the core worker while raylite is initialised."""

    def add_local_ref(self, ref: ObjectRef) -> None:
        pass

    def remove_local_ref(self, object_id: bytes) -> None:
        pass

    def on_ref_serialized(self, ref: ObjectRef) -> None:
        pass

    def on_ref_deserialized(self, ref: ObjectRef) -> None:
        pass

    def owner_of(self, object_id: bytes) -> str:
        """The owner's address of an id this process knows ("" if it knows none)."""
        return ""


_hooks: _Hooks = _Hooks()


def set_hooks(hooks: _Hooks | None) -> None:
    global _hooks
    _hooks = hooks if hooks is not None else _Hooks()


class ObjectRef:
    """A future for an immutable object in the cluster.

    `ObjectRef(ref.binary())` makes a ref from an id alone, as Ray allows: it reads
    the object if this process owns it or holds a ref to it (which names the owner).
    """

    __slots__ = ("__weakref__", "_counted", "id", "owner")

    def __init__(self, object_id: bytes, owner: str | None = None, *, _count: bool = True) -> None:
        if owner is None:  # a user's ObjectRef(binary): the id alone
            self._counted = False  # for __del__, should the id be refused
            _check_id(object_id)
            owner = _hooks.owner_of(object_id)
        self.id = object_id
        self.owner = owner  # owner's listening address ("": unknown)
        self._counted = _count
        if _count:
            _hooks.add_local_ref(self)

    def __del__(self) -> None:
        if self._counted:
            try:
                _hooks.remove_local_ref(self.id)
            except Exception:  # interpreter shutdown: nothing left to free
                pass

    def hex(self) -> str:
        return self.id.hex()

    def binary(self) -> bytes:
        return self.id

    @classmethod
    def from_binary(cls, object_id: bytes) -> ObjectRef:
        return cls(object_id)

    @classmethod
    def from_hex(cls, hex_id: str) -> ObjectRef:
        """A ref from `ref.hex()` (Ray 2.60 raises NotImplementedError here)."""
        if not isinstance(hex_id, str):
            raise TypeError(f"Unsupported type: {type(hex_id)}, expected str")
        try:
            raw = bytes.fromhex(hex_id)
        except ValueError:
            raise ValueError(f"{hex_id!r} is not a hex string") from None
        return cls(raw)

    @classmethod
    def nil(cls) -> ObjectRef:
        return cls(NIL_ID, "", _count=False)

    @classmethod
    def from_random(cls) -> ObjectRef:
        return cls(os.urandom(ID_SIZE), "", _count=False)

    def is_nil(self) -> bool:
        return self.id == NIL_ID

    def owner_address(self) -> str:
        return self.owner

    def __repr__(self) -> str:
        return f"ObjectRef({self.id.hex()})"

    def __hash__(self) -> int:
        return hash(self.id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other.id == self.id

    def __reduce__(self) -> Any:
        _hooks.on_ref_serialized(self)
        return (_rebuild_ref, (self.id, self.owner))

    def __await__(self) -> Any:
        import asyncio

        return asyncio.wrap_future(self.future()).__await__()

    def future(self) -> Any:
        """A concurrent.futures.Future for the value; `await ref` uses it too."""
        from .core import context

        return context.global_worker().when_ready_future(self)


def _rebuild_ref(object_id: bytes, owner: str) -> ObjectRef:
    ref = ObjectRef(object_id, owner)
    _hooks.on_ref_deserialized(ref)
    return ref


ObjectID = ObjectRef
NIL_ID = b"\xff" * ID_SIZE


def _check_id(object_id: Any) -> None:
    if not isinstance(object_id, bytes):
        raise TypeError(f"Unsupported type: {type(object_id)}, expected bytes")
    if len(object_id) != ID_SIZE:
        raise ValueError(f"ID string needs to have length {ID_SIZE}, got {len(object_id)}")


class _HexId:
    """Base of the printable ids the runtime context hands out."""

    __slots__ = ("_bytes",)

    def __init__(self, raw: bytes) -> None:
        self._bytes = raw

    def hex(self) -> str:
        return self._bytes.hex()

    def binary(self) -> bytes:
        return self._bytes

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.hex()})"

    def __str__(self) -> str:
        return self.hex()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._bytes == self._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)


class TaskID(_HexId):
    __slots__ = ()


class ActorID(_HexId):
    __slots__ = ()


class NodeID(_HexId):
    __slots__ = ()


class JobID(_HexId):
    __slots__ = ()


class WorkerID(_HexId):
    __slots__ = ()


class PlacementGroupID(_HexId):
    __slots__ = ()

    @classmethod
    def nil(cls) -> PlacementGroupID:
        return cls(NIL_ID)

    def is_nil(self) -> bool:
        return self._bytes == NIL_ID
