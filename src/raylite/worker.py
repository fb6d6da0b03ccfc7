"""The worker process: runs tasks and actor methods pushed by their owners.

    owner ──PushTask──▶ reader thread ──queue──▶ main thread: run ──TaskDone──▶ owner
                                                     │
                      fd 1, 2 (pipes) ──▶ node manager ──LogLines──▶ driver

A worker is forked by its node's fork server (node/forkserver.py; worker_main never
returns). Its stdout and stderr are pipes the node manager reads; Python-level writes
are prefixed per line with `(task_or_class_name pid=N)`, as Ray prints them in the
driver.

An actor's calls run on the main thread one at a time; an async actor's on its event
loop thread, a threaded one's (max_concurrency > 1) on a pool; an actor with
concurrency groups has one executor per group (a loop or a pool) and each call goes
to its group's. A generator function's body runs in worker_generators (its yields go to
the owner one by one: GeneratorItem).
"""

from __future__ import annotations

import _signal
import contextlib
import functools
import os
import queue
import signal
import sys
import threading
import time
from typing import Any, NoReturn

from . import metric_values, task_events, worker_generators
from . import protocol as P
from .actors import ActorExitRequest
from .config import CONFIG
from .core.core_worker import CoreWorker
from .core.tasks import task_events_off
from .exceptions import (
    ActorDiedError,
    MessageTooLargeError,
    RayTaskError,
    TaskCancelledError,
)
from .object_ref import ObjectRef
from .serialization import (
    capture_error,
    dumps_inline,
    loads_call,
    loads_function_limited,
    loads_inline,
)
from .transport_lead import Doorbell, LeadableConnection, python_handled
from .worker_concurrency import ActorConcurrency
from .worker_output import PrefixedStream

_EXIT = object()


def _ready() -> bool:
    """actor.__ray_ready__.remote(): True once the actor is constructed."""
    return True


def _exit_process(exc: SystemExit) -> NoReturn:
    """sys.exit() in a task or actor method ends the worker, as in Ray: the owner
    sees the process go (a task is retried, then WorkerCrashedError; an actor dies)."""
    code = exc.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def _label(actor: Any) -> str | None:
    """The actor's own __repr__, which Ray uses in its output prefix; None if it has none."""
    if type(actor).__repr__ is object.__repr__:
        return None
    try:
        return repr(actor)
    except Exception:
        return None


class Worker(ActorConcurrency):
    def __init__(
        self,
        worker_id: bytes,
        node_address: str,
        token: bytes,
        session_dir: str,
        listen_ip: str | None = None,
    ) -> None:
        self.tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Between tasks the main thread reads the connection the last task came on
        # itself (transport_lead: no reader thread to wake); whoever queues a task from
        # another thread meanwhile rings the doorbell.
        self._lead_conn: LeadableConnection | None = None
        self._in_task = False  # the main thread runs a task (not a pool thread's)
        self._leading = False
        self._doorbell = Doorbell()
        self._main_ident = threading.get_ident()
        self._gpus_shown: list[int] | None = None  # CUDA_VISIBLE_DEVICES set for these
        self.functions: dict[bytes, Any] = {}
        # max_calls: calls left of each function that has a limit (the worker exits
        # once one reaches 0); empty in most workers, so a task costs one truth test.
        self.calls_left: dict[bytes, int] = {}
        self.actor: Any = None
        self.actor_class_name: str | None = None
        self.actor_label: str | None = None  # its __repr__, if it has one: output prefixes
        self.actor_dead: bytes | None = None
        self.exit_cause: str | None = None
        self.exit_reason: str | None = None  # why an actor exits (exit_actor, or no handle)
        self.loop: Any = None  # async actors: their event loop (own thread)
        self.semaphore: Any = None
        self.pool: Any = None  # threaded actors (max_concurrency > 1)
        # Actors with concurrency groups: group name ("" the default) -> a thread pool,
        # or (event loop, semaphore) for an async actor; and each method's own group.
        self.groups: dict[str, Any] | None = None
        self.method_groups: dict[str, str] = {}
        self.cancelled: set[bytes] = set()  # task ids cancelled before or while running
        self.coroutines: dict[bytes, Any] = {}  # async actor calls running: their asyncio tasks
        self.running_task: bytes | None = None
        self.task_began = 0.0  # time.time() the running task began
        self._watching = False  # a _watch is armed: tasks wait behind a running one
        self._held = 0  # task replies held (Connection.hold) on _held_on
        # Function code that came with a task that never ran (_keep_code), by function id.
        self.unrun_code: dict[bytes, bytes] = {}
        self._held_on: Any = None
        self.display_name = "raylite::IDLE"
        self.events: list[P.TaskEvent] = []
        self.events_lock = threading.Lock()
        self.flush_lock = threading.Lock()
        # Tasks running now (task id -> (msg, start)), and those a flush reported running.
        self.active: dict[bytes, tuple[P.PushTask, float]] = {}
        self.reported: set[bytes] = set()
        self.cw = CoreWorker(
            mode="worker",
            node_address=node_address,
            token=token,
            session_dir=session_dir,
            worker_id=worker_id,
            listen_ip=listen_ip,
            task_handler=self._pushed,
            nm_handler=self._nm_message,
        )
        self.cw.on_cancel_task = self._cancel
        self.cw.on_blocked = self._bounce_queued
        self.cw.cancelled_tasks = self.cancelled  # RuntimeContext.is_canceled() reads it
        self.pid = os.getpid()
        self._schedule_flush()

    # --- events -----------------------------------------------------------------
    def _schedule_flush(self) -> None:
        self.cw.timers.call_later(CONFIG.event_flush_s, self._periodic_flush)

    def _periodic_flush(self) -> None:
        self.flush_events()
        if not self.cw.closed:
            self._schedule_flush()

    def flush_events(self, conn: Any = None) -> None:
        # One flush at a time, from taking the events to sending them: a flush that
        # returns has sent everything recorded before it (a worker about to exit relies
        # on it, while the periodic one may be running on the timer thread).
        with self.flush_lock:
            with self.events_lock:
                events, self.events = self.events, []
                if len(self.reported) < len(self.active):  # tell the node what runs now, once
                    for task_id, (msg, start) in list(self.active.items()):
                        if task_id not in self.reported:
                            self.reported.add(task_id)
                            if not task_events_off(msg.actor_options):
                                events.append(self._event(msg, start, None, None))
            metrics = metric_values.PROCESS.drain()
            if events or metrics:
                (conn or self.cw.nm).send(P.TaskEvents(events, metrics))

    def _nm_message(self, conn: Any, msg: Any, rid: int) -> None:
        if isinstance(msg, P.FlushEvents):
            self.flush_events(conn)  # conn: self.cw may not be assigned yet
            conn.reply(rid, P.Ok())

    # --- the loop -------------------------------------------------------------------
    def run(self) -> None:
        while True:
            try:
                item = self._next_item()
            except KeyboardInterrupt:  # a cancel() that arrived after its task ended
                continue
            if item is _EXIT:  # an async method called exit_actor()
                self._exit_actor()
                return
            conn, msg, rid = item
            self._lead_conn = conn if type(conn) is LeadableConnection else None
            if msg.actor_id is not None and not msg.actor_creation and self._concurrent(item):
                continue
            self._in_task = True  # a SIGINT now interrupts it (_interrupt)
            try:
                returns, start, end = self.execute(msg, conn)
            finally:
                self._in_task = False
            if msg.actor_creation and self.actor is not None:
                self._setup_concurrency(msg)
            if self.calls_left and self._last_call(msg):
                self._finish_and_exit(conn, msg, rid, returns, start, end)
                return
            self._finish(conn, msg, rid, returns, start, end)
            if self.exit_cause is not None:
                self._exit_actor()
                return

    def _next_item(self) -> Any:
        """The next task for the main loop; while none waits, this thread leads the
        connection the last task came on (reads and handles what comes on it itself)."""
        conn = self._lead_conn
        if conn is not None:
            self._leading = True  # before the queue is looked at: see _queue
            try:
                while not conn.closed:
                    try:
                        return self.tasks.get_nowait()
                    except queue.Empty:
                        pass
                    if not self._may_lead():
                        break
                    if not conn.lead(
                        self._doorbell, CONFIG.lead_wait_s, self._has_task, poll=self._polls
                    ):
                        break  # another thread leads it
            finally:
                self._leading = False
            self._lead_conn = None
        return self.tasks.get()

    @staticmethod
    def _may_lead() -> bool:
        """Whether no Python signal handler may raise in the main thread while it
        handles what it reads: none is set but ours for SIGINT, which drops a SIGINT
        that comes when no task runs (_interrupt). A task that set one (SIGALRM for a
        timeout, say) makes the main thread wait for tasks as before, not lead."""
        handled = python_handled()
        if _signal.getsignal(signal.SIGINT) is _interrupt:
            handled.discard(signal.SIGINT)
        return not handled

    def _has_task(self) -> bool:
        return not self.tasks.empty()

    @property
    def _polls(self) -> bool:
        """Whether a lead may poll (transport_lead): not while an async or threaded
        actor's calls run on other threads, whose GIL a polling main thread would take."""
        return self.loop is None and self.pool is None and self.groups is None

    def _queue(self, item: Any) -> None:
        """Queue for the main loop, waking it if it leads a connection now."""
        self.tasks.put(item)
        if self._leading and threading.get_ident() != self._main_ident:
            self._doorbell.ring()

    def _pushed(self, conn: Any, msg: P.PushTask, rid: int) -> None:
        """A PushTask (a reader thread, or the main thread leading): queued for the main
        loop. One that comes while a task runs was pipelined behind it: a watch sends it
        back if that task runs long."""
        self._queue((conn, msg, rid))
        if self.running_task is not None and not self._watching and msg.actor_id is None:
            self._arm_watch()

    def _arm_watch(self) -> None:
        self._watching = True
        self.cw.timers.call_later(CONFIG.pipeline_wait_s, self._watch)

    def _watch(self) -> None:
        """Timer thread, while pushed tasks wait: once the running task has run for
        pipeline_wait_s, what waits behind it goes back to its owners (TaskBounced),
        so a task pushed behind a long one (which may wait for it, by a file, a socket)
        runs elsewhere as if never pipelined."""
        wait = CONFIG.pipeline_wait_s
        if self.running_task is not None and time.time() - self.task_began >= wait:
            self._bounce_queued()
        if self.tasks.empty():
            self._watching = False
            if self.tasks.empty():
                return
            self._watching = True  # a push came as we stopped: keep watching
        self.cw.timers.call_later(wait, self._watch)

    def _flush_held(self) -> None:
        """Send the replies held for the tasks that ran before the running one."""
        conn, self._held_on, self._held = self._held_on, None, 0
        if conn is not None:
            with contextlib.suppress(Exception):  # the owner is gone: nobody wants them
                conn.flush()

    def _bounce_queued(self) -> None:
        """The running task blocks (get, wait): the tasks its owner pushed behind it
        (pipelined: lease_queue.pipeline) go back unrun, TaskBounced, to run on other
        leases; one may be what the blocked task waits for. An actor's calls stay."""
        if self.actor is not None:
            return
        if self._held:  # the tasks before it are done: their owners hear it now
            self._flush_held()
        kept = []
        while True:
            try:
                item = self.tasks.get_nowait()
            except queue.Empty:
                break
            if item is _EXIT or item[1].actor_id is not None:
                kept.append(item)
                continue
            conn, msg, rid = item
            self._keep_code(msg)
            with contextlib.suppress(Exception):  # its owner is gone: nobody wants it
                conn.reply(rid, P.TaskBounced(self.pid))
        for item in kept:
            self._queue(item)

    def _keep_code(self, msg: P.PushTask) -> None:
        """A task that never runs here (bounced, cancelled first) may carry its
        function's code, which its owner sends a connection once: kept for the next."""
        if msg.function_blob is not None and msg.function_id not in self.functions:
            self.unrun_code[msg.function_id] = msg.function_blob

    def _last_call(self, msg: P.PushTask) -> bool:
        """Count a call of a function with max_calls: True if it was its last here."""
        left = self.calls_left.get(msg.function_id)
        if left is None or msg.actor_id is not None:
            return False
        self.calls_left[msg.function_id] = left - 1
        return left <= 1

    def _finish_and_exit(
        self,
        conn: Any,
        msg: P.PushTask,
        rid: int,
        returns: list[P.TaskReturn],
        start: float,
        end: float,
    ) -> None:
        """The function's max_calls-th call here: its event goes to the node first, then
        the reply says the worker exits (its owner gives the lease back, killing it, so
        the node never hands it out again), and then the process ends (worker_main)."""
        cw = self.cw
        if cw._unmapped or cw._released:
            cw._process_released()
        self._record(msg, returns, start, end)
        self.flush_events()
        try:
            conn.reply(rid, P.TaskDone(returns, self.pid, True))
        except Exception:  # the owner is gone: nobody wants it (as in _finish)
            self.cw.drop_returns(returns)

    def _exit_actor(self) -> None:
        """exit_actor() was called: tell the head why, then the process ends."""
        self.flush_events()
        self.cw.nm.send(
            P.ActorStateChanged(
                self.cw.current_actor_id or b"",
                "DEAD",
                self.actor_class_name or "",
                "",
                self.pid,
                self.exit_cause or "",
                0,
            )
        )

    def _exit_requested(self, msg: P.PushTask) -> list[P.TaskReturn]:
        why = self.exit_reason or "it called exit_actor()"
        cause = f"The actor {self.actor_class_name} exited: {why}."
        self.actor_dead = dumps_inline(ActorDiedError(cause, cause))
        self.exit_cause = cause
        return [P.TaskReturn(oid, P.ERROR, self.actor_dead, {}) for oid in msg.return_ids]

    # --- concurrent actors: async methods on an event loop, or a thread pool ---------
    def _run_threaded(self, conn: Any, msg: P.PushTask, rid: int) -> None:
        returns, start, end = self.execute(msg, conn)
        self._finish(conn, msg, rid, returns, start, end)

    async def _run_async(self, conn: Any, msg: P.PushTask, rid: int, semaphore: Any = None) -> None:
        import asyncio  # loaded already: this worker runs an event loop

        start = time.time()
        self.active[msg.task_id] = (msg, start)
        self.cw.current_task_id = msg.task_id  # this asyncio task's own context
        self.coroutines[msg.task_id] = asyncio.current_task()
        try:
            if msg.task_id in self.cancelled:  # cancelled before it started
                raise asyncio.CancelledError
            fn, args, kwargs = self._resolve(msg)
            async with semaphore or self.semaphore:
                if msg.generator:  # an async generator method
                    returns = await worker_generators.run_async(
                        self, conn, msg, fn(*args, **kwargs)
                    )
                else:
                    result = await fn(*args, **kwargs)
                    returns = self._store_returns(msg, result, msg.name)
        except ActorExitRequest:
            returns = self._exit_requested(msg)
            self._queue(_EXIT)
        except BaseException as exc:
            if isinstance(exc, SystemExit):
                _exit_process(exc)
            if isinstance(exc, asyncio.CancelledError) and msg.task_id in self.cancelled:
                # As Ray: a RayTaskError that is also a TaskCancelledError.
                exc = TaskCancelledError(msg.task_id.hex())
            returns = self._error(msg, exc, msg.name)
        finally:
            self.coroutines.pop(msg.task_id, None)
            self.cancelled.discard(msg.task_id)
        self._finish(conn, msg, rid, returns, start, time.time())

    def _finish(
        self,
        conn: Any,
        msg: P.PushTask,
        rid: int,
        returns: list[P.TaskReturn],
        start: float,
        end: float,
    ) -> None:
        """Reply to the owner and record the task event."""
        # The task's arguments are gone: say so before the owner hears the task ended
        # and frees them, so the store can reuse their memory at once (a worker that
        # stays idle would otherwise keep them pinned until its next task).
        cw = self.cw
        if cw._unmapped or cw._released:
            cw._process_released()
        if cw.unregistered:
            cw.register_deferred()
        try:
            if msg.actor_id is None and not self.tasks.empty() and self._held < CONFIG.held_replies:
                # A pushed task runs next, at once: this reply goes out with the next
                # send (its reply, or the watch's flush if it runs long). Should it
                # never go (its owner went first), its stored values are dropped.
                lost = functools.partial(cw.drop_returns, returns)
                conn.hold(P.TaskDone(returns, self.pid), rid, on_lost=lost)
                self._held += 1
                self._held_on = conn
            else:
                conn.reply(rid, P.TaskDone(returns, self.pid))  # held ones go first
                if self._held:
                    self._flush_held()
        except MessageTooLargeError as exc:  # an error's text over 2 GiB: say so instead
            returns = self._error(msg, exc, msg.name)
            with contextlib.suppress(Exception):
                conn.reply(rid, P.TaskDone(returns, self.pid))
        except Exception:  # the owner is gone; nobody wants this result
            # Not sent: a failed write is the last frame of its send, so the owner
            # never read this reply. (Held replies that went with it: their on_lost
            # drops those the kernel did not take whole, transport._send_held.)
            self.cw.drop_returns(returns)
        self._record(msg, returns, start, end)

    def _record(
        self, msg: P.PushTask, returns: list[P.TaskReturn], start: float, end: float
    ) -> None:
        """The task's event, sent at the next flush (none for enable_task_events=False:
        core/tasks.task_events_off); the task is no longer running."""
        options = msg.actor_options
        if options is not None and task_events_off(options):
            with self.events_lock:
                self.active.pop(msg.task_id, None)
                self.reported.discard(msg.task_id)
        else:
            error = None
            if returns and returns[0].kind == P.ERROR:
                error = task_events.error_info(returns[0].data)
            event = self._event(msg, start, end, error)
            with self.events_lock:
                self.events.append(event)
                self.active.pop(msg.task_id, None)
                self.reported.discard(msg.task_id)
        if self.cancelled:
            self.cancelled.discard(msg.task_id)

    def _event(
        self, msg: P.PushTask, start: float, end: float | None, error: list[str] | None
    ) -> P.TaskEvent:
        """The task's event (end None: still running)."""
        kind = (
            "actor_creation" if msg.actor_creation else ("actor_task" if msg.actor_id else "task")
        )
        fn = self.functions.get(msg.function_id) if msg.actor_id is None else None
        return P.TaskEvent(
            msg.name,
            msg.task_id,
            start,
            end,
            self.pid,
            self.cw.worker_id,
            kind,
            msg.parent_task_id,
            [d.object_id for d in msg.deps],
            msg.return_ids,
            msg.actor_id,
            msg.job_id,
            error,
            getattr(fn, "__name__", msg.name),  # the function's own name (name= may differ)
            self.cw.node_id,
        )

    def _cancel(self, task_id: bytes, recursive: bool = False) -> None:
        """Runs on a reader thread: interrupt the task if it is the one running.

        recursive: first cancel the tasks it submitted (this process owns them), and
        theirs in turn, as Ray's cancel(recursive=True) does.
        """
        if recursive:
            for child in list(self.cw.children.get(task_id, ())):
                self.cw.cancel(ObjectRef(child, self.cw.address), False, True)
        self.cancelled.add(task_id)
        running = self.coroutines.get(task_id)
        if running is not None:  # an async actor's call: CancelledError in the coroutine
            running.get_loop().call_soon_threadsafe(running.cancel)
            return
        # A sync actor's call is not interrupted, as in Ray: it may poll is_canceled().
        if self.running_task == task_id and self.actor is None:
            # A real SIGINT to the main thread: it also breaks a blocking sleep or read,
            # and the task sees KeyboardInterrupt, as in Ray.
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    def _resolve(self, msg: P.PushTask) -> tuple[Any, Any, dict[str, Any]]:
        """The callable and the arguments of a pushed task, dependencies filled in."""
        if msg.actor_id is not None and not msg.actor_creation:
            try:
                fn = getattr(self.actor, msg.function_id.decode())
            except AttributeError:
                fn = self._special_method(msg.function_id.decode())
        else:
            fn = self.functions.get(msg.function_id)
            if fn is None:
                blob = msg.function_blob or self.unrun_code.pop(msg.function_id, None)
                if blob is None:
                    raise RuntimeError(f"worker has no code for {msg.name}")
                fn, limit = loads_function_limited(blob)
                self.functions[msg.function_id] = fn
                if limit:
                    self.calls_left[msg.function_id] = limit
        # Refs in them: their borrows are told only if they outlive the task (refs.py).
        deferring = self.cw.deferring
        deferring.on = True
        try:
            args, kwargs = loads_call(msg.args_blob)
            if msg.deps:
                args = list(args)
                for d in msg.deps:
                    value = self.cw._value(d.object_id, d.kind, d.data)
                    if isinstance(d.position, int):
                        args[d.position] = value
                    else:
                        kwargs[d.position] = value
        finally:
            deferring.on = False
        return fn, args, kwargs

    def _special_method(self, name: str) -> Any:
        """An actor call that names no plain method: __ray_ready__, or a method with the
        concurrency group its .options() named (after a NUL)."""
        if name == "__ray_ready__":
            return _ready
        if name == "__ray_terminate__":  # its owner: no handle is left (after its calls)
            return self._terminate
        name, _, group = name.partition("\0")
        if group and (self.groups is None or group not in self.groups):
            raise ValueError(
                f"The actor {self.actor_class_name} has no concurrency group {group!r}: "
                "define it in @remote(concurrency_groups={...})."
            )
        return getattr(self.actor, name)

    def _terminate(self) -> None:
        self.exit_reason = "all references to it were removed (its handles went out of scope)"
        raise ActorExitRequest(0)

    def execute(self, msg: P.PushTask, conn: Any = None) -> tuple[list[P.TaskReturn], float, float]:
        """Run a pushed task; `conn`, the owner's connection, takes a generator's items."""
        cw = self.cw
        start = time.time()
        name = msg.name
        if msg.actor_id is not None and not msg.actor_creation and self.actor_dead is not None:
            return (
                [P.TaskReturn(oid, P.ERROR, self.actor_dead, {}) for oid in msg.return_ids],
                start,
                start,
            )
        if msg.task_id in self.cancelled:
            self.cancelled.discard(msg.task_id)
            self._keep_code(msg)
            return self._cancelled(msg), start, start
        try:
            fn, args, kwargs = self._resolve(msg)
        except BaseException as exc:  # a failed dependency or unpicklable code
            return self._error(msg, exc, name), start, time.time()

        cw.current_task_id = msg.task_id
        cw.current_task_name = name
        cw.job_id = msg.job_id
        if msg.actor_id is None or msg.actor_creation:
            cw.current_gpu_ids = list(msg.gpu_ids)
            options = msg.actor_options  # a task's: only its placement group, if any
            cw.placement_group = options and options.get("placement_group")
            cw.namespace = msg.namespace  # the job's: named actors here are looked up in it
        if msg.actor_creation:
            cw.current_actor_id = msg.actor_id
            cw.actor_options = msg.actor_options or {}
            self.actor_class_name = getattr(fn, "__name__", name)
        if (msg.actor_id is None or msg.actor_creation) and msg.gpu_ids != self._gpus_shown:
            # Set only when the task's GPUs differ from the last task's, as Ray does
            # (last_set_gpu_ids): os.environ costs ~2 us a look, per task otherwise.
            visible = ",".join(str(g) for g in msg.gpu_ids)
            if os.environ.get("CUDA_VISIBLE_DEVICES") != visible:  # putenv only if it changes
                os.environ["CUDA_VISIBLE_DEVICES"] = visible
            self._gpus_shown = list(msg.gpu_ids)
        self.display_name = self.actor_label or self.actor_class_name or name
        self.active[msg.task_id] = (msg, start)
        try:
            self.task_began = start
            self.running_task = msg.task_id
            if not self._watching and not self.tasks.empty() and msg.actor_id is None:
                self._arm_watch()  # pushed behind it before it began: _pushed saw no task
            if msg.actor_creation:
                self.actor = cw.actor_instance = fn(*args, **kwargs)
                self.actor_label = _label(self.actor)
                result: Any = None
            else:
                result = fn(*args, **kwargs)
                if msg.generator:  # its body runs here, cancellable (worker_generators)
                    returns = worker_generators.run(self, conn, msg, result)
                    self.running_task = None
                    return returns, start, time.time()
            self.running_task = None
        except ActorExitRequest:
            self.running_task = None
            returns = self._exit_requested(msg)
            if threading.current_thread() is not threading.main_thread():
                self._queue(_EXIT)  # threaded or loop-run call: the main loop ends us
            return returns, start, time.time()
        except BaseException as exc:
            self.running_task = None
            if isinstance(exc, SystemExit):
                _exit_process(exc)
            if msg.task_id in self.cancelled:
                self.cancelled.discard(msg.task_id)
                return self._cancelled(msg), start, time.time()
            returns = self._error(msg, exc, name)
            if msg.actor_creation:
                cause = loads_inline(returns[0].data)
                self.actor_dead = dumps_inline(
                    ActorDiedError(
                        f"The actor {self.actor_class_name} died in its constructor: {cause}", cause
                    )
                )
            return returns, start, time.time()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            cw.current_task_id = None
            cw.children.pop(msg.task_id, None)
            if msg.actor_id is None:
                self.display_name = "raylite::IDLE"
        end = time.time()
        if msg.actor_id is not None and msg.task_id in self.cancelled:
            # A sync actor call cancelled while it ran: it ran to its end (Ray does not
            # interrupt those), but its caller gets TaskCancelledError, as on Ray.
            self.cancelled.discard(msg.task_id)
            return self._cancelled(msg), start, end
        return self._store_returns(msg, result, name), start, end

    def _cancelled(self, msg: P.PushTask) -> list[P.TaskReturn]:
        blob = dumps_inline(TaskCancelledError(msg.task_id.hex()))
        return [P.TaskReturn(oid, P.ERROR, blob, {}) for oid in msg.return_ids]

    def _error(self, msg: P.PushTask, exc: BaseException, name: str) -> list[P.TaskReturn]:
        if isinstance(exc, RayTaskError):
            blob = dumps_inline(
                RayTaskError(exc.function_name, exc.traceback_str, exc.cause, exc.pid)
            )
        else:
            blob = capture_error(exc, name, self.pid)
        return [P.TaskReturn(oid, P.ERROR, blob, {}) for oid in msg.return_ids]

    def _store_returns(self, msg: P.PushTask, result: Any, name: str) -> list[P.TaskReturn]:
        ids = msg.return_ids
        n = len(ids)
        if n == 1:
            values = [result]
        elif n == 0:
            return []
        else:
            try:
                values = list(result)
            except TypeError:
                values = None
            if values is None or len(values) != n:
                err = ValueError(
                    f"Task {name} declared num_returns={n} but returned "
                    f"{type(result).__name__} {'of length ' + str(len(values)) if values else ''}".rstrip()
                )
                return self._error(msg, err, name)
        out: list[P.TaskReturn] = []
        cw = self.cw
        for oid, value in zip(ids, values, strict=True):
            try:
                out.append(cw.store_return(oid, value, msg.owner))
            except Exception as exc:
                out.append(P.TaskReturn(oid, P.ERROR, capture_error(exc, name, self.pid), {}))
        return out


_WORKER: Worker | None = None  # this process's, once worker_main made it


def _interrupt(signum: int, frame: Any) -> None:
    """SIGINT: KeyboardInterrupt in the task the main thread runs (cancel()). Otherwise
    it is dropped: it came after its task ended (or while a pool thread runs an actor
    call, which cancel() does not interrupt), and the main thread may be reading a
    connection then (transport_lead), where it must not be cut short."""
    if _WORKER is not None and not getattr(_WORKER, "_in_task", False):
        return
    raise KeyboardInterrupt


def worker_main(
    worker_id: bytes,
    node_address: str,
    token: bytes,
    session_dir: str,
    out_fd: int,
    err_fd: int,
    listen_ip: str | None = None,
) -> None:
    """Entry point in a freshly forked child; never returns."""
    code = 0
    try:
        import gc

        # The fork server's objects live on in this forked child, owning fd numbers
        # that closerange() below frees and this process reuses. Freezing them keeps
        # the garbage collector from finalising one (closing "its" fd, now ours).
        gc.freeze()

        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        # cancel() interrupts a running task with KeyboardInterrupt (a SIGINT, _cancel);
        # one that comes once its task has ended is dropped (_interrupt).
        signal.signal(signal.SIGINT, _interrupt)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.closerange(3, 65536)
        sys.stdin = open(0)
        global _WORKER
        worker = _WORKER = Worker.__new__(Worker)
        worker.display_name = "raylite::IDLE"
        sys.stdout = PrefixedStream(1, worker)
        sys.stderr = PrefixedStream(2, worker)
        Worker.__init__(worker, worker_id, node_address, token, session_dir, listen_ip)
        from . import api

        api._set_worker_runtime(worker.cw)
        from .runtime_env.spec import RUNTIME_ENV_VAR

        if RUNTIME_ENV_VAR in os.environ:  # a runtime env's worker: its tasks' parent env
            import json

            worker.cw.parent_runtime_env = json.loads(os.environ[RUNTIME_ENV_VAR])
        from .init_options import setup_worker

        setup_worker()  # the job's logging_config and code search path, if it has them
        from .ray_alias import install_fallback

        install_fallback()  # `import ray` in user code gives raylite where Ray is absent
        worker.run()
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
