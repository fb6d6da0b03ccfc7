"""Receivers of Failed decide on its code, never on its text: a reason that merely
mentions "affinity" or "marked dead" changes nothing, the code does.

In-process: a core worker's lease requests answered by hand (core_harness's
Harness), a node manager joining a head that a stand-in connection plays, and the
head's stored restart record of a detached actor.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import msgpack
import pytest

from raylite import protocol as P
from raylite.exceptions import ConnectionLost, NodeDiedError, TaskUnschedulableError
from raylite.head import detached as head_detached
from raylite.node import cluster_link
from raylite.node.manager import NodeManager
from raylite.serialization import loads_inline

from .core_harness import Harness, h

__all__ = ["h"]  # the fixture, imported for pytest

AFFINITY = P.NodeAffinity("ab" * 16, soft=False)


def test_affinity_unavailable_fails_the_queued_tasks_with_its_reason(h: Harness) -> None:
    ref, _ = h.submit(max_retries=0, strategy=AFFINITY)
    msg, answer = h.cw.nm.take(P.RequestLease)  # type: ignore[attr-defined]
    assert msg.strategy == AFFINITY
    failed = threading.Event()
    h.cw._when_ready(ref, lambda kind, data: failed.set())
    answer(P.Failed(P.FailCode.AFFINITY_UNAVAILABLE, "node ab... is not alive"))
    assert failed.wait(10)
    kind, data = h.value(ref)
    assert kind == P.ERROR
    err = loads_inline(data)
    assert isinstance(err, TaskUnschedulableError)
    assert "node ab... is not alive" in str(err)
    assert not h.cw.nm.requests  # type: ignore[attr-defined]


def test_another_failure_that_mentions_affinity_asks_again(h: Harness) -> None:
    ref, _ = h.submit(max_retries=0, strategy=AFFINITY)
    _, answer = h.cw.nm.take(P.RequestLease)  # type: ignore[attr-defined]
    answer(P.Failed(P.FailCode.WORKER_DIED, "the worker for the affinity task died at start"))
    again, _ = h.cw.nm.take(P.RequestLease)  # type: ignore[attr-defined]
    assert again.strategy == AFFINITY
    assert h.cw.objects[ref.id].kind is not P.ERROR  # still pending


def test_a_lost_node_manager_fails_the_queued_tasks_once(h: Harness) -> None:
    """The connection to our node manager closed with a lease request pending (it
    answers ConnectionLost): nothing reconnects, so the queued tasks fail with
    NodeDiedError instead of waiting forever, and nothing is asked again."""
    refs = [h.submit(max_retries=0)[0] for _ in range(3)]
    failed = threading.Event()
    h.cw._when_ready(refs[-1], lambda kind, data: failed.set())
    for _, answer in list(h.cw.nm.requests):  # type: ignore[attr-defined]
        answer(ConnectionLost("connection node-manager closed"))
    assert failed.wait(10)
    for ref in refs:
        kind, data = h.value(ref)
        assert kind == P.ERROR
        err = loads_inline(data)
        assert isinstance(err, NodeDiedError)
        assert "node manager" in str(err)
    assert not h.cw.nm.of(P.RequestLease)  # type: ignore[attr-defined]


class _Head:
    """The head's end of a node manager's connection: answers RegisterNode so."""

    peer = None

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.closed = False
        self.sent: list[Any] = []

    async def request(self, msg: Any) -> Any:
        self.sent.append(msg)
        return self.answer

    async def read_loop(self, dispatch: Any) -> None:
        return None

    def close(self) -> None:
        self.closed = True


def _join(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, answer: Any) -> tuple[Any, bytes, Any]:
    """Join a head that answers `answer`: (the node manager, its node id before, what
    join_head raised or None)."""
    head = _Head(answer)

    async def connect(address: str, token: bytes, **kwargs: object) -> _Head:
        return head

    monkeypatch.setattr(cluster_link, "async_connect", connect)
    nm = NodeManager(
        str(tmp_path / "session"),
        str(tmp_path / "store"),
        b"t" * 32,
        {},
        0,
        0,
        head_address="tcp:127.0.0.1:1",
        cluster=True,
    )
    before = nm.node_id

    async def run() -> Any:
        nm.head_ready = asyncio.Event()
        try:
            await nm.join_head()
        except ConnectionLost as exc:
            return exc
        finally:
            for task in list(nm.tasks):
                task.cancel()
        return None

    raised = asyncio.run(run())
    assert [type(m) for m in head.sent] == [P.RegisterNode]
    return nm, before, raised


def test_a_node_the_head_marked_dead_joins_again_as_a_new_node(tmp_path, monkeypatch) -> None:
    refusal = P.Failed(P.FailCode.NODE_MARKED_DEAD, "node was marked dead: no heartbeat for 3 s")
    nm, before, raised = _join(tmp_path, monkeypatch, refusal)
    assert isinstance(raised, ConnectionLost)
    assert "no heartbeat for 3 s" in str(raised)
    assert nm.node_id != before  # marked_dead: a new node id
    assert nm.head_conn is None


def test_another_refusal_that_says_marked_dead_keeps_the_node(tmp_path, monkeypatch) -> None:
    refusal = P.Failed(P.FailCode.UNREACHABLE, "the head is unreachable (it marked dead ...)")
    nm, before, raised = _join(tmp_path, monkeypatch, refusal)
    assert isinstance(raised, ConnectionLost)
    assert nm.node_id == before


def test_a_node_the_head_takes_in_gets_the_view(tmp_path, monkeypatch) -> None:
    row = {"node_id": b"o" * 16, "address": "tcp:10.0.0.2:7", "total": {"CPU": 10000}}
    row |= {"available": {"CPU": 10000}, "alive": True}
    nm, before, raised = _join(tmp_path, monkeypatch, P.NodeRegistered([row]))
    assert raised is None
    assert nm.node_id == before
    assert nm.head_ready.is_set()
    assert [v.address for v in nm.other_nodes()] == ["tcp:10.0.0.2:7"]


def test_a_stored_detached_push_comes_back_a_push_task() -> None:
    """The head stores a detached actor's restart record with msgpack (P.nested packs
    the PushTask inside); reading it back gives a PushTask, records and all."""
    push = P.PushTask(
        b"t" * 16,
        "A.__init__",
        b"f" * 16,
        b"code",
        b"args",
        [P.Dep("x", P.INLINE, b"v", b"o" * 16)],
        [b"r" * 16],
        "unix:/owner",
        b"a" * 16,
        True,
        [],
        b"j" * 4,
        None,
        {"max_concurrency": 2},
    )
    row = {"restart": {"push": push, "shape": {"CPU": 10000}}}
    stored = msgpack.unpackb(
        msgpack.packb(row, use_bin_type=True, default=P.nested), raw=False, strict_map_key=False
    )
    restart = head_detached.restored(stored["restart"])
    assert restart == {"push": push, "shape": {"CPU": 10000}}
    assert isinstance(restart["push"].deps[0], P.Dep)
    assert head_detached.restored(None) is None
