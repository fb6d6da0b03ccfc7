"""The node manager's store and a borrower's pins, in one process on a temporary
directory: a freed segment that a reader pins is deleted, not reused for the next put
of its size; a pinned segment is not spilled; the statistics count its pins
(object_store's pins, node/store.py's shell)."""

from __future__ import annotations

import asyncio
import gc
import os

import numpy as np
import pytest

from raylite.config import RESOURCE_UNIT
from raylite.node.store import StoreMixin
from raylite.object_ref import new_id
from raylite.object_store import ObjectStore
from raylite.serialization import serialize

SIZE = 1 << 21  # float64s: a 16 MiB segment, above the size kept warm for reuse


class Node(StoreMixin):
    """The store part of a node manager, without its loop and connections."""

    def __init__(self, root: str, capacity: int) -> None:
        os.makedirs(os.path.join(root, "shm"))
        self._init_store(root, os.path.join(root, "shm"), {
            "object_store_memory": capacity * RESOURCE_UNIT}, None)  # fmt: skip
        os.makedirs(self.spill_dir)

    def spawn(self, coro):  # FreeCopies: none here
        coro.close()

    def forward_logs(self, lines, pid=0):
        pass

    def put(self, writer: ObjectStore, value) -> bytes:
        """Reserve, write and seal an object as an owner does (ReserveObject, put)."""
        oid = new_id()
        sv = serialize(value)
        where = asyncio.run(self._make_room(oid, writer.segment_size(sv)))
        directory, prealloc = where
        writer.put(oid, sv, directory, prealloc)
        return oid

    async def _make_room(self, oid, size):
        self._start_store()
        return await self.make_room(oid, size, "owner", warm=True)


@pytest.fixture
def node(tmp_path):
    return Node(str(tmp_path), capacity=1 << 30)


def test_a_freed_segment_nobody_pins_is_reused(node):
    writer = ObjectStore(node.store_dir)
    oid = node.put(writer, np.zeros(SIZE))
    node.free_segment(oid)
    assert node.store_book.warm_bytes > 0  # kept for the next put of its size
    node.put(writer, np.ones(SIZE))
    assert node.store_book.warm_bytes == 0  # ... which took it


def test_a_freed_segment_a_reader_pins_is_not_reused(node):
    writer, reader = ObjectStore(node.store_dir), ObjectStore(node.store_dir)
    oid = node.put(writer, np.full(SIZE, 3.0))
    view = reader.get(oid, pin=True)  # a borrower: no message to the node
    node.free_segment(oid)  # its owner freed it
    assert node.store_book.warm_bytes == 0  # deleted, not kept for reuse
    assert not os.path.exists(node.store.path(oid))
    others = [node.put(writer, np.full(SIZE, float(i))) for i in range(2)]
    assert float(view.min()) == float(view.max()) == 3.0
    assert [float(writer.get(o)[7]) for o in others] == [0.0, 1.0]
    del view
    gc.collect()


def test_a_pinned_segment_is_not_spilled(tmp_path):
    node = Node(str(tmp_path), capacity=40 << 20)  # room for two 16 MiB segments
    writer, reader = ObjectStore(node.store_dir), ObjectStore(node.store_dir, node.spill_dir)
    old, young = node.put(writer, np.zeros(SIZE)), node.put(writer, np.ones(SIZE))
    view = reader.get(old, pin=True)
    stats = {s.object_id: s.readers for s in node._store_stats(objects=True)[1]}
    assert stats == {old: 1, young: 0}
    node.put(writer, np.full(SIZE, 2.0))  # the least recently used must go to disk ...
    assert not node.segments[old].spilled  # ... but a spill of it would free nothing now
    assert os.path.exists(node.store.path(old))
    del view
    gc.collect()
    node.put(writer, np.full(SIZE, 4.0))  # let go of: it goes now
    assert node.segments[old].spilled
    assert float(reader.get(old)[5]) == 0.0  # read back from the spill dir
