"""Object store memory: reference counting, capacity and spilling, zero copy, errors.

What issue 3 asks of the store, as behaviour a program can see:

* Reference counting by the owner: an object lives while an ObjectRef to it exists
  anywhere (driver, workers, inside other objects, pending task arguments) and is
  freed after, so a long loop of put/drop stays within a bounded store.
* Capacity: with init(object_store_memory=N) data several times N still works:
  objects not in use are spilled to disk and restored on get or as task arguments.
* Zero copy: arrays (and containers of arrays) come back as read-only views on
  shared memory that stay valid while the view lives, whatever the store does after.
* Errors: ObjectStoreFullError for an object that cannot fit even by spilling,
  ObjectLostError (never a hang) for an object whose memory is gone.

The checks through raylite's introspection API (`raylite.util.state.store_stats`,
`list_objects`, `memory_summary`), the driver's spill log line and the spill files
are `raylite_only`: Ray 2.60 has no such Python API without its dashboard, writes
its spill line to raylet.out only, and has no spill-space limit to configure.
"""

from __future__ import annotations

import gc
import importlib
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests._engine import (
    AGAINST_RAY,
    StdStreams,
    exceptions,
    ray,
    raylite_only,
    wait_for,
    wait_for_path,
)

MiB = 1024 * 1024
GiB = 1024 * MiB
ARRAY_BYTES = 10 * MiB
STORE_BYTES = 200 * MiB
# Bound on store usage in the put/drop loops: half the store, i.e. at most a few
# 10 MiB objects waiting to be freed, never the whole history of the loop.
BOUNDED_BYTES = 100 * MiB
# How long a freed object may take to leave list_objects() (raylite checks).
FREE_WAIT_S = 15.0

RAY_INIT = {"num_cpus": 2, "object_store_memory": STORE_BYTES}
SMALL_STORE = {"num_cpus": 2, "object_store_memory": 100 * MiB}
# 100 MiB of shared memory plus at most 200 MiB of spill files (raylite only).
LIMITED_SPILL = {
    "num_cpus": 2,
    "object_store_memory": 100 * MiB,
    "_system_config": {"max_spill_bytes": 200 * MiB},
}

SPILL_LINE = re.compile(
    r"Spilled (\d+) MiB, (\d+) objects?, write throughput (\d+(?:\.\d+)?) MiB/s"
)


# --------------------------------------------------------------------------- helpers


def filled(fill: int, nbytes: int = ARRAY_BYTES) -> np.ndarray:
    return np.full(nbytes, fill % 256, dtype=np.uint8)


def is_filled(value, fill: int, nbytes: int = ARRAY_BYTES) -> bool:
    """Cheap full-content check: sampled bytes plus the exact sum."""
    if not isinstance(value, np.ndarray) or value.nbytes != nbytes:
        return False
    fill %= 256
    return (
        int(value[0]) == fill
        and int(value[-1]) == fill
        and bool((value[:: 4096 - 1] == fill).all())
        and int(value.sum(dtype=np.uint64)) == fill * nbytes
    )


def churn(count: int) -> None:
    """Push `count` 10 MiB objects through the store, dropping each at once."""
    filler = np.zeros(ARRAY_BYTES, dtype=np.uint8)
    for _ in range(count):
        ray.put(filler)
    gc.collect()


def shared_mapping_of(address: int) -> str | None:
    """The /proc/self/maps line of the mapping holding `address`, if it is shared."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if low <= address < high:
                return line.strip() if fields[1].endswith("s") else None
    return None


def in_shared_memory(array: np.ndarray) -> bool:
    return shared_mapping_of(array.__array_interface__["data"][0]) is not None


def state():
    """raylite.util.state (raylite only; imported late so a missing module fails one test)."""
    return importlib.import_module(f"{ray.__name__}.util.state")


def store_stats() -> dict:
    return state().store_stats()


def objects_by_id() -> dict[str, dict]:
    return {o["object_id"]: o for o in state().list_objects()}


def referenced_from(oid: str, holder: str) -> bool:
    """Whether list_objects() says `oid` is referenced from `holder` ("driver",
    "worker pid=N", "task argument", "contained in <hex>"; extra detail allowed)."""
    entry = objects_by_id().get(oid)
    if entry is None:
        return False
    pattern = re.compile(re.escape(holder) + r"(?![0-9a-f])")
    return any(pattern.search(where) for where in entry["referenced_from"])


def assert_store_bounded(iteration: int, every: int) -> None:
    """raylite: shared-memory usage stays under BOUNDED_BYTES (checked every `every`)."""
    if AGAINST_RAY or iteration % every:
        return
    used = store_stats()["used_bytes"]
    assert used < BOUNDED_BYTES, (
        f"iteration {iteration}: the store holds {used / MiB:.0f} MiB although every "
        "ref of the loop was dropped (objects are not freed)"
    )


def session_dir() -> Path:
    """The running engine's session directory (init() returns it in its context)."""
    return Path(ray.init(ignore_reinit_error=True)["session_dir"])


def spill_files(root: Path) -> list[Path]:
    """Regular files of at least 1 MiB under the session dir: the spill files."""
    found = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size >= MiB:
                found.append(path)
    return found


def mentions_size(text: str, nbytes: float) -> bool:
    """Whether `text` states `nbytes` in bytes, kB/KiB, MB/MiB or GB/GiB (within 5 %)."""
    numbers = [
        float(n.replace(",", "").replace("_", "")) for n in re.findall(r"\d[\d,_]*(?:\.\d+)?", text)
    ]
    units = (1, 1e3, 1024, 1e6, MiB, 1e9, GiB)
    return any(abs(n * u - nbytes) <= 0.05 * nbytes for n in numbers for u in units)


# ---------------------------------------------------------------------- remote code


@ray.remote
def make_filled(fill: int, nbytes: int = ARRAY_BYTES):
    return filled(fill, nbytes)


@ray.remote
def check_filled(array, fill: int) -> bool:
    return is_filled(array, fill)


@ray.remote
def put_inside(fill: int):
    """A ref the worker owns, returned inside a list, with the worker's pid."""
    return os.getpid(), [ray.put(filled(fill))]


@ray.remote
def read_boxed_after_gate(gate: str, box: list, fill: int) -> bool:
    wait_for_path(gate)
    return is_filled(ray.get(box[0]), fill)


@ray.remote
def hold_cpu(started: str, gate: str) -> str:
    Path(started).touch()
    wait_for_path(gate)
    return "released"


@ray.remote
class Keeper:
    """Holds refs it was given (a borrower) or owns (an owner), on request."""

    def __init__(self) -> None:
        self.kept: list = []

    def pid(self) -> int:
        return os.getpid()

    def keep(self, box: list) -> int:
        self.kept.extend(box)
        return len(self.kept)

    def drop(self) -> int:
        self.kept.clear()
        gc.collect()
        return 0

    def check_first(self, fill: int) -> bool:
        return is_filled(ray.get(self.kept[0]), fill)

    def make_small(self, value: str) -> list:
        ref = ray.put(value)
        self.kept.append(ref)
        return [ref]

    def make(self, fill: int) -> list:
        ref = ray.put(filled(fill))
        self.kept.append(ref)
        return [ref]


# ------------------------------------------------- 1. reference counting, bounded usage


def _loop_put(i: int) -> None:
    value = ray.get(ray.put(filled(i)))
    assert int(value[0]) == i % 256


def _loop_task_return(i: int) -> None:
    value = ray.get(make_filled.remote(i))
    assert int(value[0]) == i % 256


def _loop_task_argument(i: int) -> None:
    assert ray.get(check_filled.remote(ray.put(filled(i)), i)) is True


def _loop_nested_in_put(i: int) -> None:
    (inner,) = ray.get(ray.put([ray.put(filled(i))]))
    assert int(ray.get(inner)[0]) == i % 256


def _loop_owned_by_worker(i: int) -> None:
    _, (inner,) = ray.get(put_inside.remote(i))
    assert int(ray.get(inner)[0]) == i % 256


LOOPS = {
    # name: (one iteration, iterations, check every)
    "put": (_loop_put, 2000, 100),
    "task_return": (_loop_task_return, 2000, 100),
    "task_argument": (_loop_task_argument, 200, 20),
    "nested_in_put": (_loop_nested_in_put, 200, 20),
    "owned_by_worker": (_loop_owned_by_worker, 200, 20),
}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("loop", list(LOOPS))
def test_dropped_objects_are_freed_and_usage_stays_bounded(ray_start, loop):
    """Each iteration makes a 10 MiB object and drops every ref to it; with a 200 MiB
    store the loop completes and (raylite) the store never fills up."""
    step, iterations, every = LOOPS[loop]
    spilled_before = None if AGAINST_RAY else store_stats()["spilled_objects"]
    for i in range(1, iterations + 1):
        step(i)
        assert_store_bounded(i, every)
    if not AGAINST_RAY:
        assert store_stats()["spilled_objects"] == spilled_before, (
            "objects were spilled: dropped objects were kept until the store filled up"
        )


def test_ref_nested_in_put_keeps_inner_object_alive(ray_start):
    inner = ray.put(filled(7))
    outer = ray.put({"box": [inner]})
    inner_hex = inner.hex()
    del inner
    gc.collect()
    churn(25)  # 250 MiB through the 200 MiB store
    (again,) = ray.get(outer)["box"]
    assert again.hex() == inner_hex
    assert is_filled(ray.get(again), 7)


def test_ref_returned_from_task_outlives_the_task(ray_start):
    _, (inner,) = ray.get(put_inside.remote(8))
    # The worker moves on to other tasks, whose results are dropped.
    for i in range(5):
        ray.get(put_inside.remote(100 + i))
    churn(25)
    assert is_filled(ray.get(inner), 8)
    assert ray.get(check_filled.remote(inner, 8)) is True


def test_ref_owned_by_actor_stays_valid_for_the_driver(ray_start):
    keeper = Keeper.remote()
    (inner,) = ray.get(keeper.make.remote(9))
    ray.get(keeper.drop.remote())  # the owner drops its own ref; the driver's remains
    churn(25)
    assert is_filled(ray.get(inner), 9)
    ray.kill(keeper)


def test_pending_task_argument_keeps_object_alive(ray_start, tmp_path):
    """The task cannot start (it needs both CPUs, one is held) when the driver drops
    its ref; the object must survive until the task has read it."""
    started, gate = tmp_path / "started", tmp_path / "gate"
    holding = hold_cpu.remote(str(started), str(gate))
    wait_for(started.exists, timeout=60, message="the CPU-holding task to start")
    ref = ray.put(filled(11))
    result = check_filled.options(num_cpus=2).remote(ref, 11)
    del ref
    gc.collect()
    churn(25)
    ready, _ = ray.wait([result], timeout=0.2)
    assert ready == [], "the task should still be waiting for a CPU"
    gate.touch()
    assert ray.get(result, timeout=60) is True
    assert ray.get(holding, timeout=60) == "released"


def test_ref_inside_task_argument_alive_until_task_reads_it(ray_start, tmp_path):
    gate = tmp_path / "gate"
    ref = ray.put(filled(12))
    result = read_boxed_after_gate.remote(str(gate), [ref], 12)
    del ref
    gc.collect()
    churn(25)
    gate.touch()
    assert ray.get(result, timeout=60) is True


def test_ref_borrowed_by_actor_stays_alive_after_driver_drops_it(ray_start):
    keeper = Keeper.remote()
    ref = ray.put(filled(13))
    assert ray.get(keeper.keep.remote([ref])) == 1
    del ref
    gc.collect()
    churn(25)
    assert ray.get(keeper.check_first.remote(13)) is True
    ray.kill(keeper)


# ------------------------------------------------------------------------ 3. zero copy


def test_numpy_array_is_read_only_shared_memory_view(ray_start):
    value = ray.get(ray.put(filled(21)))
    assert is_filled(value, 21)
    assert not value.flags.writeable
    with pytest.raises(ValueError):
        value[0] = 1
    assert in_shared_memory(value), "get() copied the array instead of viewing the store"


@pytest.mark.parametrize("container", ["dict", "list", "nested"])
def test_arrays_inside_containers_are_read_only_views(ray_start, container):
    a, b = filled(31, 4 * MiB), np.arange(MiB, dtype=np.float64)  # 4 MiB and 8 MiB
    if container == "dict":
        value = ray.get(ray.put({"a": a, "b": b, "n": 5}))
        got_a, got_b = value["a"], value["b"]
        assert value["n"] == 5
    elif container == "list":
        got_a, got_b = ray.get(ray.put([a, b]))
    else:
        value = ray.get(ray.put({"x": [{"y": a}, (b, "tag")]}))
        got_a, got_b = value["x"][0]["y"], value["x"][1][0]
    np.testing.assert_array_equal(got_a, a)
    np.testing.assert_array_equal(got_b, b)
    for array in (got_a, got_b):
        assert not array.flags.writeable
        with pytest.raises(ValueError):
            array[0] = 0
        assert in_shared_memory(array)


@pytest.mark.parametrize("kind", ["bytearray", "memoryview"])
def test_byte_buffers_come_back_read_only(ray_start, kind):
    """Ray returns bytes for both; raylite a read-only view. Either way: equal, and
    writing raises."""
    data = bytes(range(256)) * (4 * MiB // 256)
    original = bytearray(data) if kind == "bytearray" else memoryview(bytearray(data))
    value = ray.get(ray.put(original))
    assert bytes(value) == data
    with pytest.raises((TypeError, ValueError)):
        value[0] = 1
    assert bytes(value[:4]) == data[:4]


def test_view_stays_valid_after_ref_dropped_and_store_reused(ray_start):
    expected = np.arange(ARRAY_BYTES // 8, dtype=np.float64)
    ref = ray.put(expected)
    view = ray.get(ref)
    nested = ray.get(ray.put({"inner": [expected[: MiB // 8]]}))["inner"][0]
    del ref
    gc.collect()
    # Rewrite 300 MiB through a 200 MiB store: freed memory would be reused by now.
    filler = np.full(ARRAY_BYTES, 0xFF, dtype=np.uint8)
    for _ in range(30):
        ray.get(ray.put(filler))
    gc.collect()
    np.testing.assert_array_equal(view, expected)
    np.testing.assert_array_equal(nested, expected[: MiB // 8])
    assert not view.flags.writeable


def test_array_argument_is_a_read_only_view_in_the_task(ray_start):
    @ray.remote
    def inspect(array):
        return (not array.flags.writeable, in_shared_memory(array), is_filled(array, 41))

    assert ray.get(inspect.remote(ray.put(filled(41)))) == (True, True, True)


# ------------------------------------------------ 1 and 5. introspection (raylite only)


@raylite_only
def test_list_objects_describes_put_objects(ray_start):
    big = ray.put(filled(51))
    small = ray.put(12345)
    objects = objects_by_id()
    entry = objects[big.hex()]
    assert entry["size"] >= ARRAY_BYTES
    assert f"pid={os.getpid()}" in entry["owner"]
    assert referenced_from(big.hex(), "driver"), entry
    assert entry["in_store"] is True
    assert entry["spilled"] is False
    assert objects[small.hex()]["in_store"] is False
    summary = state().memory_summary()
    assert isinstance(summary, str)
    assert big.hex()[:16] in summary
    stats = store_stats()
    assert stats["capacity_bytes"] == STORE_BYTES
    assert stats["used_bytes"] >= ARRAY_BYTES
    assert stats["num_objects"] >= 1


@raylite_only
def test_freed_object_leaves_list_and_store(ray_start):
    ref = ray.put(filled(52))
    oid = ref.hex()
    used = store_stats()["used_bytes"]
    assert oid in objects_by_id()
    del ref
    gc.collect()
    wait_for(lambda: oid not in objects_by_id(), timeout=FREE_WAIT_S, message=f"{oid} to be freed")
    assert store_stats()["used_bytes"] <= used - ARRAY_BYTES


@raylite_only
def test_idle_worker_lets_go_of_its_argument_so_the_memory_is_reused(ray_start):
    @ray.remote
    def first(array):
        return int(array[0])

    ref = ray.put(filled(53))
    assert ray.get(first.remote(ref)) == 53
    before = store_stats()["recycled_bytes"]
    del ref  # the worker is idle now: nothing else runs on it
    gc.collect()
    wait_for(
        lambda: store_stats()["recycled_bytes"] >= before + ARRAY_BYTES,
        timeout=FREE_WAIT_S,
        message=lambda: f"the freed argument's memory to be kept for reuse: {store_stats()}",
    )


@raylite_only
def test_nested_ref_is_listed_as_contained_in_outer(ray_start):
    inner = ray.put(filled(53))
    outer = ray.put([inner])
    inner_hex, outer_hex = inner.hex(), outer.hex()
    del inner
    gc.collect()
    wait_for(
        lambda: (
            referenced_from(inner_hex, f"contained in {outer_hex}")
            and not referenced_from(inner_hex, "driver")
        ),
        timeout=FREE_WAIT_S,
        message=lambda: f"inner referenced only from outer: {objects_by_id().get(inner_hex)}",
    )
    del outer
    gc.collect()
    wait_for(
        lambda: not {inner_hex, outer_hex} & set(objects_by_id()),
        timeout=FREE_WAIT_S,
        message="inner and outer to be freed once the outer ref is dropped",
    )


@raylite_only
def test_pending_task_argument_is_listed_and_freed_after(ray_start, tmp_path):
    started, gate = tmp_path / "started", tmp_path / "gate"
    holding = hold_cpu.remote(str(started), str(gate))
    wait_for(started.exists, timeout=60, message="the CPU-holding task to start")
    ref = ray.put(filled(54))
    oid = ref.hex()
    result = check_filled.options(num_cpus=2).remote(ref, 54)
    del ref
    gc.collect()
    wait_for(
        lambda: referenced_from(oid, "task argument"),
        timeout=FREE_WAIT_S,
        message=lambda: f"{oid} referenced as a task argument: {objects_by_id().get(oid)}",
    )
    assert not referenced_from(oid, "driver"), objects_by_id().get(oid)
    gate.touch()
    assert ray.get(result, timeout=60) is True
    ray.get(holding, timeout=60)
    wait_for(lambda: oid not in objects_by_id(), timeout=FREE_WAIT_S, message=f"{oid} to be freed")


@raylite_only
def test_worker_owned_object_is_freed_when_driver_drops_it(ray_start):
    pid, (inner,) = ray.get(put_inside.remote(55))
    oid = inner.hex()
    entry = objects_by_id()[oid]
    assert f"pid={pid}" in entry["owner"]
    assert referenced_from(oid, "driver"), entry
    del inner
    gc.collect()
    wait_for(lambda: oid not in objects_by_id(), timeout=FREE_WAIT_S, message=f"{oid} to be freed")


@raylite_only
def test_ref_held_by_actor_is_listed_and_freed_when_actor_drops_it(ray_start):
    keeper = Keeper.remote()
    pid = ray.get(keeper.pid.remote())
    ref = ray.put(filled(56))
    oid = ref.hex()
    ray.get(keeper.keep.remote([ref]))
    del ref
    gc.collect()
    wait_for(
        lambda: referenced_from(oid, f"worker pid={pid}") and not referenced_from(oid, "driver"),
        timeout=FREE_WAIT_S,
        message=lambda: f"{oid} referenced only by the actor: {objects_by_id().get(oid)}",
    )
    ray.get(keeper.drop.remote())
    wait_for(lambda: oid not in objects_by_id(), timeout=FREE_WAIT_S, message=f"{oid} to be freed")
    ray.kill(keeper)


@raylite_only
def test_memory_cli_help():
    pytest.importorskip(f"{ray.__name__}.cli")
    proc = subprocess.run(
        [sys.executable, "-m", f"{ray.__name__}.cli", "memory", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "memory" in proc.stdout.lower()


# ------------------------------------------------------------- 2 and 6. spilling


@pytest.mark.timeout(180)
@pytest.mark.ray_init(**SMALL_STORE)
def test_data_three_times_the_store_size(ray_start):
    """30 live 10 MiB objects in a 100 MiB store: all readable, by get and as task
    arguments, in any order."""
    refs = [ray.put(filled(i)) for i in range(30)]
    for i, ref in enumerate(refs):
        assert is_filled(ray.get(ref), i), f"object {i} came back wrong"
    assert ray.get([check_filled.remote(refs[i], i) for i in range(0, 30, 3)]) == [True] * 10
    for i in reversed(range(30)):
        assert is_filled(ray.get(refs[i]), i), f"object {i} came back wrong (second pass)"
    results = ray.get([make_filled.remote(100 + i) for i in range(10)])  # task returns too
    assert all(is_filled(r, 100 + i) for i, r in enumerate(results))


@pytest.mark.timeout(120)
@pytest.mark.ray_init(**SMALL_STORE)
def test_object_larger_than_the_store_still_works(ray_start):
    ref = ray.put(filled(61, 300 * MiB))
    assert is_filled(ray.get(ref), 61, 300 * MiB)
    del ref
    gc.collect()
    assert is_filled(ray.get(ray.put(filled(62))), 62)  # and the store is usable after


def spill_burst(first_fill: int, count: int = 20) -> list:
    """`count` live 10 MiB objects (2x the 100 MiB store): the oldest get spilled."""
    return [ray.put(filled(first_fill + i)) for i in range(count)]


def spilled_ids(refs: list) -> list[str]:
    listed = objects_by_id()
    return [r.hex() for r in refs if listed.get(r.hex(), {}).get("spilled")]


@raylite_only
@pytest.mark.timeout(120)
@pytest.mark.ray_init(**SMALL_STORE)
def test_spill_is_reported_to_the_driver_once_per_burst(ray_fresh, monkeypatch):
    # A session of its own: a burst an earlier test spilled just before this one began
    # would be reported in this test's first line (it counted 18 objects where 12
    # were spilled after `before`).
    streams = StdStreams(monkeypatch)  # no line lost to a capture's truncation
    before = store_stats()
    refs = spill_burst(70)

    def spill_lines() -> list[tuple[str, str, str]]:
        return SPILL_LINE.findall(streams.out + streams.err)

    wait_for(
        spill_lines,
        timeout=15,
        message=lambda: (
            f"a 'Spilled N MiB, M objects, write throughput X MiB/s' line; got {streams.err[-2000:]!r}"
        ),
    )
    time.sleep(1.0)  # the burst is over: no more lines should come
    lines = spill_lines()
    spilled = store_stats()["spilled_objects"] - before["spilled_objects"]
    assert 1 <= len(lines) <= 3, f"expected one Spilled line per burst, got {lines}"
    assert 1 <= sum(int(n) for _, n, _ in lines) <= spilled, (lines, spilled)
    assert sum(int(mib) for mib, _, _ in lines) >= 10, lines
    del refs


@raylite_only
@pytest.mark.timeout(120)
@pytest.mark.ray_init(**SMALL_STORE)
def test_spilled_objects_are_counted_listed_and_restored(ray_start):
    before = store_stats()
    assert before["capacity_bytes"] == 100 * MiB
    refs = spill_burst(170)
    stats = store_stats()
    assert stats["used_bytes"] <= 100 * MiB
    assert stats["spilled_objects"] - before["spilled_objects"] >= 10
    assert stats["spilled_bytes"] >= 10 * ARRAY_BYTES

    ids = spilled_ids(refs)
    assert len(ids) >= 10, objects_by_id()
    assert refs[0].hex() in ids, "the least recently used object was not spilled"
    listed = objects_by_id()
    assert all(listed[o]["in_store"] for o in ids)

    for i, ref in enumerate(refs):  # restored on get, within the capacity
        assert is_filled(ray.get(ref), 170 + i)
        assert store_stats()["used_bytes"] <= 100 * MiB
    after = store_stats()
    assert after["restored_objects"] - before["restored_objects"] >= 10, (before, after)


@raylite_only
@pytest.mark.timeout(120)
@pytest.mark.ray_init(**SMALL_STORE)
def test_spill_files_are_removed_when_objects_are_freed(ray_start):
    root = session_dir()
    refs = spill_burst(210)
    wait_for(lambda: spilled_ids(refs), timeout=30, message="objects to be spilled")
    on_disk = sum(p.stat().st_size for p in spill_files(root))
    assert on_disk >= 10 * ARRAY_BYTES, f"spill files under {root}: {spill_files(root)}"
    refs.clear()
    gc.collect()
    wait_for(
        lambda: store_stats()["spilled_bytes"] == 0 and not spill_files(root),
        timeout=30,
        message=lambda: f"spill files removed: {spill_files(root)}, {store_stats()}",
    )


@raylite_only
@pytest.mark.timeout(120)
@pytest.mark.ray_init(**SMALL_STORE)
def test_lost_spill_file_raises_object_lost_not_a_hang(ray_start):
    refs = spill_burst(80)
    wait_for(lambda: spilled_ids(refs), timeout=30, message="objects to be spilled")
    ids = set(spilled_ids(refs))
    spilled = [r for r in refs if r.hex() in ids]
    files = spill_files(session_dir())
    assert files, "no spill files found under the session dir"
    for path in files:
        path.unlink()
    for ref in spilled:
        with pytest.raises(exceptions.ObjectLostError):
            ray.get(ref, timeout=30)
    refs.clear()
    spilled.clear()
    gc.collect()
    assert is_filled(ray.get(ray.put(filled(99))), 99)


@raylite_only
@pytest.mark.timeout(120)
def test_spill_files_removed_at_shutdown(no_engine):
    ray.init(**SMALL_STORE)
    refs = spill_burst(90)
    root = session_dir()
    wait_for(lambda: spill_files(root), timeout=30, message="spill files to be written")
    ray.shutdown()
    del refs
    assert not root.exists() or not spill_files(root)


# ----------------------------------------------------------------------- 4. errors


@raylite_only
@pytest.mark.timeout(120)
@pytest.mark.ray_init(**LIMITED_SPILL)
def test_object_larger_than_store_plus_spill_space_fails_at_put(ray_start):
    too_big = filled(1, 350 * MiB)  # > 100 MiB store + 200 MiB spill space
    with pytest.raises(exceptions.ObjectStoreFullError) as info:
        ray.put(too_big)
    message = str(info.value)
    assert mentions_size(message, too_big.nbytes), f"object size not stated: {message}"
    assert any(mentions_size(message, n * MiB) for n in (100, 200, 300)), (
        f"store / spill capacity not stated: {message}"
    )
    del too_big
    # Larger than the store but within the spill space: works, and so does the rest.
    fits = ray.put(filled(2, 150 * MiB))
    assert is_filled(ray.get(fits), 2, 150 * MiB)
    del fits
    gc.collect()
    assert is_filled(ray.get(ray.put(filled(3))), 3)


def _kill_and_wait(keeper) -> None:
    ray.kill(keeper)

    def dead() -> bool:
        try:
            ray.get(keeper.pid.remote(), timeout=30)
        except exceptions.RayActorError:
            return True
        return False

    wait_for(dead, timeout=60, message="the actor to die")


@pytest.mark.parametrize("size", ["small", "stored"])
def test_object_whose_owner_died_raises_object_lost(ray_start, size):
    """Once its owner is dead, get of the object raises ObjectLostError (OwnerDiedError),
    never hangs: Ray may still serve it for a moment while it learns of the death, so
    each attempt must give the right value or ObjectLostError, and soon the error."""
    keeper = Keeper.remote()
    if size == "small":
        (inner,) = ray.get(keeper.make_small.remote("small value"))
    else:
        (inner,) = ray.get(keeper.make.remote(57))
    _kill_and_wait(keeper)

    def lost() -> bool:
        try:
            value = ray.get(inner, timeout=30)
        except exceptions.ObjectLostError:
            return True
        assert value == "small value" if size == "small" else is_filled(value, 57)
        return False

    wait_for(lost, timeout=30, interval=0.2, message="ObjectLostError after the owner died")
