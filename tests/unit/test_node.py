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
