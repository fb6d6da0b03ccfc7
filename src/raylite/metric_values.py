"""Application metrics' values: this process's series, and a node's merged table.

Owns the values util.metrics records in this process (one per metric name and tag
set, with a dirty set of those changed since the last report), the records that carry
them on the wire, the node's table of every process's latest values and its
Prometheus text. Not the Ray API and its argument checks (util/metrics.py), not when
reports travel (core/submission.py `_flush_events`, worker.py `flush_events`), not
the HTTP route (dashboard/server.py).

    Counter.inc ──record──▶ PROCESS (dirty) ──drain() at the periodic task-event flush──▶
      TaskEvents.metrics ──▶ node manager (a worker node forwards them to the head)
      ──MetricsTable.merge──▶ GET /metrics ──prometheus_text()──▶ scraper

No per-call message: a record updates a dict under a lock and, the first time a series
changes after a report, asks for one flush (`on_dirty`). A report carries each changed
series' cumulative value, so one that is lost or overtaken is repaired by the next, and
the table keeps one value per (process, series): counters and histograms of every
process add up, and a gauge shows the latest value set in any process. Values of a
process that exited stay (counters are cumulative over the cluster's life).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
PREFIX = "ray_"  # Ray exports application metrics as ray_<name>

Tags = tuple[tuple[str, str], ...]  # sorted (key, value) pairs
# A wire record: [source, kind, name, description, boundaries, tags, value], where the
# value is a float (counter), [value, time set] (gauge) or [bucket counts, sum, count].
Record = list[Any]


class ProcessMetrics:
    """This process's series. Thread safe: tasks of threaded actors record at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.meta: dict[str, tuple[str, str, tuple[float, ...]]] = {}
        self.values: dict[tuple[str, Tags], Any] = {}
        self.dirty: set[tuple[str, Tags]] = set()
        self.on_dirty: Callable[[], None] | None = None  # set by the core worker
        self.source = ""

    def declare(self, kind: str, name: str, description: str, boundaries: Sequence[float]) -> bool:
        """Whether metrics of this name and kind can record here: a name keeps the kind
        (and a histogram the boundaries) it was first declared with in this process."""
        bounds = tuple(float(b) for b in boundaries)
        with self.lock:
            known = self.meta.get(name)
            if known is not None and (known[0], known[2]) != (kind, bounds):
                return False
            self.meta[name] = (kind, description, bounds)
            return True

    def record(self, name: str, tags: dict[str, str], value: float) -> None:
        key = (name, tuple(sorted(tags.items())))
        with self.lock:
            kind, _, boundaries = self.meta[name]
            if kind == COUNTER:
                self.values[key] = self.values.get(key, 0.0) + value
            elif kind == GAUGE:
                self.values[key] = [float(value), time.time()]
            else:
                old = self.values.get(key)
                if old is None:
                    old = self.values[key] = [[0] * (len(boundaries) + 1), 0.0, 0]
                old[0][_bucket(boundaries, value)] += 1
                old[1] += value
                old[2] += 1
            first = not self.dirty
            self.dirty.add(key)
        if first and self.on_dirty is not None:
            self.on_dirty()

    def drain(self) -> list[Record] | None:
        """The series changed since the last drain, as wire records (None if none)."""
        if not self.dirty:  # read without the lock: a record racing this asks again
            return None
        if not self.source:
            self.source = f"{os.getpid()}-{os.urandom(6).hex()}"
        with self.lock:
            keys, self.dirty = self.dirty, set()
            out = []
            for name, tags in keys:
                kind, description, boundaries = self.meta[name]
                value = self.values[(name, tags)]
                if kind == HISTOGRAM:
                    value = [list(value[0]), value[1], value[2]]
                elif kind == GAUGE:
                    value = list(value)
                out.append(
                    [self.source, kind, name, description, list(boundaries), list(tags), value]
                )
        return out


def _bucket(boundaries: tuple[float, ...], value: float) -> int:
    for i, bound in enumerate(boundaries):
        if value <= bound:
            return i
    return len(boundaries)


PROCESS = ProcessMetrics()


class MetricsTable:
    """A node's view: the latest value of every (process, series) reported to it."""

    def __init__(self) -> None:
        self.meta: dict[str, tuple[str, str, tuple[float, ...]]] = {}
        self.values: dict[tuple[str, Tags], dict[str, Any]] = {}  # series -> source -> value

    def merge(self, records: list[Record]) -> None:
        for source, kind, name, description, boundaries, tags, value in records:
            known = self.meta.get(name)
            if known is not None and (known[0], known[2]) != (kind, tuple(boundaries)):
                continue  # declared otherwise by another process: the first one seen wins
            self.meta[name] = (kind, description, tuple(boundaries))
            key = (name, tuple(tuple(pair) for pair in tags))
            per_source = self.values.setdefault(key, {})
            old = per_source.get(source)
            if kind == GAUGE and old is not None and old[1] > value[1]:
                continue  # an older report overtaken by a newer one
            if kind == COUNTER and old is not None and old > value:
                continue  # cumulative: a smaller value is an older report
            if kind == HISTOGRAM and old is not None and old[2] > value[2]:
                continue
            per_source[source] = value

    def prometheus_text(self) -> str:
        """Every series in Prometheus' text exposition format (version 0.0.4)."""
        lines: list[str] = []
        by_name: dict[str, list[tuple[Tags, dict[str, Any]]]] = {}
        for (name, tags), per_source in self.values.items():
            by_name.setdefault(name, []).append((tags, per_source))
        for name in sorted(by_name):
            kind, description, boundaries = self.meta[name]
            full = PREFIX + name
            if description:
                lines.append(f"# HELP {full} {_escape_help(description)}")
            lines.append(f"# TYPE {full} {kind}")
            for tags, per_source in sorted(by_name[name], key=lambda item: item[0]):
                values = list(per_source.values())
                if kind == COUNTER:
                    lines.append(f"{full}_total{_labels(tags)} {_number(sum(values))}")
                elif kind == GAUGE:
                    latest = max(values, key=lambda v: v[1])
                    lines.append(f"{full}{_labels(tags)} {_number(latest[0])}")
                else:
                    counts = [sum(v[0][i] for v in values) for i in range(len(boundaries) + 1)]
                    running = 0
                    for bound, count in zip([*boundaries, math.inf], counts, strict=True):
                        running += count
                        le = (("le", _number(bound)),)
                        lines.append(f"{full}_bucket{_labels(tags + le)} {running}")
                    total = sum(v[1] for v in values)
                    lines.append(f"{full}_sum{_labels(tags)} {_number(total)}")
                    lines.append(f"{full}_count{_labels(tags)} {sum(v[2] for v in values)}")
        return "\n".join(lines) + "\n" if lines else ""


def _labels(tags: Tags) -> str:
    if not tags:
        return ""
    inner = ",".join(f'{key}="{_escape_label(value)}"' for key, value in tags)
    return "{" + inner + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if float(value).is_integer():
        return f"{float(value):.1f}"
    return repr(float(value))
