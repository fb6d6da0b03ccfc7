"""Owners forget the borrows of processes that died."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

from tests._engine import AGAINST_RAY, ray, wait_for

pytestmark = pytest.mark.skipif(AGAINST_RAY, reason="raylite's store listing")


@ray.remote
class Keeper:
    def keep(self, refs):
        self.kept = refs[0]
        return os.getpid()


def test_object_borrowed_by_a_killed_actor_is_freed(no_engine):
    from raylite.util.state import list_objects

    ray.init(num_cpus=1)
    try:
        ref = ray.put(np.ones(2**20))  # 8 MiB: a store segment
        oid = ref.hex()
        keeper = Keeper.remote()
        pid = ray.get(keeper.keep.remote([ref]))
        del ref
        gc.collect()

        def listed():
            return {o["object_id"]: o for o in list_objects()}

        wait_for(
            lambda: listed().get(oid, {}).get("referenced_from") == [f"worker pid={pid}"],
            timeout=20,
            message=lambda: f"only the actor's borrow listed: {listed().get(oid)}",
        )
        ray.kill(keeper)
        wait_for(lambda: oid not in listed(), timeout=20, message=f"{oid} freed after the kill")
    finally:
        ray.shutdown()


def test_dropping_many_refs_at_once_shrinks_the_owners_tables(no_engine):
    # A dict keeps the table of its largest size: after tens of thousands of refs go
    # at once, the owner copies its per-object tables to their present size.
    import sys

    from raylite.core import context
    from raylite.core.refs import COMPACT_FROM

    ray.init(num_cpus=1)
    try:
        cw = context.live_worker()
        refs = [ray.put(i) for i in range(60_000)]  # tables of ~2.5 MB each
        big = sys.getsizeof(cw.objects), sys.getsizeof(cw.local_refs)
        assert min(big) > COMPACT_FROM
        tables = cw.objects, cw.local_refs
        del refs
        gc.collect()
        ray.get(ray.put(0))  # the next call (or the release loop) processes them
        wait_for(
            lambda: cw.objects is not tables[0] and cw.local_refs is not tables[1],
            timeout=10,
            message="the tables compacted",
        )
        small = sys.getsizeof(cw.objects), sys.getsizeof(cw.local_refs)
        assert small[0] * 20 < big[0], (big, small)
        assert small[1] * 20 < big[1], (big, small)
        assert cw.objects is cw.table.entries  # the table reads the same dicts
        assert cw.local_refs is cw.table.local_refs
        assert ray.get(ray.put("still works")) == "still works"
    finally:
        ray.shutdown()
