"""The frame codec: how a wire message is defined, registered, framed and decoded.

Owns the frame format and PROTOCOL_VERSION, the registry of message tags, the
decorator that makes a message class (a frozen msgspec.Struct) and the field
decoders derived from its type hints. Not the messages themselves (protocol.py,
which defines every one with `_msg` and re-exports what callers use from here).

A frame is: u32 body length | u8 PROTOCOL_VERSION | body (at most MAX_FRAME bytes: the
sender refuses a larger one with MessageTooLargeError, which fails that call and leaves
the connection up; a receiver drops a peer that sends one), where body is the msgpack
array [tag, request_id, field...]. Fields are named all the way down: a part of a
message is a record (a NamedTuple), sent as a plain msgpack array and rebuilt by one
`_make` call; a message inside a message is sent as its fields. The decoder learns
which fields need that from the type hints, once, at registration: a record where one
may come (`str | NodeAffinity | None`) is one if it came as a list; a value record's
data is rebuilt where its kind says so (data_by_kind).
"""

from __future__ import annotations

import enum
import operator
import struct
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar

import msgpack
import msgspec

from .exceptions import MessageTooLargeError, ProtocolError

# 2: FailCode, named records, dropped fields. 3: NodeAffinity, StoredAt: a node of 2 would
# read a NodeAffinity as no strategy at all (the default policy). An older node is refused.
# 4: PushTask.namespace, .generator and .backpressure, GeneratorItem (generator tasks),
#    LeaseWaiting.
# 5: placement groups (CreatePlacementGroup ... CancelBundles, FailCode.PG_REMOVED);
#    CreateDetached (the head creates detached actors); TaskDone.worker_exiting.
# 6: RequestLease.runtime_env, UploadPackage, FetchPackage, PackageData, PrepareRuntimeEnv;
#    PushObject, PushChunk (a remote driver's large objects);
#    CreatePlacementGroup.bundle_label_selector; RegisterClient.info, RegisterJob.info.
# (5 and 6 came in one session: no released engine speaks 5.)
# 7: the handshake before any frame is a challenge and response (transport.py, MAGIC
#    RLT\x02): the token no longer crosses the wire. A 6 and a 7 fail at the handshake
#    already (a 6 dialling a 7 reads its nonce as a refusal; a 7 dialling a 6 waits for
#    a nonce until its connect timeout); the frame's version would say so too.
#    Also TaskBounced (a pipelined task sent back unrun); GetWorkerFailureCause and
#    WorkerFailureCause (the memory monitor's kills); RequestLease.retriable;
#    LeaseWaiting.worker_cap.
PROTOCOL_VERSION = 7
HEADER = struct.Struct("<IB")
MAX_FRAME = 1 << 31

_BY_TAG: dict[int, Any] = {}  # tag -> message class (with the codec's attributes)
# value record -> (index of kind, index of data, the kind, its data's _make): data_by_kind
_DATA_BY_KIND: dict[Any, tuple[int, int, int, Callable[[Any], Any]]] = {}

# A field's decoder: turns what msgpack gives (lists, ints) back into the field's type.
Decoder = Callable[[Any], Any]


def message(tag: int, hint_source: type | None = None) -> Callable[[type], type]:
    """Registers a msgspec.Struct as a wire message under `tag`; its field types are
    read from `hint_source` (the class it was made from) if given."""

    def register(cls: type) -> type:
        if tag in _BY_TAG:
            raise ValueError(f"duplicate message tag {tag}")
        names = list(cls.__struct_fields__)  # type: ignore[attr-defined]
        hints = typing.get_type_hints(hint_source or cls)  # in the module that defines it
        decoders = []
        for i, name in enumerate(names):
            decoder = _decoder(hints[name])
            if decoder is not None:
                decoders.append((i, decoder))
        wire: Any = cls  # the codec's class attributes, set here for every message
        wire.TAG = tag
        wire._getter = operator.attrgetter(*names) if len(names) > 1 else None
        wire._names = tuple(names)
        # Only fields of a record, enum or message type are decoded further; the rest
        # go to the constructor as msgpack gives them.
        wire._decoders = tuple(decoders)
        _BY_TAG[tag] = cls
        return cls

    return register


def _decoder(hint: Any) -> Decoder | None:
    """How to rebuild a field of type `hint` from its msgpack form, if it needs it:
    a record (NamedTuple) is one `_make` call, an enum one constructor call, a list of
    records a `map`, a record or a scalar (`str | NodeAffinity | None`) a `_make` if it
    came as a list; plain types (bytes, str, int, dict, list of plain) need nothing."""
    origin = typing.get_origin(hint)
    if origin is types.UnionType or origin is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        records = [a for a in args if _is_record(a)]
        if len(records) == 1 and len(args) > 1:
            # A record or plain scalars (str | NodeAffinity | None): only the record
            # arrives as a list. Not with a list among them: which is which is unknown.
            if any(typing.get_origin(a) is list or a is list for a in args):
                return None
            make_one = records[0]._make
            return lambda v: make_one(v) if type(v) is list else v
        optional = _decoder(args[0]) if len(args) == 1 else None
        if optional is None:
            return None
        return lambda v: None if v is None else optional(v)
    if origin is list:
        (item,) = typing.get_args(hint)
        if _is_record(item):
            return _records_decoder(item)
        inner = _decoder(item)
        if inner is None:
            return None
        return lambda v: [inner(x) for x in v]
    if _is_record(hint):
        if hint not in _DATA_BY_KIND:
            return typing.cast(Decoder, hint._make)
        many = _records_decoder(hint)
        return lambda v: many([v])[0]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint
    if isinstance(hint, type) and hasattr(hint, "TAG"):  # a message inside a message
        message_type: type = hint
        return lambda v: from_fields(message_type, v)
    return None


def _records_decoder(record: Any) -> Decoder:
    """A list of `record`s: one `_make` each; for a value record (data_by_kind), the
    data of the kind registered is rebuilt first."""
    make = record._make
    by_kind = _DATA_BY_KIND.get(record)
    if by_kind is None:
        return lambda v: list(map(make, v))
    kind_at, data_at, kind, make_data = by_kind

    def values(v: list[Any]) -> list[Any]:
        for x in v:
            if x[kind_at] == kind:
                x[data_at] = make_data(x[data_at])
        return list(map(make, v))

    return values


def _is_record(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, tuple) and hasattr(hint, "_fields")


def data_by_kind(record: Any, kind: int, data_record: Any) -> None:
    """Register a value record (one with `kind` and `data` fields): where its kind is
    `kind`, its data arrives as a list and is rebuilt as `data_record` (before any
    message that holds the record is registered)."""
    _DATA_BY_KIND[record] = (
        record._fields.index("kind"),
        record._fields.index("data"),
        kind,
        data_record._make,
    )


def _msg(tag: int) -> Callable[[type], Any]:
    """Class decorator: the class body's annotated fields become a frozen
    msgspec.Struct (built in C: cheap to define, and to construct on the hot path),
    registered under `tag`. The class's docstring and functions (__post_init__) stay."""

    def wrap(cls: type) -> type:
        body = vars(cls)
        spec = []
        annotations = body.get("__annotations__", {})
        for name, hint in annotations.items():
            spec.append((name, hint, body[name]) if name in body else (name, hint))
        methods = {
            name: value
            for name, value in body.items()
            if isinstance(value, types.FunctionType) and name not in annotations
        }
        struct = msgspec.defstruct(
            cls.__name__, spec, frozen=True, module=cls.__module__, namespace=methods
        )
        struct.__doc__ = cls.__doc__
        struct.__qualname__ = cls.__qualname__
        return message(tag, hint_source=cls)(struct)

    return wrap


def fields_of(msg: Any) -> list[Any]:
    """A message's fields in wire order: a message inside a message travels as this
    (msgpack's `default` hook), and the head stores a detached actor's push so."""
    return [getattr(msg, name) for name in type(msg)._names]


def nested(obj: Any) -> Any:
    """msgpack's `default` hook: a message inside other data packs as its fields."""
    if hasattr(type(obj), "TAG"):
        return fields_of(obj)
    raise TypeError(f"cannot send a {type(obj).__name__} on the wire")


def encode(msg: Any, request_id: int = 0) -> bytes:
    """Frame bytes for `msg`."""
    cls = type(msg)
    getter = cls._getter
    if getter is not None:
        items = [cls.TAG, request_id, *getter(msg)]
    elif cls._names:
        items = [cls.TAG, request_id, getattr(msg, cls._names[0])]
    else:
        items = [cls.TAG, request_id]
    try:
        body: bytes = msgpack.packb(items, use_bin_type=True, default=nested)
    except ValueError as exc:  # a field over msgpack's 4 GiB
        if "too large" not in str(exc):
            raise
        raise MessageTooLargeError(_too_large(cls, -1)) from exc
    if len(body) > MAX_FRAME:  # refused here: the receiver would drop the connection
        raise MessageTooLargeError(_too_large(cls, len(body)))
    return HEADER.pack(len(body), PROTOCOL_VERSION) + body


def _too_large(cls: type, size: int) -> str:
    what = f"{size} bytes" if size >= 0 else "over 4 GiB"
    return (
        f"A {cls.__name__} message of {what} is over the {MAX_FRAME} bytes a message may "
        "carry: it was not sent. Pass large values through the object store (put()) "
        "instead of inside one message."
    )


def from_fields(cls: type, items: list[Any]) -> Any:
    """The message of type `cls` from its fields as msgpack decoded them (fields_of)."""
    wire: Any = cls
    for i, decoder in wire._decoders:
        items[i] = decoder(items[i])
    return wire(*items)


def decode(body: bytes | memoryview) -> tuple[Any, int]:
    """(message, request_id) from one frame body; ProtocolError on anything malformed."""
    try:
        items = msgpack.unpackb(body, raw=False, strict_map_key=False, use_list=True)
        tag, request_id = items[0], items[1]
        cls = _BY_TAG[tag]
        decoders = cls._decoders
        if decoders:
            for i, decoder in decoders:
                items[i + 2] = decoder(items[i + 2])
        return cls(*items[2:]), request_id
    except Exception as exc:
        raise ProtocolError(f"malformed frame: {exc}") from exc


def message_types() -> dict[int, type]:
    return dict(_BY_TAG)


class FrameReader:
    """Splits a byte stream into frame bodies."""

    __slots__ = ("buf",)
    _EMPTY: ClassVar[bytes] = b""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.buf
        buf += data
        out = []
        pos = 0
        n = len(buf)
        while n - pos >= 5:
            length, version = HEADER.unpack_from(buf, pos)
            if version != PROTOCOL_VERSION:
                raise ProtocolError(f"peer speaks protocol {version}, we speak {PROTOCOL_VERSION}")
            if length > MAX_FRAME:
                raise ProtocolError(f"frame of {length} bytes is too large")
            end = pos + 5 + length
            if end > n:
                break
            out.append(bytes(buf[pos + 5 : end]))
            pos = end
        if pos:
            del buf[:pos]
        return out
