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
