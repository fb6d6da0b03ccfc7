"""The job supervisor: runs submitted jobs' entrypoints on the head machine.

Owns the I/O of jobs: the drivers' processes (a shell command each, in its own process
group, as a driver of this cluster), their log files, stopping them (SIGTERM to the
group, SIGKILL after a grace period, as Ray), the working_dir packages clients upload
(content-addressed zips, unpacked once), the tail of a log, and the entrypoint's
resources (entrypoint_num_cpus, ...): a one-bundle placement group pinned to this
machine's node (head/pg_service.py reserve), made before the driver starts (the job
stays PENDING until it is placed, FAILED after RAY_JOB_START_TIMEOUT_SECONDS as Ray)
and removed when the job ends or is stopped. Not the job records
and their states (head/jobs.py, which it tells what happened), not HTTP
(dashboard/jobs_api.py). Lives in the head's process, beside the dashboard.

    POST /api/jobs/ ──submit──▶ JobTable (PENDING) ──run──▶ sh -c ENTRYPOINT (setsid)
                                                             │ cwd: unpacked working_dir
       RAYLITE_ADDRESS=head, env_vars, RAYLITE_JOB_RUNTIME_ENV │ stdout+stderr
    GET .../logs, .../logs/tail ◀── <logs dir>/job-driver-<id>.log ◀──┘
    exit ──▶ JobTable (SUCCEEDED | FAILED | STOPPED) ──▶ the log text into storage

The driver reaches the cluster as any local driver does: RAYLITE_ADDRESS names the
head, init() finds this machine's node of that cluster and its token in the node's
file (node/local.py). Its process is a child of this process, started with fork+exec
in C (subprocess), never a fork that runs Python here (manager.py says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import shutil
import signal
import string
import tempfile
import zipfile
from collections.abc import AsyncIterator, Callable
from typing import Any

import psutil

from ..config import to_units
from ..core.context import SUBMISSION_ENV  # in the driver's environment: who it is
from ..head.jobs import DriverLost, JobTable
from ..job_submission.common import (
    LABEL_SELECTOR_REFUSED,
    JobErrorType,
    JobStatus,
    JobSubmitRequest,
)
from ..object_ref import new_id
from . import local

log = logging.getLogger(__name__)

# The runtime_env fields a job's driver gets here; others are refused at submit.
DRIVER_ENV_FIELDS = {"env_vars", "working_dir", "excludes", "config"}
PACKAGE_NAME = re.compile(r"^_ray_pkg_[0-9a-f]{16,64}\.zip$")
MAX_PACKAGE_BYTES = 512 << 20  # a working_dir zip (Ray's limit for GCS packages: 512 MiB)
STOP_WAIT_S = float(os.environ.get("RAY_JOB_STOP_WAIT_TIME_S", "3"))  # Ray's, and its default
TAIL_POLL_S = 0.05
NODE_WAIT_S = 60.0  # a job waits PENDING this long for the head machine's node
# Ray's: a job whose entrypoint resources are not free in this long FAILS (15 min).
START_TIMEOUT_S = float(os.environ.get("RAY_JOB_START_TIMEOUT_SECONDS", "900"))
_ID_CHARS = sorted(set(string.ascii_letters + string.digits) - set("IloO0"))


def new_submission_id() -> str:
    """Ray's form: raysubmit_ and 16 characters without look-alikes."""
    return "raysubmit_" + "".join(random.SystemRandom().choices(_ID_CHARS, k=16))


def packages_dir() -> str:
    """Uploaded packages, by content: shared by this user's clusters, kept across restarts."""
    path = os.path.join(tempfile.gettempdir(), "raylite", "packages")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def package_name(uri: str) -> str:
    """gcs://_ray_pkg_<hash>.zip -> _ray_pkg_<hash>.zip; ValueError for other URIs."""
    protocol, sep, name = uri.partition("://")
    if not sep or protocol != "gcs" or not PACKAGE_NAME.match(name):
        raise ValueError(
            f"working_dir {uri!r}: raylite takes a local directory or .zip (the client "
            "uploads it) or a gcs://_ray_pkg_<hash>.zip it uploaded; remote URIs "
            "(s3://, https://, ...) are not implemented"
        )
    return name


def _unpack(zip_path: str, target: str) -> None:
    """Unpack once, atomically (a half-unpacked directory is never seen); a zip holding
    one top-level directory and nothing else is unpacked from inside it, as Ray does."""
    if os.path.isdir(target):
        return
    tmp = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=".unpack-")
    try:
        with zipfile.ZipFile(zip_path) as z:
            z.extractall(tmp)  # drops absolute paths and ".." parts
        entries = os.listdir(tmp)
        root = tmp
        if len(entries) == 1 and os.path.isdir(os.path.join(tmp, entries[0])):
            root = os.path.join(tmp, entries[0])
        try:
            os.rename(root, target)
        except OSError:
            if not os.path.isdir(target):  # not another unpacker first: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def kill_group(pid: int, sig: int) -> None:
    """Signal the driver's process group, and any child that left it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.send_signal(sig)


class JobSupervisor:
    """The jobs of this head: their processes, logs and packages."""

    def __init__(
        self,
        table: JobTable,
        *,
        logs_dir: str,
        head_address: str,
        node_id: str,
        spawn: Callable[[Any], None],
        pgs: Any = None,
    ) -> None:
        self.table = table
        # Outside the session dir where the storage outlives the head: a head started
        # again finds what a driver it lost wrote (manager.start_jobs picks it).
        self.logs_dir = logs_dir
        os.makedirs(self.logs_dir, mode=0o700, exist_ok=True)
        self.packages = packages_dir()
        self.head_address = head_address  # HOST:PORT: the drivers' RAYLITE_ADDRESS
        self.node_id = node_id
        self.spawn = spawn
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        # Entrypoint resources: the head's placement groups (head/pg_service.py), and the
        # one-bundle group each job holds (or waits for) until it ends.
        self.pgs = pgs
        self.groups: dict[str, bytes] = {}
        self.changed = asyncio.Event()  # set and replaced on every status change

    # ------------------------------------------------------------- start-up
    def recover(self) -> None:
        """A head started again: jobs it cannot follow are FAILED (JobTable.load), and
        their drivers, if they still run, are ended."""
        for action in self.table.load():
            if action.pid:
                self._kill_leftover(action)
            if os.path.exists(self.log_path(action.submission_id)):  # what it wrote
                self.table.save_logs(action.submission_id, self._read_file(action.submission_id))
        if self.pgs is not None:  # the groups that held the old head's jobs' resources
            from ..head.pg_service import JOB_NAMESPACE

            for pg in list(self.pgs.table.groups.values()):
                if pg.namespace == JOB_NAMESPACE and pg.state != "REMOVED":
                    self.pgs.release(pg.pg_id)

    @staticmethod
    def _kill_leftover(action: DriverLost) -> None:
        try:
            proc = psutil.Process(action.pid)
            if proc.environ().get(SUBMISSION_ENV) != action.submission_id:
                return  # the pid was reused by another process
        except psutil.Error:
            return
        log.warning("job %s: ending its leftover driver (pid %d)", action.submission_id, action.pid)
        kill_group(action.pid, signal.SIGKILL)

    # --------------------------------------------------------------- submit
    def submit(self, req: JobSubmitRequest) -> str:
        """Record the job and start it; ValueError / NotImplementedError for what
        cannot run (the HTTP route answers 400)."""
        if req.entrypoint_label_selector:
            raise NotImplementedError(LABEL_SELECTOR_REFUSED)
        resources = {
            "entrypoint_num_cpus": req.entrypoint_num_cpus,
            "entrypoint_num_gpus": req.entrypoint_num_gpus,
            "entrypoint_memory": req.entrypoint_memory,
            "entrypoint_resources": req.entrypoint_resources,
        }
        if req.resource_shape() and self.pgs is None:
            raise NotImplementedError(
                "this head cannot reserve a job's entrypoint resources (no placement "
                "groups here); leave entrypoint_num_cpus etc. unset"
            )
        env = dict(req.runtime_env or {})
        extra = sorted(set(env) - DRIVER_ENV_FIELDS)
        if extra:
            raise NotImplementedError(
                f"runtime_env fields {extra} for a job's driver are not implemented in "
                f"raylite's job submission (it takes {sorted(DRIVER_ENV_FIELDS)}); set them "
                "on the job's tasks and actors instead"
            )
        env_vars = env.get("env_vars") or {}
        if not isinstance(env_vars, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()
        ):
            raise TypeError("runtime_env['env_vars'] must be a dict of str to str")
        if env.get("working_dir") is not None:
            name = package_name(str(env["working_dir"]))
            if not os.path.exists(os.path.join(self.packages, name)):
                raise ValueError(
                    f"working_dir package {env['working_dir']} was not uploaded to this "
                    "cluster: the client uploads it first (PUT /api/packages/gcs/NAME)"
                )
        sid = req.submission_id or req.job_id or new_submission_id()
        self.table.submit(
            sid, req.entrypoint, runtime_env=env, metadata=req.metadata or {}, resources=resources
        )
        self._changed()
        self.spawn(self.run(sid))
        return sid

    def _changed(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def log_path(self, sid: str) -> str:
        return os.path.join(self.logs_dir, f"job-driver-{sid}.log")

    def driver_env(self, sid: str, runtime_env: dict[str, Any], cwd: str | None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(runtime_env.get("env_vars") or {})
        env.update(
            {
                "RAYLITE_ADDRESS": self.head_address,
                "RAY_ADDRESS": self.head_address,
                "RAYLITE_JOB_RUNTIME_ENV": json.dumps(runtime_env),
                SUBMISSION_ENV: sid,
                "PYTHONUNBUFFERED": "1",  # logs stream while the job runs
            }
        )
        if cwd is not None:  # the working dir is importable, as Ray puts it on PYTHONPATH
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [cwd, env.get("PYTHONPATH")]))
        return env

    async def wait_for_local_node(self) -> bool:
        """Whether this machine's node of the cluster runs (the driver connects through
        it), waiting up to NODE_WAIT_S: it starts after the head, or rejoins a new one."""
        deadline = asyncio.get_running_loop().time() + NODE_WAIT_S
        while True:
            try:
                await asyncio.to_thread(local.find_local_node, self.head_address)
                return True
            except ConnectionError:
                if asyncio.get_running_loop().time() > deadline:
                    return False
            await asyncio.sleep(0.05)

    async def run(self, sid: str) -> None:
        rec = self.table.get(sid)
        if rec is None or rec.info.status != JobStatus.PENDING:
            return  # stopped before it started
        runtime_env = rec.info.runtime_env or {}
        cwd = None
        try:
            if runtime_env.get("working_dir"):
                name = package_name(runtime_env["working_dir"])
                cwd = os.path.join(self.packages, name[: -len(".zip")])
                await asyncio.to_thread(_unpack, os.path.join(self.packages, name), cwd)
        except Exception as exc:
            self.table.start_failed(sid, f"runtime_env setup failed: {exc}", setup=True)
            self._changed()
            return
        if not await self.wait_for_local_node():
            self.table.start_failed(
                sid,
                f"no node of this cluster runs on the head machine after {NODE_WAIT_S:g} s: "
                "a job's driver runs beside the head and needs one (`raylite start --head` "
                "starts one; start it again if it stopped)",
            )
            self._changed()
            return
        if rec.info.status != JobStatus.PENDING:
            return  # stopped while its working_dir was unpacked or it waited for the node
        shape = JobSubmitRequest(
            rec.info.entrypoint,
            entrypoint_num_cpus=rec.info.entrypoint_num_cpus,
            entrypoint_num_gpus=rec.info.entrypoint_num_gpus,
            entrypoint_memory=rec.info.entrypoint_memory,
            entrypoint_resources=rec.info.entrypoint_resources,
        ).resource_shape()
        if shape and not await self.reserve(sid, shape):
            return
        try:
            await self.start_driver(sid, cwd, runtime_env)
        finally:
            pg_id = self.groups.pop(sid, None)
            if pg_id is not None:  # the job ended: its resources are free at once
                self.pgs.release(pg_id)

    async def reserve(self, sid: str, shape: dict[str, float]) -> bool:
        """Hold the entrypoint's resources on this machine's node (a one-bundle group
        pinned there) while the job stays PENDING; False if the job was stopped first
        or the resources did not come in START_TIMEOUT_S (the job FAILED, as Ray)."""
        node_id = self._driver_node()
        if node_id is None:
            self.table.start_failed(sid, "the head machine's node is not in the cluster")
            self._changed()
            return False
        pg_id = new_id()
        self.groups[sid] = pg_id
        bundle = {k: to_units(v) for k, v in shape.items()}
        created = self.pgs.reserve(pg_id, bundle, node_id, f"job:{sid}")
        try:
            ok = await asyncio.wait_for(asyncio.shield(created), START_TIMEOUT_S)
        except TimeoutError:
            self.pgs.release(self.groups.pop(sid))
            self.table.start_failed(
                sid,
                f"Job supervisor actor failed to start within {START_TIMEOUT_S:g} seconds. "
                "This timeout can be configured by setting the environment variable "
                "RAY_JOB_START_TIMEOUT_SECONDS. This may be because the job entrypoint's "
                "specified resources (entrypoint_num_cpus, entrypoint_num_gpus, "
                "entrypoint_resources, entrypoint_memory) aren't available on the "
                "cluster. Try checking the cluster's available resources with `raylite "
                "status` and specifying fewer resources for the job entrypoint.",
                kind=JobErrorType.JOB_SUPERVISOR_ACTOR_START_TIMEOUT,
            )
            self._changed()
            return False
        rec = self.table.get(sid)
        if not ok or rec is None or rec.info.status != JobStatus.PENDING:
            pg_id = self.groups.pop(sid, None)  # stopped while it waited
            if pg_id is not None:
                self.pgs.release(pg_id)
            return False
        return True

    def _driver_node(self) -> bytes | None:
        """The id of the node the driver connects through (this machine's)."""
        try:
            info = local.find_local_node(self.head_address)
        except ConnectionError:
            return None
        for rec in self.pgs.head.nodes.values():
            if rec.alive and rec.address == info.get("tcp_address"):
                return bytes(rec.node_id)
        return None

    async def start_driver(self, sid: str, cwd: str | None, runtime_env: dict[str, Any]) -> None:
        rec = self.table.get(sid)
        assert rec is not None
        try:
            with open(self.log_path(sid), "wb") as out:  # noqa: ASYNC230 -- a local create
                proc = await asyncio.create_subprocess_shell(
                    rec.info.entrypoint,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    cwd=cwd,
                    env=self.driver_env(sid, runtime_env, cwd),
                    start_new_session=True,  # its own group: a stop reaches its children
                )
        except Exception as exc:
            self.table.start_failed(sid, f"the entrypoint could not start: {exc!r}")
            self._changed()
            return
        self.procs[sid] = proc
        self.table.started(sid, proc.pid, self.node_id)
        self._changed()
        try:
            code = await proc.wait()
        finally:
            self.procs.pop(sid, None)
        logs = await asyncio.to_thread(self._read_file, sid)
        self.table.exited(sid, code, logs)
        self._changed()

    # ----------------------------------------------------------------- stop
    def stop(self, sid: str) -> bool:
        """Ray's stop_job: True if the job had not ended. SIGTERM to the driver's group,
        SIGKILL after RAY_JOB_STOP_WAIT_TIME_S (3 s) if it has not exited."""
        stopping = self.table.request_stop(sid)
        self._changed()
        if sid not in self.procs and sid in self.groups:  # waiting for its resources
            self.pgs.release(self.groups.pop(sid))
        proc = self.procs.get(sid)
        if stopping and proc is not None:
            self.spawn(self._stop(proc, STOP_WAIT_S))
        return stopping

    @staticmethod
    async def _stop(proc: asyncio.subprocess.Process, grace_s: float) -> None:
        kill_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            kill_group(proc.pid, signal.SIGKILL)
        else:  # the shell exited; what it started may not have
            kill_group(proc.pid, signal.SIGKILL)

    async def close(self) -> None:
        """The head stops: its jobs end with it, as on Ray. Drivers get SIGTERM, then
        SIGKILL after a second; their logs go to storage (the session dir goes), and a
        head started again on that storage marks the jobs FAILED (JobTable.load)."""
        for pg_id in self.groups.values():  # a head on storage would place them again
            with contextlib.suppress(Exception):
                self.pgs.release(pg_id)
        self.groups.clear()
        running = list(self.procs.items())
        for _sid, proc in running:
            kill_group(proc.pid, signal.SIGTERM)
        for sid, proc in running:
            try:
                await asyncio.wait_for(proc.wait(), 1.0)
            except TimeoutError:
                kill_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                self.table.save_logs(sid, self._read_file(sid))

    # ----------------------------------------------------------------- logs
    def _read_file(self, sid: str) -> str:
        try:
            with open(self.log_path(sid), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def logs(self, sid: str) -> str:
        """All of a job's output so far (from storage once it ended and the head restarted)."""
        if os.path.exists(self.log_path(sid)):
            return self._read_file(sid)
        return self.table.saved_logs(sid) or ""

    async def tail(self, sid: str) -> AsyncIterator[str]:
        """The job's output as it comes, until the job has ended and all of it was read."""
        path = self.log_path(sid)
        if self._ended(sid) and not os.path.exists(path):  # noqa: ASYNC240 -- a local stat
            saved = self.table.saved_logs(sid)
            if saved:
                yield saved
            return
        offset = 0
        while True:
            ended = self._ended(sid)  # before reading: what it wrote before ending is read
            changed = self.changed
            chunk = await asyncio.to_thread(self._read_from, path, offset)
            if chunk:
                offset += len(chunk)
                yield chunk.decode("utf-8", "replace")
                continue
            if ended:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), TAIL_POLL_S)

    def _ended(self, sid: str) -> bool:
        rec = self.table.get(sid)
        return rec is None or rec.info.status.is_terminal()

    @staticmethod
    def _read_from(path: str, offset: int) -> bytes:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(1 << 20)
        except FileNotFoundError:
            return b""
        # Cut at the last complete UTF-8 character, so a chunk never splits one.
        end = len(data)
        while end > 0 and end > len(data) - 4 and (data[end - 1] & 0xC0) == 0x80:
            end -= 1
        if end > 0 and data[end - 1] >= 0xC0:
            end -= 1
        return data[:end] if end > 0 else data

    # ------------------------------------------------------------- packages
    def has_package(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.packages, self._check_name(name)))

    @staticmethod
    def _check_name(name: str) -> str:
        if not PACKAGE_NAME.match(name):
            raise ValueError(f"bad package name {name!r}: want _ray_pkg_<hex hash>.zip")
        return name

    async def put_package(self, name: str, chunks: AsyncIterator[bytes]) -> int:
        """Store an uploaded zip under its name (content-addressed: kept if already
        there). ValueError past MAX_PACKAGE_BYTES or if it is not a zip."""
        path = os.path.join(self.packages, self._check_name(name))
        fd, tmp = tempfile.mkstemp(dir=self.packages, prefix=".upload-")
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > MAX_PACKAGE_BYTES:
                        raise ValueError(
                            f"package {name} is over {MAX_PACKAGE_BYTES >> 20} MiB: leave "
                            "large files out of the working_dir (runtime_env 'excludes')"
                        )
                    f.write(chunk)
            if not zipfile.is_zipfile(tmp):
                raise ValueError(f"package {name} is not a zip file")
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return size


__all__ = ["JobSupervisor", "new_submission_id", "package_name", "packages_dir"]
