"""The worker pool of one node: starting workers, relaying their output, reaping them.

Owns this node's worker processes: a WorkerRec per worker (`workers`, by pid in
`by_pid`), how many to start ahead (`prestart`), the handle to the fork server
that is their parent (`forks`), and recent output of every worker (`worker_logs`,
for `raylite logs`; on the head also other nodes' workers'). Not which lease a
worker serves nor whether it is idle (lease_book.py moves a WorkerRec's state,
lease_id and for_request), not an actor's life (its owner decides, the head
records), not the forking itself (forkserver.py).

    node manager ──start──▶ fork server ──fork──▶ worker ──RegisterClient──▶ node manager
    worker fd 1, 2 ──pipe──▶ on_log ──LogLines──▶ drivers here (and the head, on a cluster)
    fork server ──exited pid──▶ reap ──▶ worker_gone: its lease ends, its actor is reported
                         PROCESS_DIED, what it owned is freed, owners hear ClientDied

A worker: starting -> idle | leased, idle <-> leased, any -> dead when its process
exits (the fork server reports it) or its connection closes, whichever comes first.
Workers are forked by the fork server, a single-threaded process the node manager
forked before it had any thread (forkserver.py says why); the node manager keeps the
read ends of each worker's stdout and stderr pipes and sends the write ends along.
Kills go through the fork server too, so a pid is never signalled after it was reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass, field
from typing import Any

from .. import protocol as P
from ..config import CONFIG, RESOURCE_UNIT
from ..exceptions import ConnectionLost
from ..object_ref import new_id
from ..object_store import drop_pins
from ..task_events import WorkerLogs
from ..transport_async import AsyncConnection
from .forkserver import ForkServer
from .lease_book import Lease, WorkerState
from .statistics import WorkerStat

log = logging.getLogger(__name__)


@dataclass(eq=False)
class WorkerRec:
    worker_id: bytes
    pid: int
    out_fd: int
    err_fd: int
    conn: AsyncConnection | None = None
    address: str = ""
    state: WorkerState = WorkerState.STARTING  # moved by lease_book.py's table
    lease_id: bytes | None = None
    for_request: Lease | None = None
    actor_id: bytes | None = None
    partial: dict[str, str] = field(default_factory=dict)
    env_key: str = ""  # its runtime env's (node/runtime_envs.py); "": the default


class PoolMixin:
    """NodeManager's worker pool; the state below is set by _init_pool."""

    prestart: int
    workers: dict[bytes, WorkerRec]
    by_pid: dict[int, WorkerRec]
    worker_logs: WorkerLogs
    forks: ForkServer | None
    workers_gone: asyncio.Event | None
    memory_monitor: Any  # memory_monitor.py's MemoryMonitor (the NodeManager's)
    store_dir: str

    def _init_pool(self, prestart: int, forks: ForkServer | None) -> None:
        self.prestart = prestart
        self.forks = forks  # None: a node manager that starts no worker (unit tests)
        self.workers = {}
        self.by_pid = {}
        self.worker_logs = WorkerLogs()
        self.workers_gone = None  # set by stop_workers while it waits

    def _start_pool(self) -> None:
        """In the event loop: hear the fork server's reports (exits, its own end)."""
        if self.forks is not None:
            asyncio.get_running_loop().add_reader(self.forks.fileno(), self.reap)

    def start_worker(
        self,
        for_request: Lease | None = None,
        env_key: str = "",
        setup: dict[str, Any] | None = None,
    ) -> None:
        """Fork a worker: for an actor lease, or the pool; of a runtime env (its key,
        its built setup: node/runtime_envs.py) or the default one."""
        if self.forks is None:
            raise RuntimeError("this node manager has no fork server: it starts no worker")
        worker_id = new_id()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            pid = self.forks.start(
                worker_id,
                self.address,
                self.token,
                self.session_dir,
                out_w,
                err_w,
                self.ip if self.cluster else None,
                setup,
                _threads(for_request),
            )
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        loop = asyncio.get_running_loop()
        if self.forks.exits:  # read while waiting for the pid: reap them next
            loop.call_soon(self.reap)
        rec = WorkerRec(worker_id, pid, out_r, err_r, for_request=for_request, env_key=env_key)
        if for_request is not None:
            rec.actor_id = for_request.actor_id
        self.workers[worker_id] = rec
        self.by_pid[pid] = rec
        for fd, stream in ((out_r, "out"), (err_r, "err")):
            os.set_blocking(fd, False)
            loop.add_reader(fd, self.on_log, rec, fd, stream)

    def on_log(self, rec: WorkerRec, fd: int, stream: str) -> None:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
            rest = rec.partial.pop(stream, "")
            if rest:
                self.worker_logs.add(rec.pid, stream, rest)
                self.forward_logs([P.LogLine(stream, rest + "\n")], rec.pid)
            return
        text = rec.partial.get(stream, "") + data.decode("utf-8", "replace")
        head, sep, tail = text.rpartition("\n")
        rec.partial[stream] = tail
        if sep:
            self.worker_logs.add(rec.pid, stream, head)
            self.forward_logs([P.LogLine(stream, head + "\n")], rec.pid)

    def forward_logs(self, lines: list[P.LogLine], pid: int = 0) -> None:
        msg = P.LogLines(lines, pid)
        for conn in self.drivers:
            conn.send(msg)
        if self.cluster:  # drivers on other nodes see it too
            self.to_head(msg)

    def reap(self) -> None:
        """Workers the fork server saw exit; and the fork server, if it exited itself.

        Runs when the fork server's socket is readable, on SIGCHLD (the node manager's
        only child is the fork server) and after a start that read exits."""
        forks = self.forks
        if forks is None:
            return
        while exits := forks.take_exits():  # worker_gone may start workers: read again
            for pid, _status in exits:
                rec = self.by_pid.pop(pid, None)
                if rec is not None:
                    self.worker_gone(rec, "its process exited")
                    # Reaped: only now is its place under the worker cap free.
                    self.run_lease_actions(self.lease_book.process_exited(rec))
        if not self.by_pid and self.workers_gone is not None:
            self.workers_gone.set()
        if forks.closed and forks.pid:
            self.fork_server_gone(forks)

    def fork_server_gone(self, forks: ForkServer) -> None:
        """Its end closed: reap it. Unless the node is stopping, it crashed, and a node
        that cannot start workers is broken: say so and stop (its workers die with it)."""
        with contextlib.suppress(OSError):
            asyncio.get_running_loop().remove_reader(forks.fileno())
        try:
            pid, status = os.waitpid(forks.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = forks.pid, 0
        if pid == 0:
            return  # its socket closed just before it exits: SIGCHLD comes next
        forks.pid = 0  # reaped: its pid may be reused, never wait on it again
        if self.stopping:
            return
        log.error(
            "the fork server (pid %d) exited with status %s: stopping the node",
            pid,
            os.waitstatus_to_exitcode(status),
        )
        self.by_pid.clear()  # its workers are gone with it, or orphans that exit by themselves
        if self.crashed is None:
            self.crashed = ConnectionLost(f"the fork server (pid {pid}) exited")
        self.begin_shutdown()

    def worker_gone(self, rec: WorkerRec, why: str) -> None:
        if rec.state == "dead":
            return
        why = self.memory_monitor.death_cause(rec.worker_id, why)  # killed for memory?
        actions = self.lease_book.worker_died(rec, why)  # dead now; its lease ended
        if rec.env_key:
            self.env_agent.worker_gone(rec.env_key)
        self.task_events.worker_died(rec.pid, f"The worker process (pid={rec.pid}) died: {why}.")
        if rec.actor_id is not None:
            cause = f"The actor's worker process (pid={rec.pid}) died: {why}."
            self.to_head(
                P.ActorStateChanged(rec.actor_id, "PROCESS_DIED", "", "", rec.pid, cause, 0)
            )
        if rec.conn is not None:
            rec.conn.close()
        drop_pins(self.store_dir, rec.pid)  # its mappings went with it
        if rec.actor_id is not None:
            kept = self.kept_actors.pop(rec.actor_id, None)
            if kept is not None:
                kept.close()
        if rec.address:  # a dead owner's objects are lost (Ray: OwnerDiedError)
            for oid in self.store_book.owned_by(rec.address):
                self.free_segment(oid)
            # Owners drop what the dead process borrowed from them.
            notice = P.ClientDied(rec.address)
            self.tell_clients(notice, skip=rec.conn)
            if self.cluster:  # and owners on other nodes
                self.to_head(notice)
            elif self.head is not None:  # one machine: its placement groups go with it
                self.head.pgs.client_died(rec.address)
        self.run_lease_actions(actions)  # the actor lease it started for fails; schedule

    def kill_worker(self, rec: WorkerRec) -> None:
        if rec.state != "dead" and self.forks is not None:
            self.forks.kill(rec.pid, signal.SIGKILL)

    async def stop_workers(self) -> None:
        """SIGTERM every live worker, SIGKILL those left after kill_grace_s, and wait
        until the fork server has reported each exit (worker_gone ran for each)."""
        forks = self.forks
        if forks is None:
            return
        self.workers_gone = asyncio.Event()
        for signum, wait_s in (
            (signal.SIGTERM, CONFIG.kill_grace_s),
            (signal.SIGKILL, CONFIG.kill_wait_s),
        ):
            self.reap()
            if not self.by_pid or forks.closed:
                break
            for pid in list(self.by_pid):
                forks.kill(pid, signum)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.workers_gone.wait(), wait_s)
        self.by_pid.clear()

    def kill_actor_worker(self, actor_id: bytes) -> None:
        for rec in self.workers.values():
            if rec.actor_id == actor_id:
                self.kill_worker(rec)

    def on_kill_actor_worker(self, conn: AsyncConnection, msg: P.KillActorWorker, rid: int) -> None:
        self.kill_actor_worker(msg.actor_id)

    def _worker_stats(self) -> tuple[WorkerStat, ...]:
        """The worker table, copied (for NodeManager.statistics)."""
        logs = self.worker_logs
        return tuple(
            WorkerStat(
                w.worker_id,
                w.pid,
                w.state,
                w.address,
                w.lease_id,
                w.actor_id,
                logs.line_count(w.pid),
            )
            for w in self.workers.values()
        )


def _threads(lease: Lease | None) -> int:
    """A worker's OMP_NUM_THREADS: the whole CPUs of the lease it starts for, at least 1."""
    cpus = (lease.shape.get("CPU", 0) if lease is not None else 0) // RESOURCE_UNIT
    return max(1, int(cpus))
