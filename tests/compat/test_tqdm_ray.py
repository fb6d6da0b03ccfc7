"""ray.experimental.tqdm_ray: progress bars updated in tasks, drawn by the driver.

As Ray 2.60 with output that is not a terminal: a task's bar appears on the driver's
stderr as a tqdm bar whose description starts "(pid=N) " (N the task's worker); the
state lines that carry it never reach stdout; the task's own prints still do.
"""

from __future__ import annotations

import builtins
import os
import re

import pytest

from tests._engine import AGAINST_RAY, ray, wait_for

if AGAINST_RAY:
    from ray.experimental import tqdm_ray
else:
    from raylite.experimental import tqdm_ray

RAY_INIT = {"num_cpus": 2}
MAGIC = "__ray_tqdm_magic_token__"


@pytest.fixture
def restore_print(monkeypatch):
    # The driver's bar manager replaces builtins.print (Ray does too): undo it after.
    monkeypatch.setattr(builtins, "print", builtins.print)


@ray.remote
def work_with_bar(i, n):
    bar = tqdm_ray.tqdm(total=n, desc=f"tqdmjob{i}")
    for _ in range(n):
        bar.update(1)
    bar.close()
    print(f"tqdm task {i} done")
    return os.getpid()


def test_task_bars_are_drawn_by_the_driver(ray_start, capfd, restore_print):
    pids = ray.get([work_with_bar.remote(0, 5), work_with_bar.remote(1, 7)])
    seen = {"out": "", "err": ""}

    # Ray colours the prefix even when stderr is not a terminal; raylite only on one.
    finished = [
        re.compile(re.escape(f"(pid={pid}) ") + r"(\x1b\[0m)?" + f"tqdmjob{i}: 100%")
        for i, pid in enumerate(pids)
    ]

    def both_shown():
        out, err = capfd.readouterr()
        seen["out"] += out
        seen["err"] += err
        # Ray may hold a worker's last output line back until the worker exits: one
        # task's print is enough to see prints still reach stdout.
        return "tqdm task" in seen["out"] and all(p.search(seen["err"]) for p in finished)

    wait_for(both_shown, timeout=60, message=lambda: repr(seen))
    assert "5.00/5.00" in seen["err"]
    assert "7.00/7.00" in seen["err"]
    assert MAGIC not in seen["out"]
    assert MAGIC not in seen["err"]


def test_a_driver_bar_has_no_prefix(ray_start, capfd, restore_print):
    bar = tqdm_ray.tqdm(range(3), desc="tqdmdriver")
    assert bar.total == 3
    assert list(bar) == [0, 1, 2]
    assert bar.n == 3
    bar.close()
    _, err = capfd.readouterr()
    assert "tqdmdriver: 100%" in err
    assert "(pid=" not in err
    with pytest.raises(ValueError, match="No iterable provided"):
        list(tqdm_ray.tqdm(total=2))
