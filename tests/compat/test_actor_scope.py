"""An actor ends when no handle to it is left anywhere, as in Ray: its creator's
handles and those passed to other processes (borrowed) all count; calls already made
run first; a detached actor stays (issue 13)."""

from __future__ import annotations

import gc
import os

import pytest

from tests._engine import ray, wait_for

RAY_INIT = {"num_cpus": 2}
pytestmark = pytest.mark.timeout(120)


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return True
    return False


@ray.remote
class Probe:
    def pid(self):
        return os.getpid()

    def slow_pid(self, path):
        from tests._engine import wait_for_path

        wait_for_path(path)
        return os.getpid()


def test_an_actor_ends_when_its_last_handle_is_dropped(ray_start):
    actor = Probe.remote()
    pid = ray.get(actor.pid.remote())
    del actor
    gc.collect()
    wait_for(lambda: process_gone(pid), timeout=30, message="the actor's process to end")


def test_a_named_actor_ends_too_and_its_name_goes(ray_start):
    actor = Probe.options(name="scope-named").remote()
    pid = ray.get(actor.pid.remote())
    del actor
    gc.collect()
    wait_for(lambda: process_gone(pid), timeout=30, message="the actor's process to end")

    def name_gone():
        try:
            ray.get_actor("scope-named")
        except ValueError:
            return True
        return False

    wait_for(name_gone, timeout=30, message="the name to be free")


def test_calls_made_before_the_last_handle_went_still_run(ray_start, tmp_path):
    actor = Probe.remote()
    gate = tmp_path / "gate"
    pending = actor.slow_pid.remote(str(gate))
    del actor
    gc.collect()
    gate.touch()
    pid = ray.get(pending, timeout=60)  # made while a handle lived: it runs
    wait_for(lambda: process_gone(pid), timeout=30, message="the actor's process to end")


@ray.remote
def use_later(handle, path):
    from tests._engine import wait_for_path

    wait_for_path(path)
    return ray.get(handle.pid.remote())


def test_a_handle_passed_to_a_task_keeps_the_actor(ray_start, tmp_path):
    actor = Probe.remote()
    pid = ray.get(actor.pid.remote())
    gate = tmp_path / "gate"
    result = use_later.remote(actor, str(gate))
    del actor
    gc.collect()
    ray.get(Probe.remote().pid.remote())  # time passes; the borrowed handle holds it
    assert not process_gone(pid)
    gate.touch()
    assert ray.get(result, timeout=60) == pid
    wait_for(lambda: process_gone(pid), timeout=30, message="the actor's process to end")
