"""A view of an object never changes while it lives, however the store reuses memory.

Large segments' files are recycled for later objects of their size, readers keep idle
mappings of them and pin what they map, owners read their own puts through the
mapping that wrote them (object_store, node/store_book.py). Here a driver and two
actors put, return, lend, get, hold, drop and free large arrays in a random order,
objects of a few sizes so that files are recycled all the time, and every view is
checked against the value it was got as after each step; once with a store too small
for them all, so that objects are spilled to disk and read back from there too. At
the end every object is freed and its file gone.
"""

from __future__ import annotations

import gc
import os
import random

import numpy as np
import pytest

from tests._engine import ray, raylite_only, wait_for

pytestmark = [raylite_only, pytest.mark.timeout(180)]

# int64 counts: 80 KiB, 200 KiB and 1 MiB arrays, all above the size of a recycled file.
SIZES = (10 * 1024, 25 * 1024, 128 * 1024)
STEPS = 600
MAX_LIVE = 8  # refs the driver holds, views each process holds


def _value(key: int, n: int) -> np.ndarray:
    return np.full(n, key, dtype=np.int64)


def _wrong(views: dict[int, np.ndarray]) -> list[int]:
    """The keys whose view no longer holds its own key everywhere."""
    return [key for key, view in views.items() if not bool((view == key).all())]


@ray.remote
def make(key: int, n: int) -> np.ndarray:
    return _value(key, n)


@ray.remote(num_cpus=0)
class Holder:
    def __init__(self) -> None:
        self.views: dict[int, np.ndarray] = {}

    def hold(self, key: int, boxed: list) -> bool:
        view = ray.get(boxed[0])
        self.views[key] = view
        return bool((view == key).all())

    def drop(self, key: int) -> None:
        self.views.pop(key, None)
        gc.collect()

    def put(self, key: int, n: int) -> list:
        return [ray.put(_value(key, n))]  # this actor owns it; the driver borrows it

    def wrong(self) -> list[int]:
        return _wrong(self.views)

    def clear(self) -> None:
        self.views.clear()
        gc.collect()


def _store_objects() -> set[str]:
    from raylite.util.state import store_stats

    store = store_stats()["store_dir"]
    return {n for n in os.listdir(store) if not n.startswith(".")}


def _warm_bytes() -> int:
    """The bytes of freed files the node keeps for the next put of their size."""
    from raylite.util.state import store_stats

    return int(store_stats()["recycled_bytes"])


def _spilled() -> tuple[int, int]:
    """(objects the node spilled to disk, reads it served from there)."""
    from raylite.util.state import store_stats

    stats = store_stats()
    return int(stats["spilled_objects"]), int(stats["restored_objects"])


@pytest.mark.parametrize(("seed", "store_mib"), [(1, None), (2, None), (3, 2)])
def test_views_never_change_while_files_are_recycled(no_engine, seed, store_mib):
    if store_mib is None:
        ray.init(num_cpus=2)
    else:
        ray.init(num_cpus=2, object_store_memory=store_mib << 20)
    try:
        _churn(random.Random(seed), spills=store_mib is not None)
    finally:
        ray.shutdown()


def _churn(rng: random.Random, spills: bool) -> None:
    holders = [Holder.remote(), Holder.remote()]
    refs: dict[int, ray.ObjectRef] = {}
    views: dict[int, np.ndarray] = {}
    held: list[set[int]] = [set(), set()]
    keys = iter(range(1, 1 << 30))
    kinds = ["put", "return", "actor put", "lend", "get", "drop view", "holder drop", "free"]
    done = dict.fromkeys(kinds, 0)  # steps of each kind that ran
    warm, reused = 0, 0  # warm bytes after the last step; steps that took a warm file
    for step in range(STEPS):
        action = rng.choice([*kinds, "lend", "free", "free"])
        if action in ("put", "return", "actor put") and len(refs) < MAX_LIVE:
            key, n = next(keys), rng.choice(SIZES)
            if action == "put":
                refs[key] = ray.put(_value(key, n))
            elif action == "return":
                refs[key] = make.remote(key, n)
            else:
                refs[key] = ray.get(rng.choice(holders).put.remote(key, n))[0]
        elif action == "lend" and refs and len(held[i := rng.randrange(2)]) < MAX_LIVE:
            key = rng.choice(list(refs))
            assert ray.get(holders[i].hold.remote(key, [refs[key]])), (step, key)
            held[i].add(key)
        elif action == "get" and refs and len(views) < MAX_LIVE:
            key = rng.choice(list(refs))
            views[key] = ray.get(refs[key])
            assert bool((views[key] == key).all()), (step, key)
        elif action == "drop view" and views:
            del views[rng.choice(list(views))]
            gc.collect()
        elif action == "holder drop" and held[i := rng.randrange(2)]:
            key = rng.choice(sorted(held[i]))
            ray.get(holders[i].drop.remote(key))
            held[i].discard(key)
        elif action == "free" and refs:
            del refs[rng.choice(list(refs))]  # the views of it live on, refs elsewhere too
            gc.collect()
        else:
            continue
        done[action] += 1
        now = _warm_bytes()
        reused += now < warm and action in ("put", "return", "actor put")
        warm = now
        assert _wrong(views) == [], step
        if step % 10 == 0:
            assert [ray.get(h.wrong.remote()) for h in holders] == [[], []], step
    assert [ray.get(h.wrong.remote()) for h in holders] == [[], []]
    assert all(count > 20 for count in done.values()), done  # each kind of step ran
    assert reused > 5, reused  # new objects went into recycled files
    spilled, restored = _spilled()
    assert (spilled > 10 and restored > 10) == spills, (spilled, restored)
    refs.clear()
    views.clear()
    ray.get([h.clear.remote() for h in holders])
    gc.collect()
    wait_for(lambda: not _store_objects(), timeout=30, message="every object freed")
