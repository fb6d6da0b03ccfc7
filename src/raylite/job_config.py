"""`ray.job_config.JobConfig`: a job's configuration, as Ray 2.60 spells it.

Owns the record and its setters. What init() does with each field is init_options.py's:
ray_namespace (the job's namespace unless init(namespace=) names one),
default_actor_lifetime ("detached": actors outlive the driver unless they say
otherwise), code_search_path (added to every worker's sys.path), py_logging_config
(as init(logging_config=)); runtime_env is the job's env (runtime_env/); jvm_options raises NotImplementedError
there. metadata is taken and kept with the driver's options (init_options.InitOptions):
Ray shows it only in its job submission list, which raylite does not have.
"""

from __future__ import annotations

from typing import Any

from .logging_config import LoggingConfig


class JobConfig:
    def __init__(
        self,
        jvm_options: list[str] | None = None,
        code_search_path: list[str] | None = None,
        runtime_env: dict[str, Any] | None = None,
        _client_job: bool = False,
        metadata: dict[str, str] | None = None,
        ray_namespace: str | None = None,
        default_actor_lifetime: str = "non_detached",
        _disable_job_level_lineage_reconstruction: bool = False,
        _py_driver_sys_path: list[str] | None = None,
    ) -> None:
        self.jvm_options = jvm_options or []
        search = code_search_path or []
        if not isinstance(search, (list, tuple)):
            raise TypeError(f"The type of code search path is incorrect: {type(code_search_path)}")
        self.code_search_path = search
        self._client_job = _client_job
        self.metadata = metadata or {}
        self.ray_namespace = ray_namespace
        self.set_runtime_env(runtime_env)
        self.set_default_actor_lifetime(default_actor_lifetime)
        self._disable_job_level_lineage_reconstruction = _disable_job_level_lineage_reconstruction
        self._py_driver_sys_path = _py_driver_sys_path or []
        self.py_logging_config: LoggingConfig | None = None

    def set_metadata(self, key: str, value: str) -> None:
        self.metadata[key] = value

    def set_runtime_env(self, runtime_env: dict[str, Any] | None, validate: bool = False) -> None:
        self.runtime_env = runtime_env if runtime_env is not None else {}

    def set_py_logging_config(self, logging_config: LoggingConfig | None = None) -> None:
        self.py_logging_config = logging_config

    def ensure_logging_config(
        self, logging_config: dict[str, Any] | LoggingConfig | None = None
    ) -> None:
        if logging_config is None or self.py_logging_config is not None:
            return
        if isinstance(logging_config, dict):
            logging_config = LoggingConfig.from_dict(logging_config)
        elif not isinstance(logging_config, LoggingConfig):
            raise TypeError(
                f"logging_config must be a dict or LoggingConfig, got {type(logging_config)}"
            )
        self.set_py_logging_config(logging_config)

    def set_ray_namespace(self, ray_namespace: str) -> None:
        self.ray_namespace = ray_namespace

    def set_default_actor_lifetime(self, default_actor_lifetime: str) -> None:
        if default_actor_lifetime not in ("detached", "non_detached"):
            raise ValueError("Default actor lifetime must be one of `detached`, `non_detached`")
        self.default_actor_lifetime = default_actor_lifetime

    @classmethod
    def from_json(cls, job_config_json: dict[str, Any]) -> JobConfig:
        return cls(
            jvm_options=job_config_json.get("jvm_options"),
            code_search_path=job_config_json.get("code_search_path"),
            runtime_env=job_config_json.get("runtime_env"),
            metadata=job_config_json.get("metadata"),
            ray_namespace=job_config_json.get("ray_namespace"),
            _disable_job_level_lineage_reconstruction=job_config_json.get(
                "disable_job_level_lineage_reconstruction", False
            ),
            _client_job=job_config_json.get("client_job", False),
            _py_driver_sys_path=job_config_json.get("py_driver_sys_path"),
        )


__all__ = ["JobConfig"]
