"""Objects: put, get, wait, timeouts, and zero-copy numpy arrays."""

from __future__ import annotations

import numpy as np
import pytest

from tests._engine import exceptions, ray, raylite_only, wait_for_path

RAY_INIT = {"num_cpus": 4}


@ray.remote
def identity(x):
    return x


@ray.remote
def gated(path, value):
    wait_for_path(path)
    return value


@ray.remote
def array_sum(array):
    return float(array.sum())


@ray.remote
def array_is_read_only(array):
    return not array.flags.writeable


def _shared_mapping_of(address: int) -> str | None:
    """The /proc/self/maps line of the mapping holding `address`, if it is shared."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if low <= address < high:
                return line.strip() if fields[1].endswith("s") else None
    return None


def test_put_get_single(ray_start):
    ref = ray.put({"a": [1, 2, 3], "b": ("x", None)})
    assert isinstance(ref, ray.ObjectRef)
    assert ray.get(ref) == {"a": [1, 2, 3], "b": ("x", None)}


def test_get_list_keeps_order(ray_start):
    refs = [ray.put(i) for i in range(20)]
    assert ray.get(refs) == list(range(20))
    assert ray.get(list(reversed(refs))) == list(reversed(range(20)))


def test_get_same_ref_twice_in_one_call(ray_start):
    ref = ray.put("same")
    assert ray.get([ref, ref]) == ["same", "same"]


def test_put_locally_defined_class(ray_start):
    class Point:
        def __init__(self, x, y):
            self.x, self.y = x, y

    p = ray.get(identity.remote(ray.put(Point(1, 2))))
    assert (p.x, p.y) == (1, 2)


def test_put_of_none_and_bytes(ray_start):
    assert ray.get(ray.put(None)) is None
    payload = bytes(range(256)) * 1000
    assert ray.get(ray.put(payload)) == payload


def test_get_of_non_ref_raises(ray_start):
    with pytest.raises((TypeError, ValueError)):
        ray.get(1)


def test_get_timeout_raises_get_timeout_error(ray_start, tmp_path):
    gate = tmp_path / "release"
    ref = gated.remote(str(gate), "late")
    with pytest.raises(exceptions.GetTimeoutError) as info:
        ray.get(ref, timeout=0.5)
    assert isinstance(info.value, TimeoutError)
    with pytest.raises(TimeoutError):
        ray.get([ray.put(1), ref], timeout=0.1)
    gate.touch()
    assert ray.get(ref, timeout=60) == "late"


def test_wait_returns_ready_and_not_ready(ray_start, tmp_path):
    gates = [tmp_path / f"gate{i}" for i in range(3)]
    refs = [gated.remote(str(g), i) for i, g in enumerate(gates)]
    done = ray.put("done")
    ready, not_ready = ray.wait([*refs, done], num_returns=1, timeout=30)
    assert ready == [done]
    assert not_ready == refs

    ready, not_ready = ray.wait(refs, num_returns=1, timeout=0.2)
    assert ready == []
    assert not_ready == refs

    for g in gates:
        g.touch()
    ready, not_ready = ray.wait(refs, num_returns=3, timeout=60)
    assert sorted(ray.get(ready)) == [0, 1, 2]
    assert not_ready == []


def test_wait_follows_completion_order(ray_start, tmp_path):
    gates = [tmp_path / f"gate{i}" for i in range(4)]
    refs = [gated.remote(str(g), i) for i, g in enumerate(gates)]
    remaining = list(refs)
    for index in (2, 0, 3, 1):
        gates[index].touch()
        ready, remaining = ray.wait(remaining, num_returns=1, timeout=60)
        assert ready == [refs[index]]
        assert ray.get(ready[0]) == index
    assert remaining == []


def test_wait_keeps_the_order_of_its_input(ray_start, tmp_path):
    """Ray's wait: if A precedes B in the input and both are ready, A precedes B in
    the ready list (whichever was ready first); the rest keep their order too."""
    gates = [tmp_path / f"gate{i}" for i in range(4)]
    refs = [gated.remote(str(g), i) for i, g in enumerate(gates)]
    gates[3].touch()
    assert ray.wait(refs, num_returns=1, timeout=60)[0] == [refs[3]]
    gates[1].touch()
    ready, not_ready = ray.wait(refs, num_returns=2, timeout=60)
    assert ready == [refs[1], refs[3]]
    assert not_ready == [refs[0], refs[2]]
    gates[0].touch()
    gates[2].touch()
    ready, not_ready = ray.wait(list(reversed(refs)), num_returns=4, timeout=60)
    assert ready == list(reversed(refs))
    assert not_ready == []


def test_wait_num_returns_partial(ray_start, tmp_path):
    gates = [tmp_path / f"gate{i}" for i in range(4)]
    refs = [gated.remote(str(g), i) for i, g in enumerate(gates)]
    gates[3].touch()
    gates[1].touch()
    ready, not_ready = ray.wait(refs, num_returns=2, timeout=60)
    assert set(ready) == {refs[1], refs[3]}
    assert set(not_ready) == {refs[0], refs[2]}
    assert len(ready) + len(not_ready) == 4
    gates[0].touch()
    gates[2].touch()
    assert ray.get(refs, timeout=60) == [0, 1, 2, 3]


def test_wait_more_than_given_raises(ray_start):
    with pytest.raises(ValueError):
        ray.wait([ray.put(1)], num_returns=2)


def test_large_numpy_array_is_read_only_and_equal(ray_start):
    array = np.arange(100 * 1024 * 1024 // 8, dtype=np.float64)  # 100 MB
    ref = ray.put(array)
    result = ray.get(ref)
    assert isinstance(result, np.ndarray)
    assert result.shape == array.shape
    assert result.dtype == array.dtype
    assert not result.flags.writeable
    with pytest.raises(ValueError):
        result[0] = 1.0
    np.testing.assert_array_equal(result, array)


def test_large_numpy_array_is_a_view_of_shared_memory(ray_start):
    array = np.ones(20 * 1024 * 1024 // 8)  # 20 MB
    result = ray.get(ray.put(array))
    assert result.base is not None, "get() copied the array instead of viewing the store"
    address = result.__array_interface__["data"][0]
    assert _shared_mapping_of(address) is not None, (
        "the array's memory is not in a shared mapping (expected the object store)"
    )


@raylite_only
def test_large_numpy_array_lives_in_raylite_store(ray_start):
    array = np.ones(20 * 1024 * 1024 // 8)
    result = ray.get(ray.put(array))
    line = _shared_mapping_of(result.__array_interface__["data"][0])
    assert line is not None
    assert "raylite" in line or "/dev/shm" in line, line


def test_large_array_returned_by_task_is_read_only(ray_start):
    result = ray.get(identity.remote(np.zeros(4 * 1024 * 1024)))  # 32 MB
    assert not result.flags.writeable
    assert result.sum() == 0


def test_array_argument_is_read_only_in_task(ray_start):
    assert ray.get(array_is_read_only.remote(ray.put(np.zeros(2 * 1024 * 1024)))) is True


def test_one_put_ref_passed_to_many_tasks(ray_start):
    array = np.ones(1024 * 1024)  # 8 MB
    ref = ray.put(array)
    assert ray.get([array_sum.remote(ref) for _ in range(20)]) == [float(1024 * 1024)] * 20


def test_object_ref_returned_inside_a_value(ray_start):
    inner = ray.put("inner")
    outer = identity.remote([inner])
    (returned,) = ray.get(outer)
    assert isinstance(returned, ray.ObjectRef)
    assert ray.get(returned) == "inner"
