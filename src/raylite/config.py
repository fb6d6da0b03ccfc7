"""Every setting, its default, and its RAYLITE_* environment override."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any


def _env(name: str, default: float) -> float:
    raw = os.environ.get(f"RAYLITE_{name.upper()}")
    return type(default)(raw) if raw is not None else default


@dataclass(frozen=True)
class Config:
    # Values whose pickle is at most this many bytes travel inline in messages.
    inline_threshold: int = 100 * 1024
    # An owner keeps an idle worker lease this long before giving it back, so a
    # loop of `get(f.remote())` does not pay a lease request per task.
    lease_linger_s: float = 0.05
    # Lease requests in flight per resource shape (Ray: 10).
    max_pending_leases: int = 10
    # Workers flush task events to the node manager this often.
    event_flush_s: float = 0.2
    # Finished-task events the node manager keeps for timeline().
    max_task_events: int = 100_000
    # Seconds the node manager waits for workers to exit on SIGTERM before SIGKILL.
    kill_grace_s: float = 1.0
    # Seconds init() waits for the node manager to come up.
    start_timeout_s: float = 30.0
    # Node managers heartbeat to the head this often (seconds).
    heartbeat_s: float = 0.5
    # A node that has not heartbeat for this long is marked dead (Ray: 30 s).
    node_timeout_s: float = 10.0
    # Seconds a driver or worker waits for its node manager to answer a request.
    request_timeout_s: float = 30.0
    # Waiting tasks an owner reports per event flush (the rest wait a period more).
    max_pending_events: int = 1000
    # 1: fail on a user callback or a dial under the core worker lock (the tests
    # turn this on; see core/deferring_lock.py).
    lock_checks: int = 0
    extra: dict[str, str] = field(default_factory=dict)


def load() -> Config:
    kwargs: dict[str, Any] = {}
    for f in fields(Config):
        if f.name == "extra":
            continue
        kwargs[f.name] = _env(f.name, f.default)  # type: ignore[arg-type]
    return Config(**kwargs)


CONFIG = load()

RESOURCE_UNIT = 10_000  # resources are counted in 1/10000 to keep fractions exact


def to_units(value: float) -> int:
    return round(float(value) * RESOURCE_UNIT)


def from_units(units: int) -> float:
    return units / RESOURCE_UNIT
