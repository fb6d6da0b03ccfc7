"""raylite.dag's walk, in process: what execute() submits, in which order, with what.

Nodes call `.remote()` on what they were bound from; here that is a recorder, so
no engine runs. Ray's own behaviour is checked in tests/compat/test_dag.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from raylite.dag import (
    ClassMethodNode,
    ClassNode,
    DAGInputData,
    FunctionNode,
    InputNode,
    MultiOutputNode,
)


class Recorder:
    """Stands in for a remote function or actor class: logs calls, returns names."""

    def __init__(self, name: str, log: list[Any]) -> None:
        self.name = name
        self.log = log
        self.calls = 0

    def remote(self, *args: Any, **kwargs: Any) -> str:
        self.calls += 1
        self.log.append((self.name, args, kwargs))
        return f"{self.name}#{self.calls}"


class FakeMethod(Recorder):
    def options(self, **options: Any) -> Recorder:
        return Recorder(f"{self.name}{sorted(options.items())}", self.log)


class FakeHandle:
    """Stands in for an ActorHandle: `handle.method.remote(...)` is logged."""

    def __init__(self, name: str, log: list[Any]) -> None:
        self.name = name
        self.log = log

    def __getattr__(self, method: str) -> FakeMethod:
        return FakeMethod(f"{self.name}.{method}", self.log)


class ActorRecorder(Recorder):
    def remote(self, *args: Any, **kwargs: Any) -> Any:
        super().remote(*args, **kwargs)
        return FakeHandle(f"{self.name}#{self.calls}", self.log)


class Plain:
    def inc(self) -> None: ...

    def get(self) -> None: ...


def fn(name: str, log: list[Any], *args: Any, **kwargs: Any) -> FunctionNode:
    return FunctionNode(None, args, kwargs, {}, _submitter=Recorder(name, log))


@dataclasses.dataclass
class Box:
    item: Any


def test_each_node_runs_once_children_first_left_to_right():
    log: list[Any] = []
    a = fn("a", log)
    b = fn("b", log, a)
    c = fn("c", log, a)
    d = fn("d", log, b, c, a)
    assert d.execute() == "d#1"
    assert log == [
        ("a", (), {}),
        ("b", ("a#1",), {}),
        ("c", ("a#1",), {}),
        ("d", ("b#1", "c#1", "a#1"), {}),
    ]
    log.clear()
    assert d.execute() == "d#2"  # the whole DAG again, each node once
    assert [name for name, _, _ in log] == ["a", "b", "c", "d"]


def test_nodes_inside_containers_and_objects_are_replaced():
    log: list[Any] = []
    a = fn("a", log)
    outer = fn("outer", log, [a, (a, 1)], {"k": a}, Box(a), key={a: "v"}, plain=[1, "x"])
    outer.execute()
    _, args, kwargs = log[-1]
    assert args[:2] == (["a#1", ("a#1", 1)], {"k": "a#1"})
    assert args[2] == Box("a#1")
    assert kwargs == {"key": {"a#1": "v"}, "plain": [1, "x"]}
    assert [n for n, _, _ in log] == ["a", "outer"]


def test_values_without_nodes_are_passed_as_they_are():
    log: list[Any] = []
    big = list(range(5))
    node = fn("f", log, big, Box(1))
    node.execute()
    assert log[0][1][0] is big


def test_input_node_shapes():
    log: list[Any] = []
    with InputNode() as inp:
        whole = fn("whole", log, inp)
        parts = fn("parts", log, inp[0], inp.x, inp[1])
    whole.execute(5)
    assert log[-1][1] == (5,)
    whole.execute(1, 2)
    assert isinstance(log[-1][1][0], DAGInputData)
    parts.execute(10, 20, x=30)
    assert log[-1][1] == (10, 30, 20)


def test_input_problems_are_found_before_anything_runs():
    log: list[Any] = []
    with InputNode() as first:
        a = fn("a", log, first)
    with InputNode() as second:
        dag = fn("d", log, fn("b", log), a, second)
    with pytest.raises(AssertionError, match="one unique InputNode"):
        dag.execute(1)
    outside = fn("o", log, fn("b", log), InputNode())
    with pytest.raises(AssertionError, match="context manager"):
        outside.execute(1)
    assert log == []


def test_class_methods_run_in_bind_order_on_one_actor_per_execute():
    log: list[Any] = []
    actor = ClassNode(Plain, (7,), {}, {}, _submitter=ActorRecorder("A", log))
    actor.inc.bind()
    last = actor.get.bind()
    assert isinstance(last, ClassMethodNode)
    out = MultiOutputNode([last, actor.get.bind()])
    refs = out.execute()
    assert refs == ["A#1.get#1", "A#1.get#1"]
    assert [n for n, _, _ in log] == ["A", "A#1.inc", "A#1.get", "A#1.get"]


def test_method_options_reach_the_call():
    log: list[Any] = []
    actor = ClassNode(Plain, (), {}, {}, _submitter=ActorRecorder("A", log))
    actor.inc.options(name="x").bind(1).execute()
    assert log[-1] == ("A#1.inc[('name', 'x')]", (1,), {})


def test_raylite_objects_inside_a_value_are_kept_not_copied():
    """Refs and handles in a value that also holds a node stay the same objects."""
    log: list[Any] = []
    kept = DAGInputData(1)  # a raylite object: stands in for a ref or a handle
    fn("f", log, Box([kept, fn("a", log)])).execute()
    box = log[-1][1][0]
    assert box.item[0] is kept
    assert box.item[1] == "a#1"


def test_numeric_arrays_are_not_scanned_but_object_arrays_are():
    np = pytest.importorskip("numpy")
    log: list[Any] = []
    numbers = np.arange(3)
    node = fn("f", log, numbers)
    assert node._nested_args == (False,)
    holder = np.empty(1, dtype=object)
    holder[0] = fn("a", log)
    fn("g", log, holder).execute()
    assert list(log[-1][1][0]) == ["a#1"]
