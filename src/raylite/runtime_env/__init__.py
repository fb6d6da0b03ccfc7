"""Runtime environments (Ray's `runtime_env=`): env_vars, working_dir, py_modules, pip.

spec.py checks, merges and names an env; packaging.py zips local code into
content-addressed packages; agent.py builds envs on a node; worker_setup.py applies
one in a worker's process. The owner's side is core/runtime_envs.py, the node's shell
node/runtime_envs.py.
"""

from __future__ import annotations

from typing import Any

from .spec import validate


class RuntimeEnv(dict):  # type: ignore[type-arg]
    """`ray.runtime_env.RuntimeEnv`: a runtime_env dict, checked as it is made."""

    def __init__(self, **fields: Any) -> None:
        config = fields.get("config")
        if isinstance(config, RuntimeEnvConfig):
            fields["config"] = dict(config)
        super().__init__(validate({k: v for k, v in fields.items() if v is not None}) or {})


class RuntimeEnvConfig(dict):  # type: ignore[type-arg]
    """`ray.runtime_env.RuntimeEnvConfig`: the env's `config` field."""

    def __init__(
        self, setup_timeout_seconds: int = 600, eager_install: bool = True, log_files: Any = None
    ) -> None:
        super().__init__(
            validate(
                {
                    "config": {
                        "setup_timeout_seconds": setup_timeout_seconds,
                        "eager_install": eager_install,
                    }
                }
            )["config"]  # type: ignore[index]
        )


__all__ = ["RuntimeEnv", "RuntimeEnvConfig"]
