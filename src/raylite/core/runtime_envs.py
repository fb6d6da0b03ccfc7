"""The owner's side of runtime environments: the env a task or actor runs in.

Owns, per process, the parent env (`parent_runtime_env`: a driver's job env from
init(), a worker's own env, which the tasks it submits inherit), the merge of it with
a task's or actor's own (Ray's rule, runtime_env/spec.merge), the resolution of local
paths to package URIs (zipped, hashed, uploaded to our node manager once per URI:
UploadPackage), and a cache of resolved envs by their unresolved form, so a loop of
`.remote()` packages a working_dir once. A task's resolved env and its key go into
its TaskSpec: the key is part of its scheduling class (no lease of another env runs
it), the env rides on RequestLease. Not the checking (spec.py), the zipping
(packaging.py), nor the building (the node: node/runtime_envs.py).

    options' runtime_env ──validate──▶ normal ──merge(parent)──▶ resolve: zip, upload
        ──▶ (resolved env, key) ──TaskSpec──▶ scheduling class ("@env", key) ──RequestLease

The default path (no env anywhere) never enters here: callers test for None first.
"""

from __future__ import annotations

import json
from typing import Any

from .. import protocol as P
from ..config import CONFIG
from ..runtime_env import spec

Resolved = tuple[dict[str, Any] | None, str]  # (resolved env, env key); (None, ""): none


class RuntimeEnvsMixin:
    # A driver's job env (init's runtime_env, resolved), a worker's own env; None: none.
    parent_runtime_env: dict[str, Any] | None = None
    _resolved_envs: dict[str, Resolved] | None = None
    _uploaded: set[str] | None = None
    # Actors whose lease was refused because their env failed: the log, their death's cause.
    env_failures: dict[bytes, str]

    def runtime_env_for(self, own: dict[str, Any] | None) -> Resolved:
        """The env a task or actor with its own (normal form) env runs in."""
        merged = spec.merge(self.parent_runtime_env, own)
        if not merged:
            return None, ""
        cache = self._resolved_envs
        if cache is None:
            cache = self._resolved_envs = {}
        ident = json.dumps(merged, sort_keys=True)
        found = cache.get(ident)
        if found is None:
            resolved = self.resolve_runtime_env(merged)
            key = spec.env_key(resolved)
            found = cache[ident] = (resolved if key else None), key
        return found

    def resolve_runtime_env(self, env: dict[str, Any]) -> dict[str, Any]:
        """`env` with its local paths packaged and uploaded: URIs in their place."""
        from ..runtime_env import packaging  # zipfile, pathspec: only when an env has them

        out = dict(env)
        excludes = out.pop("excludes", [])
        wd = out.get("working_dir")
        if wd is not None and not packaging.is_uri(wd):
            out["working_dir"] = self._upload(wd, excludes, module=False)
        if "py_modules" in out:
            out["py_modules"] = [
                m if packaging.is_uri(m) else self._upload(m, excludes, module=True)
                for m in out["py_modules"]
            ]
        return out

    def _upload(self, path: str, excludes: list[str], *, module: bool) -> str:
        from ..runtime_env import packaging

        uri, data = packaging.package(path, excludes, module=module)
        uploaded = self._uploaded
        if uploaded is None:
            uploaded = self._uploaded = set()
        if uri not in uploaded:
            reply = self.nm.request(  # type: ignore[attr-defined]
                P.UploadPackage(uri, data), timeout=CONFIG.request_timeout_s
            )
            if isinstance(reply, P.Failed):
                raise RuntimeError(f"Uploading the package {uri} failed: {reply.reason}")
            uploaded.add(uri)
        return uri

    def set_job_runtime_env(self, env: dict[str, Any] | None) -> None:
        """A driver's init(runtime_env=...): resolved now (its packages uploaded), and
        built now if it asks for an eager install (config.eager_install, the default)."""
        if not env:
            return
        resolved = self.resolve_runtime_env(env)
        self.parent_runtime_env = resolved
        if spec.env_key(resolved) and "pip" in resolved and spec.eager_install(resolved):
            self._send_nm(P.PrepareRuntimeEnv(resolved))  # type: ignore[attr-defined]
