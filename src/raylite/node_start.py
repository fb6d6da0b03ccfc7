"""Starting a node manager on this machine: its session and store directories, its
command line, and reading its READY line.

Owns the layout a node's files take (a session dir with the token file, under
/tmp/raylite or init(_temp_dir=...); a store dir under the store root) and the
`python -m raylite.node` command. Not what runs there (node/manager.py), not init()'s
options (init_options.py); used by init() (api.py) and `raylite start` (cli_cluster.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time

from .config import CONFIG
from .exceptions import RaySystemError


def detect_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([g for g in visible.split(",") if g.strip()])
    try:
        return len([d for d in os.listdir("/dev") if d.startswith("nvidia") and d[6:].isdigit()])
    except OSError:
        return 0


def raise_nofile_limit() -> None:
    """This process's soft limit on open files up to its hard one (at most 65536 when
    that is unlimited), as Ray's init() does: a node manager holds three descriptors
    per worker, a driver one per worker it calls (1,000 actors: 1,000)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def available_memory() -> int:
    """Bytes of memory available now, as psutil.virtual_memory().available: Linux's
    MemAvailable read from /proc/meminfo (importing psutil costs a driver's start-up
    some milliseconds and megabytes), else psutil's answer."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import psutil

    return int(psutil.virtual_memory().available)


def new_session(
    prefix: str, store_root: str, token: bytes, temp_dir: str | None = None
) -> tuple[str, str, str]:
    """(session dir, store dir, token file) for a node about to start on this machine;
    under `temp_dir` if given (init(_temp_dir=...)), else the system's temp dir.

    The token file (mode 0600) is for local tools of the same user: `raylite memory`,
    `raylite status`, drivers connecting with init(address=...).
    """
    import tempfile  # here: a worker (which imports this module) never needs it

    base = temp_dir or os.path.join(tempfile.gettempdir(), "raylite")
    os.makedirs(base, mode=0o700, exist_ok=True)
    session_dir = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base)
    store_dir = tempfile.mkdtemp(prefix=f"raylite-{os.path.basename(session_dir)}-", dir=store_root)
    token_file = os.path.join(session_dir, "token")
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, token.hex().encode())
    os.close(fd)
    return session_dir, store_dir, token_file


def node_manager_command(
    session_dir: str, store_dir: str, total: dict[str, int], gpus: int, cpus: int, *extra: str
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "raylite.node",
        "--session-dir",
        session_dir,
        "--store-dir",
        store_dir,
        "--resources",
        json.dumps(total),
        "--num-gpus",
        str(gpus),
        "--prestart",
        str(min(cpus, CONFIG.prestart_workers)),
        *extra,
    ]


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RaySystemError("the node manager did not start in time")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    return buf.decode()
