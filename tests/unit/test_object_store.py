"""The shared-memory store on a temporary directory: layout, zero copy, lifetime."""

from __future__ import annotations

import gc
import mmap
import os
import struct
import sys
import threading

import numpy as np
import pytest

from raylite.exceptions import ObjectLostError
from raylite.object_ref import new_id
from raylite.object_store import (
    MAGIC,
    ObjectStore,
    drop_pins,
    load_segment,
    pins_dir,
    readers,
    segment_pieces,
)
from raylite.serialization import loads_inline, serialize


@pytest.fixture
def store(tmp_path):
    return ObjectStore(str(tmp_path))


def test_numpy_array_comes_back_as_a_read_only_view(store):
    arr = np.arange(1_000_000, dtype=np.float64)
    oid = new_id()
    size = store.put(oid, serialize(arr))
    assert size >= arr.nbytes
    out = store.get(oid)
    np.testing.assert_array_equal(out, arr)
    assert not out.flags.writeable
    assert not out.flags.owndata  # a view on the mapping, not a copy
    with pytest.raises(ValueError):
        out[0] = 1.0


def test_view_outlives_the_freed_segment(store):
    oid = new_id()
    store.put(oid, serialize({"a": np.ones(100_000), "b": [np.zeros(10)]}))
    value = store.get(oid)
    store.delete(oid)
    assert not store.contains(oid)
    gc.collect()
    assert value["a"].sum() == 100_000
    assert np.shares_memory(store.get(oid)["a"], value["a"])  # the live mapping serves it
    del value
    gc.collect()
    with pytest.raises(ObjectLostError):
        store.get(oid)


def test_one_mapping_per_object_while_a_view_lives(store):
    events = []
    store.on_mapped = lambda oid, pinned: events.append(("mapped", oid))
    store.on_unmapped = lambda oid: events.append(("unmapped", oid))
    oid = new_id()
    store.put(oid, serialize(np.arange(100_000)))
    first, second = store.get(oid), store.get(oid)
    assert first is not second
    assert np.shares_memory(first, second)
    assert store.mapped(oid)
    assert events == [("mapped", oid)]
    del first
    gc.collect()
    assert store.mapped(oid)  # `second` still holds the mapping
    del second
    gc.collect()
    assert not store.mapped(oid)
    assert events == [("mapped", oid), ("unmapped", oid)]
    third = store.get(oid)  # mapped anew
    assert third[99_999] == 99_999
    assert events[-1] == ("mapped", oid)


def test_a_value_without_buffers_keeps_no_mapping(store):
    events = []
    store.on_mapped = lambda oid, pinned: events.append("mapped")
    store.on_unmapped = lambda oid: events.append("unmapped")
    oid = new_id()
    store.put(oid, serialize(list(range(50_000))))  # pickled in band: copied out
    assert store.get(oid) == list(range(50_000))
    gc.collect()
    assert not store.mapped(oid)
    assert events == ["mapped", "unmapped"]


def test_a_mapping_made_twice_at_once_is_undone_once(store):
    unmapped = []
    store.on_unmapped = unmapped.append
    oid = new_id()
    store.put(oid, serialize(np.ones(1000)))
    value = store.get(oid)
    # Another thread mapped it too and lost the race to register its mapping: the
    # registered one is used, and the extra one is reported unmapped at once.
    fd = os.open(store.path(oid), os.O_RDONLY)
    try:
        extra = mmap.mmap(fd, os.fstat(fd).st_size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    kept = store.mappings.add(oid, extra)
    assert kept is not extra
    assert extra.closed
    assert unmapped == [oid]
    assert np.shares_memory(load_segment(oid, kept), value)


def test_buffers_are_aligned_and_segment_sealed_atomically(store, tmp_path):
    oid = new_id()
    store.put(oid, serialize([np.ones(3, dtype=np.uint8), np.ones(1000)]))
    assert os.listdir(tmp_path) == [oid.hex()]  # no temporary file left behind
    _small, big = store.get(oid)
    assert big.ctypes.data % 64 == 0


def test_short_writes_of_the_pickle_are_finished(store, monkeypatch):
    """One pwrite writes at most ~2 GiB on Linux: a 2.5 GB bytes value's in-band pickle
    came back cut short (zeros after 2 GiB). Here every pwrite writes 4 KiB at most."""
    real = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, data, off: real(fd, bytes(data)[:4096], off))
    payload = os.urandom(100_000)  # bytes pickle in-band: all of it is the meta
    oid = new_id()
    store.put(oid, serialize([payload, np.arange(5_000)]))
    out = store.get(oid)
    assert out[0] == payload
    np.testing.assert_array_equal(out[1], np.arange(5_000))


def test_large_bytes_travel_out_of_band_and_come_back_as_bytes(store):
    """In band, a 2.2 GB bytes value took 8 s to pickle (the stream grows by copies)."""
    big = os.urandom(2 << 20)
    value = serialize(big)
    assert len(value.meta) < 1000
    assert [b.nbytes for b in value.buffers] == [len(big)]
    oid = new_id()
    store.put(oid, value)
    out = store.get(oid)
    assert type(out) is bytes
    assert out == big
    out = loads_inline(serialize({"k": big, "small": b"s"}).inline())
    assert type(out["k"]) is bytes
    assert out == {"k": big, "small": b"s"}


def test_inline_values_round_trip():
    value = {"x": np.arange(10), "y": "text", "z": b"bytes"}
    out = loads_inline(serialize(value).inline())
    np.testing.assert_array_equal(out["x"], value["x"])
    assert out["y"] == "text"
    assert out["z"] == b"bytes"


@pytest.mark.parametrize("size", [0, 1, 4096, 8 << 20, (8 << 20) + 4096 * 3 + 17])
def test_spill_copy_is_exact_for_aligned_and_unaligned_sizes(tmp_path, size):
    from raylite.segment_copy import copy_to_disk

    src, dst = tmp_path / "src", tmp_path / "dst"
    data = os.urandom(size)
    src.write_bytes(data)
    copy_to_disk(str(src), str(dst))
    assert dst.read_bytes() == data


def test_spilled_segment_reads_back_from_the_spill_dir(tmp_path):
    store = ObjectStore(str(tmp_path / "shm"), str(tmp_path / "spill"))
    os.makedirs(tmp_path / "shm")
    os.makedirs(tmp_path / "spill")
    oid = new_id()
    arr = np.arange(300_001, dtype=np.int32)
    store.put(oid, serialize(arr))
    store.spill(oid)
    assert os.listdir(tmp_path / "shm") == []
    np.testing.assert_array_equal(store.get(oid), arr)


def test_segment_pieces_written_anywhere_make_the_segment_put_writes(store, tmp_path):
    """What a remote driver streams to its node (pieces at offsets, zeroes between)
    is byte for byte the segment a local put writes, and reads back the same."""
    value = {"a": np.arange(100_003, dtype=np.int32), "b": b"x" * 70_001, "c": [1, "two"]}
    oid = new_id()
    size = store.put(oid, serialize(value))
    total, pieces = segment_pieces(serialize(value))
    assert total == size
    assert len(pieces) > 2  # the header, the pickle, the out-of-band buffers
    streamed = bytearray(total)
    for offset, view in pieces:
        streamed[offset : offset + view.nbytes] = view
    with open(store.path(oid), "rb") as f:
        assert f.read() == bytes(streamed)
    out = load_segment(oid, bytes(streamed))
    np.testing.assert_array_equal(out["a"], value["a"])
    assert out["b"] == value["b"]
    assert out["c"] == value["c"]


# --- pins: a reader that is not the owner links the segment while it maps it ---------
def _pins(store):
    pins = pins_dir(store.directory, os.getpid())
    return sorted(os.listdir(pins)) if os.path.isdir(pins) else []


def test_a_pinned_mapping_links_the_segment_until_its_last_view_goes(store):
    told = []
    store.on_mapped = lambda oid, pinned: told.append(pinned)
    oid = new_id()
    store.put(oid, serialize(np.arange(100_000)))
    assert readers(store.path(oid)) == 0
    first, second = store.get(oid, pin=True), store.get(oid, pin=True)
    assert told == [True]  # one mapping, one pin
    assert readers(store.path(oid)) == 1
    assert [p.split(".")[0] for p in _pins(store)] == [oid.hex()]
    del first
    gc.collect()
    assert readers(store.path(oid)) == 1  # `second` still maps it
    del second
    gc.collect()
    assert readers(store.path(oid)) == 0
    assert _pins(store) == []


def test_an_owner_get_pins_nothing(store):
    told = []
    store.on_mapped = lambda oid, pinned: told.append(pinned)
    oid = new_id()
    store.put(oid, serialize(np.ones(1000)))
    value = store.get(oid)
    assert told == [False]
    assert readers(store.path(oid)) == 0
    del value


def test_a_pin_keeps_the_memory_of_a_deleted_segment_for_its_view(store):
    oid = new_id()
    store.put(oid, serialize(np.full(100_000, 5.0)))
    view = store.get(oid, pin=True)
    pin = os.path.join(pins_dir(store.directory, os.getpid()), _pins(store)[0])
    store.delete(oid)  # the node manager deleted its name (not reused: it is pinned)
    assert os.stat(pin).st_nlink == 1
    assert float(view.min()) == float(view.max()) == 5.0
    del view
    gc.collect()
    assert not os.path.exists(pin)


def test_a_mapping_made_twice_at_once_drops_its_pin_at_once(store):
    oid = new_id()
    store.put(oid, serialize(np.ones(1000)))
    value = store.get(oid, pin=True)
    extra_pin = store._pin(oid)  # another thread's pin and mapping, which lose the race
    fd = os.open(extra_pin, os.O_RDONLY)
    try:
        extra = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    assert readers(store.path(oid)) == 2
    store.mappings.add(oid, extra, extra_pin)
    assert readers(store.path(oid)) == 1
    del value
    gc.collect()
    assert readers(store.path(oid)) == 0


def test_a_spilled_segment_is_read_without_a_pin(tmp_path):
    store = ObjectStore(str(tmp_path / "shm"), str(tmp_path / "spill"))
    os.makedirs(store.directory)
    os.makedirs(store.spill_dir)
    told = []
    store.on_mapped = lambda oid, pinned: told.append(pinned)
    oid = new_id()
    store.put(oid, serialize(np.arange(1000)))
    store.spill(oid)
    assert store.get(oid, pin=True)[999] == 999
    assert told == [False]  # a spilled file is never reused: nothing to pin
    assert _pins(store) == []


def test_close_and_drop_pins_remove_a_readers_pins(store):
    oid = new_id()
    store.put(oid, serialize(np.ones(1000)))
    view = store.get(oid, pin=True)
    assert readers(store.path(oid)) == 1
    drop_pins(store.directory, os.getpid())  # what its node does when the reader is gone
    assert readers(store.path(oid)) == 0
    assert view[999] == 1.0  # the mapping itself stays valid
    del view
    gc.collect()
    other = ObjectStore(store.directory)  # a new session's store in this process
    view = other.get(oid, pin=True)
    assert readers(store.path(oid)) == 1
    other.close()  # shutdown: the session's pins go
    assert readers(store.path(oid)) == 0
    assert view[0] == 1.0


def test_a_forked_child_dropping_its_copy_of_a_view_keeps_the_parents_pin(store):
    oid = new_id()
    store.put(oid, serialize(np.ones(1000)))
    view = store.get(oid, pin=True)
    assert readers(store.path(oid)) == 1
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        del view
        gc.collect()  # its mapping goes, and with it the weakref callback runs
        os._exit(0 if readers(store.path(oid)) == 1 else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert readers(store.path(oid)) == 1  # the parent still maps it: still pinned
    del view
    gc.collect()
    assert readers(store.path(oid)) == 0


def _recycled(store: ObjectStore, nbytes: int) -> str:
    """A freed segment's file, as the node manager hands one out for a put (prealloc)."""
    old = new_id()
    store.put(old, serialize(np.zeros(nbytes // 8)))
    path = os.path.join(store.directory, f"warm-{old.hex()}")
    os.rename(store.path(old), path)
    return path


def test_an_owner_reads_what_it_wrote_into_a_recycled_file_through_that_mapping(store, monkeypatch):
    events = []
    store.on_mapped = lambda oid, pinned: events.append(("mapped", oid, pinned))
    store.on_unmapped = lambda oid: events.append(("unmapped", oid))
    arr = np.arange(200_000, dtype=np.float64)
    oid = new_id()
    store.put(oid, serialize(arr), prealloc=_recycled(store, arr.nbytes), own=True)

    def no_file(*args):
        raise AssertionError("the first get opened and mapped the file")

    monkeypatch.setattr(store, "_map", no_file)
    value = store.get(oid)
    np.testing.assert_array_equal(value, arr)
    assert not value.flags.writeable  # read-only, though the mapping under it is not
    with pytest.raises(ValueError):
        value[0] = 1.0
    again = store.get(oid)  # while a view lives: the same buffer
    assert np.shares_memory(value, again)
    assert store.mapped(oid)
    assert events == [("mapped", oid, False)]
    del value, again
    gc.collect()
    assert not store.mapped(oid)
    assert events[-1] == ("unmapped", oid)
    monkeypatch.undo()
    assert store.get(oid)[199_999] == 199_999  # later: the file, mapped anew


def test_a_later_put_into_the_same_recycled_file_forgets_the_earlier_object(store):
    warm = _recycled(store, 800_000)
    first = new_id()
    store.put(first, serialize(np.ones(100_000)), prealloc=warm, own=True)
    # `first` is freed unread; the node manager hands its file out again.
    again = os.path.join(store.directory, "warm-again")
    os.rename(store.path(first), again)
    second = new_id()
    store.put(second, serialize(np.full(100_000, 2.0)), prealloc=again, own=True)
    with pytest.raises(ObjectLostError):  # not the second's bytes through the mapping
        store.get(first)
    assert store.get(second)[0] == 2.0


def test_a_view_read_through_a_cached_mapping_outlives_the_mapping_leaving_the_cache(store):
    arrays = [np.full(50_000, float(i)) for i in range(6)]  # more than the cache keeps
    oids = [new_id() for _ in arrays]
    store.put(oids[0], serialize(arrays[0]), prealloc=_recycled(store, 400_000), own=True)
    kept = store.get(oids[0])
    for oid, arr in zip(oids[1:], arrays[1:], strict=True):
        store.put(oid, serialize(arr), prealloc=_recycled(store, 400_000), own=True)
    assert kept.sum() == 0.0  # its mapping left the cache, and lives on under the view
    values = [store.get(oid) for oid in oids[1:]]
    assert [v[0] for v in values] == [1.0, 2.0, 3.0, 4.0, 5.0]
    store.close()  # views of its mappings live: nothing raises, nothing is unmapped
    assert kept[49_999] == 0.0
    assert values[-1][49_999] == 5.0


def test_a_reader_that_pins_maps_the_file_even_if_this_process_wrote_it(store):
    events = []
    store.on_mapped = lambda oid, pinned: events.append(pinned)
    oid = new_id()
    store.put(oid, serialize(np.arange(100_000)), prealloc=_recycled(store, 800_000), own=True)
    value = store.get(oid, pin=True)
    assert value[99_999] == 99_999
    assert events == [True]
    assert readers(store.path(oid)) == 1


def test_a_segment_spilled_after_its_put_is_read_where_it_went(tmp_path):
    """The owner's first get reads its put through the mapping that wrote it unless the
    node spilled the segment since (its spill mark, set before the file is unlinked):
    then from the spill dir, whose copy carries no mark. A file deleted under its owner
    some other way (only a failure does) is read from that mapping: it holds the
    object whole."""
    store = ObjectStore(str(tmp_path / "shm"), str(tmp_path / "spill"))
    os.makedirs(store.directory)
    os.makedirs(store.spill_dir)
    spilled, deleted = new_id(), new_id()
    store.put(
        spilled, serialize(np.full(100_000, 3.0)), prealloc=_recycled(store, 800_000), own=True
    )
    store.put(
        deleted, serialize(np.full(100_000, 4.0)), prealloc=_recycled(store, 800_000), own=True
    )
    store.spill(spilled)  # copied to disk, unlinked here: read from the spill dir
    os.unlink(store.path(deleted))
    reads = []
    store.on_spilled_read = reads.append
    assert store.get(spilled)[0] == 3.0
    assert reads == [spilled]
    assert store.get(deleted)[0] == 4.0
    assert reads == [spilled]
    with open(store.path(spilled, store.spill_dir), "rb") as copy:
        assert copy.read(64)[63] == 0  # the copy carries no mark (one buffer: at 63)


def test_a_recycled_files_old_bytes_are_no_spill_mark(store, monkeypatch):
    """The spill mark lies in the header's padding, whose place moves with the number of
    buffers: a put into a recycled file zeroes it, so what the file held before (here
    the pickle of an object with no buffers, where a three-buffer header's mark goes)
    does not send the owner's first get to the file."""
    old = new_id()
    store.put(old, serialize(list(range(300_000))))  # a pickle from byte 64 on
    warm = os.path.join(store.directory, "warm-old")
    os.rename(store.path(old), warm)
    oid = new_id()
    value = {"a": np.ones(30_000), "b": np.zeros(30_000), "c": np.full(30_000, 2.0)}
    store.put(oid, serialize(value), prealloc=warm, own=True)

    def no_file(*args):
        raise AssertionError("the first get opened and mapped the file")

    monkeypatch.setattr(store, "_map", no_file)
    got = store.get(oid)
    assert [float(got[k][-1]) for k in "abc"] == [1.0, 0.0, 2.0]


def test_puts_into_recycled_files_from_several_threads_at_once(store):
    """joblib's backend puts from several threads of the driver: the write cache's
    purge and evictions ran into each other ("dictionary changed size during
    iteration", KeyError) before they took a lock."""
    errors: list[str] = []

    def puts(k: int) -> None:
        try:
            for i in range(150):
                oid = new_id()
                value = np.full(20_000, float(k * 1000 + i))
                store.put(oid, serialize(value), prealloc=_recycled(store, 160_000), own=True)
                assert store.get(oid)[19_999] == k * 1000 + i
                os.unlink(store.path(oid))  # freed: its file is gone
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=puts, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


def test_a_value_this_process_does_not_own_is_not_kept_for_a_first_get(store, monkeypatch):
    """A task's return (its caller owns it): written through the cached mapping, but
    nothing kept for a get here, which maps the file."""
    oid = new_id()
    store.put(oid, serialize(np.arange(100_000)), prealloc=_recycled(store, 800_000))
    mapped = []
    real_map = store._map
    monkeypatch.setattr(store, "_map", lambda *a: mapped.append(a) or real_map(*a))
    assert store.get(oid)[99_999] == 99_999
    assert len(mapped) == 1


def test_a_mapping_a_put_writes_through_is_not_evicted_by_other_puts_meanwhile(store):
    """Another thread's puts fill the cache meanwhile: the one being written is out of it
    until its put is done, so none of them evicts (closes) it under the writer."""
    path = _recycled(store, 400_000)
    fd = os.open(path, os.O_RDWR)
    try:
        taken = store._writable_mapping(fd, 400_000)
        assert taken is not None
        key, wfd, mm = taken
        for _ in range(6):  # more than the cache keeps
            store.put(new_id(), serialize(np.ones(50_000)), prealloc=_recycled(store, 400_000))
        mm[:4] = b"abcd"  # open: no "mmap closed or invalid"
        os.fstat(wfd)  # and its file still open
        store._cache_mapping(key, wfd, mm)
        assert store._wcache[key] == (wfd, mm)  # back, most recently used
    finally:
        os.close(fd)


def test_deleting_an_unmapped_segment_renames_it_before_it_looks_for_pins(store, monkeypatch):
    """A pin made between the look for pins and the truncation would read a file cut to
    nothing (SIGBUS): the file is renamed first, after which no pin can be made."""
    import raylite.object_store as object_store

    oid = new_id()
    store.put(oid, serialize(np.full(100_000, 6.0)))
    reader = ObjectStore(store.directory)
    pinned = []
    real_readers = object_store.readers

    def readers_then_a_pin(path):
        pinned.append(reader._pin(oid))  # a borrower pins just now
        return real_readers(path)

    monkeypatch.setattr(object_store, "readers", readers_then_a_pin)
    store.delete(oid, unmapped=True)
    monkeypatch.undo()
    assert pinned == [None]  # the name was gone: no pin, so nothing can read it
    assert not store.contains(oid)
    assert not [n for n in os.listdir(store.directory) if n.endswith(".freed")]


def _region_of(store, oid):
    """The idle-able mapping (object_store._Region's mmap) under a large object's views."""
    carrier = store.mappings.lookup(oid)
    assert isinstance(carrier, np.ndarray), "a large segment is read through a region"
    return carrier.base.obj


def test_a_large_segments_mapping_stays_idle_and_serves_the_next_object_in_its_file(store):
    """The node manager recycles a freed file for a later object of its size: a process
    that read the first reads the second through the same mapping (no mmap, no faults)."""
    events = []
    store.on_mapped = lambda oid, pinned: events.append(("mapped", oid))
    store.on_unmapped = lambda oid: events.append(("unmapped", oid))
    first = new_id()
    store.put(first, serialize(np.full(200_000, 1.0)))
    value = store.get(first, pin=True)
    region = _region_of(store, first)
    del value
    gc.collect()
    assert not store.mapped(first)  # no view: unmapped for the node, the mapping idle
    assert events == [("mapped", first), ("unmapped", first)]
    assert readers(store.path(first)) == 0  # its pin went with the views
    assert [r.mm for r in store._idle.values()] == [region]
    # Freed and recycled: the node manager renames the file, a put fills it again.
    warm = os.path.join(store.directory, ".warm-1")
    os.rename(store.path(first), warm)
    second = new_id()
    store.put(second, serialize(np.full(200_000, 2.0)), prealloc=warm)
    again = store.get(second, pin=True)
    assert _region_of(store, second) is region
    assert float(again.min()) == float(again.max()) == 2.0
    assert not store._idle  # in use again
    assert events[-1] == ("mapped", second)


def test_an_idle_mapping_of_a_file_that_is_gone_is_closed(store):
    """Idle mappings would keep a deleted file's memory: they are closed at the next
    mapping or release, and one whose file went while viewed is not kept at all."""
    oids = [new_id() for _ in range(3)]
    for i, oid in enumerate(oids):
        store.put(oid, serialize(np.full(100_000, float(i))))
    store.get(oids[0])
    gc.collect()
    (idle,) = store._idle.values()
    store.delete(oids[0])  # not truncated: as if a view might live
    view = store.get(oids[1])  # a miss: the look for gone files closes the idle one
    assert idle.mm.closed
    assert idle.fd == -1
    assert not store._idle
    store.delete(oids[1])  # deleted while viewed: the view keeps reading it
    assert view[99_999] == 1.0
    del view
    gc.collect()
    assert not store._idle  # its file is gone: not kept
    store.get(oids[2])
    gc.collect()
    assert len(store._idle) == 1


def test_deleting_an_unmapped_segment_takes_its_memory_from_idle_mappings(store):
    """Delete.unmapped (no view lives anywhere): truncated before it is unlinked, so an
    idle mapping elsewhere holds none of its pages. A pinned one is not truncated."""
    oid = new_id()
    store.put(oid, serialize(np.full(100_000, 3.0)))
    store.get(oid, pin=True)
    gc.collect()
    (idle,) = store._idle.values()
    kept = new_id()
    store.put(kept, serialize(np.full(100_000, 4.0)))
    view = store.get(kept, pin=True)
    fd = os.open(store.path(kept), os.O_RDONLY)
    try:
        store.delete(kept, unmapped=True)  # a reader's pin says otherwise: left whole
        assert os.fstat(fd).st_size > 0
    finally:
        os.close(fd)
    assert view[99_999] == 4.0
    store.delete(oid, unmapped=True)
    assert os.fstat(idle.fd).st_size == 0  # its pages are given back


def test_tidy_closes_an_idle_mapping_of_a_file_spilled_since(tmp_path):
    """A file spilled while a process keeps it mapped idle: its memory goes at the next
    tidy (the core worker's release loop, every 0.1 s), not at that process's next
    large get. A live view's file is left alone; the others stay idle."""
    store = ObjectStore(str(tmp_path / "shm"), str(tmp_path / "spill"))
    os.makedirs(store.directory)
    os.makedirs(store.spill_dir)
    spilled, kept, viewed = new_id(), new_id(), new_id()
    for i, oid in enumerate((spilled, kept, viewed)):
        store.put(oid, serialize(np.full(100_000, float(i))))
    store.get(spilled, pin=True)
    store.get(kept, pin=True)
    view = store.get(viewed, pin=True)
    gc.collect()
    assert len(store._idle) == 2
    assert _mapped(spilled)
    assert _mapped(viewed)
    store.spill(spilled)
    store.spill(viewed)
    store.tidy()
    assert not _mapped(spilled)
    assert [r.key for r in store._idle.values()] == [_key(store.path(kept))]
    assert _mapped(viewed)  # viewed: its mapping lives on
    assert view[99_999] == 2.0
    del view
    gc.collect()
    store.tidy()
    assert not _mapped(viewed)  # its file went: not kept idle
    assert len(store._idle) == 1


def _key(path):
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def _mapped(oid):
    """Whether this process maps the object's file (in memory: not its spilled copy)."""
    with open("/proc/self/maps") as maps:
        return any(oid.hex() in line and "/shm/" in line for line in maps)


def test_a_release_in_a_thread_holding_the_idle_lock_is_queued(store):
    """A view may go (the collector) in a thread that holds the idle lock: its mapping
    is queued, and joins the idle ones at the next look."""
    oid = new_id()
    store.put(oid, serialize(np.ones(100_000)))
    value = store.get(oid)
    with store._ilock:
        del value
        gc.collect()
        assert len(store._released) == 1
        assert not store._idle
    other = new_id()
    store.put(other, serialize(np.ones(100_000)))
    held = store.get(other)  # settles the queue
    assert not store._released
    assert len(store._idle) == 1
    assert held[0] == 1.0


def test_idle_mappings_are_at_most_config_idle_mappings(store, monkeypatch):
    monkeypatch.setattr("raylite.object_store.IDLE_ENTRIES", 2)
    oids = [new_id() for _ in range(4)]
    for oid in oids:
        store.put(oid, serialize(np.ones(100_000)))
        store.get(oid)
        gc.collect()
    assert len(store._idle) == 2
    store.close()
    assert not store._idle


def test_idle_mappings_map_at_most_config_idle_mapping_bytes(store, monkeypatch):
    """A bound on the memory of files gone under idle mappings: the oldest go first."""
    monkeypatch.setattr("raylite.object_store.IDLE_MAX_BYTES", 2_000_000)
    sizes = [800_000, 800_000, 800_000, 3_000_000]
    oids = [new_id() for _ in sizes]
    for oid, n in zip(oids, sizes, strict=True):
        store.put(oid, serialize(np.ones(n // 8)))
        store.get(oid)
        gc.collect()
        if n < 3_000_000:
            assert sum(len(r.mm) for r in store._idle.values()) <= 2_000_000
    assert not store._idle  # the last alone is over the bound
    store.get(oids[0])
    gc.collect()
    (kept,) = store._idle.values()
    assert len(kept.mm) < 2_000_000


@pytest.mark.parametrize("threads", [2, 3])
def test_a_large_buffer_is_copied_in_parallel_pieces_exactly(store, monkeypatch, threads):
    """A put into a recycled file copies a large buffer in pieces, one a thread: every
    byte lands where it belongs, at the pieces' edges too (a size no page divides)."""
    import raylite.segment_copy as segment_copy

    monkeypatch.setattr(segment_copy, "copy_threads", lambda: threads)
    made = []
    real_pool = segment_copy._copy_pool
    monkeypatch.setattr(segment_copy, "_copy_pool", lambda n: made.append(n) or real_pool(n))
    n = segment_copy.PARALLEL_COPY_BYTES + 12_345
    data = np.random.default_rng(1).integers(0, 255, n, dtype=np.uint8)
    oid = new_id()
    store.put(oid, serialize(data), prealloc=_recycled(store, n))
    assert made == [threads - 1]  # the copy threads were used
    np.testing.assert_array_equal(store.get(oid), data)


def test_without_numpy_a_large_buffer_is_copied_in_one_piece(store, monkeypatch):
    import raylite.segment_copy as segment_copy

    n = segment_copy.PARALLEL_COPY_BYTES + 1
    value = serialize(np.full(n, 7, dtype=np.uint8))
    warm = _recycled(store, n)
    monkeypatch.setattr(segment_copy, "_copy_pool", lambda n: pytest.fail("a thread copied"))
    monkeypatch.setitem(sys.modules, "numpy", None)
    oid = new_id()
    store.put(oid, value, prealloc=warm)
    monkeypatch.undo()
    assert store.get(oid)[n - 1] == 7


def test_a_forked_child_copies_with_threads_of_its_own(store):
    """The copy threads are the parent's: a child makes its own."""
    import raylite.segment_copy as segment_copy

    if segment_copy.copy_threads() < 2:
        pytest.skip("one CPU: no copy threads")
    n = segment_copy.PARALLEL_COPY_BYTES * 2
    store.put(new_id(), serialize(np.ones(n, dtype=np.uint8)), prealloc=_recycled(store, n))
    assert segment_copy._POOL  # made in this process
    oid = new_id()
    warm = _recycled(store, n)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            store.put(oid, serialize(np.full(n, 5, dtype=np.uint8)), prealloc=warm)
            code = 0 if segment_copy._POOL else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    value = store.get(oid)
    assert (int(value[0]), int(value[-1])) == (5, 5)


def test_a_segment_too_short_for_its_header_is_corrupt(store):
    """A file cut below the header (no writer leaves one) reads as lost, not as an empty
    or garbled value."""
    with pytest.raises(ObjectLostError, match="corrupt"):
        load_segment(new_id(), struct.pack("<8sQQ", MAGIC, 8, 1) + bytes(8))
