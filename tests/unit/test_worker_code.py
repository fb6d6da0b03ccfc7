"""A function's code travels with its first push on a connection only: a worker keeps
the code of a task it never ran (sent back unrun by pipelining, or cancelled first),
so the pushes after it, which carry none, still run (worker._keep_code, _resolve)."""

from __future__ import annotations

import queue
import threading
import types
from typing import Any

import pytest

from raylite import protocol as P
from raylite.serialization import dumps_function, pickle_call
from raylite.worker import Worker


def double(x: int) -> int:
    return 2 * x


def push(task: bytes, blob: bytes | None) -> P.PushTask:
    args, _ = pickle_call(((21,), {}))
    return P.PushTask(
        task, "double", b"f" * 16, blob, args, [], [task + b"r"], "owner", None, False, [],
        b"job", None, None,
    )  # fmt: skip


class _Conn:
    def __init__(self) -> None:
        self.replies: list[Any] = []

    def reply(self, rid: int, msg: Any) -> None:
        self.replies.append((rid, msg))


def stand_in() -> Any:
    """The Worker state _keep_code, _resolve and _bounce_queued use."""
    w = types.SimpleNamespace(
        functions={}, unrun_code={}, calls_left={}, actor=None, _held=0, pid=7,
        tasks=queue.SimpleQueue(), cw=types.SimpleNamespace(deferring=threading.local()),
    )  # fmt: skip
    for name in ("_keep_code", "_resolve", "_bounce_queued", "_flush_held"):
        setattr(w, name, types.MethodType(getattr(Worker, name), w))
    return w


def test_code_of_a_task_sent_back_unrun_serves_the_next_push():
    w = stand_in()
    conn = _Conn()
    w.tasks.put((conn, push(b"t1", dumps_function(double, 0)), 5))
    w._bounce_queued()  # its running task blocked: t1 goes back unrun
    assert conn.replies == [(5, P.TaskBounced(7))]
    fn, args, kwargs = w._resolve(push(b"t2", None))  # the next push: no code with it
    assert fn(*args, **kwargs) == 42
    assert w.unrun_code == {}  # loaded once, kept as a function


def test_code_of_a_cancelled_task_is_kept():
    w = stand_in()
    w._keep_code(push(b"t1", dumps_function(double, 0)))
    fn, args, _ = w._resolve(push(b"t2", None))
    assert fn(*args) == 42


def test_without_code_anywhere_the_task_says_so():
    w = stand_in()
    with pytest.raises(RuntimeError, match="worker has no code for double"):
        w._resolve(push(b"t1", None))
