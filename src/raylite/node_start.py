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
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

# Light imports only: a driver's init() loads this module, and starts its node manager,
# before it loads anything else of raylite (driver_start.py). A dataclass here, or the
# errors module, would delay that start by their import (~10 ms).
from .config import CONFIG, to_units


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
            from .exceptions import RaySystemError

            raise RaySystemError("the node manager did not start in time")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    return buf.decode()


def default_store_root() -> str:
    """/dev/shm when it exists and is writable; else the temp directory."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    import tempfile  # here: most processes never need it

    return tempfile.gettempdir()


def store_root(capacity: int) -> str:
    """Shared memory when it can hold the store; else a disk directory, with a warning."""
    import shutil

    root = default_store_root()
    free = shutil.disk_usage(root).free
    if root == "/dev/shm" and free < capacity:
        import logging
        import tempfile

        fallback = tempfile.gettempdir()
        logging.getLogger("raylite").warning(
            "/dev/shm has only %d MiB free, less than the object store's %d MiB, so the "
            "store uses %s on disk instead, which is slower. To fix it, give the machine "
            "(or container: docker run --shm-size=...) more shared memory, or pass a smaller "
            "object_store_memory to init().",
            free >> 20,
            capacity >> 20,
            fallback,
        )
        return fallback
    return root


def check_resources(
    num_cpus: int | None, num_gpus: int | None, resources: dict[str, float] | None
) -> None:
    """Ray's errors for init() resources of a local session it refuses."""
    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if resources is not None:
        if not isinstance(resources, dict):
            raise TypeError("resources must be a dict of resource name to quantity")
        for k, v in resources.items():
            if k in ("CPU", "GPU"):
                raise ValueError(
                    "Use the 'num_cpus' and 'num_gpus' keywords instead of "
                    "'CPU' and 'GPU' in 'resources'."
                )
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"resources[{k!r}] must be a non-negative number, got {v!r}")


class LocalNodeArgs(NamedTuple):
    """init()'s arguments that a local session's node manager is started with: a node
    started before init() had read them all is its node only if they are equal
    (driver_start.init, api.init)."""

    num_cpus: int | None = None
    num_gpus: int | None = None
    resources: dict[str, float] | None = None
    object_store_memory: int | None = None
    memory: int | None = None
    node_ip: str | None = None
    temp_dir: str | None = None
    system_config: Mapping[str, Any] = MappingProxyType({})
    extra: tuple[str, ...] = ()  # node manager flags
    env: Mapping[str, str] = MappingProxyType({})  # the workers' environment


def local_resources(args: LocalNodeArgs) -> tuple[dict[str, int], int, int, int]:
    """What init()'s arguments give a local session's node: its resources in units,
    GPUs, CPUs and object store bytes (check_resources' errors for values it refuses)."""
    check_resources(args.num_cpus, args.num_gpus, args.resources)
    cpus = (os.cpu_count() or 1) if args.num_cpus is None else args.num_cpus
    gpus = args.num_gpus if args.num_gpus is not None else detect_gpus()
    available = available_memory()
    store_bytes = args.object_store_memory
    if store_bytes is None:
        store_bytes = int(available * 0.3)
    total = {
        "CPU": to_units(cpus),
        "memory": to_units(int(available * 0.7) if args.memory is None else args.memory),
        "object_store_memory": to_units(store_bytes),
        f"node:{args.node_ip or '127.0.0.1'}": to_units(1),
    }
    if gpus:
        total["GPU"] = to_units(gpus)
    for k, v in (args.resources or {}).items():
        total[k] = to_units(v)
    return total, gpus, cpus, store_bytes


class StartingNode:
    """A local session's node manager, started (the session's directories made, the
    token sent); its READY line not read yet. `args`: what it was started for."""

    def __init__(self, args: LocalNodeArgs) -> None:
        cap = args.system_config.get("max_workers")  # the node's worker process cap
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f"_system_config max_workers must be an int >= 1, not {cap!r}")
        total, gpus, cpus, store_bytes = local_resources(args)
        self.args = args
        self.adopted = False  # init() made it its session's node
        self._abandoned = False
        self.token = os.urandom(32)
        self.session_dir, self.store_dir, _ = new_session(
            "s", store_root(store_bytes), self.token, args.temp_dir
        )
        self.proc: subprocess.Popen[bytes] | None = None
        try:  # every way out but success removes the session's directories
            cmd = node_manager_command(
                self.session_dir, self.store_dir, total, gpus, cpus, *args.extra
            )
            if args.system_config.get("max_spill_bytes") is not None:
                cmd += ["--max-spill-bytes", str(int(args.system_config["max_spill_bytes"]))]
            if cap is not None:
                cmd += ["--max-workers", str(cap)]
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                env={**os.environ, **args.env} if args.env else None,
            )
            assert self.proc.stdin is not None
            self.proc.stdin.write(self.token.hex().encode() + b"\n")
            self.proc.stdin.flush()
        except BaseException:
            self.abandon()
            raise

    def wait_ready(self) -> str:
        """The node manager's address, once it says READY."""
        assert self.proc is not None
        line = read_line(self.proc, CONFIG.start_timeout_s)
        if not line.startswith("READY "):
            from .exceptions import RaySystemError

            raise RaySystemError(f"the node manager failed to start (exit code {self.proc.poll()})")
        return line.split(" ", 1)[1].strip()

    def abandon(self) -> None:
        """Stop it and remove its directories, unless init() adopted it."""
        if self.adopted or self._abandoned:
            return
        self._abandoned = True
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        import shutil

        shutil.rmtree(self.session_dir, ignore_errors=True)
        shutil.rmtree(self.store_dir, ignore_errors=True)
