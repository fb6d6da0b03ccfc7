"""Every setting, its default, and its RAYLITE_* environment override."""

from __future__ import annotations

import os
from typing import Any, NoReturn

# Settings a user of Ray sets by Ray's own variable (RAY_<name>, as Ray spells it): it
# wins over RAYLITE_<NAME>.
RAY_NAMED = frozenset(
    {"memory_usage_threshold", "memory_monitor_refresh_ms", "task_oom_retry_delay_base_ms"}
)


def _env(name: str, default: float) -> float:
    raw = os.environ.get(f"RAY_{name}") if name in RAY_NAMED else None
    if raw is None:
        raw = os.environ.get(f"RAYLITE_{name.upper()}")
    return type(default)(raw) if raw is not None else default


class Config:
    """The settings: each a class attribute holding its default; an instance is frozen
    and overrides some (Config(name=value, ...)). A plain class, not a dataclass:
    a dataclass of this many fields costs ~4 ms to define, in the start of every
    process (a driver, a node manager), before anything else can run."""

    # Values whose pickle is at most this many bytes travel inline in messages.
    inline_threshold: int = 100 * 1024
    # An owner keeps an idle worker lease this long before giving it back, so a
    # loop of `get(f.remote())` does not pay a lease request per task.
    lease_linger_s: float = 0.05
    # Lease requests in flight per resource shape (Ray: 10).
    max_pending_leases: int = 10
    # A lease whose tasks take less than this (seconds, measured from one TaskDone to
    # the next) gets its next queued task pushed before the running one ends, when more
    # wait: the worker finds it queued instead of idling a round trip (0: never).
    pipeline_task_s: float = 0.002
    # A worker sends a pipelined task back (TaskBounced) once the task it waits behind
    # has run this long: the owner runs it on another lease, as if never pipelined.
    pipeline_wait_s: float = 0.01
    # At most this many tasks a lease has pushed at once (the running one included),
    # and behind the running one no more than pipeline_task_s of work at the class's
    # recent pace (lease_queue.LeaseQueues.pipeline).
    pipeline_depth: int = 32
    # A worker with pipelined tasks queued holds back the replies of up to this many
    # finished ones, sent in one write.
    held_replies: int = 3
    # Workers flush task events to the node manager this often.
    event_flush_s: float = 0.2
    # Finished-task events the node manager keeps for timeline().
    max_task_events: int = 100_000
    # A runtime_env package (working_dir, py_modules) of this many bytes or more is
    # refused (Ray's limit: its 512 MiB GCS message size).
    runtime_env_max_package_bytes: int = 512 * 1024 * 1024
    # A worker of a runtime_env (not the default one) idle this long exits, so an env
    # no task uses any more has no worker and its cache can be collected.
    runtime_env_idle_worker_s: float = 10.0
    # Unused pip environments and packages a node keeps built (least recently used go).
    runtime_env_cache_envs: int = 8
    # Seconds the node manager waits for workers to exit on SIGTERM before SIGKILL.
    kill_grace_s: float = 1.0
    # At interpreter exit (no ray.shutdown()), a driver lets the tasks it submitted end
    # for at most this long first: as on Ray, a script's last fire-and-forget task runs.
    exit_drain_s: float = 1.0
    # A lease request waiting this long for resources others hold gets its owner a
    # warning naming them (a tree of actors waiting on work it has no CPU for hangs).
    pending_warn_s: float = 5.0
    # Seconds init() waits for the node manager to come up.
    start_timeout_s: float = 30.0
    # Node managers heartbeat to the head this often (seconds).
    heartbeat_s: float = 0.5
    # A node that has not heartbeat for this long is marked dead (Ray: 30 s).
    node_timeout_s: float = 10.0
    # Seconds a driver or worker waits for its node manager to answer a request.
    request_timeout_s: float = 30.0
    # Seconds a node holds a request for the head while the head is unreachable (being
    # restarted) before failing it (Ray: gcs_rpc_server_reconnect_timeout_s, 60 s).
    # Below request_timeout_s, so the client hears why rather than its own timeout.
    head_wait_s: float = 20.0
    # Waiting tasks an owner reports per event flush (the rest wait a period more).
    max_pending_events: int = 1000
    # 1: fail on a user callback or a dial under the core worker lock (the tests
    # turn this on; see core/deferring_lock.py).
    lock_checks: int = 0
    # 1: log every lifecycle move (task, actor, lease, worker) at DEBUG on the "raylite"
    # logger (transitions.py). Off, a task's common moves cost no call.
    trace_transitions: int = 0
    # --- node leases and store (node/lease_book.py, node/store_book.py) ---
    # Worker processes one node may have at once (actors, tasks, idle); past it lease
    # requests wait. 0: the default from the machine's memory, CPUs and open-file
    # limit (node/worker_cap.py says the formula and why); `raylite start --max-workers`
    # and init(_system_config={"max_workers": N}) set it too.
    max_workers: int = 0
    # A worker's main thread, between tasks, reads the connection its last task came on
    # (transport_lead) for at most this long at a time before it looks again; a task
    # queued from another thread meanwhile wakes it at once (its doorbell).
    lead_wait_s: float = 0.5
    # A leader whose last wait on that connection ended within this long polls it for
    # this long before it sleeps (transport_lead: a sync call's reply, an actor's next
    # call, come within ~50 us; waking a sleeping thread costs each side ~5 us here).
    # One whose wait was longer sleeps at once. 0: never poll.
    lead_spin_s: float = 0.0001
    # Pool workers a node starts with, before any request (at most its CPUs). The rest
    # are forked on demand, in 2-4 ms each (the fork server has every module loaded):
    # an idle node's memory is then one worker's (~19 MB RSS), not one per CPU.
    prestart_workers: int = 1
    # A lease request is sent on to another node (spillback) at most this many times,
    # then moves on only when a heartbeat's fresh view shows room elsewhere.
    max_hops: int = 3
    # Lease request shapes a node reports to the head per heartbeat (its demand).
    max_demand_shapes: int = 100
    # Freed segments at least this large keep their memory for the next put of their
    # size: writing into pages a file has is a memcpy, where fresh tmpfs pages cost an
    # allocation and zeroing each (a put of 1 MB: 587 -> 329 us, of 4 MB: 1.74 -> 0.59 ms).
    warm_min_bytes: int = 64 << 10
    # At most this much freed shared memory is kept for reuse, in at most this many
    # files (a put looks through them for one of its size).
    warm_max_bytes: int = 1 << 30
    warm_max_files: int = 32
    # Read-only mappings of freed large segments' files a process keeps (at most), for
    # when the file is recycled for an object it reads: that get maps nothing, and the
    # reader takes no page faults (0: a mapping goes with the last view of its object).
    idle_mappings: int = 4
    # ... and the bytes they map, at most: a file spilled or deleted while a process
    # keeps it idle keeps its memory until that process looks again (within 0.1 s).
    idle_mapping_bytes: int = 256 << 20
    # Threads that copy a large buffer (8 MB or more) into the store on a put, this one
    # included (0: this process's CPUs, at most 4; 1: no other thread).
    put_copy_threads: int = 0
    # Segments copied to the spill dir at once (threads).
    spill_threads: int = 4
    # When the store is full, spill this much more than the new object needs (at most
    # a quarter of the store), so the next puts find room without waiting.
    spill_batch_bytes: int = 100 << 20
    # Spilled segments read ahead when one is restored.
    prefetch_ahead: int = 3
    # Seconds of spilling summed up in one "(raylite) Spilled ..." log line.
    spill_log_s: float = 1.0
    # A stopping node manager waits this long for its SIGKILLed workers' exits to be
    # reported, then forgets them (a killed process ends at once unless it is stuck
    # in the kernel, which waiting cannot fix).
    kill_wait_s: float = 5.0
    # shutdown() waits this long for the node manager to stop its workers and exit
    # (then kills it).
    shutdown_timeout_s: float = 10.0
    # Seconds a node manager waits for one worker's event flush or one other node's
    # listing before it answers without them (timeline, `raylite list`).
    node_answer_timeout_s: float = 5.0
    # Seconds a driver waits for timeline(): every worker of the cluster flushes first.
    timeline_timeout_s: float = 60.0
    # At most one early heartbeat (freed resources, waiting requests) per this many seconds.
    heartbeat_min_s: float = 0.02
    # Connecting to a node, the head or another process gives up after this long.
    connect_timeout_s: float = 10.0
    # A listener drops a connection that has not sent the cluster token within this.
    handshake_timeout_s: float = 5.0
    # The largest frame body (bytes): a sender refuses a larger message (it raises
    # MessageTooLargeError), a receiver drops a peer whose frame header announces one,
    # before reading its body. The largest real frames: a task's inline arguments (up to
    # half of this, submission.MAX_ARGS_SIZE), listings and timelines, a remote driver's
    # PushChunk (4 MiB); objects between nodes go as a raw stream after a small frame.
    # Every process of a cluster must have the same value. At most 4 GiB - 1 (u32).
    max_frame_bytes: int = 1 << 31
    # Closing a connection or listener waits this long for its reader thread (and a
    # core worker's timer thread) to end.
    thread_join_timeout_s: float = 2.0
    # Distinct task names and ids the task table shares between its records; past this,
    # each record keeps its own copy.
    task_events_interned: int = 10_000
    # Characters of a failed task's error message kept in its task record.
    task_error_chars: int = 1000
    # Output kept for `raylite logs`: lines per worker, for this many workers, each line
    # cut to log_line_chars (one runaway print must not fill the ring).
    worker_log_lines: int = 1000
    worker_log_workers: int = 128
    log_line_chars: int = 8192
    # `raylite logs --follow` asks for new lines this often (seconds).
    logs_follow_poll_s: float = 0.25
    # util.progress(): how often the bar moves while nothing finishes (seconds).
    progress_poll_s: float = 0.1
    # The head's Redis backend: socket timeout of one attempt, and retries; one call
    # blocks the head's loop at most (1 + redis_retries) * redis_timeout_s plus backoffs.
    redis_timeout_s: float = 2.0
    redis_retries: int = 2
    # The head's SQLite backend waits this long for a lock held by another connection.
    sqlite_timeout_s: float = 10.0
    # --- the node's memory monitor (node/memory_monitor.py; Ray's names override) ---
    # Past this fraction of the node's memory (its cgroup's limit where it has one),
    # the monitor kills a worker (RAY_memory_usage_threshold, Ray's default 0.95).
    memory_usage_threshold: float = 0.95
    # How often it reads the node's memory; 0 turns it off (RAY_memory_monitor_refresh_ms).
    memory_monitor_refresh_ms: int = 250
    # A task killed for memory is retried after base * 2**n ms, at most 60 s, n its
    # retries for memory so far (RAY_task_oom_retry_delay_base_ms).
    task_oom_retry_delay_base_ms: int = 1000

    def __init__(self, **settings: Any) -> None:
        for name, value in settings.items():
            if name not in SETTINGS:
                raise TypeError(f"Config() got an unexpected keyword argument {name!r}")
            object.__setattr__(self, name, value)

    def replace(self, **changes: Any) -> Config:
        """A copy with these settings changed (as dataclasses.replace)."""
        return Config(**{**{n: getattr(self, n) for n in SETTINGS}, **changes})

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"cannot assign to {name!r}: a Config is frozen")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"cannot delete {name!r}: a Config is frozen")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Config):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in SETTINGS)

    __hash__ = None  # type: ignore[assignment]  # equal by value, as a frozen dataclass

    def __repr__(self) -> str:
        return f"Config({', '.join(f'{n}={getattr(self, n)!r}' for n in SETTINGS)})"


SETTINGS = tuple(Config.__annotations__)  # every setting's name, in the order above


def load() -> Config:
    return Config(**{name: _env(name, getattr(Config, name)) for name in SETTINGS})


CONFIG = load()

RESOURCE_UNIT = 10_000  # resources are counted in 1/10000 to keep fractions exact


def to_units(value: float) -> int:
    return round(float(value) * RESOURCE_UNIT)


def from_units(units: int) -> float:
    return units / RESOURCE_UNIT
