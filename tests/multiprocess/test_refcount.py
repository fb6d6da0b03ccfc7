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
