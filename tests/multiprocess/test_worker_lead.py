"""Main threads read a connection themselves while they wait (transport_lead.py): a
worker's between tasks (worker.py), a driver's in get (core/blocking.py). Calls that
come on another connection meanwhile wake the worker (its doorbell), and a SIGINT
between tasks is dropped, not raised into that reading; what ends a get from another
thread (a worker that died, a reply on another connection) wakes the driver."""

from __future__ import annotations

import os
import signal

import pytest

from tests._engine import ray, raylite_only

pytestmark = [raylite_only, pytest.mark.timeout(120)]


@pytest.fixture
def patient_leader(monkeypatch: pytest.MonkeyPatch):
    """Leaders wait 600 s at a time: a doorbell missed would hang the test (and its
    timeout would fail it) instead of costing the usual half second."""
    monkeypatch.setenv("RAYLITE_LEAD_WAIT_S", "600")
    ray.init(num_cpus=2)
    yield
    ray.shutdown()


def test_an_actor_called_from_two_processes_answers_both(patient_leader):
    @ray.remote
    class Counter:
        def __init__(self) -> None:
            self.n = 0

        def add(self) -> int:
            self.n += 1
            return self.n

    @ray.remote
    def call_from_a_task(counter) -> int:
        return ray.get(counter.add.remote())

    counter = Counter.remote()
    seen = []
    for _ in range(10):
        # Each call from the task's worker comes on a connection the actor's main
        # thread does not lead: it leads the driver's, which carried the last call.
        seen.append(ray.get(counter.add.remote()))
        seen.append(ray.get(call_from_a_task.remote(counter)))
    assert seen == list(range(1, 21))


def test_a_pool_worker_runs_tasks_of_two_owners(patient_leader):
    @ray.remote
    def pid() -> int:
        return os.getpid()

    @ray.remote
    def nested() -> list[int]:
        return ray.get([pid.remote() for _ in range(5)])

    for _ in range(5):
        driver_pids = ray.get([pid.remote() for _ in range(5)])
        assert len(ray.get(nested.remote())) == 5
        assert len(driver_pids) == 5


def test_a_sigint_between_tasks_is_dropped():
    ray.init(num_cpus=1)
    try:

        @ray.remote
        def pid() -> int:
            return os.getpid()

        worker = ray.get(pid.remote())
        for _ in range(3):
            os.kill(worker, signal.SIGINT)  # an idle worker, reading its connection
            assert ray.get([pid.remote() for _ in range(20)]) == [worker] * 20
    finally:
        ray.shutdown()


def test_a_task_that_sets_a_signal_handler_leaves_its_worker_working():
    """A Python handler may raise in the main thread at any bytecode: while one is set
    (here by a task), the main thread waits for tasks instead of reading a connection."""
    ray.init(num_cpus=1)
    try:

        @ray.remote
        def set_handler() -> int:
            signal.signal(signal.SIGUSR1, lambda signum, frame: None)
            return os.getpid()

        @ray.remote
        def pid() -> int:
            return os.getpid()

        worker = ray.get(set_handler.remote())
        os.kill(worker, signal.SIGUSR1)  # its handler runs, between tasks
        assert ray.get([pid.remote() for _ in range(20)]) == [worker] * 20
    finally:
        ray.shutdown()


def test_a_get_led_on_a_worker_that_dies_ends_with_its_error(patient_leader):
    """The driver reads the worker's connection in get; the worker dies: the get ends
    with WorkerCrashedError at once (600 s leads: a missed wake would hang it)."""
    from tests._engine import exceptions

    @ray.remote(max_retries=0)
    def die() -> None:
        os._exit(1)

    @ray.remote
    def one() -> int:
        return 1

    assert ray.get(one.remote()) == 1  # a lease, and a connection to lead, exist
    with pytest.raises(exceptions.WorkerCrashedError):
        ray.get(die.remote())
    assert ray.get(one.remote()) == 1


def test_a_get_of_refs_on_two_connections_returns_both(patient_leader):
    @ray.remote
    class Echo:
        def echo(self, x: int) -> int:
            return x

    a, b = Echo.remote(), Echo.remote()
    for i in range(20):  # one get waits for replies on two connections: no leader
        assert ray.get([a.echo.remote(i), b.echo.remote(-i)]) == [i, -i]
        assert ray.get(a.echo.remote(i)) == i  # and on one: the main thread leads it
