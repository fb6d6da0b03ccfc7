"""numpy arrays: a plain one (not a subclass, no objects, C or Fortran order, a dtype
its str names) as its dtype, shape and order and its data out of band, rebuilt by
np.frombuffer (serialization._array); other plain ones by the C pickler, the same
value as cloudpickle's; object arrays and a registered serializer go the cloudpickle
way."""

from __future__ import annotations

import pickle

import cloudpickle
import numpy as np
import pytest

from raylite.serialization import (
    _ARRAY,
    deregister_serializer,
    loads_buffers,
    loads_inline,
    pickle_call,
    register_serializer,
    serialize,
)


def _round_trip(value):
    """As a get reads it from the store: its buffers read-only views."""
    sv = serialize(value)
    return loads_buffers(sv.meta, [memoryview(b).toreadonly() for b in sv.buffers]), sv


@pytest.mark.parametrize(
    "array",
    [
        np.arange(100_000, dtype=np.float64),
        np.arange(12, dtype=np.int32).reshape(3, 4),
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        np.arange(20.0)[::2],  # not contiguous: copied in band
        np.zeros(3, dtype=[("x", "f8"), ("y", "i4")]),
        np.array(["a", "bc"]),
        np.arange("2026-01-01", "2026-01-05", dtype="datetime64[D]"),
    ],
)
def test_a_plain_array_comes_back_equal(array):
    out, sv = _round_trip(array)
    assert out.dtype == array.dtype
    np.testing.assert_array_equal(out, array)
    if sv.meta.startswith(_ARRAY):  # out of band, datetimes too (pickle copies those)
        assert len(sv.buffers) == 1
        return
    as_cloudpickle: list = []  # what the general path sends out of band, the same
    cloudpickle.dumps(array, protocol=5, buffer_callback=as_cloudpickle.append)
    assert len(sv.buffers) == len(as_cloudpickle)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(100_000, dtype=np.float64),
        np.arange(12, dtype=np.int32).reshape(3, 4),
        np.asfortranarray(np.arange(24.0).reshape(2, 3, 4)),
        np.array(3.5),  # 0-d
        np.zeros((0, 5), dtype=np.int16),  # empty
        np.arange(6, dtype=">i4"),  # big-endian
        np.array([1 + 2j, 3 - 4j]),
        np.array([True, False, True]),
        np.array(["a", "bc"]),
        np.array([b"xy", b"z"]),
        np.arange("2026-01-01", "2026-01-05", dtype="datetime64[D]"),
        np.array([1, 2], dtype="timedelta64[ms]"),
    ],
)
def test_a_plain_array_is_rebuilt_from_its_buffer_without_pickle(array):
    out, sv = _round_trip(array)
    assert sv.meta.startswith(_ARRAY)
    assert len(sv.buffers) == 1
    assert type(out) is np.ndarray
    assert (out.dtype, out.shape) == (array.dtype, array.shape)
    assert out.flags.f_contiguous == array.flags.f_contiguous
    np.testing.assert_array_equal(out, array)
    assert not out.flags.writeable  # a view of read-only memory, as Ray's get gives
    assert np.shares_memory(out, np.frombuffer(sv.buffers[0], dtype=np.uint8)) or not out.size


def test_an_array_travelling_inline_is_rebuilt_the_same_way():
    array = np.arange(10, dtype=np.uint8).reshape(2, 5)
    data = serialize(array).inline()
    assert isinstance(data, list)
    assert data[0].startswith(_ARRAY)
    np.testing.assert_array_equal(loads_inline(data), array)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(20.0)[::2],  # strided
        np.zeros(3, dtype=[("x", "f8"), ("y", "i4")]),  # fields
        np.zeros(2, dtype=np.dtype("f8", metadata={"unit": "m"})),
    ],
)
def test_an_array_whose_layout_or_dtype_needs_pickle_is_pickled(array):
    out, sv = _round_trip(array)
    assert not sv.meta.startswith(_ARRAY)
    assert out.dtype == array.dtype
    np.testing.assert_array_equal(out, array)


def test_an_object_array_may_hold_code():
    array = np.array([lambda x: x + 1, 5], dtype=object)  # cloudpickle: by value
    out, _ = _round_trip(array)
    assert out[0](1) == 2
    assert out[1] == 5


def test_a_subclass_is_not_an_ndarray():
    masked = np.ma.masked_array([1, 2, 3], mask=[0, 1, 0])
    out, _ = _round_trip(masked)
    assert isinstance(out, np.ma.MaskedArray)
    assert out.mask.tolist() == [False, True, False]


def test_a_registered_serializer_wins():
    register_serializer(np.ndarray, lambda a: a.tolist(), lambda data: ("mine", data))
    try:
        out, _ = _round_trip(np.arange(3))
        assert out == ("mine", [0, 1, 2])
    finally:
        deregister_serializer(np.ndarray)
    out, _ = _round_trip(np.arange(3))
    assert out.tolist() == [0, 1, 2]


def test_call_arguments_with_arrays_keep_their_buffers_out_of_band():
    array = np.arange(1000.0)
    meta, views = pickle_call(((array, 2, "x"), {}))
    assert len(views) == 1
    args, kwargs = pickle.loads(meta, buffers=views)
    np.testing.assert_array_equal(args[0], array)
    assert args[1:] == (2, "x")
    assert kwargs == {}


def test_keyword_arguments_of_plain_values_and_arrays():
    array = np.arange(10.0)
    meta, views = pickle_call(((1,), {"a": array, "b": "x", "c": None}))
    args, kwargs = pickle.loads(meta, buffers=views)
    assert args == (1,)
    np.testing.assert_array_equal(kwargs["a"], array)
    assert (kwargs["b"], kwargs["c"]) == ("x", None)
    meta, views = pickle_call(((), {"f": lambda: 3}))  # code: cloudpickle, by value
    assert pickle.loads(meta, buffers=views)[1]["f"]() == 3
