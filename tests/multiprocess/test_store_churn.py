"""A view of an object never changes while it lives, however the store reuses memory.

A driver and two actors put, return, lend, get, hold, drop and free large arrays of a
few sizes in a random order, so that files are recycled all the time, and every view
is checked after each step (tests/_churn.py); once with a store too small for them
all, so that objects are spilled to disk and read back from there too. At the end
every object is freed and its file gone.
"""

from __future__ import annotations

import random

import pytest

from tests._churn import churn, store_counters, store_objects
from tests._engine import ray, raylite_only, wait_for

pytestmark = [raylite_only, pytest.mark.timeout(180)]

STEPS = 600


@pytest.mark.parametrize(("seed", "store_mib"), [(1, None), (2, None), (3, 2)])
def test_views_never_change_while_files_are_recycled(no_engine, seed, store_mib):
    if store_mib is None:
        ray.init(num_cpus=2)
    else:
        ray.init(num_cpus=2, object_store_memory=store_mib << 20)
    try:
        out = churn(random.Random(seed), STEPS)
        assert all(count > 20 for count in out["done"].values()), out  # each kind ran
        assert out["reused"] > 5, out  # new objects went into recycled files
        counters = store_counters()
        spilled = counters["spilled_objects"] > 10 and counters["restored_objects"] > 10
        assert spilled == (store_mib is not None), counters
        wait_for(lambda: not store_objects(), timeout=30, message="every object freed")
    finally:
        ray.shutdown()


def test_views_never_change_while_threads_of_a_driver_put_get_and_free(no_engine):
    """Four threads of one driver put, return, get, drop and free arrays at once: the
    store's per-process mappings and caches (object_store: Mappings, the writable
    mappings a put reuses, the idle ones a get reuses) are shared by them."""
    import threading

    import numpy as np

    from tests._churn import SIZES, make

    failures: list[object] = []

    def run(seed: int) -> None:
        rng = random.Random(seed)
        refs: dict[int, object] = {}
        views: dict[int, np.ndarray] = {}
        key = seed * 1_000_000
        try:
            for step in range(800):
                roll = rng.random()
                if roll < 0.3 and len(refs) < 6:
                    key, n = key + 1, rng.choice(SIZES)
                    value = np.full(n, key, dtype=np.int64)
                    refs[key] = ray.put(value) if roll < 0.18 else make.remote(key, n)
                elif roll < 0.55 and refs and len(views) < 6:
                    k = rng.choice(list(refs))
                    views[k] = ray.get(refs[k])
                elif roll < 0.75 and views:
                    del views[rng.choice(list(views))]
                elif refs:
                    del refs[rng.choice(list(refs))]
                wrong = [k for k, view in views.items() if not bool((view == k).all())]
                if wrong:
                    failures.append((seed, step, wrong))
                    return
        except Exception as exc:  # reported by the test, not lost in the thread
            failures.append((seed, repr(exc)))

    ray.init(num_cpus=2)
    try:
        threads = [threading.Thread(target=run, args=(seed,)) for seed in range(1, 5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads)
        assert failures == []
        wait_for(lambda: not store_objects(), timeout=30, message="every object freed")
    finally:
        ray.shutdown()
