"""Generator tasks, the owner's side: the stream of items each one yields.

Owns Stream (one generator task's items as its owner holds them: received, handed
out, the end, the backpressure answers still owed; pure, no lock, no I/O), the ids
of the items, and the CoreWorker methods (GeneratorsMixin) that take a worker's
GeneratorItem, hand the items to a reader (next, async next, wait) and let a stream
go. Not the public classes (object_ref_generator), not running the generator
(worker_generators), not the codes of generator methods (return_modes).

    worker: each yield ──GeneratorItem(generator id, index, value)──▶ owner:
            an owned entry, its ref kept by the Stream until next() hands it out
            (backpressure: a request, answered once the reader is near enough)
    worker: the end ──TaskDone(generator ref: None | the error)──▶ the Stream ends
            (the task's own exception, not retried, becomes its last item: _error_item)
    next(gen) ─▶ the next item's ref | the generator ref, once, if the task failed
              otherwise (cancelled, its worker or actor died) | StopIteration

The items are owned by the caller like any return. Their ids are derived from the
task id and the index (item_id), so an attempt that runs again after its worker died
or it raised an exception it retries yields the same ids, and the owner ignores the
items it has already (their index is below `received`). That is also how a lost
stored item is rebuilt: the items still in the store when the task ends keep it as
their lineage (_stored_items), and its rerun fills the entry that waits.
"""

from __future__ import annotations

import threading
from _blake2 import blake2b  # hashlib's, without mapping OpenSSL (see transport.py)
from collections.abc import Callable
from typing import Any

from .. import protocol as P
from ..exceptions import ConnectionLost
from ..object_ref import ObjectRef
from ..serialization import dumps_inline
from .objects import ObjectEntry
from .tasks import TaskSpec

# What Stream.take hands out.
ITEM = "item"  # the next item's ref
FAILED = "failed"  # the task failed: the generator ref (which raises its error), once
END = "end"  # nothing more: StopIteration

_NONE = dumps_inline(None)  # a streaming task's generator ref, once it ended


def item_id(task_id: bytes, index: int) -> bytes:
    """The object id of the `index`-th item a generator task yields: the same in every
    attempt of the task, and not an id new_id() hands out (those are a process's random
    prefix and a counter; a collision is as likely as one of two random 16-byte ids)."""
    return blake2b(task_id + index.to_bytes(8, "little"), digest_size=16).digest()


class Stream:
    """One generator task's items, as its owner has them (pure: the shell holds the lock).

    `keep`: a reader (ObjectRefGenerator) takes the items; a dynamic task's stream has
    none: its items are held by its return value once the task ends, and the stream
    goes then. `dropped`: the reader is gone; later items are freed as they come.
    """

    __slots__ = (
        "acks",
        "backpressure",
        "dropped",
        "ended",
        "error_taken",
        "failed",
        "generator_id",
        "items",
        "keep",
        "next",
        "received",
        "waiters",
    )

    def __init__(self, generator_id: bytes, backpressure: int, keep: bool = True) -> None:
        self.generator_id = generator_id
        self.backpressure = backpressure  # > 0: the worker waits while this many are unread
        self.keep = keep
        self.items: dict[int, ObjectRef] = {}  # received, not handed out yet
        self.received = 0  # items 0 .. received-1 came
        self.next = 0  # the index next() hands out
        self.ended = False  # the task ended (its generator ref has its value)
        self.failed = False  # ... with an error
        self.error_taken = False
        self.dropped = False
        self.acks: list[tuple[int, Any]] = []  # (item index, what the shell answers) owed
        self.waiters: list[Callable[[], None]] = []  # run (no lock) when ready() may change

    def wants(self, index: int) -> bool:
        """Whether an item that came is new (a rerun yields from the first again)."""
        return index >= self.received and not self.dropped

    def arrived(self, index: int, ref: ObjectRef) -> list[Callable[[], None]]:
        """A new item came (wants() said so); the waiters to run."""
        self.received = index + 1
        self.items[index] = ref
        return self.take_waiters()

    def may_go_on(self, index: int) -> bool:
        """Whether the worker, having yielded item `index`, may go on now: fewer than
        `backpressure` of the items up to it are unread (Ray's rule), or nobody reads."""
        bp = self.backpressure
        return bp <= 0 or self.dropped or self.ended or self.next >= index + 2 - bp

    def owe(self, index: int, answer: Any) -> None:
        self.acks.append((index, answer))

    def acks_due(self) -> list[Any]:
        """The answers the worker may have now (after a take, a drop or the end)."""
        if not self.acks:
            return []
        due = [answer for index, answer in self.acks if self.may_go_on(index)]
        if due:
            self.acks = [(i, a) for i, a in self.acks if not self.may_go_on(i)]
        return due

    def take(self) -> tuple[str | None, ObjectRef | None]:
        """What next() gets now: (ITEM, ref), (FAILED, None), (END, None), or (None, None)
        when it must wait."""
        if self.next < self.received:
            ref = self.items.pop(self.next)
            self.next += 1
            return ITEM, ref
        if not self.ended:
            return None, None
        if self.failed and not self.error_taken:
            self.error_taken = True
            return FAILED, None
        return END, None

    def ready(self) -> bool:
        """next() would not wait (for wait(): an item, the error or the end is there)."""
        return self.next < self.received or self.ended

    def finished(self) -> bool:
        """Every item and the error (if any) taken: next() raises StopIteration."""
        return self.ended and self.next >= self.received and (not self.failed or self.error_taken)

    def end(self, failed: bool) -> tuple[list[Callable[[], None]], list[Any]]:
        """The task ended (its generator ref got its value): (waiters, answers owed)."""
        self.ended = True
        self.failed = failed
        if not self.keep:
            self.dropped = True
        acks = [answer for _, answer in self.acks]
        self.acks = []
        return self.take_waiters(), acks

    def drop(self) -> tuple[list[Any], list[ObjectRef]]:
        """The reader is gone: (answers owed, the unread items' refs, to let go)."""
        self.dropped = True
        acks = [answer for _, answer in self.acks]
        self.acks = []
        items = list(self.items.values())
        self.items = {}
        return acks, items

    def take_waiters(self) -> list[Callable[[], None]]:
        waiters, self.waiters = self.waiters, []
        return waiters


def _run(callbacks: list[Callable[[], None]]) -> None:
    for cb in callbacks:
        try:
            cb()
        except Exception:  # a waiter's loop closed, say: nobody waits any more
            pass


def _answer(acks: list[Any]) -> None:
    """Tell waiting workers they may go on (GeneratorItem requests)."""
    for conn, rid in acks:
        try:
            conn.reply(rid, P.Ok())
        except ConnectionLost:
            pass


class GeneratorsMixin:
    """The CoreWorker's side of generator tasks (it has `streams`: generator id -> Stream)."""

    def _open_stream(self: Any, spec: TaskSpec) -> Stream:
        """A generator task was submitted: its stream, before it can be pushed (its
        return entry exists already)."""
        generator_id = spec.return_ids[0]
        stream = Stream(generator_id, spec.backpressure, spec.generator == P.GENERATOR_STREAMING)
        with self.lock:
            self.streams[generator_id] = stream
        # Every way the task ends gives its generator ref a value: the stream ends then.
        self._when_ready(
            ObjectRef(generator_id, self.address, _count=False),
            lambda kind, data: self._stream_ended(stream, kind),
        )
        return stream

    def _generator_item(self: Any, conn: Any, msg: P.GeneratorItem, rid: int) -> None:
        """A worker sent an item of a generator task we own (its reader thread)."""
        item = msg.item
        refs = self._adopt_contained(item.contained) if item.contained else []
        waiters: list[Callable[[], None]] = []
        pending = None
        answer = rid > 0
        with self.lock:
            stream = self.streams.get(msg.generator_id)
            if stream is not None and stream.wants(msg.index):
                self.objects[item.object_id] = ObjectEntry()
                self._set_value(item.object_id, item.kind, item.data, refs)
                waiters = stream.arrived(msg.index, ObjectRef(item.object_id, self.address))
            else:  # a rerun's repeat, or nobody reads it: freed unless it is the copy in use
                pending = self._set_value(item.object_id, item.kind, item.data, refs)
            if answer and stream is not None and not stream.may_go_on(msg.index):
                stream.owe(msg.index, (conn, rid))
                answer = False
        if answer:
            _answer([(conn, rid)])
        _run(waiters)
        if pending:  # (an entry that waited for this value: none today, items have no lineage)
            self._run_waiters(pending, item.kind, item.data)

    def _error_item(self: Any, spec: TaskSpec, returns: list[P.TaskReturn]) -> list[P.TaskReturn]:
        """A streaming task raised, and will not be retried: as in Ray, its exception is
        its next item and its generator ref is None (a cancel, a crash or a dead actor
        stays in the generator ref). Its replacement returns, for _record_returns."""
        if spec.cancelled:
            return returns
        ret = returns[0]
        with self.lock:
            stream = self.streams.get(ret.object_id)
            index = stream.received if stream is not None else 0
        error = P.TaskReturn(item_id(spec.task_id, index), P.ERROR, ret.data, {})
        message: Any = P.GeneratorItem  # (a wire message: its fields are its arguments)
        self._generator_item(None, message(ret.object_id, index, error), 0)
        return [P.TaskReturn(ret.object_id, P.INLINE, _NONE, {})]

    def _stream_ended(self: Any, stream: Stream, kind: int) -> None:
        with self.lock:
            waiters, acks = stream.end(kind == P.ERROR)
            items: list[ObjectRef] = []
            if stream.dropped:
                items = list(stream.items.values())
                stream.items = {}
                self.streams.pop(stream.generator_id, None)
        _answer(acks)
        _run(waiters)
        del items  # a dynamic task's items: its return value holds them now

    def _stored_items(self: Any, spec: TaskSpec) -> list[P.TaskReturn]:
        """A streaming or dynamic task's items in the store, still there as it ends: they
        keep it as their lineage, as stored returns do (lineage._keep_lineage), so a lost
        one is rebuilt by running the generator again (its other items come again and
        are dropped, or fill an entry that waits for them) (lock held)."""
        stream = self.streams.get(spec.return_ids[0])
        if stream is None:
            return []
        kept = []
        for index in range(stream.received):
            oid = item_id(spec.task_id, index)
            entry = self.objects.get(oid)
            if entry is not None and entry.kind == P.IN_STORE and entry.lineage is None:
                kept.append(P.TaskReturn(oid, P.IN_STORE, entry.data, {}))
        return kept

    def drop_stream(self: Any, stream: Stream) -> None:
        """Its ObjectRefGenerator is gone: unread items go, the worker is not held back."""
        with self.lock:
            acks, items = stream.drop()
            if stream.ended:
                self.streams.pop(stream.generator_id, None)
        _answer(acks)
        del items

    def _take(self: Any, stream: Stream) -> tuple[str | None, ObjectRef | None, list[Any]]:
        """Stream.take under the lock, with the answers it makes due (lock held)."""
        kind, ref = stream.take()
        return kind, ref, (stream.acks_due() if kind is ITEM else [])

    def stream_next(self: Any, stream: Stream, timeout: float | None = None) -> tuple[str, Any]:
        """next(gen): (ITEM, ref), (FAILED, None) or (END, None), waiting for it."""
        while True:
            event = None
            with self.lock:
                kind, ref, acks = self._take(stream)
                if kind is None:
                    event = threading.Event()
                    stream.waiters.append(event.set)
            if acks:
                _answer(acks)
            if event is None:
                return kind, ref
            self._wait_blocking(event, timeout, 1)

    async def stream_next_async(self: Any, stream: Stream) -> tuple[str, Any]:
        """await anext(gen): as stream_next, without blocking the event loop."""
        import asyncio

        loop = asyncio.get_running_loop()
        while True:
            future = None
            with self.lock:
                kind, ref, acks = self._take(stream)
                if kind is None:
                    future = loop.create_future()
                    stream.waiters.append(_wake(loop, future))
            if acks:
                _answer(acks)
            if future is None:
                return kind, ref
            await future

    def stream_when_ready(self: Any, stream: Stream, callback: Callable[[int, Any], None]) -> int:
        """wait() on a generator: callback once next() would not wait; a seq if it is so now
        (as _when_ready: the callback runs then too)."""
        with self.lock:
            if not stream.ready():
                stream.waiters.append(lambda: callback(P.INLINE, None))
                return 0
            ref = stream.items.get(stream.next)
            entry = self.objects.get(ref.id) if ref is not None else None
            seq = int(entry.seq if entry is not None and entry.seq else next(self._completion))
        callback(P.INLINE, None)
        return seq

    def stream_state(self: Any, stream: Stream) -> tuple[bool, bool]:
        """(ready, finished) now: next() would not wait; it would raise StopIteration."""
        with self.lock:
            return stream.ready() and not stream.finished(), stream.finished()


def _wake(loop: Any, future: Any) -> Callable[[], None]:
    def wake() -> None:
        loop.call_soon_threadsafe(_set_done, future)

    return wake


def _set_done(future: Any) -> None:
    if not future.done():
        future.set_result(None)
