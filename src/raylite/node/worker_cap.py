"""The cap on one node's worker processes: its default, and the count the lease book keeps.

Owns the cap (`limit`), the count of worker processes the node has asked the fork
server for and not yet seen reaped (`processes`: starting, idle, leased, and dead
but not reaped: a worker whose connection closed may still be exiting), the idle workers killed to make room (`reclaimed`, by worker id,
until their exit is seen), and the default cap's formula (`default_max_workers`).
Pure: no I/O. Not which worker serves which lease, nor which to kill (lease_book.py
decides, this only counts), not the forking (pool.py, forkserver.py).

    lease_book._schedule ──take()──▶ room: StartWorker | none: the lease waits
                         ──reclaim(w)──▶ KillWorker(an idle worker of another env)
    lease_book.process_exited (pool.reap: the fork server reaped it) ──exited(w)──▶
                           room again: the waiting leases are scheduled

Why a cap. Every actor holds a process, and so does every task that waits in `get`
(it lends its CPU back, so the node runs another task beside it, in another
process). Without a cap a program that creates 10,000 actors, or a recursion that
blocks 10,000 tasks deep, forks 10,000 processes and takes the machine (memory,
pids, the node manager's file descriptors) down with it. Past the cap, requests
wait for a process to exit; idle workers of other runtime envs go first (killed so
the waiting request can have their process). Ray has no hard cap (only
`num_workers_soft_limit`, which trims idle workers to the CPU count, and
`maximum_startup_concurrency`, workers starting at once): raylite waits instead,
and tells the owner after pending_warn_s what holds the processes.

The default (`default_max_workers`), when neither `--max-workers`,
`_system_config={"max_workers": N}` nor RAYLITE_MAX_WORKERS sets it:

    max_workers = min(by_fds, max(4 * num_cpus, available_memory // 64 MiB))
    by_fds      = (RLIMIT_NOFILE - 256) // 4

- Memory decides: a worker that has run tasks holds about WORKER_BYTES of its own
  (a fresh one ~3 MiB private, ~5 MiB PSS, ~19 MiB RSS, sharing the fork server's
  imports; use copies shared pages and imports add more: numpy alone ~30 MiB).
  24 GiB available gives 384 workers.
- Never fewer than 4 per CPU: a small machine still runs nested tasks (each level
  blocked in get holds a process) a few levels deep on every CPU.
- Never more than the node manager's file descriptors allow: each worker costs it
  FDS_PER_WORKER (its connection, its stdout and stderr pipes, one spare for the
  connections it makes to others), beside FDS_RESERVED of its own (listeners,
  drivers, other nodes, store and spill files). The node manager raises its soft
  RLIMIT_NOFILE to the hard one at start (as Ray's driver does) before reading it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

WORKER_BYTES = 64 << 20
WORKERS_PER_CPU = 4
FDS_PER_WORKER = 4
FDS_RESERVED = 256


def default_max_workers(num_cpus: float, available_bytes: int, nofile: int) -> int:
    """The cap when none is set: see the module docstring for the why of each term."""
    by_cpus = WORKERS_PER_CPU * max(1, math.ceil(num_cpus))
    by_memory = available_bytes // WORKER_BYTES
    by_fds = (nofile - FDS_RESERVED) // FDS_PER_WORKER
    return max(1, min(by_fds, max(by_cpus, by_memory)))


class WorkerCap:
    """The count of a node's worker processes against its cap (0: no cap)."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"max_workers must be 0 (no cap) or more, not {limit}")
        self.limit = limit
        self.processes = 0
        self.reclaimed: set[bytes] = set()  # idle workers killed for room, not exited yet

    def room(self) -> int:
        """Processes that may still be started now."""
        if not self.limit:
            return 1 << 30
        return self.limit - self.processes

    def take(self) -> bool:
        """One more process, if the cap allows it (then counted)."""
        if self.limit and self.processes >= self.limit:
            return False
        self.processes += 1
        return True

    def add(self, n: int) -> None:
        """`n` processes started without asking (taken by `room()` first)."""
        self.processes += n

    def exited(self, worker_id: bytes | None) -> None:
        """A process exited, or one that was counted was never forked (None)."""
        self.processes -= 1
        if worker_id is not None:
            self.reclaimed.discard(worker_id)

    def reclaim(self, worker_id: bytes) -> None:
        """An idle worker is being killed to make room for a waiting request."""
        self.reclaimed.add(worker_id)

    def describe(self) -> str:
        """For the owner's warning: the cap and how to change it."""
        return (
            f"the node's cap of {self.limit} worker processes is reached (raise it with "
            "RAYLITE_MAX_WORKERS, `raylite start --max-workers N` or "
            'ray.init(_system_config={"max_workers": N}))'
        )


def waiting_on_cap(
    cap: WorkerCap,
    pending: Iterable[Any],
    granted: Iterable[Any],
    available: dict[str, int],
    now: float,
    after: float,
) -> list[tuple[Any, str]]:
    """Requests (lease_book.Lease) waiting over `after` s with their resources free but
    no process to run on (the cap is reached), each once, with what holds the
    processes: the owner hears it (LeaseWaiting), else a program that keeps more
    actors or blocked tasks than the cap waits in silence."""
    if not cap.limit or cap.room() > 0:
        return []
    out: list[tuple[Any, str]] = []
    for lease in pending:
        if lease.warned or now - lease.waiting_since < after:
            continue
        if not all(available.get(k, 0) >= v for k, v in lease.shape.items()):
            continue  # it waits on resources: lease_book.waiting_long's to tell
        lease.warned = True
        out.append((lease, _holders(cap, granted)))
    return out


def _holders(cap: WorkerCap, granted: Iterable[Any]) -> str:
    actors = tasks = blocked = 0
    for lease in granted:
        if lease.actor_id is not None:
            actors += 1
        else:
            tasks += 1
            blocked += lease.state == "BLOCKED"
    return (
        f"{actors} actor(s) and {tasks} task lease(s) ({blocked} blocked in get): " + cap.describe()
    )
