"""A remote driver's object into a node's store (node/transfer.py: PushObject, PushChunk)
in-process: sealed only when the last chunk is in, nothing left of a push cut short."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import numpy as np

from raylite import protocol as P
from raylite.config import to_units
from raylite.node.manager import NodeManager
from raylite.object_ref import new_id
from raylite.object_store import segment_pieces
from raylite.serialization import serialize


class _Conn:
    closed = False

    def __init__(self) -> None:
        self.replies: list[tuple[int, Any]] = []

    def reply(self, rid: int, msg: Any) -> None:
        self.replies.append((rid, msg))

    def send(self, msg: Any) -> None:
        pass


def _node(tmp_path) -> NodeManager:
    total = {"object_store_memory": to_units(64 << 20)}
    return NodeManager(str(tmp_path / "session"), str(tmp_path / "store"), b"t" * 32, total, 0, 0)


def _chunks(oid: bytes, value: Any, size: int) -> tuple[int, list[P.PushChunk]]:
    total, pieces = segment_pieces(serialize(value))
    chunks = [
        P.PushChunk(oid, off + i, bytes(view[i : i + size]), False)
        for off, view in pieces
        for i in range(0, view.nbytes, size)
    ]
    last = chunks[-1]
    chunks[-1] = P.PushChunk(oid, last.offset, last.data, True)
    return total, chunks


def _push(nm: NodeManager, conn: _Conn, oid: bytes, total: int, chunks: list[P.PushChunk]) -> None:
    async def run() -> None:
        nm._start_store()
        os.makedirs(nm.store_dir, exist_ok=True)
        await nm.receive_push(conn, P.PushObject(oid, total, "tcp:10.0.0.9:1"), 1)  # type: ignore[arg-type]
        for i, chunk in enumerate(chunks):
            nm.on_push_chunk(conn, chunk, 2 if chunk.last else 0)  # type: ignore[arg-type]
            if i == 0:
                assert not nm.store.contains(oid)  # not sealed before the last chunk

    asyncio.run(run())


def test_a_pushed_object_is_sealed_in_the_store_and_reads_back(tmp_path):
    nm = _node(tmp_path)
    conn = _Conn()
    oid = new_id()
    value = np.arange(300_000, dtype=np.float64)
    total, chunks = _chunks(oid, value, 1 << 20)
    _push(nm, conn, oid, total, chunks)
    assert [type(m) for _, m in conn.replies] == [P.Ok, P.Ok]
    assert nm.segments[oid].owner == "tcp:10.0.0.9:1"
    np.testing.assert_array_equal(nm.store.get(oid), value)
    assert not nm.pushes
    assert not [p for p in os.listdir(nm.store_dir) if p.endswith(".tmp")]


def test_a_push_cut_short_leaves_no_file(tmp_path):
    nm = _node(tmp_path)
    conn = _Conn()
    oid = new_id()
    total, chunks = _chunks(oid, np.ones(200_000), 1 << 18)
    _push(nm, conn, oid, total, chunks[:-1])  # the driver went before its last chunk
    assert oid in nm.pushes
    nm.drop_pushes(conn)  # type: ignore[arg-type]
    nm.free_segment(oid)  # what on_disconnect does with the driver's segments
    assert not nm.pushes
    assert oid not in nm.segments
    assert os.listdir(nm.store_dir) == []


def test_a_chunk_without_its_push_is_refused(tmp_path):
    nm = _node(tmp_path)
    conn = _Conn()
    nm.on_push_chunk(conn, P.PushChunk(new_id(), 0, b"x", True), 3)  # type: ignore[arg-type]
    assert conn.replies[0][1].code == P.FailCode.NOT_FOUND
