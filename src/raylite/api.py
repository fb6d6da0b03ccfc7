"""init, shutdown, remote, get, put, wait and the rest of Ray's top-level API.

The runtime (`_runtime`) is the only global: the driver's core worker and the node
manager process it started. Importing raylite starts nothing; `init()` (explicit,
or automatic on first use) starts the node manager, and `shutdown()` (explicit, at
interpreter exit, or when the driver dies and the node manager sees its stdin
close) stops it and every worker, and removes sockets and shared memory.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from typing import Any

from . import init_options, local_mode
from . import object_ref as _object_ref
from .actors import ActorHandle, method
from .bundles import is_group_resource
from .config import CONFIG, from_units
from .core import context as core_context
from .core.core_worker import CoreWorker
from .core.tasks import short_repr
from .decorator import remote
from .node_start import (
    LocalNodeArgs,
    StartingNode,
    check_resources,
    raise_nofile_limit,
)
from .object_ref import ObjectRef
from .object_ref_generator import ObjectRefGenerator, wait_with_generators
from .runtime_context import RuntimeContext

log = logging.getLogger("raylite")

_INIT_OPTIONS = {
    "include_dashboard",
    "dashboard_host",
    "dashboard_port",
    "include_webui",
    "configure_logging",
    "_system_config",
    "logging_format",
    # init_options.py's
    "local_mode",
    "job_config",
    "_temp_dir",
    "_memory",
    "_node_ip_address",
    "_metrics_export_port",
    "labels",
    "logging_config",
    "enable_resource_isolation",
    "cgroup_path",
    "system_reserved_cpu",
    "system_reserved_memory",
    "proxy_server_url",
    "runtime_env",  # the job's env (core/runtime_envs.py)
    "_token",  # the cluster token of a raylite://HOST:PORT address (else RAYLITE_TOKEN)
}
# Ray's init() arguments raylite does not do yet: set, they raise (never ignored).
_INIT_NOT_YET = {
    # Ray Client's (ray://): raylite's remote drivers prove the cluster token instead.
    "allow_multiple": " (one connection to a cluster per process)",
    "_credentials": ": a remote driver proves the cluster token (RAYLITE_TOKEN or _token=)",
    "_metadata": ": a remote driver proves the cluster token (RAYLITE_TOKEN or _token=)",
}


@dataclass
class _Runtime:
    cw: CoreWorker
    proc: subprocess.Popen[bytes] | None
    session_dir: str
    store_dir: str
    connected: bool = False  # a driver of a running cluster: shutdown leaves the node up


_runtime: _Runtime | None = None
_init_lock = threading.RLock()


def is_initialized() -> bool:
    return _runtime is not None


def _set_worker_runtime(cw: CoreWorker) -> None:
    """Inside a worker process: the worker's own core worker serves the API."""
    global _runtime
    _runtime = _Runtime(cw, None, "", "")
    core_context._global = cw


def init(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    resources: dict[str, float] | None = None,
    object_store_memory: int | None = None,
    ignore_reinit_error: bool = False,
    logging_level: int | str = logging.INFO,
    log_to_driver: bool = True,
    namespace: str | None = None,
    **kwargs: Any,
) -> RayContext:
    """Start raylite on this machine: a node manager and a pool of workers."""
    global _runtime
    # driver_start.init: the node manager it started for this call already, adopted
    # below if it was started for these arguments (driver_start stops it if not)
    early: StartingNode | None = kwargs.pop("_early_node", None)
    unknown = set(kwargs) - _INIT_OPTIONS - set(_INIT_NOT_YET)
    if unknown:
        raise TypeError(f"init() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    for key, why in _INIT_NOT_YET.items():
        if kwargs.get(key) not in (None, False, {}, [], ""):
            raise NotImplementedError(f"init({key}=...) is not supported by raylite yet{why}.")
    given_address = address if address is not None else os.environ.get("RAYLITE_ADDRESS")
    opts = init_options.check(kwargs, connecting=given_address not in (None, "", "local"))
    if namespace is None:
        namespace = opts.namespace
    log_format = kwargs.get("logging_format")
    if core_context.FORKED_FROM is not None:
        raise core_context.fork_error()
    with _init_lock:
        if _runtime is not None:
            if ignore_reinit_error:
                return RayContext(_runtime.cw)
            raise RuntimeError(
                "Maybe you called raylite.init twice by accident? This error can be suppressed "
                "by passing in 'ignore_reinit_error=True' or by calling 'raylite.shutdown()' "
                "prior to 'raylite.init()'."
            )
        if address is None:
            address = os.environ.get("RAYLITE_ADDRESS") or None
        if address not in (None, "local"):
            given = [
                k
                for k, v in (
                    ("num_cpus", num_cpus),
                    ("num_gpus", num_gpus),
                    ("resources", resources),
                    ("object_store_memory", object_store_memory),
                )
                if v is not None
            ]
            if given:
                raise ValueError(
                    f"When connecting to an existing cluster, {', '.join(given)} must not be "
                    "provided: the nodes were started with their resources (raylite start)."
                )
            if kwargs.get("configure_logging", True):
                _configure_logging(logging_level, log_format)
            _runtime = _connect(address, log_to_driver, namespace, kwargs.get("_token"))
            if opts.default_detached:
                _runtime.cw.default_actor_lifetime = "detached"
            _job_runtime_env(opts)
            core_context._global = _runtime.cw
            core_context._auto_init = _auto_init
            atexit.register(_at_exit)
            _watch_forks()
            raise_nofile_limit()  # a driver holds a connection per worker it calls
            return RayContext(_runtime.cw)
        if kwargs.get("_token") is not None:
            raise ValueError(
                "_token is the token of the cluster at a raylite://HOST:PORT address; "
                "init() without an address starts a session of its own."
            )
        args = LocalNodeArgs(
            num_cpus, num_gpus, resources, object_store_memory, opts.memory, opts.node_ip,
            opts.temp_dir, dict(kwargs.get("_system_config") or {}),
            (*_dashboard_args(kwargs), *opts.node_flags()), opts.worker_env(),
        )  # fmt: skip
        if early is not None and early.args != args:
            early = None  # started for other arguments than these turned out to be
        check_resources(num_cpus, num_gpus, resources)  # Ray's errors, before anything starts
        if kwargs.get("configure_logging", True):
            _configure_logging(logging_level, log_format)
        if opts.logging_config is not None:
            opts.logging_config._apply()
        node = early or StartingNode(args)
        _runtime = _start_local(node, log_to_driver, namespace, opts)
        _job_runtime_env(opts)
        core_context._global = _runtime.cw
        core_context._auto_init = _auto_init
        atexit.register(_at_exit)
        _watch_forks()
        raise_nofile_limit()  # a driver holds a connection per worker it calls
        if kwargs.get("local_mode"):
            local_mode.start()
            log.warning(
                "local_mode=True: tasks and actor calls run inline in this process, one at "
                "a time (a debug mode: nothing runs in parallel)."
            )
        context = RayContext(_runtime.cw)
        if opts.metrics_port is not None:  # as Ray's address_info shows it
            context["metrics_export_port"] = context.address_info["metrics_export_port"] = (
                opts.metrics_port
            )
        if context.dashboard_login_url:
            log.info(
                "Started a local raylite instance. View the dashboard at %s",
                context.dashboard_login_url,
            )
        elif "--dashboard-port" in _dashboard_args(kwargs):
            log.warning("the dashboard did not start: the node manager's warning above says why")
        if opts.proxy_server_url and not context.dashboard_url:
            log.warning(
                "proxy_server_url is for the dashboard, which is off: include_dashboard=True"
            )
        return context


def _job_runtime_env(opts: init_options.InitOptions) -> None:
    """The job's runtime_env: packaged and uploaded now (Ray's errors, e.g. a package
    over the size limit, come from init()); the engine stops again if that fails."""
    if opts.runtime_env is None:
        return
    assert _runtime is not None
    try:
        _runtime.cw.set_job_runtime_env(opts.runtime_env)
    except BaseException:
        shutdown()
        raise


def _dashboard_args(kwargs: dict[str, Any]) -> list[str]:
    """Node manager flags for init's dashboard options. Off unless include_dashboard=True
    (or a dashboard_port is given with include_dashboard left unset); port 0: a free one."""
    include = kwargs.get("include_dashboard", kwargs.get("include_webui"))
    port = kwargs.get("dashboard_port")
    if include is False or (include is None and port is None):
        return []
    from .dashboard import DEFAULT_PORT

    host = kwargs.get("dashboard_host") or "127.0.0.1"
    return [
        "--dashboard-port",
        str(DEFAULT_PORT if port is None else int(port)),
        "--dashboard-host",
        str(host),
    ]


def _connect(
    address: str, log_to_driver: bool, namespace: str | None, token: Any = None
) -> _Runtime:
    """A driver of a running cluster, through the node `raylite start` runs on this host;
    for raylite://HOST:PORT (or ray://) on a host without one, over TCP to a node there."""
    from .exceptions import AuthenticationError
    from .node import local
    from .transport import refused

    given = None if token is None else local.parse_token(token)
    if local.is_remote_address(address):
        try:
            node = local.find_local_node(address)
        except ConnectionError:
            return _connect_remote(address, given, log_to_driver, namespace)
    else:
        node = local.find_local_node(address)
    node_token = local.read_token(node["token_file"])
    if given is not None and given != node_token:
        raise AuthenticationError(refused(local.normalize(address)))
    cw = CoreWorker(
        mode="driver",
        node_address=node["unix_address"],
        token=node_token,
        session_dir=node["session_dir"],
        log_to_driver=log_to_driver,
        namespace=namespace,
        listen_ip=node["ip"],
    )
    return _Runtime(cw, None, "", "", connected=True)


def _connect_remote(
    address: str, token: bytes | None, log_to_driver: bool, namespace: str | None
) -> _Runtime:
    """A driver on a machine with no node of the cluster (core/remote_driver.py)."""
    from .core.remote_driver import connect_remote
    from .node import local

    head = local.normalize(address)
    if token is None:
        token = local.token_from_env()
    if token is None:
        raise ConnectionError(
            f"Connecting to {address} from a machine without a node of that cluster needs "
            "the cluster token: set RAYLITE_TOKEN to it (the head's token file, which "
            "`raylite start --head` names) or pass init(..., _token=...)."
        )
    cw = connect_remote(head, token, log_to_driver, namespace)
    return _Runtime(cw, None, "", "", connected=True)


def _auto_init() -> CoreWorker:
    with _init_lock:
        if _runtime is None:
            init()
        assert _runtime is not None
        return _runtime.cw


core_context._auto_init = _auto_init


def _configure_logging(level: int | str, fmt: str | None = None) -> None:
    logger = logging.getLogger("raylite")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter(fmt or "%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        logger.addHandler(handler)
        logger.propagate = False


def _start_local(
    node: StartingNode,
    log_to_driver: bool,
    namespace: str | None,
    opts: init_options.InitOptions | None = None,
) -> _Runtime:
    """The driver of the session whose node manager `node` is: adopted once it is READY
    and this driver has registered (else `node` is abandoned: stopped, its files gone)."""
    try:
        node_address = node.wait_ready()
        cw = CoreWorker(
            mode="driver",
            node_address=node_address,
            token=node.token,
            session_dir=node.session_dir,
            log_to_driver=log_to_driver,
            namespace=namespace,
        )
        if opts is not None and opts.default_detached:
            cw.default_actor_lifetime = "detached"
    except BaseException:
        node.abandon()
        raise
    node.adopted = True
    assert node.proc is not None
    return _Runtime(cw, node.proc, node.session_dir, node.store_dir)


_fork_hook = False


def _watch_forks() -> None:
    """Once a driver has a session, a child it forks refuses every call (at once, saying
    why) instead of hanging on the parent's sockets (os.register_at_fork, from init())."""
    global _fork_hook
    if not _fork_hook:
        _fork_hook = True
        os.register_at_fork(after_in_child=_after_fork_in_child)


def _after_fork_in_child() -> None:
    """In the child of a fork: the session, its threads and its sockets stay the parent's.
    Nothing here may write on them: refs stop counting, the exit hook goes (it would stop
    the parent's node), and the lock is new (another thread may have held it)."""
    global _runtime, _init_lock
    _init_lock = threading.RLock()
    if _runtime is None or core_context._global is not _runtime.cw:
        return
    _runtime = None
    core_context.forked_from(os.getppid())
    _object_ref.set_hooks(None)
    with contextlib.suppress(Exception):
        atexit.unregister(_at_exit)


def _at_exit() -> None:
    """The interpreter exits without ray.shutdown(): let submitted tasks end (briefly)."""
    rt = _runtime
    if rt is not None:
        with contextlib.suppress(Exception):
            rt.cw.drain(CONFIG.exit_drain_s)
    shutdown()


def shutdown() -> None:
    """Stop the node manager and every worker; remove sockets and shared memory."""
    global _runtime
    with _init_lock:
        rt = _runtime
        local_mode.stop()
        if rt is not None and rt.connected:
            _runtime = None
            core_context._global = None
            with contextlib.suppress(Exception):
                atexit.unregister(_at_exit)
            rt.cw.shutdown()
            core_context.session_ended(rt.cw.address, None)
            return
        if rt is None or rt.proc is None:
            return
        _runtime = None
        core_context._global = None
        with contextlib.suppress(Exception):
            atexit.unregister(_at_exit)
        cw = rt.cw
        with contextlib.suppress(Exception):
            from . import protocol as P

            cw.nm.request(P.ShutdownNode(), timeout=CONFIG.shutdown_timeout_s)
        cw.shutdown()
        core_context.session_ended(cw.address, rt.session_dir)
        proc = rt.proc
        with contextlib.suppress(Exception):
            proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(timeout=CONFIG.shutdown_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(Exception):
            proc.stdout.close()  # type: ignore[union-attr]
        shutil.rmtree(rt.session_dir, ignore_errors=True)
        shutil.rmtree(rt.store_dir, ignore_errors=True)


def _worker() -> CoreWorker:
    return core_context.global_worker()


def put(value: Any, *, _owner: Any = None) -> ObjectRef:
    """Store `value` in the object store; returns its ObjectRef."""
    return _worker().put(value)


def get(object_refs: Any, *, timeout: float | None = None) -> Any:
    """The value(s) of an ObjectRef or a list of ObjectRefs, waiting for them."""
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
        raise ValueError(f"timeout must be a non-negative number or None, got {timeout!r}")
    cw = _worker()
    if isinstance(object_refs, ObjectRef):
        if core_context.PAST_OWNERS:
            core_context.check_session((object_refs,), "get")
        return cw.get([object_refs], timeout)[0]
    if isinstance(object_refs, (list, tuple)):
        for r in object_refs:
            if not isinstance(r, ObjectRef):  # TypeError, as Ray: the list is fine, not r
                raise TypeError(
                    f"Attempting to call `get` on the value {short_repr(r)}, which is not "
                    "an ObjectRef: 'object_refs' must either be an ObjectRef or a list of "
                    "ObjectRefs."
                )
        if core_context.PAST_OWNERS:
            core_context.check_session(object_refs, "get")
        return cw.get(list(object_refs), timeout)
    if isinstance(object_refs, ObjectRefGenerator):
        return object_refs  # as Ray does: its refs come from iterating it
    raise ValueError(
        "'object_refs' must either be an ObjectRef or a list of ObjectRefs, "
        f"got {type(object_refs).__name__}."
    )


def wait(
    object_refs: list[ObjectRef],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Split refs into (ready, not ready) once num_returns are ready or timeout passes.
    An ObjectRefGenerator among them is ready once next() on it would not wait."""
    if isinstance(object_refs, (ObjectRef, ObjectRefGenerator)) or not isinstance(
        object_refs, (list, tuple)
    ):
        raise TypeError(f"wait() expected a list of ObjectRef, got {type(object_refs)}")
    generators = False
    for r in object_refs:
        if not isinstance(r, ObjectRef):
            if not isinstance(r, ObjectRefGenerator):
                raise TypeError(
                    f"wait() expected a list of ObjectRef, got list containing {type(r)}"
                )
            generators = True
    if not object_refs:  # as Ray: nothing to wait for, whatever num_returns says
        return [], []
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns <= 0:
        raise ValueError(f"Invalid number of objects to return {num_returns}.")
    if num_returns > len(object_refs):
        raise ValueError(
            "num_returns cannot be greater than the number of objects provided to raylite.wait."
        )
    if len(set(object_refs)) != len(object_refs):
        raise ValueError("Wait requires a list of unique object refs.")
    if timeout is not None and timeout < 0:
        raise ValueError(f"The 'timeout' argument must be nonnegative. Received {timeout}")
    cw = _worker()
    if core_context.PAST_OWNERS:
        core_context.check_session((r for r in object_refs if isinstance(r, ObjectRef)), "wait")
    if generators:  # ready: next() would not wait
        return wait_with_generators(cw, list(object_refs), num_returns, timeout)
    return cw.wait(list(object_refs), num_returns, timeout)


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Kill an actor's process at once; pending and later calls raise ActorDiedError."""
    if isinstance(actor, local_mode.LocalActorHandle):  # local_mode=True
        local_mode.kill(actor)
        return
    if not isinstance(actor, ActorHandle):
        raise ValueError(
            f"raylite.kill() is only supported for actors; for tasks, use raylite.cancel(). "
            f"Got: {type(actor).__name__}."
        )
    _worker().kill_actor(actor._actor_id, actor._class_name, no_restart)


def cancel(object_ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel a task: a queued one never runs, a running one is interrupted
    (KeyboardInterrupt in its worker) or, with force=True, its worker is killed.
    `get` then raises TaskCancelledError. recursive=True (Ray's default) also cancels
    the tasks it submitted, and theirs."""
    if isinstance(object_ref, ObjectRefGenerator):  # its task: it stops at once
        object_ref = object_ref.completed()
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(
            "raylite.cancel() only supports ObjectRefs; for actors, try raylite.kill(). "
            f"Got: {type(object_ref).__name__}."
        )
    _worker().cancel(object_ref, force, recursive)


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of a live named actor; ValueError if there is none by that name."""
    if not name:  # None or "": ValueError, another type TypeError, as Ray
        raise ValueError(f"Please supply a non-empty string name to get_actor, got {name!r}.")
    if not isinstance(name, str):
        raise TypeError(f"get_actor() takes the actor's name as a str, got {type(name).__name__}.")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be None or a string, got {type(namespace).__name__}.")
    cw = _worker()
    if core_context.LOCAL_MODE:
        return local_mode.get_actor(name, namespace)  # type: ignore[return-value]
    info = cw.named_actor(name, namespace)
    return ActorHandle(
        info.actor_id,
        info.class_name,
        info.methods,
        info.address or None,
        ref=cw.creation_ref_of(info.actor_id),
    )


def get_gpu_ids() -> list[int]:
    """GPU ids assigned to the current task or actor ([] in the driver)."""
    cw = core_context._global
    return list(cw.current_gpu_ids) if cw is not None else []


def _resources(which: str) -> dict[str, float]:
    info = _worker().cluster_info()
    units = info.total if which == "total" else info.available
    # Without placement groups' renamed resources (bundles.py), as Ray shows them.
    return {
        k: from_units(v)
        for k, v in units.items()
        if (which == "total" or v > 0) and not is_group_resource(k)
    }


def cluster_resources() -> dict[str, float]:
    return _resources("total")


def available_resources() -> dict[str, float]:
    return _resources("available")


def nodes() -> list[dict[str, Any]]:
    return _worker().cluster_info().nodes


def timeline(filename: str | None = None) -> list[dict[str, Any]] | None:
    """Chrome trace events of finished tasks ("X" spans, and "s"/"f" flows from the
    task that produced an argument to the task that read it); written to `filename`
    (with the worker names) if given, for chrome://tracing or Perfetto."""
    from .task_events import chrome_trace

    meta, trace = chrome_trace(_worker().timeline_events())
    if filename is not None:
        with open(filename, "w") as f:
            json.dump(meta + trace, f)
        return None
    return trace


def get_runtime_context() -> RuntimeContext:
    return RuntimeContext(_worker())


class RayContext(dict):  # type: ignore[type-arg]
    """What init() returns; a dict with the node's address, like Ray's."""

    def __init__(self, cw: CoreWorker) -> None:
        from . import dashboard

        # The node's session dir (the node socket is unix:<session_dir>/node.sock); a
        # cluster driver's own address is TCP and says nothing of it.
        local_node = cw.node_address.startswith("unix:")  # else a remote driver's TCP node
        session_dir = os.path.dirname(cw.node_address[5:]) if local_node else ""
        # The head's, if it runs one on this machine.
        base = dashboard.read_url(session_dir) if local_node else ""
        # Ray's form, HOST:PORT; the link with a login token is dashboard_login_url.
        self.dashboard_url = base.removeprefix("http://").removeprefix("https://")
        self.dashboard_login_url = dashboard.login_url(base, cw.token)
        super().__init__(
            node_id=cw.node_id.hex(),
            address=cw.node_address,
            session_dir=session_dir,
            webui_url=self.dashboard_url,
        )
        self.address_info = dict(self)

    def __enter__(self) -> RayContext:
        return self

    def __exit__(self, *exc: object) -> None:
        shutdown()


__all__ = [
    "available_resources",
    "cancel",
    "cluster_resources",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "timeline",
    "wait",
]
