"""The owner's record of a generator task's items (core/generators.Stream), the ids of
the items and the method table's codes for generator methods: no processes."""

from __future__ import annotations

import pytest

from raylite import protocol as P
from raylite.core.generators import (
    END,
    FAILED,
    ITEM,
    Stream,
    item_id,
)
from raylite.core.return_modes import generator_mode, method_code, method_mode, options_of
from raylite.object_ref import ObjectRef, new_id


def ref(i: int) -> ObjectRef:
    return ObjectRef(item_id(b"t" * 16, i), "unix:/owner", _count=False)


def test_item_ids_are_the_same_in_every_attempt_and_differ_by_task_and_index():
    task = new_id()
    assert item_id(task, 0) == item_id(task, 0)
    ids = {item_id(task, i) for i in range(1000)} | {item_id(new_id(), 0) for _ in range(100)}
    assert len(ids) == 1100
    assert all(len(i) == 16 for i in ids)


def test_items_are_handed_out_in_order_then_the_end():
    s = Stream(b"g", -1)
    assert s.take() == (None, None)
    assert not s.ready()
    s.arrived(0, ref(0))
    s.arrived(1, ref(1))
    assert s.ready()
    assert s.take() == (ITEM, ref(0))
    s.end(failed=False)
    assert not s.finished()
    assert s.take() == (ITEM, ref(1))
    assert s.finished()  # next() raises StopIteration
    assert s.ready()  # ... at once (wait() finds the generator ready)
    assert s.take() == (END, None)
    assert s.take() == (END, None)


def test_a_failed_task_hands_out_its_error_once_after_the_items():
    s = Stream(b"g", -1)
    s.arrived(0, ref(0))
    s.end(failed=True)
    assert s.take() == (ITEM, ref(0))
    assert not s.finished()
    assert s.take() == (FAILED, None)
    assert s.finished()
    assert s.take() == (END, None)


def test_a_rerun_repeats_no_item():
    s = Stream(b"g", -1)
    assert s.wants(0)
    s.arrived(0, ref(0))
    s.arrived(1, ref(1))
    assert not s.wants(0)
    assert not s.wants(1)
    assert s.wants(2)


def test_waiters_run_once_on_an_item_or_the_end():
    s = Stream(b"g", -1)
    seen = []
    s.waiters.append(lambda: seen.append("a"))
    for cb in s.arrived(0, ref(0)):
        cb()
    assert seen == ["a"]
    assert s.arrived(1, ref(1)) == []
    s.waiters.append(lambda: seen.append("b"))
    waiters, acks = s.end(failed=False)
    assert len(waiters) == 1
    assert acks == []


@pytest.mark.parametrize("backpressure", [1, 2, 5])
def test_backpressure_holds_the_worker_while_that_many_are_unread(backpressure):
    """Ray's rule: after yielding item i the worker goes on once fewer than
    `backpressure` of items 0..i are unread."""
    s = Stream(b"g", backpressure)
    for i in range(backpressure - 1):
        s.arrived(i, ref(i))
        assert s.may_go_on(i)
    last = backpressure - 1
    s.arrived(last, ref(last))
    assert not s.may_go_on(last)
    s.owe(last, "answer")
    assert s.acks_due() == []
    assert s.take() == (ITEM, ref(0))
    assert s.acks_due() == ["answer"]
    assert s.acks_due() == []


def test_no_backpressure_never_holds_the_worker():
    s = Stream(b"g", -1)
    for i in range(100):
        s.arrived(i, ref(i))
        assert s.may_go_on(i)


def test_dropping_the_reader_frees_the_worker_and_the_unread_items():
    s = Stream(b"g", 1)
    s.arrived(0, ref(0))
    s.owe(0, "answer")
    acks, items = s.drop()
    assert acks == ["answer"]
    assert items == [ref(0)]
    assert not s.wants(1)  # later items are not kept
    assert s.may_go_on(5)


def test_the_end_answers_every_waiting_worker():
    s = Stream(b"g", 1)
    s.arrived(0, ref(0))
    s.owe(0, "answer")
    _, acks = s.end(failed=False)
    assert acks == ["answer"]


def test_a_dynamic_tasks_stream_lets_its_items_go_at_the_end():
    s = Stream(b"g", -1, keep=False)
    s.arrived(0, ref(0))
    s.end(failed=False)
    assert s.dropped


@pytest.mark.parametrize(
    ("num_returns", "backpressure", "expected"),
    [
        (None, None, (1, (P.GENERATOR_STREAMING, -1))),
        ("streaming", 3, (1, (P.GENERATOR_STREAMING, 3))),
        ("streaming", -1, (1, (P.GENERATOR_STREAMING, -1))),
        ("dynamic", None, (1, (P.GENERATOR_DYNAMIC, -1))),
        (1, None, (1, (P.GENERATOR_FIXED, -1))),
        (3, None, (3, (P.GENERATOR_FIXED, -1))),
        (0, None, (0, (P.GENERATOR_FIXED, -1))),
    ],
)
def test_a_generator_methods_code_round_trips(num_returns, backpressure, expected):
    mode = generator_mode(True, num_returns, backpressure)
    assert mode == expected
    code = method_code(*mode)
    assert code < 0
    assert method_mode(code) == expected


@pytest.mark.parametrize("n", [0, 1, 7])
def test_a_plain_methods_code_is_its_num_returns(n):
    assert method_code(*generator_mode(False, n, None)) == n
    assert method_mode(n) == (n, None)


def test_streaming_needs_a_generator_function():
    with pytest.raises(ValueError, match="generator"):
        generator_mode(False, "streaming", None)
    with pytest.raises(ValueError, match="generator"):
        generator_mode(False, "dynamic", None)


@pytest.mark.parametrize(
    ("is_generator", "num_returns", "backpressure", "options"),
    [
        (False, 2, None, (2, None)),
        (True, None, None, ("streaming", None)),
        (True, "streaming", 5, ("streaming", 5)),
        (True, "dynamic", None, ("dynamic", None)),
        (True, 3, None, (3, None)),
    ],
)
def test_a_method_code_gives_back_the_options_it_was_made_from(
    is_generator, num_returns, backpressure, options
):
    code = method_code(*generator_mode(is_generator, num_returns, backpressure))
    assert options_of(code) == options
    assert method_code(*generator_mode(is_generator, *options)) == code


def test_is_generator_function_agrees_with_inspect() -> None:
    """return_modes reads the code flags itself (no inspect at @remote): the same
    answers as inspect's isgeneratorfunction or isasyncgenfunction."""
    import functools
    import inspect

    from raylite.core.return_modes import is_generator_function

    def gen():
        yield 1

    async def agen():
        yield 1

    async def coro():
        return 1

    def plain():
        return 1

    class Holder:
        def gen(self):
            yield 1

        def plain(self):
            return 1

        def __call__(self):
            yield 1

    cases = [
        gen, agen, coro, plain, lambda: 1, Holder.gen, Holder().gen, Holder().plain,
        functools.partial(gen), functools.partial(functools.partial(agen)),
        functools.partial(plain), Holder(), len, print, Holder, 42,
    ]  # fmt: skip
    for fn in cases:
        expected = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        assert is_generator_function(fn) is expected, fn
