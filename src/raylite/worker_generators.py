"""Generator tasks, the worker's side: running the body of a function that yields.

Owns how a worker runs a task or actor method whose function is a generator (sync or
async), by PushTask.generator: fixed num_returns=N (the yields are the N returns; an
exception after k yields leaves the k values and the error in the rest), streaming
(each yield is stored and sent to the owner at once, as a GeneratorItem; under
backpressure the worker waits for the owner's answer before it goes on) and dynamic
(streamed the same way; the one return is a DynamicObjectRefGenerator of the items'
refs). Not the owner's side (core/generators.py), not the task loop (worker.py).

    execute ──fn()──▶ generator ──each yield──▶ store ──GeneratorItem──▶ owner
                                                 (backpressure: wait for its Ok)
            ◀── the returns for TaskDone: the generator ref's value (None, the
                DynamicObjectRefGenerator or the error), or fixed: the N values

A streaming task's own exception goes back as its generator ref's error: the owner
retries it (retry_exceptions) or makes it the next item, as Ray shows it
(core/generators: _error_item). A dynamic task's is its last item, from here.

A cancel interrupts the body (KeyboardInterrupt, worker._cancel) or the wait for the
owner's answer; the generator is closed either way, so its `finally` blocks run.
"""

from __future__ import annotations

import threading
from typing import Any

from . import protocol as P
from .actors import ActorExitRequest
from .core.generators import item_id
from .exceptions import ConnectionLost, RayTaskError, TaskCancelledError
from .object_ref import ObjectRef
from .object_ref_generator import DynamicObjectRefGenerator
from .serialization import capture_error, dumps_inline

# The worker (worker.Worker) is `Any` here: naming its class would make these two
# modules import each other.
Worker = Any


def store_value(
    worker: Worker, oid: bytes, value: Any, msg: P.PushTask, raising: bool = False
) -> P.TaskReturn:
    """One yielded value as a return of the task (CoreWorker.store_return, as a task's
    returns). A value that does not pickle is an error value, or with `raising` the
    generator's error (a streamed item: Ray ends the stream there)."""
    try:
        return worker.cw.store_return(oid, value, msg.owner)  # type: ignore[no-any-return]
    except Exception as exc:
        if raising:
            raise
        return P.TaskReturn(oid, P.ERROR, capture_error(exc, msg.name, worker.pid), {})


def error_blob(worker: Worker, msg: P.PushTask, exc: BaseException) -> bytes:
    """How the generator's failure reads at get: cancelled, or the exception it raised."""
    if msg.task_id in worker.cancelled:
        worker.cancelled.discard(msg.task_id)
        return dumps_inline(TaskCancelledError(msg.task_id.hex()))
    if isinstance(exc, RayTaskError):
        return dumps_inline(RayTaskError(exc.function_name, exc.traceback_str, exc.cause, exc.pid))
    return capture_error(exc, msg.name, worker.pid)


def _close(gen: Any) -> None:
    try:
        gen.close()
    except Exception:
        pass  # it yielded in its finally, say: nothing more to run


def _count_error(msg: P.PushTask, got: int) -> ValueError:
    """As Ray words it (a generator that yields fewer values than num_returns)."""
    return ValueError(f"Task returned {got} objects, but num_returns={len(msg.return_ids)}.")


def _too_many(msg: P.PushTask) -> None:
    """A generator yielded more than num_returns values: as in Ray, the returns stand and
    the worker only says so (in the caller's log, as the task's output)."""
    import sys

    print(
        f"Unhandled error: Task {msg.name} returned more than "
        f"num_returns={len(msg.return_ids)} objects; the first {len(msg.return_ids)} are its "
        "returns. Yield exactly num_returns values, or use num_returns='streaming'.",
        file=sys.stderr,
    )


def run(worker: Worker, conn: Any, msg: P.PushTask, gen: Any) -> list[P.TaskReturn]:
    """Run a generator task's body (sync) to its end: the returns for TaskDone."""
    if not hasattr(gen, "__next__"):  # an async generator function run as a task
        gen = _sync_of(gen)
    if msg.generator == P.GENERATOR_FIXED:
        return _fixed(worker, msg, gen)
    index = 0
    wait = msg.backpressure > 0
    generator_id = msg.return_ids[0]
    try:
        for value in gen:
            item = store_value(worker, item_id(msg.task_id, index), value, msg, raising=True)
            if wait:  # the owner answers once we may go on
                request_item(worker, conn, P.GeneratorItem(generator_id, index, item))
            else:
                send_item(worker, conn, P.GeneratorItem(generator_id, index, item))
            index += 1
    except ActorExitRequest:
        _close(gen)
        raise
    except BaseException as exc:
        _close(gen)
        return _failed(worker, conn, msg, exc, index)
    return [store_value(worker, generator_id, _result(msg, index), msg)]


def send_item(worker: Worker, conn: Any, msg: P.GeneratorItem) -> None:
    """Send a streamed item; one that cannot be sent never reached the owner (gone): its
    value is dropped from the store (CoreWorker.drop_returns)."""
    try:
        conn.send(msg)
    except ConnectionLost:
        worker.cw.drop_returns([msg.item])
        raise


def request_item(worker: Worker, conn: Any, msg: P.GeneratorItem) -> None:
    """Send a streamed item as a request (backpressure) and wait for the owner's answer:
    it comes once the owner lets the generator go on."""
    answered = threading.Event()
    answer: list[Any] = []

    def on_answer(reply: Any) -> None:
        answer.append(reply)
        answered.set()

    rid = ask_item(worker, conn, msg, on_answer)
    try:
        answered.wait()
    except BaseException:  # (a cancel: KeyboardInterrupt) no answer is awaited now
        conn.forget(rid)
        raise
    if isinstance(answer[0], ConnectionLost):
        raise answer[0]


def ask_item(worker: Worker, conn: Any, msg: P.GeneratorItem, on_answer: Any) -> Any:
    """Send a streamed item as a request (request_async: its id). One whose send fails
    never reached the owner: dropped, as send_item's; one whose answer never comes (the
    connection went after the send) may have reached it: left to the owner's node."""
    try:
        return conn.request_async(msg, on_answer)
    except ConnectionLost:
        worker.cw.drop_returns([msg.item])
        raise


def _failed(
    worker: Worker, conn: Any, msg: P.PushTask, exc: BaseException, index: int
) -> list[P.TaskReturn]:
    """The generator raised after `index` items (or was cancelled, or its owner went).

    Streaming: the generator ref's error; the owner makes the task's own exception its
    next item once it knows it will not retry it (core/generators: _error_item). Dynamic:
    the exception is the last item here, and the value lists it (as in Ray)."""
    generator_id = msg.return_ids[0]
    blob = error_blob(worker, msg, exc)
    if msg.generator != P.GENERATOR_DYNAMIC or isinstance(exc, KeyboardInterrupt):
        return [P.TaskReturn(generator_id, P.ERROR, blob, {})]
    item = P.TaskReturn(item_id(msg.task_id, index), P.ERROR, blob, {})
    try:
        conn.send(P.GeneratorItem(generator_id, index, item))
    except ConnectionLost:
        pass  # the owner is gone: nobody reads the value either
    return [store_value(worker, generator_id, _result(msg, index + 1), msg)]


async def run_async(worker: Worker, conn: Any, msg: P.PushTask, agen: Any) -> list[P.TaskReturn]:
    """Run an async generator method of an async actor to its end (on its event loop)."""
    if msg.generator == P.GENERATOR_FIXED:
        values: list[Any] = []
        n = len(msg.return_ids)
        try:
            async for value in agen:
                if len(values) == n:
                    _too_many(msg)
                    break
                values.append(value)
        except ActorExitRequest:
            await _aclose(agen)
            raise
        except BaseException as exc:
            await _aclose(agen)
            return _fixed_returns(worker, msg, values, exc)
        await _aclose(agen)
        return _fixed_returns(worker, msg, values, None)
    import asyncio

    generator_id = msg.return_ids[0]
    wait = msg.backpressure > 0
    loop = asyncio.get_running_loop()
    index = 0
    try:
        async for value in agen:
            item = store_value(worker, item_id(msg.task_id, index), value, msg, raising=True)
            if wait:  # the owner's answer, without holding up the actor's other calls
                answer = loop.create_future()
                rid = ask_item(
                    worker,
                    conn,
                    P.GeneratorItem(generator_id, index, item),
                    lambda reply, answer=answer: loop.call_soon_threadsafe(_settle, answer, reply),
                )
                try:
                    reply = await answer
                except BaseException:  # (cancelled) no answer is awaited now
                    conn.forget(rid)
                    raise
                if isinstance(reply, ConnectionLost):
                    raise reply
            else:
                send_item(worker, conn, P.GeneratorItem(generator_id, index, item))
            index += 1
    except ActorExitRequest:
        await _aclose(agen)
        raise
    except BaseException as exc:
        await _aclose(agen)
        return _failed(worker, conn, msg, exc, index)
    return [store_value(worker, generator_id, _result(msg, index), msg)]


def _settle(future: Any, reply: Any) -> None:
    if not future.done():
        future.set_result(reply)


async def _aclose(agen: Any) -> None:
    try:
        await agen.aclose()
    except Exception:
        pass


def _result(msg: P.PushTask, count: int) -> Any:
    """The generator ref's value once the body ended: a dynamic task's refs, else None."""
    if msg.generator != P.GENERATOR_DYNAMIC:
        return None
    # Uncounted here: the caller owns them (the worker lends nothing for them).
    return DynamicObjectRefGenerator(
        [ObjectRef(item_id(msg.task_id, i), msg.owner, _count=False) for i in range(count)]
    )


def _fixed(worker: Worker, msg: P.PushTask, gen: Any) -> list[P.TaskReturn]:
    """num_returns=N: the yields are the returns, as in Ray: an exception after k yields
    leaves k values and the error in the rest; fewer yields, the count's error in the
    rest; more, the first N stand (the rest of the body does not run)."""
    values: list[Any] = []
    n = len(msg.return_ids)
    try:
        for value in gen:
            if len(values) == n:
                _too_many(msg)
                break
            values.append(value)
    except ActorExitRequest:
        _close(gen)
        raise
    except BaseException as exc:
        _close(gen)
        return _fixed_returns(worker, msg, values, exc)
    _close(gen)
    return _fixed_returns(worker, msg, values, None)


def _fixed_returns(
    worker: Worker, msg: P.PushTask, values: list[Any], exc: BaseException | None
) -> list[P.TaskReturn]:
    ids = msg.return_ids
    if exc is None and len(values) < len(ids):
        exc = _count_error(msg, len(values))
    out = [store_value(worker, oid, value, msg) for oid, value in zip(ids, values, strict=False)]
    if exc is not None:
        blob = error_blob(worker, msg, exc)
        out.extend(P.TaskReturn(oid, P.ERROR, blob, {}) for oid in ids[len(out) :])
    return out


def _sync_of(agen: Any) -> Any:
    """Iterate an async generator from sync code, on an event loop of its own."""
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return
    finally:
        try:
            loop.run_until_complete(agen.aclose())
        finally:
            loop.close()
