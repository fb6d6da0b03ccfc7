"""The core worker's lock: deferred work runs at the outermost release, never under it."""

from __future__ import annotations

import threading

import pytest

from raylite.core import deferring_lock
from raylite.core.deferring_lock import DeferringLock


def test_defer_without_the_lock_runs_at_once() -> None:
    lock = DeferringLock()
    ran: list[int] = []
    lock.defer(ran.append, 1)
    assert ran == [1]


def test_deferred_work_runs_after_the_outermost_release_without_the_lock() -> None:
    lock = DeferringLock()
    seen: list[tuple[str, bool]] = []

    def action(name: str) -> None:
        seen.append((name, lock.held()))

    with lock:
        with lock:
            lock.defer(action, "a")
        assert seen == []  # the inner release is not the outermost
        lock.defer(action, "b")
        assert seen == []
    assert seen == [("a", False), ("b", False)]
    assert not lock.held()


def test_an_action_may_lock_and_defer_more() -> None:
    lock = DeferringLock()
    order: list[str] = []

    def first() -> None:
        with lock:
            lock.defer(order.append, "second")
            order.append("first")

    with lock:
        lock.defer(first)
        lock.defer(order.append, "third")
    assert order == ["first", "second", "third"]
    assert not lock.held()


def test_a_failing_action_is_logged_and_the_rest_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lock = DeferringLock()
    ran: list[int] = []

    def boom() -> None:
        raise ValueError("boom")

    with lock:
        lock.defer(boom)
        lock.defer(ran.append, 2)
    assert ran == [2]
    assert "deferred action" in caplog.text
    assert "boom" in caplog.text


def test_another_thread_gets_the_lock_while_deferred_work_runs() -> None:
    lock = DeferringLock()
    inside = threading.Event()
    other_had_it = threading.Event()

    def slow() -> None:
        inside.set()
        assert other_had_it.wait(10)

    def other() -> None:
        assert inside.wait(10)
        with lock:
            other_had_it.set()

    t = threading.Thread(target=other)
    t.start()
    with lock:
        lock.defer(slow)
    t.join(10)
    assert other_had_it.is_set()


def test_check_unlocked_catches_a_breach_only_when_checks_are_on() -> None:
    quiet = DeferringLock(checks=False)
    with quiet:
        quiet.check_unlocked("dialling x")  # off: no cost, no error
    strict = DeferringLock(checks=True)
    strict.check_unlocked("dialling x")  # not held: fine
    before = len(deferring_lock.breaches)
    with strict, pytest.raises(AssertionError, match="dialling x under the core worker lock"):
        strict.check_unlocked("dialling x")
    assert deferring_lock.breaches[before:] == [("dialling x", threading.current_thread().name)]
    del deferring_lock.breaches[before:]  # this breach was on purpose


def test_a_long_chain_of_deferred_actions_runs_in_a_loop() -> None:
    """Each action locks and defers the next: 10,000 of them must not recurse."""
    lock = DeferringLock()
    count = [0]

    def step() -> None:
        with lock:
            count[0] += 1
            if count[0] < 10_000:
                lock.defer(step)

    with lock:
        lock.defer(step)
    assert count[0] == 10_000
    assert not lock.held()
