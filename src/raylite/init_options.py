"""init()'s keyword arguments beyond the resources: checked as Ray 2.60 checks them,
and turned into what the node manager and the workers are started with.

Owns what each of Ray's less common init() arguments does here: `labels` (node labels,
labels.py), `_memory` (the `memory` resource), `_temp_dir` (where the session lives),
`_node_ip_address` (the node's address and `node:IP` resource), `_metrics_export_port`
(Prometheus text at /metrics there), `proxy_server_url` (the dashboard asks that server
first, as Ray's does a history server), `logging_config` and `job_config` (their fields:
job_config.py), the resource isolation arguments (refused as Ray refuses them
here); `local_mode` is the debug mode of local_mode.py (Ray 2.60 removed it). Not starting anything (api.py), not the node's flags' meaning
(node/manager.py).

    init(**kwargs) ──check()──▶ InitOptions ──node_flags()──▶ python -m raylite.node ...
                                       └──worker_env()──▶ the node's (and so every
                                           worker's) environment: logging, sys.path
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from .labels import check_node_labels

# The environment variable a local init gives its node manager (and so its workers,
# forked from its fork server): the job's logging config and code search path, JSON.
WORKER_SETUP_ENV = "RAYLITE_WORKER_SETUP"

_ISOLATION_ONLY = ("cgroup_path", "system_reserved_cpu", "system_reserved_memory")


@dataclass
class InitOptions:
    labels: dict[str, str] = field(default_factory=dict)
    memory: int | None = None
    temp_dir: str | None = None
    node_ip: str | None = None
    metrics_port: int | None = None
    logging_config: Any = None
    namespace: str | None = None  # job_config.ray_namespace
    default_detached: bool = False  # job_config.default_actor_lifetime == "detached"
    sys_path: list[str] = field(default_factory=list)  # job_config.code_search_path
    metadata: dict[str, str] = field(default_factory=dict)
    proxy_server_url: str | None = None  # the dashboard asks it first (a history server)
    runtime_env: dict[str, Any] | None = None  # the job's, normal form (runtime_env/spec.py)

    def node_flags(self) -> list[str]:
        flags: list[str] = []
        if self.labels:
            flags += ["--labels", json.dumps(self.labels)]
        if self.metrics_port is not None:
            flags += ["--metrics-export-port", str(self.metrics_port)]
        if self.node_ip is not None:
            flags += ["--ip", self.node_ip]
        if self.proxy_server_url is not None:
            flags += ["--proxy-server-url", self.proxy_server_url]
        return flags

    def worker_env(self) -> dict[str, str]:
        setup: dict[str, Any] = {}
        if self.logging_config is not None:
            setup["logging_config"] = self.logging_config.to_dict()
        if self.sys_path:
            setup["sys_path"] = self.sys_path
        return {WORKER_SETUP_ENV: json.dumps(setup)} if setup else {}


def _submitted_job_env(text: str) -> dict[str, Any]:
    """The runtime_env of the submitted job this driver is the entrypoint of
    (node/job_supervisor.py sets RAYLITE_JOB_RUNTIME_ENV): its tasks and actors get it.
    Its working_dir was unpacked on the head machine and is our cwd: the driver's
    session uploads that directory as the job's package (runtime_env/packaging.py)."""
    from .runtime_env.spec import validate

    env = json.loads(text)
    if str(env.get("working_dir", "")).startswith("gcs://"):
        env["working_dir"] = os.getcwd()
    return validate(env)


def check(kwargs: dict[str, Any], connecting: bool) -> InitOptions:
    """Ray's checks of these arguments, in Ray's order; what they ask for."""
    if kwargs.get("local_mode") and connecting:
        raise ValueError(
            "local_mode=True runs every task in this process: it starts its own session "
            "and cannot connect to a cluster (drop the address)."
        )
    _check_isolation(kwargs)
    opts = InitOptions()
    if kwargs.get("logging_config") is not None:
        from .logging_config import LoggingConfig

        lc = kwargs["logging_config"]
        if not isinstance(lc, LoggingConfig):
            raise TypeError(f"logging_config must be a LoggingConfig, got {type(lc).__name__}.")
        opts.logging_config = lc
    if kwargs.get("job_config") is not None:
        _take_job_config(kwargs["job_config"], opts)
    if kwargs.get("runtime_env") is not None:  # as Ray: it replaces the job_config's
        from .runtime_env.spec import validate

        opts.runtime_env = validate(kwargs["runtime_env"])
    elif opts.runtime_env is None and os.environ.get("RAYLITE_JOB_RUNTIME_ENV"):
        opts.runtime_env = _submitted_job_env(os.environ["RAYLITE_JOB_RUNTIME_ENV"])
    proxy = kwargs.get("proxy_server_url")
    if proxy:
        if not isinstance(proxy, str) or not proxy.startswith(("http://", "https://")):
            raise ValueError(f"proxy_server_url must be an http(s) URL, got {proxy!r}")
        opts.proxy_server_url = proxy
    labels = kwargs.get("labels")
    mem = kwargs.get("_memory")
    temp = kwargs.get("_temp_dir")
    ip = kwargs.get("_node_ip_address")
    port = kwargs.get("_metrics_export_port")
    if connecting:
        if labels is not None:
            raise ValueError("When connecting to an existing cluster, labels must not be provided.")
        if opts.proxy_server_url is not None:
            raise ValueError(
                "When connecting to an existing cluster, proxy_server_url must not be "
                "provided: the head's dashboard is started with `raylite start`."
            )
        given = [k for k in ("_memory", "_temp_dir", "_node_ip_address", "_metrics_export_port")
                 if kwargs.get(k) is not None]  # fmt: skip
        if given:
            raise ValueError(
                f"When connecting to an existing cluster, {', '.join(given)} must not be "
                "provided: `raylite start` gave the nodes theirs."
            )
        if opts.sys_path or opts.logging_config is not None:
            raise NotImplementedError(
                "A job_config.code_search_path or logging_config of a driver that joins a "
                "running cluster is not supported by raylite yet: its workers serve every "
                "job. Set it up in the workers' code instead."
            )
        return opts
    opts.labels = check_node_labels(labels)
    if mem is not None:
        if isinstance(mem, bool) or not isinstance(mem, int) or mem < 0:
            raise ValueError(f"_memory must be a non-negative int (bytes), got {mem!r}")
        opts.memory = mem
    if temp is not None:
        if not isinstance(temp, str) or not temp:
            raise TypeError(f"_temp_dir must be a directory path, got {temp!r}")
        opts.temp_dir = os.path.abspath(temp)
    if ip is not None:
        if not isinstance(ip, str) or not ip:
            raise TypeError(f"_node_ip_address must be an IP address string, got {ip!r}")
        opts.node_ip = ip
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"_metrics_export_port must be a port number, got {port!r}")
        opts.metrics_port = port
    return opts


def _check_isolation(kwargs: dict[str, Any]) -> None:
    if not kwargs.get("enable_resource_isolation"):
        for key in _ISOLATION_ONLY:
            if kwargs.get(key):
                raise ValueError(
                    f"{key} cannot be set when resource isolation is not enabled. Set "
                    "enable_resource_isolation to True if you're using ray.init or use the "
                    "--enable-resource-isolation flag if you're using the ray cli."
                )
        return
    if _cgroup_v1_mounted():
        # Ray 2.60's raylet refuses to start then (its node start-up times out).
        raise RuntimeError(
            "Resource isolation cannot start: Cgroupv1 and cgroupv2 are both mounted. "
            "Unmount cgroupv1 (resource isolation needs cgroup v2 alone, and root)."
        )
    raise NotImplementedError(
        "init(enable_resource_isolation=True) is not supported by raylite yet: it would "
        "move the node's own processes and the workers into cgroup v2 groups with "
        "reserved CPU weight and memory, which needs root and a cgroup v2-only host."
    )


def _cgroup_v1_mounted() -> bool:
    try:
        with open("/proc/mounts") as f:
            return any(line.split()[2:3] == ["cgroup"] for line in f)
    except OSError:
        return False


def _take_job_config(jc: Any, opts: InitOptions) -> None:
    from .job_config import JobConfig

    if not isinstance(jc, JobConfig):
        raise TypeError(f"job_config must be a JobConfig, got {type(jc).__name__}.")
    if jc.runtime_env:
        from .runtime_env.spec import validate

        opts.runtime_env = validate(jc.runtime_env)
    if jc.jvm_options:
        raise NotImplementedError("job_config.jvm_options: raylite runs no Java workers.")
    if jc._disable_job_level_lineage_reconstruction:
        raise NotImplementedError(
            "JobConfig(_disable_job_level_lineage_reconstruction=True) is not supported by "
            "raylite yet."
        )
    opts.namespace = jc.ray_namespace
    opts.default_detached = jc.default_actor_lifetime == "detached"
    opts.sys_path = [os.path.abspath(p) for p in [*jc.code_search_path, *jc._py_driver_sys_path]]
    opts.metadata = dict(jc.metadata)
    if jc.py_logging_config is not None and opts.logging_config is None:
        opts.logging_config = jc.py_logging_config


def setup_worker() -> None:
    """In a worker at start: the job's logging config and code search path, if any."""
    raw = os.environ.get(WORKER_SETUP_ENV)
    if not raw:
        return
    import sys

    setup = json.loads(raw)
    for path in setup.get("sys_path", ()):
        if path not in sys.path:
            sys.path.append(path)
    if "logging_config" in setup:
        from .logging_config import LoggingConfig

        LoggingConfig.from_dict(setup["logging_config"])._apply()
