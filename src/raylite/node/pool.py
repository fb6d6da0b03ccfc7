"""The worker pool of one node: forking workers, relaying their output, reaping them.

Owns this node's worker processes: a WorkerRec per worker (`workers`, by pid in
`by_pid`), the idle ones (`idle`), how many to start ahead (`prestart`), and recent
output of every worker (`worker_logs`, for `raylite logs`; on the head also other
nodes' workers'). Not which lease a worker serves (leases.py), not an actor's life
(its owner decides, the head records).

    node manager ──fork──▶ worker ──RegisterClient──▶ node manager: idle, or its lease
    worker fd 1, 2 ──pipe──▶ on_log ──LogLines──▶ drivers here (and the head, on a cluster)
    SIGCHLD ──▶ reap ──▶ worker_gone: its lease ends, its actor is reported PROCESS_DIED,
                         what it owned is freed, owners hear ClientDied

A worker: starting -> idle | leased, idle <-> leased, any -> dead when its process
exits. Workers are forked from the event loop's thread (manager.py says why that is
safe with the executor's threads about).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, field
from typing import Any

from .. import protocol as P
from ..object_ref import new_id
from ..task_events import WorkerLogs
from ..transport import AsyncConnection

# leases.py imports this module for WorkerRec: naming it here, even for type checking, would be an import cycle.
LeaseReq = Any


@dataclass(eq=False)
class WorkerRec:
    worker_id: bytes
    pid: int
    out_fd: int
    err_fd: int
    conn: AsyncConnection | None = None
    address: str = ""
    state: str = "starting"  # starting | idle | leased | dead
    lease_id: bytes | None = None
    for_request: LeaseReq | None = None
    actor_id: bytes | None = None
    partial: dict[str, str] = field(default_factory=dict)


class PoolMixin:
    """NodeManager's worker pool; the state below is set by _init_pool."""

    prestart: int
    workers: dict[bytes, WorkerRec]
    by_pid: dict[int, WorkerRec]
    idle: list[WorkerRec]
    worker_logs: WorkerLogs

    def _init_pool(self, prestart: int) -> None:
        self.prestart = prestart
        self.workers = {}
        self.by_pid = {}
        self.idle = []
        self.worker_logs = WorkerLogs()

    def start_worker(self, for_request: LeaseReq | None = None) -> None:
        from ..worker import worker_main

        worker_id = new_id()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: becomes a worker, never returns
            worker_main(
                worker_id,
                self.address,
                self.token,
                self.session_dir,
                out_w,
                err_w,
                self.ip if self.cluster else None,
            )
        os.close(out_w)
        os.close(err_w)
        rec = WorkerRec(worker_id, pid, out_r, err_r, for_request=for_request)
        if for_request is not None:
            rec.actor_id = for_request.actor_id
        self.workers[worker_id] = rec
        self.by_pid[pid] = rec
        loop = asyncio.get_running_loop()
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
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            rec = self.by_pid.pop(pid, None)
            if rec is not None:
                self.worker_gone(rec, "its process exited")

    def worker_gone(self, rec: WorkerRec, why: str) -> None:
        if rec.state == "dead":
            return
        rec.state = "dead"
        self.task_events.worker_died(rec.pid, f"The worker process (pid={rec.pid}) died: {why}.")
        if rec in self.idle:
            self.idle.remove(rec)
        if rec.lease_id is not None:
            lease = self.leases.pop(rec.lease_id, None)
            if lease is not None and not lease.blocked:
                self.release(lease.shape, lease.gpu_ids)
            elif lease is not None:
                self.release({k: v for k, v in lease.shape.items() if k != "CPU"}, lease.gpu_ids)
        if rec.for_request is not None:
            self.unreserve(rec.for_request)
            req = rec.for_request
            rec.for_request = None
            req.conn.reply(
                req.rid,
                P.Failed(P.FailCode.WORKER_DIED, f"the worker for the actor died at start ({why})"),
            )
        if rec.actor_id is not None:
            cause = f"The actor's worker process (pid={rec.pid}) died: {why}."
            self.to_head(
                P.ActorStateChanged(rec.actor_id, "PROCESS_DIED", "", "", rec.pid, cause, 0)
            )
        if rec.conn is not None:
            rec.conn.close()
        if rec.actor_id is not None:
            kept = self.kept_actors.pop(rec.actor_id, None)
            if kept is not None:
                kept.close()
        if rec.address:  # a dead owner's objects are lost (Ray: OwnerDiedError)
            for oid in [o for o, seg in self.segments.items() if seg.owner == rec.address]:
                self.free_segment(oid)
            # Owners drop what the dead process borrowed from them.
            notice = P.ClientDied(rec.address)
            self.tell_clients(notice, skip=rec.conn)
            if self.cluster:  # and owners on other nodes
                self.to_head(notice)
        if not self.stopping:
            self.schedule()

    def kill_worker(self, rec: WorkerRec) -> None:
        if rec.state != "dead":
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.pid, signal.SIGKILL)

    def kill_actor_worker(self, actor_id: bytes) -> None:
        for rec in self.workers.values():
            if rec.actor_id == actor_id:
                self.kill_worker(rec)

    def on_kill_actor_worker(self, conn: AsyncConnection, msg: P.KillActorWorker, rid: int) -> None:
        self.kill_actor_worker(msg.actor_id)
