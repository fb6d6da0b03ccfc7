"""A runtime_env as data: validation, merging and the key of an environment.

Owns what a runtime_env may hold and what it means before anything is built: the
checks Ray 2.60 makes (`RuntimeEnv(**d)`: the same error types and messages), Ray's
merge of a parent's env (the job's, or the submitting task's) with a task's or actor's,
the normal form a node builds from, and `env_key`, the hash that names one built
environment. Pure: no I/O but reading a pip requirements file. Not the packaging of
local paths into URIs (packaging.py), not the building (agent.py).

    user dict ──validate──▶ normal form ──merge(parent, child)──▶ ──resolve (packaging)──▶
    resolved env (URIs, no local paths) ──env_key──▶ "re-<sha>"  (leases, idle workers)

Normal form: a dict with only the fields given, each in one shape: env_vars {str: str};
working_dir str; py_modules [str]; excludes [str]; pip {"packages": [...],
"pip_check": bool}; config {"setup_timeout_seconds": int, "eager_install": bool}.
`config` is not part of an env's identity (the key leaves it out): two tasks that
differ only in their timeout share workers.
"""

from __future__ import annotations

import json
import os
from typing import Any

FIELDS = ("env_vars", "working_dir", "py_modules", "excludes", "pip", "config")
# Ray's other fields: accepted by Ray, not built here (never silently ignored).
NOT_SUPPORTED = ("conda", "uv", "container", "image_uri", "java_jars", "nsight", "mpi")

# A runtime env's worker has its resolved env (JSON) here: the tasks it submits inherit it.
RUNTIME_ENV_VAR = "RAYLITE_RUNTIME_ENV"

DEFAULT_SETUP_TIMEOUT_S = 600
DEFAULT_EAGER_INSTALL = True


def validate(runtime_env: Any) -> dict[str, Any] | None:
    """The normal form of `runtime_env` (None or {}: None), or Ray's error."""
    if runtime_env is None:
        return None
    if not isinstance(runtime_env, dict):  # RuntimeEnv is a dict too
        raise TypeError(
            f"runtime_env must be a dict or a ray.runtime_env.RuntimeEnv, got "
            f"{type(runtime_env).__name__}."
        )
    out: dict[str, Any] = {}
    for key, value in runtime_env.items():
        if key.startswith("_"):  # Ray's internal entries (_ray_commit ...)
            continue
        if key in NOT_SUPPORTED:
            if value:
                raise NotImplementedError(
                    f"runtime_env[{key!r}] is not supported by raylite yet: use pip, "
                    "working_dir, py_modules and env_vars."
                )
            continue
        if key not in FIELDS:
            raise ValueError(
                f"Unknown runtime_env field {key!r}: raylite supports {', '.join(FIELDS)}."
            )
        if value is None:
            continue
        out[key] = _CHECKS[key](value)
    return out or None


def _env_vars(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError(
            f"runtime_env['env_vars'] must be of type Dict[str, str], got {type(value)}"
        )
    for k, v in value.items():
        if not isinstance(k, str):
            raise TypeError(
                f"runtime_env['env_vars'] must be of type Dict[str, str], but the key {k} "
                f"is of type {type(k)}"
            )
        if not isinstance(v, str):
            raise TypeError(
                f"runtime_env['env_vars'] must be of type Dict[str, str], but the value {v} "
                f"is of type {type(v)}"
            )
    return dict(value)


def _check_uri(value: str) -> None:
    """A package URI must be one of this cluster's (gcs://, as packaging.py names them):
    fetching remote ones (s3://, https://, ...) is not done yet."""
    if "://" in value and not value.startswith("gcs://"):
        raise NotImplementedError(
            f"{value}: remote package URIs are not supported by raylite yet; use a local "
            "directory or .zip in the job's runtime_env (init), which is uploaded."
        )


def _working_dir(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"`working_dir` must be a string, got {type(value)}.")
    _check_uri(value)
    if "://" not in value and not os.path.exists(value):
        raise ValueError(f"{value} is not a valid path.")
    return value


def _py_modules(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise TypeError(f"`py_modules` must be a list of strings, got {type(value)}.")
    out = []
    for item in value:
        if not isinstance(item, str):  # a module object: its package's directory
            path = getattr(item, "__file__", None)
            if path is None:
                raise TypeError(
                    f"`py_modules` must be a list of strings or modules, got {type(item)}."
                )
            item = os.path.dirname(path) if path.endswith("__init__.py") else path
        else:
            _check_uri(item)
            if "://" not in item and not os.path.exists(item):
                raise ValueError(f"{item} is not a valid path.")
        out.append(item)
    return out


def _excludes(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"runtime_env['excludes'] must be of type List[str], got {type(value)}")
    return list(value)


def _pip(value: Any) -> dict[str, Any]:
    """A list of requirements, a requirements file, or {"packages": ..., "pip_check": ...}."""
    pip_check = False
    if isinstance(value, str):
        if not os.path.isfile(value):
            raise ValueError(f"{value} is not a valid file")
        with open(value) as f:
            packages = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    elif isinstance(value, list):
        packages = value
    elif isinstance(value, dict):
        unknown = set(value) - {"packages", "pip_check", "pip_version"}
        if unknown:
            raise ValueError(f"runtime_env['pip'] has unknown keys: {sorted(unknown)}")
        if "packages" not in value:
            raise ValueError(f"runtime_env['pip'] must include field 'packages', got {value}")
        if value.get("pip_version"):
            raise NotImplementedError("runtime_env['pip']['pip_version'] is not supported yet.")
        pip_check = value.get("pip_check", False)
        if not isinstance(pip_check, bool):
            raise TypeError(f"pip_check must be of type bool, got {type(pip_check)}")
        packages = _pip(value["packages"])["packages"]
    else:
        raise TypeError(f"runtime_env['pip'] must be of type str, list or dict, got {type(value)}")
    if not all(isinstance(p, str) for p in packages):
        raise TypeError(f"runtime_env['pip'] packages must be strings, got {packages}")
    return {"packages": list(packages), "pip_check": pip_check}


def _config(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"runtime_env['config'] must be a dict, got {type(value)}")
    timeout = value.get("setup_timeout_seconds", DEFAULT_SETUP_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        raise TypeError(f"setup_timeout_seconds must be of type int, got: {type(timeout)}")
    if timeout <= 0 and timeout != -1:
        raise ValueError(
            f"setup_timeout_seconds must be greater than zero or equals to -1, got: {timeout}"
        )
    eager = value.get("eager_install", DEFAULT_EAGER_INSTALL)
    if not isinstance(eager, bool):
        raise TypeError(f"eager_install must be a boolean. got {type(eager)}")
    return {"setup_timeout_seconds": timeout, "eager_install": eager}


_CHECKS = {
    "env_vars": _env_vars,
    "working_dir": _working_dir,
    "py_modules": _py_modules,
    "excludes": _excludes,
    "pip": _pip,
    "config": _config,
}


def check_uris_only(normal: dict[str, Any] | None) -> None:
    """A task's or actor's own env names packages by URI only: Ray uploads local
    directories and modules for the job's env (init) alone, and says so."""
    if not normal:
        return
    paths = [normal["working_dir"]] if "working_dir" in normal else []
    paths += normal.get("py_modules", [])
    for path in paths:
        if "://" not in path:
            raise ValueError(
                f"{path} is not a valid URI. Passing directories or modules to be dynamically "
                "uploaded is only supported at the job level (i.e., passed to `ray.init`)."
            )


def merge(parent: dict[str, Any] | None, child: dict[str, Any] | None) -> dict[str, Any] | None:
    """Ray's inheritance: the child's fields override the parent's whole, except
    env_vars, merged per variable (the child's win)."""
    if not parent:
        return child or None
    if not child:
        return parent
    out = {**parent, **child}
    if "env_vars" in parent and "env_vars" in child:
        out["env_vars"] = {**parent["env_vars"], **child["env_vars"]}
    return out


def env_key(resolved: dict[str, Any] | None) -> str:
    """The name of the environment a resolved env builds ("" for none): workers of one
    key serve its tasks only. Its timeouts (config) are not part of it."""
    if not resolved:
        return ""
    ident = {k: v for k, v in resolved.items() if k != "config"}
    if not ident:
        return ""
    blob = json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()
    import hashlib  # here: it maps OpenSSL's libcrypto (a plain driver never hashes an env)

    return "re-" + hashlib.sha256(blob).hexdigest()[:24]


def pip_key(pip: dict[str, Any]) -> str:
    """The name of the virtualenv a pip spec builds (one per distinct spec, per node)."""
    blob = json.dumps(pip, sort_keys=True, separators=(",", ":")).encode()
    import hashlib

    return "pip-" + hashlib.sha256(blob).hexdigest()[:24]


def setup_timeout(resolved: dict[str, Any] | None) -> float | None:
    """Seconds the node may spend building it; None: no limit (-1)."""
    t = ((resolved or {}).get("config") or {}).get("setup_timeout_seconds", DEFAULT_SETUP_TIMEOUT_S)
    return None if t == -1 else float(t)


def eager_install(resolved: dict[str, Any] | None) -> bool:
    return bool(((resolved or {}).get("config") or {}).get("eager_install", DEFAULT_EAGER_INSTALL))
