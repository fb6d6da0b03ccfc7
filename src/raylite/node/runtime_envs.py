"""A node's runtime environments, the shell: packages kept and served, envs built
before their workers start, idle env workers retired.

Owns the node's EnvAgent (runtime_env/agent.py: the package cache, unpacked packages,
pip virtualenvs under <session>/runtime_resources) and the messages around it:
UploadPackage (a driver's package, kept here and, on a node that is not the head,
passed on to the head, so every node can fetch it by URI), FetchPackage (the head
answers from its cache), PrepareRuntimeEnv (an eager build). It runs the lease book's
StartWorker actions of runtime envs: the env is built (or found built) first, then the
worker forked with its setup; a failed build goes back to the book (env_failed), which
fails the lease requests of that env with the log. Not which worker serves which lease
(lease_book.py), not the forking (pool.py, forkserver.py).

    driver ──UploadPackage──▶ node: cache ──(not the head)──UploadPackage──▶ head: cache
    StartWorker(env) ──agent.setup──▶ start_worker(setup) | book.env_failed(log)
    node ──FetchPackage(uri)──▶ head ──PackageData──▶ node: cache, unpack

The agent is made (and agent.py, with zipfile and the packaging code, imported) on
first use: a program that names no runtime env never loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

from .. import protocol as P
from ..config import CONFIG
from ..runtime_env import spec
from ..transport_async import AsyncConnection
from .lease_book import StartWorker

if TYPE_CHECKING:
    from ..runtime_env.agent import EnvAgent

log = logging.getLogger(__name__)


class RuntimeEnvsMixin:
    """NodeManager's runtime environments; set up by _init_runtime_envs."""

    def _init_runtime_envs(self) -> None:
        self._env_agent: EnvAgent | None = None
        self._idle_marked: set[bytes] = set()
        self._retire_armed = False

    @property
    def env_agent(self) -> EnvAgent:
        if self._env_agent is None:
            from ..runtime_env.agent import EnvAgent

            root = os.path.join(self.session_dir, "runtime_resources")
            self._env_agent = EnvAgent(root, self._fetch_package)
        return self._env_agent

    def close_runtime_envs(self) -> None:
        """Builds in progress stop (their pip processes killed)."""
        if self._env_agent is not None:
            self._env_agent.close()

    async def _fetch_package(self, uri: str) -> bytes:
        from ..runtime_env.agent import SetupFailed

        if self.head is not None or not self.cluster:
            raise SetupFailed(f"The package {uri} was never uploaded to this cluster.")
        reply = await self.head_request(P.FetchPackage(uri))
        if isinstance(reply, P.Failed):
            raise SetupFailed(f"The package {uri} could not be fetched: {reply.reason}")
        return bytes(reply.data)

    def on_upload_package(self, conn: AsyncConnection, msg: P.UploadPackage, rid: int) -> None:
        self.env_agent.store_package(msg.uri, msg.data)
        if self.head is not None or not self.cluster:
            conn.reply(rid, P.Ok())
            return

        async def forward() -> None:  # the head keeps every package: other nodes fetch there
            reply = await self.head_request(msg)
            with contextlib.suppress(Exception):
                conn.reply(rid, reply)

        self.spawn(forward())

    def on_fetch_package(self, conn: AsyncConnection, msg: P.FetchPackage, rid: int) -> None:
        data = self.env_agent.read_package(msg.uri)
        if data is None:
            conn.reply(rid, P.Failed(P.FailCode.NOT_FOUND, f"no package {msg.uri} at the head"))
        else:
            conn.reply(rid, P.PackageData(data))

    def on_prepare_runtime_env(
        self, conn: AsyncConnection, msg: P.PrepareRuntimeEnv, rid: int
    ) -> None:
        key = spec.env_key(msg.runtime_env)
        if key:
            self.env_agent.setup(key, msg.runtime_env)  # a failure shows at its first task

    def start_env_worker(self, action: StartWorker) -> None:
        """Build the env of a StartWorker (or find it built), then fork its worker."""
        lease = action.lease
        key = lease.env_key if lease is not None else action.env_key
        env = lease.runtime_env if lease is not None else action.runtime_env
        assert env is not None
        fut = self.env_agent.setup(key, env)
        if fut.done() and fut.exception() is None:  # built: start it now
            self._start_in_env(action, key, fut)
            return
        fut.add_done_callback(lambda f: self._start_in_env(action, key, f))

    def _start_in_env(self, action: StartWorker, key: str, fut: asyncio.Future[Any]) -> None:
        from ..runtime_env.agent import SetupFailed

        if self.stopping:
            return
        exc = fut.exception() if not fut.cancelled() else SetupFailed("the node is stopping")
        if exc is not None:
            reason = str(exc) if isinstance(exc, SetupFailed) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, SetupFailed):
                log.error("building runtime env %s failed", key, exc_info=exc)
            self.run_lease_actions(self.lease_book.env_failed(key, action.lease, reason))
            return
        self.start_worker(for_request=action.lease, env_key=key, setup=fut.result().to_wire())
        self.env_agent.worker_started(key)
        self._arm_retire()

    def _arm_retire(self) -> None:
        """Look at the envs' idle workers every runtime_env_idle_worker_s: those idle
        at two looks in a row exit."""
        if self._retire_armed:
            return
        self._retire_armed = True
        asyncio.get_running_loop().call_later(CONFIG.runtime_env_idle_worker_s, self._retire)

    def _retire(self) -> None:
        self._retire_armed = False
        book = self.lease_book
        idle = {w.worker_id for pool in book.idle_env.values() for w in pool}
        self.run_lease_actions(book.retire_idle(idle & self._idle_marked))
        self._idle_marked = idle - self._idle_marked
        if any(w.env_key and w.state != "dead" for w in self.workers.values()):
            self._arm_retire()
