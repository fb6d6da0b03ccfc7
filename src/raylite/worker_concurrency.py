"""How an actor's calls run beside its main loop: async actors on an event loop of their
own thread (max_concurrency coroutines at once), threaded actors (max_concurrency > 1)
on a thread pool, and concurrency groups, one executor each (Ray's semantics).

Owns ActorConcurrency, the Worker's mixin that sets these up once the actor is made
(_setup_concurrency) and hands each call to its executor (_concurrent); the executors
run a call with the Worker's _run_threaded or _run_async. Not how a call runs (worker's
execute) nor its reply (_finish). A plain actor's calls, and tasks, stay on the main
loop: _concurrent says False.
"""

from __future__ import annotations

import inspect
import threading
from typing import TYPE_CHECKING, Any

from . import protocol as P


def _awaitable(fn: Any, msg: P.PushTask) -> bool:
    """An async actor's call that runs as a coroutine (an async def, or an async
    generator method); other calls of an async actor run on its loop as plain calls."""
    return inspect.iscoroutinefunction(fn) or bool(msg.generator and inspect.isasyncgenfunction(fn))


class ActorConcurrency:
    """The Worker's; the attributes below are the Worker's (set in its __init__)."""

    actor: Any
    actor_dead: bytes | None
    cw: Any
    loop: Any
    semaphore: Any
    pool: Any
    groups: dict[str, Any] | None
    method_groups: dict[str, str]

    if TYPE_CHECKING:  # the Worker's methods the executors run

        def _run_threaded(self, conn: Any, msg: P.PushTask, rid: int) -> None: ...
        async def _run_async(
            self, conn: Any, msg: P.PushTask, rid: int, semaphore: Any = None
        ) -> None: ...

    def _setup_concurrency(self, msg: P.PushTask) -> None:
        options = msg.actor_options or {}
        cls = type(self.actor)
        is_async = any(
            inspect.iscoroutinefunction(m) or inspect.isasyncgenfunction(m)
            for _, m in inspect.getmembers(cls, callable)
        )
        self.cw.actor_is_async = is_async
        if options.get("concurrency_groups"):
            self._setup_groups(cls, is_async, options)
        elif is_async:
            import asyncio

            self.loop = asyncio.new_event_loop()
            limit = options.get("max_concurrency") or 1000
            self.semaphore = asyncio.Semaphore(limit)
            threading.Thread(
                target=self.loop.run_forever, name="raylite-actor-loop", daemon=True
            ).start()
        elif (options.get("max_concurrency") or 1) > 1:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(
                options["max_concurrency"], thread_name_prefix="raylite-actor"
            )

    def _setup_groups(self, cls: type, is_async: bool, options: dict[str, Any]) -> None:
        """One executor per concurrency group, as Ray: an async actor's group is an event
        loop on its own thread limited by a semaphore, a sync actor's a thread pool; the
        default group ("") has max_concurrency (1000 async, 1 sync)."""
        from .actors import concurrency_groups_of

        self.method_groups = concurrency_groups_of(cls)
        default = options.get("max_concurrency") or (1000 if is_async else 1)
        sizes = {"": default, **options["concurrency_groups"]}
        groups: dict[str, Any] = {}
        for name, size in sizes.items():
            label = name or "default"
            if is_async:
                import asyncio

                loop = asyncio.new_event_loop()
                groups[name] = (loop, asyncio.Semaphore(size))
                threading.Thread(
                    target=loop.run_forever, name=f"raylite-actor-{label}", daemon=True
                ).start()
            else:
                from concurrent.futures import ThreadPoolExecutor

                groups[name] = ThreadPoolExecutor(size, thread_name_prefix=f"raylite-{label}")
        self.groups = groups

    def _run_in_group(self, conn: Any, msg: P.PushTask, rid: int) -> None:
        """Run an actor call in its concurrency group: the one its .options() named
        (after a NUL in its method id), else its method's, else the default."""
        groups = self.groups
        assert groups is not None
        method, _, named = msg.function_id.decode().partition("\0")
        group = groups.get(named or self.method_groups.get(method, ""))
        if group is None:  # not a group of this actor: the default fails it (_resolve)
            group = groups[""]
        if isinstance(group, tuple):
            import asyncio

            loop, semaphore = group
            fn = getattr(self.actor, method, None)
            if _awaitable(fn, msg):
                asyncio.run_coroutine_threadsafe(self._run_async(conn, msg, rid, semaphore), loop)
            else:
                loop.call_soon_threadsafe(self._run_threaded, conn, msg, rid)
        else:
            group.submit(self._run_threaded, conn, msg, rid)

    def _concurrent(self, item: Any) -> bool:
        """Run an actor call off the main loop if the actor is async or threaded."""
        conn, msg, rid = item
        if self.actor_dead is not None:
            return False
        if self.loop is not None:
            import asyncio

            fn = getattr(self.actor, msg.function_id.decode(), None)
            if _awaitable(fn, msg):
                asyncio.run_coroutine_threadsafe(self._run_async(conn, msg, rid), self.loop)
            else:  # sync methods of an async actor run on its loop too, as in Ray
                self.loop.call_soon_threadsafe(self._run_threaded, conn, msg, rid)
            return True
        if self.pool is not None:
            self.pool.submit(self._run_threaded, conn, msg, rid)
            return True
        if self.groups is not None:
            self._run_in_group(conn, msg, rid)
            return True
        return False
