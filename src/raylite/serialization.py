"""Pickling with out-of-band buffers, and remote exception capture.

Values are pickled with cloudpickle at protocol 5 with a buffer callback, so large
contiguous buffers (numpy arrays, bytearrays, PickleBuffer) stay out of the pickle
stream. Small values travel inline in messages; large ones go to the node's
shared-memory store (object_store.py), from where `loads` rebuilds them on top of
the mapped, read-only memory: a zero-copy view.

Inline form: `bytes` (a pickle with no out-of-band buffers) or `[meta, buf, ...]`.

A plain numpy array (serialize: not a subclass, no objects, a dtype that its str
names, C or Fortran order) is not pickled: its meta is _ARRAY and its dtype, shape and
order, its data the one buffer, and loads_buffers rebuilds it with np.frombuffer.
Unpickling an ndarray rebuilds its dtype (dtype.__setstate__) and calls numpy's
_frombuffer through pickle's machinery: on the caches a 100 MB put leaves cold, that
took ~40 us of a first get, against ~8 for np.frombuffer.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import pickle
import struct
import sys
import traceback
import types
from typing import Any

import cloudpickle

from .exceptions import MessageTooLargeError, RayTaskError, UnserializableException


def _readonly_view(buf: pickle.PickleBuffer) -> memoryview:
    return memoryview(buf).toreadonly()


class _ReadOnlyBuffer:
    """A bytearray or memoryview to send out of band and rebuild as a read-only view.

    The C pickler handles bytearray (and bytes) before any hook sees it, so `serialize`
    wraps such buffers itself: at the top level and directly inside a small dict, list
    or tuple (deeper ones still travel, as copies).
    """

    __slots__ = ("buf",)

    def __init__(self, buf: Any) -> None:
        self.buf = buf

    def __reduce__(self) -> Any:
        return _readonly_view, (pickle.PickleBuffer(self.buf),)


class _LargeBytes:
    """A large bytes value to send out of band and rebuild as bytes (one copy, on read).

    In band, pickle copies it into the stream first, which grows by reallocation: a
    2.2 GB bytes argument took 8 s to pickle before it was written to the store.
    """

    __slots__ = ("buf",)

    def __init__(self, buf: bytes) -> None:
        self.buf = buf

    def __reduce__(self) -> Any:
        return bytes, (pickle.PickleBuffer(self.buf),)


LARGE_BYTES = 1 << 20  # smaller bytes values travel in the pickle stream


def _is_buffer(obj: Any) -> bool:
    t = type(obj)
    return (
        t is bytearray
        or (t is memoryview and obj.contiguous)
        or (t is bytes and len(obj) >= LARGE_BYTES)
    )


def _wrap(obj: Any) -> Any:
    return _LargeBytes(obj) if type(obj) is bytes else _ReadOnlyBuffer(obj)


def _wrap_buffers(value: Any) -> Any:
    if _is_buffer(value):
        return _wrap(value)
    t = type(value)
    if t in (list, tuple) and len(value) <= 64 and any(_is_buffer(v) for v in value):
        return t(_wrap(v) if _is_buffer(v) else v for v in value)
    if t is dict and len(value) <= 64 and any(_is_buffer(v) for v in value.values()):
        return {k: _wrap(v) if _is_buffer(v) else v for k, v in value.items()}
    return value


# Values that pickle the same by the C pickler as by cloudpickle (which builds a Python
# Pickler per call, ~10x slower for a small value): the common arguments and returns.
# A type given its own serializer (register_serializer) leaves the set while it has one.
_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})
_PLAIN_TYPES = set(_PLAIN)


def _plain_array(value: Any) -> bool:
    """A numpy array (not a subclass) of plain values: the C pickler writes it as
    cloudpickle would (ndarray.__reduce_ex__, its buffer out of band), ~4x faster. An
    object array may hold code (cloudpickle's), and a registered serializer wins."""
    np = sys.modules.get("numpy")
    return (
        np is not None
        and type(value) is np.ndarray
        and not value.dtype.hasobject
        and np.ndarray not in cloudpickle.CloudPickler.dispatch_table
    )


# An array's meta: _ARRAY, its order (0: C, 1: Fortran) and ndim as a byte each, its
# shape (ndim int64), then its dtype.str. Unpacked by struct, not pickle (~4 us cold).
_ARRAY = b"RLA1"  # a meta that starts so is an array's (a pickle starts with b"\x80")
_ARRAY_FIRST = _ARRAY[0]


@functools.cache
def _shape_struct(ndim: int) -> struct.Struct:
    """The struct of an array's shape in its meta (ndim int64)."""
    return struct.Struct(f"<{ndim}q")


def _array(value: Any) -> SerializedValue | None:
    """A plain array as its meta (above) and its data; None if its dtype or layout
    needs pickle (fields, metadata, a stride: see the docstring)."""
    dtype = value.dtype
    if dtype.fields is not None or dtype.subdtype is not None or dtype.metadata is not None:
        return None
    name = dtype.str.encode("ascii")
    if not dtype.itemsize or np_dtype(name) != dtype:
        return None  # (a dtype its str does not name again)
    flags = value.flags
    fortran = not flags.c_contiguous
    if fortran and not flags.f_contiguous:
        return None
    ndim = value.ndim
    meta = b"".join((_ARRAY, bytes((fortran, ndim)), _shape_struct(ndim).pack(*value.shape), name))
    # Its bytes as uint8 (datetime64 and timedelta64 have no buffer format), in order.
    data = (value.T if fortran else value).reshape(-1).view(np_dtype(b"|u1"))
    return SerializedValue(meta, [memoryview(data)])


@functools.cache
def np_dtype(name: bytes) -> Any:
    """numpy's dtype named `name` (dtype.str), made once per process."""
    import numpy

    return numpy.dtype(name)


def _load_array(meta: memoryview | bytes, buffer: Any) -> Any:
    import numpy

    if meta[:4] != _ARRAY:
        raise ValueError("a value's meta is neither a pickle nor an array's")
    fortran, ndim = meta[4], meta[5]
    end = 6 + 8 * ndim
    array = numpy.frombuffer(buffer, dtype=np_dtype(bytes(meta[end:])))
    if ndim != 1:
        array = array.reshape(
            _shape_struct(ndim).unpack_from(meta, 6), order="F" if fortran else "C"
        )
    return array


def _pickled(dumps: Any, value: Any) -> tuple[bytes, list[memoryview]]:
    """`dumps`'s stream of `value` and its out-of-band buffers (views, not copied)."""
    buffers: list[pickle.PickleBuffer] = []
    meta = dumps(value, protocol=5, buffer_callback=buffers.append)
    try:
        return meta, [b.raw() for b in buffers]
    except BufferError:  # not contiguous: let pickle copy it in-band
        return dumps(value, protocol=5), []


def _c_pickle(value: Any) -> tuple[bytes, list[memoryview]]:
    """The C pickler's: for plain values and arrays."""
    return _pickled(pickle.dumps, value)


class SerializedValue:
    """A pickled value: the pickle stream and its out-of-band buffers."""

    __slots__ = ("buffers", "meta", "size")

    def __init__(self, meta: bytes, buffers: list[memoryview]) -> None:
        self.meta = meta
        self.buffers = buffers
        self.size = len(meta) + sum(b.nbytes for b in buffers) if buffers else len(meta)

    def inline(self) -> Any:
        if not self.buffers:
            return self.meta
        return [self.meta, *(b.tobytes() for b in self.buffers)]


def register_serializer(cls: type, serializer: Any, deserializer: Any) -> None:
    """util.register_serializer: pickle instances of `cls` (exactly that class, not its
    subclasses) as `deserializer(serializer(obj))`. In this process only, as Ray: the
    deserializer travels by value inside each payload, so a receiver needs no
    registration; a worker that returns or puts such values registers it itself."""

    def reducer(obj: Any) -> tuple[Any, tuple[Any]]:
        return deserializer, (serializer(obj),)

    cloudpickle.CloudPickler.dispatch_table[cls] = reducer
    _PLAIN_TYPES.discard(cls)


def deregister_serializer(cls: type) -> None:
    """util.deregister_serializer: no effect if `cls` has no registered serializer."""
    cloudpickle.CloudPickler.dispatch_table.pop(cls, None)
    if cls in _PLAIN:
        _PLAIN_TYPES.add(cls)


def plain_pickle(value: Any) -> bytes | None:
    """The pickle of a plain value (None, a number, a str: no buffers, no refs inside)
    by the C pickler, as serialize() makes it; None for any other value."""
    if type(value) in _PLAIN_TYPES and not _is_buffer(value):
        return pickle.dumps(value, protocol=5)
    return None


def serialize(value: Any) -> SerializedValue:
    meta = plain_pickle(value)
    if meta is not None:
        return SerializedValue(meta, [])
    if _plain_array(value):
        return _array(value) or SerializedValue(*_c_pickle(value))
    buffers: list[pickle.PickleBuffer] = []
    f = io.BytesIO()
    value = _wrap_buffers(value)
    cloudpickle.CloudPickler(f, protocol=5, buffer_callback=buffers.append).dump(value)
    views = []
    for b in buffers:
        try:
            views.append(b.raw())
        except BufferError:  # not contiguous: let pickle copy it in-band
            return SerializedValue(cloudpickle.dumps(value, protocol=5), [])
    return SerializedValue(f.getvalue(), views)


def dumps_inline(value: Any) -> bytes:
    """A plain pickle (functions, classes, exceptions)."""
    return cloudpickle.dumps(value, protocol=5)


_NO_ARGS = pickle.dumps(((), {}), protocol=5)


def pickle_call(value: tuple[tuple, dict]) -> tuple[bytes, list[memoryview]]:
    """pickle_args of a call's (args, kwargs); plain positional values (or none) by the
    C pickler, the same bytes cloudpickle makes of them."""
    args, kwargs = value
    if not kwargs and all(type(a) in _PLAIN_TYPES for a in args):
        return (pickle.dumps(value, protocol=5) if args else _NO_ARGS), []
    if all(map(_c_picklable, args)) and all(map(_c_picklable, kwargs.values())):
        return _c_pickle(value)  # keyword names are str: plain too
    return pickle_args(value)


def _c_picklable(value: Any) -> bool:
    """Pickled by the C pickler as cloudpickle would: a plain value or array."""
    return type(value) in _PLAIN_TYPES or _plain_array(value)


def pickle_args(value: Any) -> tuple[bytes, list[memoryview]]:
    """A task's arguments: the pickle and its out-of-band buffers (views, not copied)."""
    return _pickled(cloudpickle.dumps, value)


def args_blob(meta: bytes, views: list[memoryview]) -> bytes | list[bytes]:
    """What a push carries: the pickle, then its buffers if it has any (a list).

    Unpickled from bytes, those buffers make read-only arrays in the task, as Ray's
    (loads_inline); most argument tuples have none and stay one bytes object.
    """
    return meta if not views else [meta, *(v.tobytes() for v in views)]


# A pickled function or class travels in the first task message to each worker: half
# of codec.MAX_FRAME (2 GiB), the other half being the arguments' (submission).
MAX_FUNCTION_SIZE = 1 << 30


# Set by a driver with no node on its machine (core/remote_driver.py): it registers the
# driver's own modules for pickling by value before a function or class is pickled.
before_dumps_function: Any = None


def dumps_function(obj: Any, max_calls: int = 0) -> bytes:
    """Pickle a remote function or actor class, with the file it was defined in.

    cloudpickle (3.1.3 on) writes "<dynamic-code>" as the file name of code it pickles
    by value, which takes the source lines out of remote tracebacks. The file name
    travels beside the pickle and `loads_function` puts it back. A function's
    max_calls (the worker exits after running it that many times) travels with it too:
    a worker gets the blob once, whoever leased it.
    """
    if before_dumps_function is not None:
        before_dumps_function()
    code = getattr(obj, "__code__", None)
    filename = code.co_filename if code is not None else ""
    if not filename:
        with contextlib.suppress(TypeError, OSError):
            filename = inspect.getsourcefile(obj) or ""
    value = (obj, filename, max_calls) if max_calls else (obj, filename)
    blob = cloudpickle.dumps(value, protocol=5)
    if len(blob) > MAX_FUNCTION_SIZE:
        name = getattr(obj, "__qualname__", type(obj).__name__)
        raise MessageTooLargeError(
            f"The remote function or actor class {name} pickles to {len(blob)} bytes, over "
            f"the {MAX_FUNCTION_SIZE} a task message carries: its definition captures a "
            "large object (a global or a closure's variable). put() that object and pass "
            "the ref, or create it inside the function."
        )
    return blob


def loads_function(blob: bytes) -> Any:
    return loads_function_limited(blob)[0]


def loads_function_limited(blob: bytes) -> tuple[Any, int]:
    """The function or class of a dumps_function blob, and its max_calls (0: none)."""
    obj, filename, *limit = pickle.loads(blob)
    if filename:
        if isinstance(obj, type):
            for value in vars(obj).values():
                fn = getattr(value, "__func__", value)  # staticmethod, classmethod
                _restore_filename(fn, filename)
                if isinstance(value, property):
                    for accessor in (value.fget, value.fset, value.fdel):
                        _restore_filename(accessor, filename)
        else:
            _restore_filename(obj, filename)
    return obj, (limit[0] if limit else 0)


def _restore_filename(fn: Any, filename: str) -> None:
    code = getattr(fn, "__code__", None)
    if isinstance(code, types.CodeType) and code.co_filename == "<dynamic-code>":
        with contextlib.suppress(AttributeError, TypeError, ValueError):
            fn.__code__ = _with_filename(code, filename)


def _with_filename(code: types.CodeType, filename: str) -> types.CodeType:
    consts = tuple(
        _with_filename(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=consts)


def loads_inline(data: Any) -> Any:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return pickle.loads(data)
    return loads_buffers(data[0], data[1:])


def loads_call(blob: Any) -> tuple[Any, dict[str, Any]]:
    """A call's (args, kwargs) from pickle_call's bytes: a call without any (an actor's
    getter, say) unpickles nothing."""
    if blob == _NO_ARGS:
        return (), {}
    return loads_inline(blob)  # type: ignore[no-any-return]


def loads_buffers(meta: memoryview | bytes, buffers: list[Any]) -> Any:
    if meta[0] == _ARRAY_FIRST:
        return _load_array(meta, buffers[0])
    return pickle.loads(meta, buffers=buffers)


def capture_error(exc: BaseException, function_name: str, pid: int) -> bytes:
    """Pickle a task failure as RayTaskError carrying the remote traceback."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, RayTaskError):  # a failed dependency: pass it on as is
        err: BaseException = exc
    else:
        err = RayTaskError(function_name, tb, exc, pid)
    try:
        return dumps_inline(err)
    except Exception:  # the user's exception does not pickle: keep its text
        fallback = RayTaskError(function_name, tb, UnserializableException(tb), pid)
        return dumps_inline(fallback)
