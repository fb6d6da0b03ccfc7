"""Which engine the tests drive, and the small helpers they share.

The same test files run against raylite (the default) and against real Ray, so that
the tests are known to encode Ray's behaviour:

    RAYLITE_TESTS_AGAINST_RAY=1 python -m pytest tests/compat

Tests write `from tests._engine import ray, exceptions, AGAINST_RAY` and mark the
checks of raylite internals with `raylite_only`.

Helpers used inside remote functions (`wait_for_path`) live here, in an importable
module, so that workers of either engine can load them by reference.
"""

from __future__ import annotations

import importlib
import io
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

AGAINST_RAY: bool = os.environ.get("RAYLITE_TESTS_AGAINST_RAY") == "1"

if AGAINST_RAY:
    import ray
else:
    import raylite as ray  # type: ignore[no-redef]

# Imported as a module so that a missing `ray.exceptions` attribute shows up as one
# failing test (test_errors) instead of breaking every module at import.
exceptions: Any = importlib.import_module(f"{ray.__name__}.exceptions")

ENGINE_NAME = "ray" if AGAINST_RAY else "raylite"

raylite_only = pytest.mark.skipif(AGAINST_RAY, reason="checks raylite internals")

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """Ray colours the `(fn pid=N)` prefix on terminals; compare plain text."""
    return _ANSI.sub("", text)


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    message: str | Callable[[], str] = "condition",
    interval: float = 0.02,
) -> Any:
    """Poll `predicate` until it returns a truthy value, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout} s waiting for: {text}")
        time.sleep(interval)


class StdStreams:
    """What this process writes to sys.stdout and sys.stderr from now on (any thread),
    kept whole; it still goes through to the streams it replaces.

    Polling capfd instead (readouterr: read the capture file, then truncate it) drops
    a line that another thread writes between the two, as a driver's worker-output
    relay does while a test polls. Ray's drivers also print worker output through
    sys.stdout / sys.stderr, looked up at each print."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._lock = threading.Lock()
        self._parts: dict[str, list[str]] = {"out": [], "err": []}
        for name in ("out", "err"):
            monkeypatch.setattr(sys, f"std{name}", _Tee(getattr(sys, f"std{name}"), self, name))

    def _add(self, name: str, text: str) -> None:
        with self._lock:
            self._parts[name].append(text)

    def text(self, name: str) -> str:
        """All written to std`name` ("out" or "err") so far, without ANSI colours."""
        with self._lock:
            return strip_ansi("".join(self._parts[name]))

    @property
    def out(self) -> str:
        return self.text("out")

    @property
    def err(self) -> str:
        return self.text("err")


class _Tee(io.TextIOBase):
    def __init__(self, inner: Any, into: StdStreams, name: str) -> None:
        self._inner, self._into, self._name = inner, into, name

    def write(self, text: str) -> int:
        self._into._add(self._name, text)
        return int(self._inner.write(text))

    def flush(self) -> None:
        self._inner.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return bool(self._inner.isatty())

    def fileno(self) -> int:
        return int(self._inner.fileno())

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self._inner, "encoding", "utf-8"))


def wait_for_path(path: str | os.PathLike[str], timeout: float = 60.0) -> None:
    """Block until `path` exists (used inside remote functions as a gate)."""
    p = Path(path)
    deadline = time.monotonic() + timeout
    while not p.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{p} did not appear within {timeout} s")
        time.sleep(0.005)


__all__ = [
    "AGAINST_RAY",
    "ENGINE_NAME",
    "StdStreams",
    "exceptions",
    "ray",
    "raylite_only",
    "strip_ansi",
    "wait_for",
    "wait_for_path",
]
