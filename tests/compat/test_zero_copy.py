"""Zero-copy get: repeated gets of one object are views of one read-only buffer.

Ray maps each plasma object once per process while it is in use, so two `get`s of
one numpy array share memory (checked on Ray 2.60); raylite keeps one mapping per
object per process while any view of it lives (object_store.Mappings).
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

from tests._engine import ray, raylite_only

RAY_INIT = {"num_cpus": 2}
N = 4 * 1024 * 1024  # 32 MB of float64: a store object on both engines


@ray.remote
def zeros(n):
    return np.zeros(n)


@ray.remote
def shares_in_task(array, ref_list):
    """Inside a task: the argument (resolved) and a get of the same ref share memory."""
    again = ray.get(ref_list[0])
    return bool(np.shares_memory(array, again)), bool(again.flags.writeable)


def _mappings_of(address: int) -> list[str]:
    """The /proc/self/maps lines whose file is the one mapped at `address`."""
    with open("/proc/self/maps") as maps:
        lines = [line.split() for line in maps]
    path = next(
        (f[5] for f in lines if len(f) > 5 and _holds(f[0], address)),
        None,
    )
    assert path is not None, "the array is not in a file mapping"
    return [" ".join(f) for f in lines if len(f) > 5 and f[5] == path]


def _holds(span: str, address: int) -> bool:
    low, high = (int(x, 16) for x in span.split("-"))
    return low <= address < high


def test_two_gets_of_a_put_array_share_one_read_only_buffer(ray_start):
    ref = ray.put(np.arange(N, dtype=np.float64))
    first = ray.get(ref)
    second = ray.get(ref)
    assert first is not second
    assert np.shares_memory(first, second)
    assert first.ctypes.data == second.ctypes.data
    for array in (first, second):
        assert not array.flags.writeable
        with pytest.raises(ValueError):
            array[0] = 1.0
    assert second[N - 1] == N - 1


def test_two_gets_of_a_task_result_share_memory(ray_start):
    ref = zeros.remote(N)
    first = ray.get(ref)
    (second,) = ray.get([ref])
    assert np.shares_memory(first, second)
    assert not second.flags.writeable


def test_get_in_a_task_shares_the_argument_buffer(ray_start):
    ref = ray.put(np.ones(N))
    shared, writeable = ray.get(shares_in_task.remote(ref, [ref]))
    assert shared
    assert not writeable


def test_a_get_after_the_views_are_gone_is_equal(ray_start):
    ref = ray.put(np.arange(N, dtype=np.float64))
    first = ray.get(ref)
    del first
    gc.collect()
    again = ray.get(ref)
    assert again[12345] == 12345
    assert not again.flags.writeable


@raylite_only
def test_one_mapping_serves_every_view(ray_start):
    ref = ray.put(np.ones(N))
    views = [ray.get(ref)]
    # The first get maps the file once: read-only, or it reads through the writable
    # mapping its put wrote a recycled file with (object_store: the owner's first get).
    # The process may map the file otherwise too: that writable one, or an idle
    # read-only one of an earlier object in the same file (object_store: _idle).
    lines = _mappings_of(views[0].ctypes.data)
    views += [ray.get(ref) for _ in range(4)]
    assert {v.ctypes.data for v in views} == {views[0].ctypes.data}
    assert _mappings_of(views[0].ctypes.data) == lines  # four more gets: no more mappings
