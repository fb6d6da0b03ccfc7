"""sys.exit() inside a task or an actor method ends the worker process, as in Ray: an
actor dies (ActorDiedError for that call and every later one), a task is retried and
then fails with WorkerCrashedError (issue 13)."""

from __future__ import annotations

import sys

import pytest

from tests._engine import exceptions, ray

RAY_INIT = {"num_cpus": 1}
pytestmark = pytest.mark.timeout(120)


@ray.remote
class Quitter:
    def quit(self, code):
        sys.exit(code)

    def ping(self):
        return "pong"


@pytest.mark.parametrize("code", [0, 2, "a message"])
def test_sys_exit_in_an_actor_method_ends_the_actor(ray_start, code):
    actor = Quitter.remote()
    assert ray.get(actor.ping.remote()) == "pong"
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(actor.quit.remote(code), timeout=60)
    with pytest.raises(exceptions.ActorDiedError):
        ray.get(actor.ping.remote(), timeout=60)


@ray.remote(max_retries=1)
def quit_task(marker):
    import os

    with open(marker, "a") as f:
        f.write("ran\n")
    os.sys.exit(3)


def test_sys_exit_in_a_task_crashes_its_worker_and_is_retried(ray_start, tmp_path):
    marker = tmp_path / "runs"
    with pytest.raises(exceptions.WorkerCrashedError):
        ray.get(quit_task.remote(str(marker)), timeout=60)
    assert marker.read_text().split() == ["ran", "ran"]  # max_retries=1: twice


def test_the_engine_still_runs_tasks_after_a_worker_exited(ray_start):
    @ray.remote
    def fine():
        return 7

    assert ray.get(fine.remote(), timeout=60) == 7
