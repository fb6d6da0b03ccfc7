"""The node manager in-process: its background tasks have an owner."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from raylite.node.manager import NodeManager


@pytest.fixture
def nm(tmp_path, monkeypatch):
    # init() in an earlier test may have stopped "raylite" records short of caplog's handler.
    monkeypatch.setattr(logging.getLogger("raylite"), "propagate", True)
    return NodeManager(str(tmp_path / "session"), str(tmp_path / "store"), b"t" * 32, {}, 0, 0)


def test_a_crashed_background_task_is_logged_and_stops_the_node(nm, caplog):
    async def broken_loop() -> None:
        raise RuntimeError("the loop broke")

    async def run() -> None:
        nm.stopped = asyncio.Event()
        nm.spawn(broken_loop())
        await asyncio.wait_for(nm.stopped.wait(), 10)

    with caplog.at_level(logging.ERROR, logger="raylite.node"):
        asyncio.run(run())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "broken_loop" in errors[0].getMessage()
    assert "stopping the node" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert str(errors[0].exc_info[1]) == "the loop broke"
    assert nm.stopping
    assert isinstance(nm.crashed, RuntimeError)
    assert not nm.tasks


def test_a_cancelled_background_task_stops_nothing(nm, caplog):
    async def run() -> None:
        nm.stopped = asyncio.Event()
        nm.spawn(asyncio.sleep(60))
        [task] = nm.tasks
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)  # its done callback runs

    with caplog.at_level(logging.DEBUG, logger="raylite.node"):
        asyncio.run(run())
    assert not nm.stopping
    assert nm.crashed is None
    assert not nm.tasks
    assert not caplog.records


class _Owner:
    """The least that spawn and its done callback use: NodeManager's own two methods
    on an object with the four attributes they read, and a stop path that only counts."""

    spawn = NodeManager.spawn
    task_done = NodeManager.task_done

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[object]] = set()
        self.stopping = False
        self.crashed: BaseException | None = None
        self.shutdowns = 0

    def begin_shutdown(self) -> None:
        self.shutdowns += 1


def _run_in_background(owner: _Owner, *coros) -> None:
    async def run() -> None:
        for coro in coros:
            owner.spawn(coro)
        tasks = list(owner.tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # done callbacks run one loop turn after the task ends

    asyncio.run(run())


@pytest.fixture
def propagating(monkeypatch):
    monkeypatch.setattr(logging.getLogger("raylite"), "propagate", True)


@pytest.mark.usefixtures("propagating")
def test_spawn_logs_a_crash_and_takes_the_stop_path(caplog):
    owner = _Owner()

    async def heartbeat_loop() -> None:
        raise ValueError("no head")

    with caplog.at_level(logging.DEBUG, logger="raylite.node"):
        _run_in_background(owner, heartbeat_loop())
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert "heartbeat_loop crashed: stopping the node" in record.getMessage()
    assert isinstance(record.exc_info[1], ValueError)
    assert owner.shutdowns == 1
    assert isinstance(owner.crashed, ValueError)
    assert not owner.tasks


@pytest.mark.usefixtures("propagating")
def test_the_first_crash_is_the_one_kept(caplog):
    owner = _Owner()

    async def first() -> None:
        raise KeyError("first")

    async def second() -> None:
        await asyncio.sleep(0)
        raise OSError("second")

    with caplog.at_level(logging.ERROR, logger="raylite.node"):
        _run_in_background(owner, first(), second())
    assert len(caplog.records) == 2
    assert isinstance(owner.crashed, KeyError)
    assert owner.shutdowns == 2  # begin_shutdown itself starts one shutdown only


@pytest.mark.usefixtures("propagating")
def test_a_crash_while_stopping_is_only_a_debug_line(caplog):
    owner = _Owner()
    owner.stopping = True

    async def send() -> None:
        raise ConnectionResetError("peer gone")

    with caplog.at_level(logging.DEBUG, logger="raylite.node"):
        _run_in_background(owner, send())
    [record] = caplog.records
    assert record.levelno == logging.DEBUG
    assert owner.shutdowns == 0
    assert owner.crashed is None


@pytest.mark.usefixtures("propagating")
def test_a_task_that_ends_normally_leaves_no_trace(caplog):
    owner = _Owner()

    async def done() -> None:
        return None

    with caplog.at_level(logging.DEBUG, logger="raylite.node"):
        _run_in_background(owner, done())
    assert not caplog.records
    assert owner.shutdowns == 0
    assert not owner.tasks
