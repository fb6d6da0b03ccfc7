"""The store book in-process: feed it events, assert the actions that come out."""

from __future__ import annotations

from typing import Any

from raylite.config import CONFIG
from raylite.node.store_book import (
    Admit,
    Delete,
    FreeCopies,
    Prefetch,
    Recycle,
    Refuse,
    Spill,
    StoreBook,
    Unlink,
)

MiB = 1 << 20
DISK = 10_000 * MiB  # free disk space the tests report


def book(capacity: int = 100 * MiB, max_spill: int | None = None, **kw: Any) -> StoreBook:
    config = CONFIG.replace(**{"spill_batch_bytes": 0, "warm_min_bytes": 8 * MiB, **kw})
    return StoreBook("/store", "/spill", capacity, max_spill, config)


def put(b: StoreBook, oid: bytes, size: int, *, warm: bool = False) -> list[Any]:
    """Reserve and admit (as the shell does once any spill is copied)."""
    actions = b.reserve(oid, size, "owner", disk_free=DISK, warm=warm)
    admit = actions[-1]
    assert isinstance(admit, Admit)
    for action in actions:
        if isinstance(action, Spill):
            for victim, seg in action.victims:
                assert b.spill_finished(victim, seg) == []
    b.admit(admit)
    return actions


def spilled(actions: list[Any]) -> list[bytes]:
    return [oid for a in actions if isinstance(a, Spill) for oid, _ in a.victims]


def test_room_left_needs_no_spill():
    b = book()
    assert put(b, b"a", 30 * MiB) == [Admit(b"a", 30 * MiB, "owner", False, "/store", "")]
    assert b.used_bytes == 30 * MiB
    assert list(b.segments) == [b"a"]


def test_spill_order_is_least_recently_used():
    b = book()
    for oid in (b"a", b"b", b"c"):
        put(b, oid, 30 * MiB)
    b.mapped(b"a")  # read: used last
    actions = put(b, b"d", 30 * MiB)
    assert spilled(actions) == [b"b"]
    assert b.segments[b"b"].spilled
    assert not b.segments[b"a"].spilled
    assert (b.used_bytes, b.spilled_bytes, b.spilled_total) == (90 * MiB, 30 * MiB, 1)
    # The next one spills the next least recently used: c, then a (d is newer).
    assert spilled(put(b, b"e", 30 * MiB)) == [b"c"]


def test_the_batch_spills_more_than_needed():
    b = book(spill_batch_bytes=30 * MiB)  # at most a quarter of the store: 25 MiB
    for oid in (b"a", b"b", b"c"):
        put(b, oid, 30 * MiB)
    # Needs 20 MiB more; with the 25 MiB batch at most 45 MiB may stay in memory.
    assert spilled(put(b, b"d", 30 * MiB)) == [b"a", b"b"]


def test_spilled_and_too_large_for_the_spill_room_are_skipped():
    b = book(max_spill=40 * MiB)
    put(b, b"big", 50 * MiB)
    put(b, b"a", 30 * MiB)
    put(b, b"b", 10 * MiB)
    # 50 MiB does not fit the 40 MiB of spill room: a and b go instead.
    assert spilled(put(b, b"c", 40 * MiB)) == [b"a"]
    assert spilled(put(b, b"d", 10 * MiB)) == [b"b"]  # a is spilled already
    assert b.spill_room(DISK) == 0


def test_a_mapped_segment_may_be_spilled_but_is_not_recycled():
    b = book()
    put(b, b"a", 60 * MiB)
    b.mapped(b"a")
    assert spilled(put(b, b"b", 60 * MiB)) == [b"a"]  # its mapping outlives the move
    b.mapped(b"b")
    assert b.freed(b"b") == [Delete(b"b")]  # a reader still maps its memory


def test_a_freed_unmapped_segment_in_memory_is_deleted_with_its_memory_taken_back():
    """Delete.unmapped: the shell truncates the file first (object_store.release_memory),
    so processes' idle mappings of it do not keep its pages. Not when a view may live
    (mapped), nor for a spilled copy (a disk file: no memory)."""
    b = book(warm_max_bytes=0)
    put(b, b"a", 10 * MiB)
    assert b.freed(b"a") == [Delete(b"a", True)]
    put(b, b"b", 10 * MiB)
    b.mapped(b"b")
    assert b.freed(b"b") == [Delete(b"b", False)]
    put(b, b"c", 10 * MiB)
    b.mapped(b"c")
    b.unmapped(b"c")
    assert b.freed(b"c") == [Delete(b"c", True)]


def test_too_large_for_memory_and_disk_is_refused_too_large_for_memory_lives_on_disk():
    b = book(max_spill=50 * MiB)
    (refused,) = b.reserve(b"x", 151 * MiB, "owner", disk_free=DISK, warm=False)
    assert isinstance(refused, Refuse)
    assert "larger than the object store" in refused.reason
    actions = put(b, b"y", 120 * MiB)
    assert actions == [Admit(b"y", 120 * MiB, "owner", True, "/spill", "")]
    assert b.spilled_bytes == 120 * MiB
    assert b.used_bytes == 0


def test_disk_free_is_the_room_without_a_spill_limit():
    b = book()
    (refused,) = b.reserve(b"x", 101 * MiB, "owner", disk_free=0, warm=False)
    assert isinstance(refused, Refuse)


def test_stored_again_counts_once():
    b = book()
    put(b, b"a", 30 * MiB)
    put(b, b"a", 30 * MiB)
    assert b.used_bytes == 30 * MiB
    assert len(b.segments) == 1


def test_a_freed_segment_is_kept_warm_and_reused_by_a_put_of_its_size():
    b = book()
    put(b, b"a", 10 * MiB)
    (recycle,) = b.freed(b"a")
    assert recycle == Recycle(b"a", "/store/.warm-1")
    assert b.warm == [("/store/.warm-1", 10 * MiB)]
    assert b.used_bytes == 0
    # Too small for it (more than a quarter wasted): not used.
    assert put(b, b"small", 7 * MiB, warm=True)[-1].prealloc == ""
    assert put(b, b"b", 9 * MiB, warm=True)[-1].prealloc == "/store/.warm-1"
    assert b.warm == []
    assert b.warm_bytes == 0


def test_an_owner_that_left_alive_has_its_segments_neither_recycled_nor_taken_back():
    """A driver that disconnected may live on with views of its objects it never told
    of (after shutdown()): their files are deleted as they are, not reused."""
    b = book()
    put(b, b"a", 10 * MiB)
    assert b.freed(b"a", views_unknown=True) == [Delete(b"a", False)]
    assert b.warm == []


def test_the_most_recently_freed_warm_file_is_taken_first():
    """Processes keep mappings of the last few files they wrote or read; the oldest
    first would cycle through all the warm files of a size and miss them all."""
    b = book()
    for oid in (b"a", b"b", b"c"):
        put(b, oid, 10 * MiB)
    for oid in (b"a", b"b", b"c"):
        b.freed(oid)
    assert put(b, b"d", 10 * MiB, warm=True)[-1].prealloc == "/store/.warm-3"
    assert b.freed(b"d") == [Recycle(b"d", "/store/.warm-4")]
    assert put(b, b"e", 10 * MiB, warm=True)[-1].prealloc == "/store/.warm-4"
    assert put(b, b"f", 10 * MiB, warm=True)[-1].prealloc == "/store/.warm-2"


def test_warm_limits():
    b = book(warm_max_bytes=15 * MiB)
    put(b, b"tiny", 1 * MiB)
    assert b.freed(b"tiny") == [Delete(b"tiny", True)]  # under warm_min: deleted
    for oid in (b"a", b"b"):
        put(b, oid, 10 * MiB)
    assert isinstance(b.freed(b"a")[0], Recycle)
    assert b.freed(b"b") == [Delete(b"b", True)]  # over warm_max
    assert b.warm_bytes == 10 * MiB


def test_warm_files_are_at_most_warm_max_files():
    b = book(warm_max_files=2)
    for oid in (b"a", b"b", b"c"):
        put(b, oid, 9 * MiB)
    assert isinstance(b.freed(b"a")[0], Recycle)
    assert isinstance(b.freed(b"b")[0], Recycle)
    assert b.freed(b"c") == [Delete(b"c", True)]  # two are kept already
    assert len(b.warm) == 2


def test_warm_files_go_when_memory_is_needed():
    b = book()
    put(b, b"a", 10 * MiB)
    b.freed(b"a")
    actions = put(b, b"b", 95 * MiB)  # 95 + 10 warm > 100
    assert actions[0] == Unlink(["/store/.warm-1"])
    assert b.warm == []
    assert b.warm_bytes == 0


def test_no_warm_file_beyond_the_capacity():
    b = book()
    put(b, b"a", 50 * MiB)
    put(b, b"b", 45 * MiB)
    assert b.freed(b"a") == [Recycle(b"a", "/store/.warm-1")]  # 45 used + 50 warm fits
    put(b, b"c", 10 * MiB)  # the warm file went for it: 45 + 10 used
    assert b.warm == []
    assert b.freed(b"b") == [Recycle(b"b", "/store/.warm-2")]


def test_recycle_failed_deletes_and_forgets_the_warm_file():
    b = book()
    put(b, b"a", 10 * MiB)
    b.freed(b"a")
    assert b.recycle_failed(b"a", "/store/.warm-1") == [Delete(b"a", True)]
    assert b.warm == []
    assert b.warm_bytes == 0


def test_freed_with_copies_elsewhere_frees_them_and_unknown_is_deleted():
    b = book()
    put(b, b"a", 1 * MiB)
    b.segments[b"a"].copies.add("tcp:other:1")
    assert b.freed(b"a") == [FreeCopies(b"a", ("tcp:other:1",)), Delete(b"a", True)]
    assert b.freed(b"unknown") == [Delete(b"unknown")]


def test_a_return_withdrawn_by_its_writer():
    """DropReturn: a worker's return its caller never heard of. Freed while the worker's
    reservation holds it, neither recycled nor cut (should the caller have read the
    reply after all, its views stay whole); deleted if freed already (the owner died
    while it was being written: sealed after); left alone once another worker
    reserved it (a rerun)."""
    b = book(warm_min_bytes=0)  # (any size may be kept warm: a withdrawn one is not)
    for oid, writer in ((b"mine", 7), (b"rerun", 8)):
        actions = b.reserve(oid, 1 * MiB, "caller", disk_free=DISK, warm=False, writer=writer)
        b.admit(actions[-1])
    assert b.withdrawn(b"mine", 7) == [Delete(b"mine", False)]
    assert b.warm == []
    assert b"mine" not in b.segments
    assert b.withdrawn(b"rerun", 7) == []  # another writer's reservation: not this one's
    assert b"rerun" in b.segments
    assert b.withdrawn(b"gone", 7) == [Delete(b"gone")]  # freed before it was sealed
    put(b, b"put", 1 * MiB)  # a put: no writer kept (writer 0), never withdrawn
    assert b.withdrawn(b"put", 0) == []


def test_freed_while_spilling_deletes_the_copy():
    b = book()
    put(b, b"a", 60 * MiB)
    actions = b.reserve(b"b", 60 * MiB, "owner", disk_free=DISK, warm=False)
    ((oid, seg),) = next(a for a in actions if isinstance(a, Spill)).victims
    b.freed(b"a")  # freed while its copy runs
    assert b.spill_finished(oid, seg) == [Delete(b"a")]
    assert b.spilled_bytes == 0
    assert b.used_bytes == 0


def test_freed_spilled_segment_leaves_the_spill_count():
    b = book()
    put(b, b"a", 60 * MiB)
    put(b, b"b", 60 * MiB)
    assert b.freed(b"a") == [Delete(b"a")]  # spilled: never kept warm
    assert b.spilled_bytes == 0


def test_restore_reads_the_next_spilled_ones_ahead():
    b = book(capacity=10 * MiB, prefetch_ahead=2)
    for oid in (b"a", b"b", b"c", b"d", b"e"):
        put(b, oid, 6 * MiB)  # each put spills the one before
    assert [oid for oid, s in b.segments.items() if s.spilled] == [b"a", b"b", b"c", b"d"]
    assert b.restored(b"b") == [Prefetch([(b"a", 6 * MiB), (b"c", 6 * MiB)])]
    # Each is read ahead once (b was read, not read ahead: it still may be).
    assert b.restored(b"a") == [Prefetch([(b"b", 6 * MiB), (b"d", 6 * MiB)])]
    assert b.restored(b"d") == []
    assert b.restored_total == 3


def test_owned_by_lists_what_one_owner_stored():
    b = book()
    put(b, b"a", MiB)
    put(b, b"b", MiB)
    b.segments[b"b"].owner = "other"
    assert b.owned_by("owner") == [b"a"]
    assert b.owned_by("other") == [b"b"]
    assert b.owned_by("nobody") == []


def test_fits_now_says_when_a_reservation_needs_no_spill():
    b = book()  # 100 MiB
    assert b.fits_now(b"a", 60 * MiB)
    put(b, b"a", 60 * MiB)
    assert not b.fits_now(b"a", 1 * MiB)  # stored again (a rebuild): the slow way
    assert b.fits_now(b"b", 40 * MiB)
    assert not b.fits_now(b"b", 41 * MiB)  # only with a spill
    assert not b.fits_now(b"c", -1)
