"""A backlog of quick tasks: raylite pushes one task behind the one a worker runs
(core/lease_queue.pipeline); these check that nothing a user can see changes: a task
that waits for a later one still finishes, a worker that dies loses none of what it
had queued, cancel() of queued tasks works. They hold on Ray, which does not pipeline."""

from __future__ import annotations

import os

import pytest

from tests._engine import ray

RAY_INIT = {"num_cpus": 2}


@ray.remote
def noop(x):
    return x


@ray.remote(num_cpus=0)
class Mailbox:
    def __init__(self):
        self.refs = None

    def put(self, refs):
        self.refs = refs

    def take(self):
        return self.refs


@ray.remote
def wait_for_later(box):
    refs = None
    while refs is None:
        refs = ray.get(box.take.remote())
    return ray.get(refs[0]) + 1


def test_a_task_waiting_on_a_task_queued_behind_it_finishes(ray_start):
    box = Mailbox.remote()
    ray.get(box.put.remote(None))
    before = [noop.remote(i) for i in range(300)]  # quick: a backlog on the one CPU
    waiter = wait_for_later.remote(box)
    later = noop.remote(41)  # likely pushed behind the waiter on its worker
    after = [noop.remote(i) for i in range(300)]
    ray.get(box.put.remote([later]))
    assert ray.get(waiter, timeout=60) == 42
    assert ray.get(before + after, timeout=60) == list(range(300)) * 2


@ray.remote(max_retries=3)
def die_once(marker, x):
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return x


def test_a_dying_worker_loses_none_of_the_backlog(ray_start, tmp_path):
    marker = str(tmp_path / "died")
    refs = [noop.remote(i) for i in range(200)]
    refs.append(die_once.remote(marker, 200))
    refs += [noop.remote(i) for i in range(201, 400)]
    assert ray.get(refs, timeout=60) == list(range(400))
    assert os.path.exists(marker)


def test_cancelling_queued_tasks_of_a_backlog(ray_start):
    refs = [noop.remote(i) for i in range(400)]
    cancelled = refs[200::7]
    for ref in cancelled:
        ray.cancel(ref)
    finished = 0
    for i, ref in enumerate(refs):
        try:
            assert ray.get(ref, timeout=60) == i
            finished += 1
        except ray.exceptions.TaskCancelledError:
            assert ref in cancelled
    assert finished >= 400 - len(cancelled)


@ray.remote(max_retries=0)
def no_retries(x):
    return x


def test_tasks_without_retries_in_a_backlog(ray_start):
    refs = [no_retries.remote(i) for i in range(300)]
    assert ray.get(refs, timeout=60) == list(range(300))


def test_cancel_force_of_a_backlog_task(ray_start):
    refs = [noop.remote(i) for i in range(300)]
    ray.cancel(refs[150], force=True)
    got = []
    for ref in refs:
        try:
            got.append(ray.get(ref, timeout=60))
        except (ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError):
            got.append(None)
    assert got[:150] == list(range(150))
    assert got[151:] == list(range(151, 300))


@pytest.mark.parametrize("n", [1000])
def test_a_long_backlog_returns_every_value_in_order(ray_start, n):
    assert ray.get([noop.remote(i) for i in range(n)], timeout=60) == list(range(n))


@ray.remote
def wait_for_file(path):
    import time

    while not os.path.exists(path):
        time.sleep(0.01)
    return "seen"


@ray.remote
def make_file(path):
    open(path, "w").close()
    return "made"


def test_a_task_polling_for_a_later_tasks_file_finishes(ray_start, tmp_path):
    # No get() blocks here: the waiting task polls. A task pushed behind it goes back
    # to its owner once the waiting one has run a while, and runs on the other CPU.
    path = str(tmp_path / "flag")
    before = [noop.remote(i) for i in range(300)]
    waiter = wait_for_file.remote(path)
    maker = make_file.remote(path)
    after = [noop.remote(i) for i in range(300)]
    assert ray.get([waiter, maker], timeout=60) == ["seen", "made"]
    assert ray.get(before + after, timeout=60) == list(range(300)) * 2


@ray.remote
def fresh(x):
    return x * 2


def test_a_function_first_pushed_behind_a_long_task_runs_everywhere(ray_start, tmp_path):
    # `fresh` has never run: its code travels with its first push to each worker. A
    # push pipelined behind a task that then runs long comes back unrun; the worker
    # keeps the code it brought, for the pushes after it (which carry none).
    path = str(tmp_path / "release")
    warm = [noop.remote(i) for i in range(300)]
    blocker = wait_for_file.remote(path)
    refs = [fresh.remote(i) for i in range(3000)]
    ray.wait(refs, num_returns=100, timeout=60)  # the other worker runs them meanwhile
    open(path, "w").close()  # the blocker ends: its worker takes `fresh` pushes now
    assert ray.get(refs, timeout=60) == [2 * i for i in range(3000)]
    assert ray.get(blocker, timeout=60) == "seen"
    assert ray.get(warm, timeout=60) == list(range(300))
