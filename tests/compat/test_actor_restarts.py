"""Actor restarts (max_restarts, max_task_retries): processes killed by pid at chosen moments."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests._engine import ray, wait_for

RAY_INIT = {"num_cpus": 2}


@ray.remote(max_restarts=2, max_task_retries=1)
class Phoenix:
    def __init__(self):
        self.calls = 0

    def pid(self):
        return os.getpid()

    def incr(self):
        self.calls += 1
        return self.calls

    def slow_pid(self, seconds):
        time.sleep(seconds)
        return os.getpid()


@ray.remote
def call_through_task(handle):
    return ray.get(handle.incr.remote())


def _kill(pid):
    os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(90)
def test_killed_actor_restarts_with_fresh_state(ray_start):
    a = Phoenix.remote()
    first = ray.get(a.pid.remote())
    assert ray.get(a.incr.remote()) == 1
    _kill(first)
    second = ray.get(a.pid.remote(), timeout=30)
    assert second != first
    assert ray.get(a.incr.remote(), timeout=30) == 1  # the constructor ran again


@pytest.mark.timeout(90)
def test_call_in_flight_is_retried_with_max_task_retries(ray_start):
    a = Phoenix.remote()
    first = ray.get(a.pid.remote())
    ref = a.slow_pid.remote(2.0)
    time.sleep(0.5)  # the call is running in the actor now
    _kill(first)
    assert ray.get(ref, timeout=30) != first


@pytest.mark.timeout(90)
def test_handles_in_tasks_follow_the_restart(ray_start):
    a = Phoenix.remote()
    assert ray.get(call_through_task.remote(a)) == 1
    _kill(ray.get(a.pid.remote()))
    assert ray.get(call_through_task.remote(a), timeout=30) == 1


@pytest.mark.timeout(90)
def test_restarts_run_out_then_actor_died(ray_start):
    a = Phoenix.remote()
    pids = []

    def kill_until_dead():
        for _ in range(4):  # more kills than the first life plus two restarts
            pids.append(ray.get(a.pid.remote(), timeout=30))
            _kill(pids[-1])

    with pytest.raises(ray.exceptions.RayActorError):
        kill_until_dead()
    # The first life and two restarts: each death counts once, however it is reported.
    assert len(pids) == 3
    assert len(set(pids)) == len(pids)


@ray.remote
class Mortal:
    def pid(self):
        return os.getpid()


@pytest.mark.timeout(60)
def test_actor_without_restarts_dies_for_good(ray_start):
    m = Mortal.remote()
    _kill(ray.get(m.pid.remote()))
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(m.pid.remote(), timeout=30)


@pytest.mark.timeout(60)
def test_kill_with_no_restart_false_restarts(ray_start):
    a = Phoenix.remote()
    first = ray.get(a.pid.remote())
    ray.kill(a, no_restart=False)
    # Ray kills asynchronously: the old process may answer once more.
    second = wait_for(
        lambda: (pid := _pid_or_none(a)) not in (None, first) and pid,
        timeout=30,
        message="the actor to come back after kill",
    )
    assert second != first
    ray.kill(a)
    # Ray kills asynchronously here too: a call made at once may still be answered.
    wait_for(lambda: _pid_or_none(a) is None, timeout=30, message="the actor to stay dead")
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(a.pid.remote(), timeout=30)


def _pid_or_none(handle):
    try:
        return ray.get(handle.pid.remote(), timeout=30)
    except ray.exceptions.RayActorError:
        return None


@ray.remote(max_restarts=1, max_task_retries=1)
class DiesOnce:
    def __init__(self, marker):
        self.marker = marker

    def pid_after_first_death(self):
        if not os.path.exists(self.marker):  # the first call ends the process
            open(self.marker, "w").close()
            os._exit(1)
        return os.getpid()


@pytest.mark.timeout(90)
def test_a_handle_from_get_actor_retries_calls_as_the_creators_does(ray_start, tmp_path):
    # max_task_retries is the actor's: a handle found by name retries a call whose
    # process died on the restarted actor (the chaos soak found it failing instead).
    creator = DiesOnce.options(name="dies_once_named").remote(str(tmp_path / "died"))
    handle = ray.get_actor("dies_once_named")
    assert ray.get(handle.pid_after_first_death.remote(), timeout=60) > 0
    assert (tmp_path / "died").exists()
    ray.kill(creator)
