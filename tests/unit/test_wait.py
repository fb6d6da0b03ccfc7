"""wait() in-process (core/blocking.py): what it returns, in which order, and that a
loop of waits leaves no callback behind on the values still pending."""

from __future__ import annotations

import threading

from raylite import protocol as P
from tests.unit.core_harness import Harness, done, h  # noqa: F401  (h: the fixture)


def test_a_wait_that_times_out_leaves_no_waiter_behind(h: Harness) -> None:  # noqa: F811
    cw = h.cw
    ref, _ = h.submit()
    for _ in range(5):
        assert cw.wait([ref], 1, 0) == ([], [ref])
    assert list(cw.objects[ref.id].waiters) == []


def test_values_there_already_are_chosen_in_the_order_they_came(h: Harness) -> None:  # noqa: F811
    cw = h.cw
    first, second, third = (cw.put(i) for i in range(3))
    pending, _ = h.submit()
    # Ready, oldest first: the first two values put; returned in the order given.
    assert cw.wait([pending, second, third, first], 2, 0) == (
        [second, first],
        [pending, third],
    )
    assert list(cw.objects[pending.id].waiters) == []  # two were there: no waiter set


def test_a_value_that_comes_while_waiting_is_returned(h: Harness) -> None:  # noqa: F811
    cw = h.cw
    ref, _ = h.submit()
    worker = h.grant()
    push, reply = worker.take(P.PushTask)
    box: list = []
    waiter = threading.Thread(target=lambda: box.append(cw.wait([ref], 1, 10)))
    waiter.start()
    reply(done(push))
    waiter.join(10)
    assert box == [([ref], [])]
