"""ray.experimental.tqdm_ray: tqdm-style progress bars from tasks, drawn once, by the driver.

Owns the `tqdm` class tasks use, the state a bar reports, and the driver's bar
manager (real tqdm bars on stderr, one group of positions per process, prefixed
"(pid=N) " as Ray 2.60 does). Not the transport: a worker prints its bar's state as
one JSON line with a magic token on stdout, which travels as any worker output does,
and the driver's output printer (core/core_worker.py `_print_log_lines`) hands those
lines to `process_output_line` instead of printing them.

    task: tqdm.update ──(at most every flush_interval_s; close() always)──▶ print(JSON)
      ──worker stdout pipe──▶ node manager ──LogLines──▶ driver: _print_log_lines
      ──MAGIC in line──▶ instance().process_state_update ──▶ tqdm bar on stderr
    driver: tqdm.update ──▶ instance().process_state_update (no printing in between)

As in Ray, creating the driver's manager replaces builtins.print with `safe_print`
(bars cleared around each print), unless RAY_TQDM_PATCH_PRINT=0.
"""

from __future__ import annotations

import builtins
import copy
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from ..core import context

log = logging.getLogger("raylite.tqdm_ray")

ProgressBarState = dict[str, Any]
RAY_TQDM_MAGIC = "__ray_tqdm_magic_token__"  # Ray's: marks a bar's state line

_manager: _BarManager | None = None
_mgr_lock = threading.Lock()
_print = builtins.print
_DIM_CYAN, _RESET = "\x1b[2m\x1b[36m", "\x1b[0m"


def _where() -> tuple[str, int, bool, str]:
    """(ip, pid, in a worker, node id) of this process."""
    cw = context.live_worker()
    address = str(getattr(cw, "address", "") or "")
    ip = address.split(":")[1] if address.startswith("tcp:") else "127.0.0.1"
    node = getattr(cw, "node_id", b"") or b""
    return ip, os.getpid(), getattr(cw, "mode", None) == "worker", node.hex()


def safe_print(*args: Any, **kwargs: Any) -> None:
    """print() that clears the bars around what it prints, so it does not tear them."""
    if kwargs.get("file") not in [sys.stdout, sys.stderr, None]:
        return _print(*args, **kwargs)
    try:
        instance().hide_bars()
        _print(*args, **kwargs)
    finally:
        instance().unhide_bars()


class tqdm:  # lower case: Ray's name
    """A progress bar usable in tasks and actors; the driver shows it.

    Supports Ray's subset of tqdm's arguments."""

    DEFAULT_FLUSH_INTERVAL_SECONDS = 1.0

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        desc: str | None = None,
        total: int | None = None,
        unit: str | None = None,
        position: int | None = None,
        flush_interval_s: float | None = None,
    ) -> None:
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except (TypeError, AttributeError):
                total = None
        self._iterable = iterable
        self._desc = desc or ""
        self._total = total
        self._unit = unit or "it"
        self._ip, self._pid, _, self._node = _where()
        self._pos = position or 0
        self._uuid = uuid.uuid4().hex
        self._x = 0
        self._closed = False
        self._flush_interval_s = (
            flush_interval_s
            if flush_interval_s is not None
            else self.DEFAULT_FLUSH_INTERVAL_SECONDS
        )
        self._last_flush_time = 0.0

    def set_description(self, desc: str) -> None:
        self._desc = desc
        self._dump_state()

    def update(self, n: int = 1) -> None:
        self._x += n
        self._dump_state()

    def close(self) -> None:
        self._closed = True
        self._dump_state(force_flush=True)

    def refresh(self) -> None:
        self._dump_state()

    @property
    def total(self) -> int | None:
        return self._total

    @total.setter
    def total(self, total: int) -> None:
        self._total = total

    @property
    def n(self) -> int:
        return self._x

    @n.setter
    def n(self, n: int) -> None:
        self._x = n

    def _dump_state(self, force_flush: bool = False) -> None:
        now = time.time()
        if not force_flush and now - self._last_flush_time < self._flush_interval_s:
            return
        self._last_flush_time = now
        if _where()[2]:
            # One write with its newline, so that it is never split from its line.
            print(json.dumps(self._get_state()) + "\n", end="", flush=True)
        else:
            instance().process_state_update(copy.deepcopy(self._get_state()))

    def _get_state(self) -> ProgressBarState:
        return {
            "__magic_token__": RAY_TQDM_MAGIC,
            "x": self._x,
            "pos": self._pos,
            "desc": self._desc,
            "total": self._total,
            "unit": self._unit,
            "ip": self._ip,
            "pid": self._pid,
            "uuid": self._uuid,
            "closed": self._closed,
            "node": self._node,  # raylite's: a worker on the driver's node gets no ip
        }

    def __iter__(self) -> Iterator[Any]:
        if self._iterable is None:
            raise ValueError("No iterable provided")
        for x in iter(self._iterable):
            self.update(1)
            yield x


def process_output_line(line: str) -> bool:
    """The driver's printer asks: is this worker output line a bar's state? If so it
    is applied to the bars (and not printed)."""
    start = line.find("{")
    if start < 0 or RAY_TQDM_MAGIC not in line:
        return False
    try:
        state = json.loads(line[start:])
    except ValueError:
        return False
    if not isinstance(state, dict) or state.get("__magic_token__") != RAY_TQDM_MAGIC:
        return False
    instance().process_state_update(state)
    return True


class _Bar:
    """One bar on the driver: a real tqdm bar at position pos_offset + its own."""

    def __init__(self, state: ProgressBarState, pos_offset: int) -> None:
        import tqdm.auto as real_tqdm

        self.state = state
        self.pos_offset = pos_offset
        self.bar = real_tqdm.tqdm(
            desc=state["desc"],
            total=state["total"],
            unit=state["unit"],
            position=pos_offset + state["pos"],
            dynamic_ncols=True,
            unit_scale=True,
        )
        if state["x"]:
            self.bar.update(state["x"])

    def update(self, state: ProgressBarState) -> None:
        if state["desc"] != self.state["desc"]:
            self.bar.set_description(state["desc"])
        if state["total"] != self.state["total"]:
            self.bar.total = state["total"]
            self.bar.refresh()
        delta = state["x"] - self.state["x"]
        if delta:
            self.bar.update(delta)
        self.bar.refresh()
        self.state = state

    def close(self) -> None:
        self.bar.close()

    def update_offset(self, pos_offset: int) -> None:
        if pos_offset != self.pos_offset:
            self.pos_offset = pos_offset
            self.bar.clear()
            self.bar.pos = -(pos_offset + self.state["pos"])
            self.bar.refresh()


class _BarGroup:
    """The bars of one process; they share its position offset."""

    def __init__(self, pos_offset: int) -> None:
        self.pos_offset = pos_offset
        self.bars_by_uuid: dict[str, _Bar] = {}

    def slots_required(self) -> int:
        if not self.bars_by_uuid:
            return 0
        return 1 + max(bar.state["pos"] for bar in self.bars_by_uuid.values())

    def update_offset(self, offset: int) -> None:
        if offset != self.pos_offset:
            self.pos_offset = offset
            for bar in self.bars_by_uuid.values():
                bar.update_offset(offset)


class _BarManager:
    """The driver's bars, placed so that those of different processes do not collide."""

    def __init__(self) -> None:
        self.ip, self.pid, _, self.node = _where()
        self.bar_groups: dict[tuple[str, int], _BarGroup] = {}
        self.in_hidden_state = False
        self.lock = threading.RLock()
        try:
            self.colorize = sys.stderr.isatty()  # tqdm draws on stderr
        except (AttributeError, ValueError):
            self.colorize = False

    def process_state_update(self, state: ProgressBarState) -> None:
        with self.lock:
            self._process_state_update_locked(state)

    def _process_state_update_locked(self, state: ProgressBarState) -> None:
        if state["ip"] == self.ip or (self.node and state.get("node") == self.node):
            prefix = "" if state["pid"] == self.pid else f"(pid={state['pid']}) "
        else:
            prefix = f"(pid={state['pid']}, ip={state['ip']}) "
        if prefix and self.colorize:
            prefix = f"{_DIM_CYAN}{prefix}{_RESET}"
        state["desc"] = prefix + state["desc"]
        key = (state["ip"], state["pid"])
        group = self.bar_groups.get(key)
        if group is None:
            offset = sum(g.slots_required() for g in self.bar_groups.values())
            group = self.bar_groups[key] = _BarGroup(offset)
        bar = group.bars_by_uuid.get(state["uuid"])
        if bar is not None:
            bar.update(state)  # the last update before closing, too (Ray issue 44983)
            if state["closed"]:
                self.hide_bars()
                bar.close()
                del group.bars_by_uuid[state["uuid"]]
                self.unhide_bars()
                self._update_offsets()
        else:
            group.bars_by_uuid[state["uuid"]] = _Bar(state, group.pos_offset)
            if state["closed"]:  # opened and closed within one report: drawn once, done
                group.bars_by_uuid.pop(state["uuid"]).close()
            self._update_offsets()

    def hide_bars(self) -> None:
        with self.lock:
            if not self.in_hidden_state:
                self.in_hidden_state = True
                for group in self.bar_groups.values():
                    for bar in group.bars_by_uuid.values():
                        bar.bar.clear()

    def unhide_bars(self) -> None:
        with self.lock:
            if self.in_hidden_state:
                self.in_hidden_state = False
                for group in self.bar_groups.values():
                    for bar in group.bars_by_uuid.values():
                        bar.bar.refresh()

    def _update_offsets(self) -> None:
        offset = 0
        for group in self.bar_groups.values():
            group.update_offset(offset)
            offset += group.slots_required()


def instance() -> _BarManager:
    """This process's bar manager (created on first use; it patches print, as Ray)."""
    global _manager
    with _mgr_lock:
        if _manager is None:
            _manager = _BarManager()
            if os.environ.get("RAY_TQDM_PATCH_PRINT", "1").lower() not in ("0", "false"):
                builtins.print = safe_print
        return _manager


__all__ = ["safe_print", "tqdm"]
