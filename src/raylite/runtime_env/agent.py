"""A node's runtime environments: packages unpacked and virtualenvs built, once each.

Owns, under the node's session directory (`runtime_resources/`), the package cache
(`packages/<name>.zip`: what drivers uploaded here or the node fetched from the head),
the unpacked packages (`unpacked/<name>/`), the pip virtualenvs (`pip/<pip-key>/`, one
per distinct pip spec), and for each environment key the WorkerSetup its workers start
with. A setup is built once per key (concurrent asks share one build) and bounded by
its setup_timeout_seconds; a failure is kept and answered to every later ask with the
build's log (RuntimeEnvSetupError), so a bad spec never hangs and is not rebuilt per
task. Unused virtualenvs (no live worker) are removed, least recently used first,
past config.runtime_env_cache_envs. Not which worker serves which lease (the lease
book keys idle workers by env key), not the forking (the fork server applies the
setup, runtime_env/worker_setup.py), not how package bytes travel (the node manager
hands `fetch` in: its own cache, else the head).

    lease (env key, resolved env) ──setup()──▶ unpack working_dir, py_modules
                                            └─▶ pip: python -m venv ──▶ pip install (log kept)
                                   ◀── WorkerSetup(env_vars, cwd, sys_path, python) | error

A pip virtualenv is made with the node's interpreter, without pip (the node's own pip
installs into it through `pip --python`), and with a .pth file listing the node's own
import paths after its own site-packages: its packages come first, raylite and its
dependencies still import (Ray's --system-site-packages, for a node that runs from a
virtualenv itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import site
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import CONFIG
from . import packaging, spec


class SetupFailed(Exception):
    """An environment could not be built; str() is what the user sees (with the log)."""


@dataclass
class WorkerSetup:
    """What a worker of one environment starts with (the fork server's `setup`)."""

    env_vars: dict[str, str]
    cwd: str | None
    sys_path: list[str]  # put first on sys.path, in this order
    python: str | None  # the virtualenv's interpreter; None: the node's (forked)
    runtime_env: str  # the resolved env as JSON: the worker's tasks inherit it

    def to_wire(self) -> dict[str, Any]:
        return {
            "env_vars": self.env_vars,
            "cwd": self.cwd,
            "sys_path": self.sys_path,
            "python": self.python,
            "runtime_env": self.runtime_env,
        }


@dataclass
class _Venv:
    path: str
    users: int = 0  # live workers of an env that uses it
    last_used: float = field(default_factory=time.monotonic)


class EnvAgent:
    def __init__(
        self, root: str, fetch: Callable[[str], Awaitable[bytes]], python: str = sys.executable
    ) -> None:
        self.root = root
        self.fetch = fetch  # URI -> the package's bytes (the node's cache, else the head)
        self.python = python
        self.setups: dict[str, asyncio.Future[WorkerSetup]] = {}
        self.venvs: dict[str, _Venv] = {}
        self.venv_of: dict[str, str] = {}  # env key -> pip key
        self.builds: dict[str, asyncio.Future[str]] = {}  # pip key -> venv python

    # -- packages --------------------------------------------------------------
    def package_path(self, uri: str) -> str:
        return os.path.join(self.root, "packages", uri.split("://", 1)[1])

    def store_package(self, uri: str, data: bytes) -> None:
        """Keep an uploaded package (atomically: a reader never sees half of it)."""
        path = self.package_path(uri)
        if os.path.exists(path):
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def read_package(self, uri: str) -> bytes | None:
        try:
            with open(self.package_path(uri), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    async def _unpacked(self, uri: str) -> str:
        name = uri.split("://", 1)[1].removesuffix(".zip")
        dest = os.path.join(self.root, "unpacked", name)
        if not os.path.isdir(dest):  # noqa: ASYNC240 (a stat; unpacking runs in a thread)
            data = self.read_package(uri)
            if data is None:
                data = await self.fetch(uri)
                self.store_package(uri, data)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            await asyncio.to_thread(packaging.unpack, data, dest)
        return dest

    # -- environments ----------------------------------------------------------
    def setup(self, key: str, resolved: dict[str, Any]) -> asyncio.Future[WorkerSetup]:
        """The setup of env `key` (built at the first ask; a failure stays failed)."""
        fut = self.setups.get(key)
        if fut is None:
            fut = self.setups[key] = asyncio.ensure_future(self._build(key, resolved))
            fut.add_done_callback(lambda f: f.exception())  # seen: no "never retrieved"
        return fut

    async def _build(self, key: str, resolved: dict[str, Any]) -> WorkerSetup:
        timeout = spec.setup_timeout(resolved)
        try:
            return await asyncio.wait_for(self._build_now(key, resolved), timeout)
        except TimeoutError:
            raise SetupFailed(
                f"Failed to set up the runtime environment within {timeout:g} seconds "
                "(runtime_env['config']['setup_timeout_seconds'])."
            ) from None

    async def _build_now(self, key: str, resolved: dict[str, Any]) -> WorkerSetup:
        import json

        sys_path: list[str] = []
        cwd = None
        if "working_dir" in resolved:
            cwd = packaging.top_dir(await self._unpacked(resolved["working_dir"]))
            sys_path.append(cwd)
        for uri in resolved.get("py_modules", ()):
            sys_path.append(await self._unpacked(uri))
        python = None
        if "pip" in resolved:
            pkey = spec.pip_key(resolved["pip"])
            python = await self._venv(pkey, resolved["pip"])
            self.venv_of[key] = pkey
        return WorkerSetup(
            dict(resolved.get("env_vars", {})),
            cwd,
            sys_path,
            python,
            json.dumps(resolved, sort_keys=True),
        )

    async def _venv(self, pkey: str, pip: dict[str, Any]) -> str:
        fut = self.builds.get(pkey)
        if fut is None or (fut.done() and fut.exception() is not None):
            fut = self.builds[pkey] = asyncio.ensure_future(self._make_venv(pkey, pip))
        return await asyncio.shield(fut)

    async def _make_venv(self, pkey: str, pip: dict[str, Any]) -> str:
        path = os.path.join(self.root, "pip", pkey)
        python = os.path.join(path, "bin", "python")
        if os.path.exists(os.path.join(path, ".ready")):  # noqa: ASYNC240 (a stat)
            self.venvs.setdefault(pkey, _Venv(path))
            return python
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        log: list[str] = []
        try:
            await _run([self.python, "-m", "venv", "--without-pip", path], log)
            _link_parent_paths(python)
            if pip["packages"]:
                cmd = [self.python, "-m", "pip", "--python", python, "install",
                       "--disable-pip-version-check", "--no-input", *pip["packages"]]  # fmt: skip
                await _run(cmd, log)
            if pip.get("pip_check"):
                await _run([self.python, "-m", "pip", "--python", python, "check"], log)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        with open(os.path.join(path, ".ready"), "w"):  # noqa: ASYNC230 (an empty file)
            pass
        self.venvs[pkey] = _Venv(path)
        self.collect()
        return python

    # -- use counts and collection ---------------------------------------------
    def worker_started(self, key: str) -> None:
        venv = self.venvs.get(self.venv_of.get(key, ""))
        if venv is not None:
            venv.users += 1

    def worker_gone(self, key: str) -> None:
        venv = self.venvs.get(self.venv_of.get(key, ""))
        if venv is not None:
            venv.users = max(0, venv.users - 1)
            venv.last_used = time.monotonic()
            if not venv.users:
                self.collect()

    def collect(self) -> list[str]:
        """Remove the least recently used unused virtualenvs past the cache size."""
        unused = sorted(
            (v.last_used, k) for k, v in self.venvs.items() if not v.users and k in self.builds
        )
        removed = []
        for _, pkey in unused[: max(0, len(unused) - CONFIG.runtime_env_cache_envs)]:
            fut = self.builds.get(pkey)
            if fut is not None and not fut.done():
                continue
            venv = self.venvs.pop(pkey)
            self.builds.pop(pkey, None)
            for key in [k for k, p in self.venv_of.items() if p == pkey]:
                del self.venv_of[key]
                self.setups.pop(key, None)  # built again at the next ask
            shutil.rmtree(venv.path, ignore_errors=True)
            removed.append(pkey)
        return removed

    def close(self) -> None:
        for setup in self.setups.values():
            setup.cancel()
        for build in self.builds.values():
            build.cancel()


async def _run(cmd: list[str], log: list[str]) -> None:
    """Run a build step, its output appended to `log`; SetupFailed with the log if it
    fails. Cancelled (the setup timed out), the process is killed."""
    log.append("$ " + " ".join(cmd))
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    try:
        out, _ = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    log.append(out.decode("utf-8", "replace").rstrip())
    if proc.returncode != 0:
        text = "\n".join(log)
        raise SetupFailed(
            f"Failed to install the runtime environment (exit code {proc.returncode}). "
            f"Build log:\n{text}"
        )


def _link_parent_paths(python: str) -> None:
    """A .pth in the virtualenv: the node's own import paths, after the env's own."""
    venv = os.path.dirname(os.path.dirname(python))
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    target = os.path.join(venv, "lib", ver, "site-packages")
    os.makedirs(target, exist_ok=True)
    here = os.path.abspath(__file__)  # .../raylite/runtime_env/agent.py: raylite's parent
    paths = [os.path.dirname(os.path.dirname(os.path.dirname(here)))]
    paths += site.getsitepackages() + [site.getusersitepackages()]
    with open(os.path.join(target, "_raylite_node_paths.pth"), "w") as f:
        f.write("\n".join(p for p in dict.fromkeys(paths) if os.path.isdir(p)) + "\n")
