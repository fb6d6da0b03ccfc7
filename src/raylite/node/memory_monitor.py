"""The node's memory monitor (Ray's): read the node's memory on a timer, kill a worker
when it passes the threshold, and tell the killed task's owner why.

Owns the reading of the node's memory (a cgroup's usage and limit where the node runs
in one with a limit, as Ray reads it, else the machine's: total - available), the
timer (`memory_monitor_loop`, every memory_monitor_refresh_ms; 0: off), the workers
being killed (`killing`: no new choice until they are gone, as Ray), and the causes of
recent kills (`causes`: what owners ask for). Not the choice (memory_policy.py), not
the kill itself (pool.py's kill_worker, through the fork server), not the retry (the
owner: core/submission.py).

    timer ─▶ read ─▶ over threshold? ─no─▶ (nothing: no other work while memory is fine)
                        └─yes─▶ choose_victims ─▶ causes[worker] = message ─▶ SIGKILL
    owner: its worker died ──GetWorkerFailureCause──▶ causes ──WorkerFailureCause──▶ owner
                               (OutOfMemoryError, or a retry that spends no retry)

Settings: RAY_memory_usage_threshold, RAY_memory_monitor_refresh_ms (Ray's names,
read by config.py) or RAYLITE_MEMORY_USAGE_THRESHOLD, RAYLITE_MEMORY_MONITOR_REFRESH_MS.

Test hook: RAYLITE_MEMORY_MONITOR_FAKE names a file read instead of the system (each
tick, only where set). Its first line is "USED TOTAL" in bytes; each further line
"PID BYTES" says process PID holds BYTES more, counted in USED only while PID is alive
(and as its memory for the policy), so a test's task can "allocate" by appending its
pid and the monitor's kill "frees" it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from typing import Any

from .. import protocol as P
from ..config import CONFIG
from ..transport_async import AsyncConnection
from .memory_policy import (
    Candidate,
    MemoryReading,
    choose_victims,
    oom_message,
    over,
    threshold_bytes,
)

log = logging.getLogger(__name__)

FAKE_ENV = "RAYLITE_MEMORY_MONITOR_FAKE"
CGROUP_ROOT = "/sys/fs/cgroup"
MAX_CAUSES = 1000  # kills remembered for their owners' questions
WARN_EVERY_S = 5.0  # "over the threshold, nothing to kill" at most this often (Ray: 5 s)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat_file_bytes(path: str, keys: tuple[str, str]) -> int | None:
    """The page cache (inactive + active file) in a cgroup's memory.stat: the kernel
    reclaims it, so Ray does not count it as used."""
    found: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name in keys:
                    found[name] = int(value)
    except (OSError, ValueError):
        return None
    return sum(found.values()) if len(found) == len(keys) else None


def read_cgroup(root: str = CGROUP_ROOT) -> MemoryReading | None:
    """The cgroup's usage and limit (v2: memory.current, memory.max; v1: memory/
    memory.usage_in_bytes, memory.limit_in_bytes), less its page cache; None without
    a limit ("max", or v1's huge number: the caller compares with the machine's)."""
    v2 = (f"{root}/memory.max", f"{root}/memory.current", f"{root}/memory.stat")
    v1 = (
        f"{root}/memory/memory.limit_in_bytes",
        f"{root}/memory/memory.usage_in_bytes",
        f"{root}/memory/memory.stat",
    )
    for (limit_path, usage_path, stat_path), keys in (
        (v2, ("inactive_file", "active_file")),
        (v1, ("total_inactive_file", "total_active_file")),
    ):
        if not os.path.exists(limit_path):
            continue
        limit = _read_int(limit_path)
        usage = _read_int(usage_path)
        if not limit or usage is None:
            return None
        cache = _stat_file_bytes(stat_path, keys) or 0
        return MemoryReading(min(max(usage - cache, 0), limit), limit)
    return None


def read_system() -> MemoryReading:
    """The node's memory as Ray reads it: its cgroup's where that has a limit below the
    machine's memory, else the machine's total - available (/proc/meminfo)."""
    import psutil  # here: a node starts ~8 ms sooner (the first reading is a tick later)

    vm = psutil.virtual_memory()
    machine = MemoryReading(vm.total - vm.available, vm.total)
    cgroup = read_cgroup()
    if cgroup is not None and cgroup.total < machine.total:
        return cgroup
    return machine


def read_fake(path: str, alive: Any) -> tuple[MemoryReading, dict[int, int]]:
    """The test hook's reading (see the module docstring) and what each live pid holds."""
    with open(path) as f:
        lines = f.read().split("\n")
    used, total = (int(x) for x in lines[0].split())
    held: dict[int, int] = {}
    for line in lines[1:]:
        if line.strip():
            pid, n = (int(x) for x in line.split())
            if alive(pid):
                held[pid] = held.get(pid, 0) + n
    return MemoryReading(used + sum(held.values()), total), held


def process_memory(pid: int) -> int:
    """A process's own memory (USS, as Ray counts it; RSS where USS cannot be read)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        try:
            return int(proc.memory_full_info().uss)
        except psutil.AccessDenied:
            return int(proc.memory_info().rss)
    except psutil.Error:
        return 0


class MemoryMonitor:
    """One node manager's memory monitor; see the module docstring."""

    def __init__(self, nm: Any) -> None:
        self.nm = nm
        self.fraction = float(CONFIG.memory_usage_threshold)
        self.refresh_s = CONFIG.memory_monitor_refresh_ms / 1000.0
        self.fake = os.environ.get(FAKE_ENV) or None
        self.killing: set[int] = set()  # pids killed, not yet reaped
        self.causes: collections.OrderedDict[bytes, str] = collections.OrderedDict()
        self.kills = 0
        self.warned_at = -WARN_EVERY_S  # the last "nothing to kill" warning (monotonic)
        threshold_bytes(1, self.fraction)  # a bad setting fails the node at start

    @property
    def enabled(self) -> bool:
        return self.refresh_s > 0

    async def memory_monitor_loop(self) -> None:
        if not self.enabled:
            return
        while not self.nm.stopping:
            await asyncio.sleep(self.refresh_s)
            self.check()

    def read(self) -> tuple[MemoryReading, dict[int, int] | None]:
        if self.fake is not None:
            return read_fake(self.fake, lambda pid: pid in self.nm.by_pid)
        return read_system(), None

    def check(self) -> None:
        """One tick: read, and kill if over (run on the node's event loop)."""
        reading, held = self.read()
        threshold = threshold_bytes(reading.total, self.fraction)
        if not over(reading, threshold):
            return
        self.killing &= set(self.nm.by_pid)  # those reaped are gone
        if self.killing:  # wait for those chosen before to go (Ray: one batch at a time)
            return
        victims = choose_victims(self.candidates(held), reading, threshold)
        if not victims:
            now = time.monotonic()
            if now - self.warned_at < WARN_EVERY_S:
                return
            self.warned_at = now
            log.warning(
                "memory use %.2f of the node is over the threshold %.2f but no worker can "
                "be killed: other processes hold the memory",
                reading.fraction,
                self.fraction,
            )
            return
        for victim in victims:
            message = oom_message(
                victims,
                reading,
                threshold,
                self.fraction,
                self.nm.ip,
                self.nm.node_id.hex(),
                victim,
            )
            self.causes[victim.worker_id] = message
            while len(self.causes) > MAX_CAUSES:
                self.causes.popitem(last=False)
            rec = self.nm.workers.get(victim.worker_id)
            if rec is None:
                continue
            self.kills += 1
            self.killing.add(rec.pid)
            log.error("%s", message.replace("\n", " "))
            self.nm.kill_worker(rec)

    def candidates(self, held: dict[int, int] | None) -> list[Candidate]:
        """The node's live workers, with their lease's order and retriability."""
        order = {lease_id: i for i, lease_id in enumerate(self.nm.lease_book.leases)}
        out = []
        for rec in self.nm.workers.values():
            if rec.state not in ("leased", "idle"):
                continue
            lease = self.nm.lease_book.leases.get(rec.lease_id) if rec.lease_id else None
            leased = lease is not None
            memory = held.get(rec.pid, 0) if held is not None else process_memory(rec.pid)
            out.append(
                Candidate(
                    rec.worker_id,
                    rec.pid,
                    leased,
                    bool(lease.retriable) if lease is not None else False,
                    order.get(rec.lease_id, -1) if leased else -1,
                    memory,
                    rec.actor_id is not None,
                )
            )
        return out

    def death_cause(self, worker_id: bytes, why: str) -> str:
        """A dead worker's cause for its actor's record: the OOM message if we killed it."""
        message = self.causes.get(worker_id)
        return f"it was killed by the memory monitor. {message}" if message else why

    def on_get_worker_failure_cause(
        self, conn: AsyncConnection, msg: P.GetWorkerFailureCause, rid: int
    ) -> None:
        conn.reply(rid, P.WorkerFailureCause(self.causes.get(msg.worker_id, "")))
