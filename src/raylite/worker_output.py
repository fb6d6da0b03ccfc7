"""A worker's stdout and stderr: each line its process prints goes out prefixed with
the running task's (or actor's) name and the pid, as Ray prefixes worker output.

Owns PrefixedStream, the line-buffered text stream worker_main puts in place of
sys.stdout and sys.stderr. Not where the lines go from there (the node manager reads
the worker's pipes and relays them to drivers), not the name (Worker.display_name).
"""

from __future__ import annotations

import io
import os
import threading
from typing import Any


class PrefixedStream(io.TextIOBase):
    """Line-buffered text stream that prefixes each line with the running task's name."""

    def __init__(self, fd: int, worker: Any) -> None:
        self.fd = fd
        self.worker = worker
        self.pending = ""
        self.lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        with self.lock:
            self.pending += s
            if "\n" in self.pending:
                *lines, self.pending = self.pending.split("\n")
                prefix = f"({self.worker.display_name} pid={os.getpid()}) "
                self._emit("".join(f"{prefix}{line}\n" for line in lines))
        return len(s)

    def flush(self) -> None:
        with self.lock:
            if self.pending:
                prefix = f"({self.worker.display_name} pid={os.getpid()}) "
                self._emit(f"{prefix}{self.pending}\n")
                self.pending = ""

    def _emit(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        while data:
            try:
                n = os.write(self.fd, data)
            except InterruptedError:
                continue
            except OSError:
                return
            data = data[n:]

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return False
