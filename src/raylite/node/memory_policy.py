"""Which workers the node's memory monitor kills, and what it says: pure, as data.

Owns the decision of Ray's memory monitor (Ray 2.60's default "by time" worker killing
policy) and the words of its OutOfMemoryError: given one reading of the node's memory
and the node's workers, which to kill. Not the reading itself, the timer or the kill
(memory_monitor.py, the shell), not whether a killed task runs again (its owner
decides: core/submission.py retries a task killed for memory unless its max_retries
is 0, without spending a retry, as Ray does).

    reading (used, total) ──over threshold?──▶ choose_victims(candidates) ──▶ kill these
                                                                          └─▶ oom_message

The policy, as Ray's (src/ray/raylet/worker_killing_policy_by_time.cc):
  1. an idle worker holding more than `idle_worker_bytes` goes first (it runs nothing);
  2. then leased workers: retriable ones (a task with retries left, an actor with
     restarts) before the others, and among equals the most recently granted first;
  3. workers are taken in that order until what they hold covers
     `used - threshold + buffer` (buffer: 5% of the total, at most 3 GiB), at least one.
Numbers are bytes. A worker whose memory is unknown counts as holding nothing.
"""

from __future__ import annotations

import msgspec

GiB = 1 << 30
# Ray's max_kill_memory_buffer_bytes: the kill buffer is 5% of the total, at most this.
MAX_KILL_BUFFER_BYTES = 3 * GiB
# Ray's idle_worker_killing_memory_threshold_bytes: an idle worker holding more goes first.
IDLE_WORKER_BYTES = 1 * GiB


class MemoryReading(msgspec.Struct, frozen=True):
    """The node's memory at one moment: `used` of `total` bytes (a cgroup's limit and
    usage where the node runs in one with a limit, else the machine's)."""

    used: int
    total: int

    @property
    def fraction(self) -> float:
        return self.used / self.total if self.total > 0 else 0.0


class Candidate(msgspec.Struct, frozen=True):
    """A worker the monitor may kill. `order`: when its lease was granted, in any
    increasing measure (larger: more recent); `memory`: bytes it holds (its USS)."""

    worker_id: bytes
    pid: int
    leased: bool
    retriable: bool
    order: int
    memory: int
    actor: bool = False


def threshold_bytes(total: int, fraction: float) -> int:
    """The usage past which the monitor kills (Ray: total * memory_usage_threshold)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"memory_usage_threshold must be in [0, 1], not {fraction}")
    return int(total * fraction)


def kill_buffer(total: int) -> int:
    """Memory freed beyond the threshold, so the next reading is not over it at once."""
    return min(total * 5 // 100, MAX_KILL_BUFFER_BYTES)


def over(reading: MemoryReading, threshold: int) -> bool:
    return reading.total > 0 and reading.used > threshold


def _rank(c: Candidate, idle_worker_bytes: int) -> tuple[int, int, int]:
    """Sort key: lower goes first."""
    if not c.leased:
        return (0 if c.memory > idle_worker_bytes else 3, 0, -c.memory)
    return (1 if c.retriable else 2, -c.order, 0)


def choose_victims(
    candidates: list[Candidate],
    reading: MemoryReading,
    threshold: int,
    idle_worker_bytes: int = IDLE_WORKER_BYTES,
) -> list[Candidate]:
    """The workers to kill now (empty when memory is under the threshold, or no worker
    may be killed: idle workers holding little are never taken)."""
    if not over(reading, threshold):
        return []
    eligible = [c for c in candidates if c.leased or c.memory > idle_worker_bytes]
    eligible.sort(key=lambda c: _rank(c, idle_worker_bytes))
    to_free = reading.used - threshold + kill_buffer(reading.total)
    chosen: list[Candidate] = []
    for c in eligible:
        if to_free <= 0:
            break
        chosen.append(c)
        to_free -= c.memory
    return chosen


def _gb(n: int) -> str:
    return f"{n / GiB:.2f}GB"


def oom_message(
    victims: list[Candidate],
    reading: MemoryReading,
    threshold: int,
    fraction: float,
    node_ip: str,
    node_id: str,
    victim: Candidate | None = None,
) -> str:
    """The OutOfMemoryError text (Ray's words, shortened): how many workers were
    killed, the node's memory used and limit, the threshold, and the worker this error
    is about (`victim`); its owner names the task (with_task)."""
    lines = [
        f"{len(victims)} worker(s) were killed due to the node running low on memory. "
        f"Memory on the node (IP: {node_ip}, ID: {node_id}) was {_gb(reading.used)} used / "
        f"{_gb(reading.total)} limit ({reading.fraction:.6f}), which exceeds the memory "
        f"usage threshold of {fraction:.6f}.",
        f"OOM kill reason: Memory usage {reading.used}B exceeded threshold of {threshold}B "
        f"({fraction * 100:.1f}% of {reading.total}B limit)",
    ]
    if victim is not None:
        what = "an actor" if victim.actor else "a task"
        lines.append(
            f"Ray killed this worker (ID: {victim.worker_id.hex()}, pid={victim.pid}, "
            f"memory used={_gb(victim.memory)}) running {what} because it was the most "
            "recently scheduled "
            + ("retriable task." if victim.retriable else "task and no retriable one was left.")
        )
    lines.append(
        "Consider provisioning more memory on this node or reducing task parallelism "
        "by requesting more CPUs per task. Set max_retries to enable retry when the "
        "task crashes due to OOM. To adjust the kill threshold, set the environment "
        "variable `RAY_memory_usage_threshold` when starting Ray. To disable worker "
        "killing, set the environment variable `RAY_memory_monitor_refresh_ms` to zero."
    )
    return "\n".join(lines)


# In every OutOfMemoryError text (the first line): how an owner tells such a cause.
OOM_HEADLINE = "were killed due to the node running low on memory"


def with_task(message: str, name: str, task_id: str, what: str = "task") -> str:
    """The node's message, with the task (or actor: `what`) its owner knows it by after
    the first line."""
    first, _, rest = message.partition("\n")
    line = f"The {what} killed: name={name}, {what} ID={task_id}."
    return f"{first}\n{line}\n{rest}" if rest else f"{first}\n{line}"


def oom_retry_delay_s(attempt: int, base_ms: int) -> float:
    """Ray's backoff before the retry of a task killed for memory: base * 2**attempt
    milliseconds (attempt 0: the first retry), at most 60 s; 0 with base 0."""
    if base_ms <= 0:
        return 0.0
    return min(base_ms * (1 << min(attempt, 16)), 60_000) / 1000.0
