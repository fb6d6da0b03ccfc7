"""Store churn: a driver and two actors put, return, lend, get, hold, drop and free large
arrays in a random order, and check after each step that no view has changed.

Large segments' files are recycled for later objects of their size, readers keep idle
mappings of them and pin what they map, owners read their own puts through the
mapping that wrote them, pulled copies go into recycled files too (object_store,
node/store_book.py, node/transfer.py). A view that changes under its reader is the
failure all of that must never cause. Used by tests/multiprocess/test_store_churn.py
(one node) and tests/multinode/test_cluster.py (actors and tasks on other nodes: the
objects cross nodes both ways). In an importable module, so that workers load the
remote classes by reference.
"""

from __future__ import annotations

import gc
import os
import random
from typing import Any

import numpy as np

from tests._engine import ray

# int64 counts: 80 KiB, 200 KiB and 1 MiB arrays, all above the size of a recycled file.
SIZES = (10 * 1024, 25 * 1024, 128 * 1024)
MAX_LIVE = 8  # refs the driver holds, views each process holds
KINDS = ("put", "return", "actor put", "lend", "get", "drop view", "holder drop", "free")


def _value(key: int, n: int) -> np.ndarray:
    return np.full(n, key, dtype=np.int64)


def _wrong(views: dict[int, np.ndarray]) -> list[int]:
    """The keys whose view no longer holds its own key everywhere."""
    return [key for key, view in views.items() if not bool((view == key).all())]


def store_objects() -> list[str]:
    """The object files in this process's node's store (not the warm files kept for
    reuse, nor pins)."""
    from raylite.util.state import store_stats

    store = store_stats()["store_dir"]
    return sorted(n for n in os.listdir(store) if not n.startswith("."))


def store_counters() -> dict[str, int]:
    """This node's warm bytes, and objects ever spilled and read back from disk."""
    from raylite.util.state import store_stats

    stats = store_stats()
    keys = ("recycled_bytes", "spilled_objects", "restored_objects")
    return {key: int(stats[key]) for key in keys}


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

    def store_objects(self) -> list[str]:
        return store_objects()

    def store_counters(self) -> dict[str, int]:
        return store_counters()


def churn(
    rng: random.Random,
    steps: int,
    holder_options: tuple[dict[str, Any], dict[str, Any]] = ({}, {}),
    make_options: tuple[dict[str, Any], ...] = ({},),
) -> dict[str, Any]:
    """Run `steps` random steps, asserting after each that every view is unchanged;
    then free everything. Returns the steps of each kind that ran ("done"), how many
    puts took a recycled file on the driver's node ("reused"), and the holders (alive,
    their views dropped) for the caller's checks."""
    holders = [Holder.options(**o).remote() for o in holder_options]
    refs: dict[int, Any] = {}
    views: dict[int, np.ndarray] = {}
    held: list[set[int]] = [set(), set()]
    keys = iter(range(1, 1 << 30))
    done = dict.fromkeys(KINDS, 0)
    warm, reused = 0, 0  # warm bytes after the last step; steps that took a warm file
    for step in range(steps):
        action = rng.choice([*KINDS, "lend", "free", "free"])
        if action in ("put", "return", "actor put") and len(refs) < MAX_LIVE:
            key, n = next(keys), rng.choice(SIZES)
            if action == "put":
                refs[key] = ray.put(_value(key, n))
            elif action == "return":
                refs[key] = make.options(**rng.choice(make_options)).remote(key, n)
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
        now = store_counters()["recycled_bytes"]
        reused += now < warm and action in ("put", "return", "actor put")
        warm = now
        assert _wrong(views) == [], step
        if step % 10 == 0:
            assert [ray.get(h.wrong.remote()) for h in holders] == [[], []], step
    assert [ray.get(h.wrong.remote()) for h in holders] == [[], []]
    refs.clear()
    views.clear()
    ray.get([h.clear.remote() for h in holders])
    gc.collect()
    return {"done": done, "reused": reused, "holders": holders}
