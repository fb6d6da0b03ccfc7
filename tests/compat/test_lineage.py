"""Lineage reconstruction on one node: objects whose only copy is gone are rebuilt by
rerunning the tasks that made them, arguments first (issue 4, item 6).

A copy is lost here by unlinking its segment file from the store directory, which is
what a reader finds after the memory holding it went away; tests/multinode kills the
node holding the objects instead. Every task counts its runs in a file, so a test
knows exactly what ran again. raylite only: Ray's store has no files to remove.
"""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

from tests._engine import exceptions, ray, raylite_only, wait_for

pytestmark = [raylite_only, pytest.mark.timeout(120)]

N = 2_000_000  # 16 MB arrays: through the store
RAY_INIT = {"num_cpus": 2, "object_store_memory": 400 * 2**20}


@ray.remote(max_retries=3)
def make(counter: str, start: float) -> np.ndarray:
    with open(counter, "a") as f:
        f.write("make\n")
    return np.full(N, start)


@ray.remote(max_retries=3)
def add(counter: str, array: np.ndarray, k: float) -> np.ndarray:
    with open(counter, "a") as f:
        f.write("add\n")
    return array + k


def runs(counter) -> list[str]:
    return counter.read_text().split() if counter.exists() else []


def store_dir() -> str:
    from raylite.util.state import store_stats

    return store_stats()["store_dir"]


def lose(ref) -> None:
    os.unlink(os.path.join(store_dir(), ref.hex()))


def in_store(ref) -> bool:
    return os.path.exists(os.path.join(store_dir(), ref.hex()))


def wait_freed(*hex_ids: str) -> None:
    wait_for(
        lambda: not any(os.path.exists(os.path.join(store_dir(), h)) for h in hex_ids),
        timeout=15,
        message=f"the segments of {hex_ids} to be freed",
    )


@pytest.fixture
def counter(tmp_path):
    return str(tmp_path / "runs")


def test_a_lost_chain_is_rebuilt_from_released_arguments(ray_start, counter, tmp_path):
    a = make.remote(counter, 1.0)
    b = add.remote(counter, a, 1.0)
    c = add.remote(counter, b, 1.0)
    assert float(ray.get(c)[0]) == 3.0
    a_hex, b_hex = a.hex(), b.hex()
    del a, b  # nothing refers to them: their memory goes, their recipe stays for c
    gc.collect()
    wait_freed(a_hex, b_hex)
    assert runs(tmp_path / "runs") == ["make", "add", "add"]
    lose(c)
    value = ray.get(c, timeout=60)
    assert value.shape == (N,)
    assert float(value.sum()) == 3.0 * N
    assert sorted(runs(tmp_path / "runs")) == ["add"] * 4 + ["make"] * 2


def test_only_what_is_lost_reruns(ray_start, counter, tmp_path):
    a = make.remote(counter, 5.0)
    b = add.remote(counter, a, 1.0)
    assert float(ray.get(b)[0]) == 6.0
    lose(b)  # a is still there, and still referenced: only b's task runs again
    assert float(ray.get(b, timeout=60).sum()) == 6.0 * N
    assert sorted(runs(tmp_path / "runs")) == ["add", "add", "make"]


def test_an_argument_lost_before_its_reader_runs_is_rebuilt_first(ray_start, counter, tmp_path):
    a = make.remote(counter, 2.0)
    ray.wait([a], fetch_local=False)
    lose(a)  # the worker of the next task finds it gone; the owner rebuilds it
    b = add.remote(counter, a, 1.0)
    assert float(ray.get(b, timeout=60).sum()) == 3.0 * N
    # add's first try failed fetching its argument, before its body ran
    assert sorted(runs(tmp_path / "runs")) == ["add", "make", "make"]
    assert float(ray.get(a)[0]) == 2.0


def test_a_put_argument_that_is_still_referenced_is_reused(ray_start, counter, tmp_path):
    a = ray.put(np.full(N, 4.0))
    b = add.remote(counter, a, 1.0)
    assert float(ray.get(b)[0]) == 5.0
    lose(b)
    assert float(ray.get(b, timeout=60)[0]) == 5.0
    assert runs(tmp_path / "runs") == ["add", "add"]


def test_a_dropped_put_argument_cannot_be_had_again(ray_start, counter):
    a = ray.put(np.full(N, 4.0))
    b = add.remote(counter, a, 1.0)
    assert float(ray.get(b)[0]) == 5.0
    a_hex = a.hex()
    del a
    gc.collect()
    wait_freed(a_hex)  # the dropped put() object
    lose(b)
    with pytest.raises(exceptions.ObjectLostError):
        ray.get(b, timeout=60)


def test_a_task_with_retries_disabled_is_not_rerun(ray_start, counter, tmp_path):
    a = make.options(max_retries=0).remote(counter, 1.0)
    assert float(ray.get(a)[0]) == 1.0
    lose(a)
    with pytest.raises(exceptions.ObjectLostError):
        ray.get(a, timeout=60)
    assert runs(tmp_path / "runs") == ["make"]


def test_released_arguments_go_with_the_last_object_that_needs_them(ray_start, counter):
    from raylite.core import context, objects

    cw = context._global
    a = make.remote(counter, 1.0)
    b = add.remote(counter, a, 1.0)
    ray.get(b)
    a_id, b_id = a.binary(), b.binary()
    del a
    gc.collect()
    wait_for(
        lambda: not os.path.exists(os.path.join(store_dir(), a_id.hex())),
        timeout=15,
        message="a's segment to be freed",
    )
    assert cw.objects[a_id].kind == objects.RELEASED  # its recipe, for b
    assert in_store(b)
    del b
    gc.collect()
    wait_for(
        lambda: a_id not in cw.objects and b_id not in cw.objects,
        timeout=15,
        message="b, and a's recipe with it, to be dropped",
    )
    assert not os.path.exists(os.path.join(store_dir(), b_id.hex()))


@ray.remote(num_returns=2, max_retries=3)
def pair(counter: str, k: float) -> tuple[np.ndarray, np.ndarray]:
    with open(counter, "a") as f:
        f.write("pair\n")
    return np.full(N, k), np.full(N, -k)


def test_a_lost_return_of_a_task_with_two_is_rebuilt(ray_start, counter, tmp_path):
    a, b = pair.remote(counter, 3.0)
    assert float(ray.get(a)[0]) == 3.0
    lose(a)
    assert float(ray.get(a, timeout=60).sum()) == 3.0 * N
    assert float(ray.get(b).sum()) == -3.0 * N  # the other return, untouched
    assert runs(tmp_path / "runs") == ["pair", "pair"]
    a_hex, b_hex = a.hex(), b.hex()
    del a, b
    gc.collect()
    wait_freed(a_hex, b_hex)  # both returns, with no copy left behind


def test_both_lost_returns_come_back_from_one_rerun(ray_start, counter, tmp_path):
    a, b = pair.remote(counter, 4.0)
    ray.wait([a, b], num_returns=2, fetch_local=False)
    lose(a)
    lose(b)
    got = ray.get([a, b], timeout=60)
    assert [float(x.sum()) for x in got] == [4.0 * N, -4.0 * N]
    assert runs(tmp_path / "runs") == ["pair", "pair"]


def test_a_chain_through_a_task_with_two_returns(ray_start, counter, tmp_path):
    a, b = pair.remote(counter, 1.0)
    c = add.remote(counter, b, 10.0)  # reads the second return
    assert float(ray.get(c)[0]) == 9.0
    del a, b  # released: c's lineage keeps pair's recipe
    gc.collect()
    lose(c)
    assert float(ray.get(c, timeout=60).sum()) == 9.0 * N
    assert sorted(runs(tmp_path / "runs")) == ["add", "add", "pair", "pair"]


class _Maker:
    def __init__(self, counter: str) -> None:
        self.counter = counter

    def make(self, k: float) -> np.ndarray:
        with open(self.counter, "a") as f:
            f.write("method\n")
        return np.full(N, k)


Maker = ray.remote(max_restarts=1, max_task_retries=1)(_Maker)
OnceMaker = ray.remote(max_restarts=1)(_Maker)


def test_a_lost_actor_call_result_is_rebuilt_by_calling_again(ray_start, counter, tmp_path):
    maker = Maker.remote(counter)
    a = maker.make.remote(6.0)
    b = add.remote(counter, a, 1.0)
    assert float(ray.get(b)[0]) == 7.0
    del a
    gc.collect()
    lose(b)  # b's argument, the actor's result, was released: both are made again
    assert float(ray.get(b, timeout=60).sum()) == 7.0 * N
    assert sorted(runs(tmp_path / "runs")) == ["add", "add", "method", "method"]


def test_an_actor_call_without_task_retries_is_not_rerun(ray_start, counter, tmp_path):
    maker = OnceMaker.remote(counter)  # max_task_retries=0 (Ray's default)
    a = maker.make.remote(6.0)
    assert float(ray.get(a)[0]) == 6.0
    lose(a)
    with pytest.raises(exceptions.ObjectLostError):
        ray.get(a, timeout=60)
    assert runs(tmp_path / "runs") == ["method"]


@ray.remote(max_retries=3)
def first_plus(counter: str, refs: list, k: float) -> np.ndarray:
    with open(counter, "a") as f:
        f.write("nested\n")
    return ray.get(refs[0]) + k


def test_a_ref_nested_in_the_arguments_is_rebuilt_when_the_rerun_asks(ray_start, counter, tmp_path):
    a = make.remote(counter, 2.0)
    b = first_plus.remote(counter, [a], 1.0)  # a travels inside a list: the task gets it
    assert float(ray.get(b)[0]) == 3.0
    a_hex = a.hex()
    del a
    gc.collect()
    wait_freed(a_hex)  # the nested argument's memory is released
    lose(b)
    assert float(ray.get(b, timeout=60).sum()) == 3.0 * N
    assert sorted(runs(tmp_path / "runs")) == ["make", "make", "nested", "nested"]


@ray.remote
def relay(counter: str, refs: list) -> float:
    """In a worker: submit a task on a ref borrowed from the driver, lose its result."""
    b = add.remote(counter, refs[0], 1.0)
    ray.get(b)
    lose(b)
    return float(ray.get(b, timeout=60).sum())


def test_a_task_on_a_borrowed_ref_is_rebuilt_by_its_owner(ray_start, counter, tmp_path):
    a = make.remote(counter, 2.0)
    assert ray.get(relay.remote(counter, [a]), timeout=120) == 3.0 * N
    assert sorted(runs(tmp_path / "runs")) == ["add", "add", "make"]
