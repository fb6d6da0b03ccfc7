"""JobSubmissionClient: Ray's job SDK over the dashboard's HTTP job API.

Owns the client side: the address and token it sends, each call's request and how its
answer becomes a value or Ray's error (RuntimeError "Request failed with status code
..."), the working_dir upload before a submit (packaged by runtime_env/packaging.py's
rules, as a driver's working_dir is) and the log tail's websocket. Not the server
(dashboard/jobs_api.py). Needs no raylite node on this machine: the dashboard's URL
and the cluster token are enough.

    JobSubmissionClient(address) ──HTTP + "Authorization: Bearer <token>"──▶ dashboard
        address: http://HOST:PORT, HOST:PORT, or None (RAY_API_SERVER_ADDRESS,
        RAY_ADDRESS, else this machine's head)
        token: RAYLITE_TOKEN, else the token file of the local head serving that URL

The plain calls use urllib (synchronous, like Ray's requests); tail_job_logs is an
async iterator over aiohttp's websocket client, as in Ray.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import AsyncIterator
from typing import Any

from ..node import local
from ..runtime_env import packaging
from .common import LABEL_SELECTOR_REFUSED, JobDetails, JobStatus

log = logging.getLogger(__name__)

TIMEOUT_S = 60.0


def local_package(working_dir: str, excludes: list[str] | None) -> tuple[str, bytes] | None:
    """(package name, zip bytes) of a local working_dir, a directory or a .zip file,
    packaged as a driver's runtime_env packages it (excludes, .gitignore and .rayignore
    files, Ray's default excludes, the size limit); None if it is a gcs:// URI already."""
    if "://" in working_dir:
        if working_dir.startswith(packaging.URI_SCHEME):
            return None
        raise NotImplementedError(
            f"working_dir {working_dir!r}: remote URIs (s3://, gs://, https://) are not "
            "implemented in raylite; give a local directory or .zip file"
        )
    path = os.path.abspath(os.path.expanduser(working_dir))
    if os.path.isfile(path) and path.endswith(".zip"):
        if not zipfile.is_zipfile(path):
            raise ValueError(f"working_dir {working_dir!r} is not a zip file")
    elif not os.path.isdir(path):
        raise ValueError(f"working_dir {working_dir!r} is not a directory or a .zip file")
    uri, data = packaging.package(path, list(excludes or []), module=False)
    return uri[len(packaging.URI_SCHEME) :], data


def _local_heads() -> list[dict[str, Any]]:
    return [n for n in local.local_nodes() if n.get("dashboard_url")]


def _same_endpoint(a: str, b: str) -> bool:
    def norm(url: str) -> tuple[str, int | None]:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        return ("127.0.0.1" if host in ("localhost", "::1") else host), parts.port

    return norm(a) == norm(b)


def resolve_address(address: str | None) -> str:
    """The dashboard's base URL for `address` (Ray's forms, plus None: this machine's)."""
    if address is None:
        address = os.environ.get("RAY_API_SERVER_ADDRESS") or None
    if address is None:
        env = os.environ.get("RAY_ADDRESS", "")
        address = env if env.startswith(("http://", "https://")) else None
    if address in (None, "auto"):
        heads = _local_heads()
        if not heads:
            raise ConnectionError(
                "No raylite head with a dashboard runs on this machine: pass the dashboard's "
                "address, e.g. JobSubmissionClient('http://HEAD:8265'), or set RAY_ADDRESS."
            )
        return str(heads[0]["dashboard_url"]).rstrip("/")
    if address.startswith(("ray://", "raylite://")):
        raise ValueError(
            f"{address!r} is a client address; the job API is on the dashboard: http://HEAD:8265"
        )
    if "://" not in address:
        address = "http://" + address
    return address.rstrip("/")


def ssl_context(url: str) -> Any:
    """None for http://; for https:// (a head started with --tls) a context that trusts
    the cluster's CA: RAYLITE_TLS_CA, else the ca.crt of the local node whose dashboard
    `url` is, else the system's CAs (a dashboard behind a proxy with a public certificate).
    Host names are not checked against the cluster's certificates (tls.py)."""
    if not url.startswith("https://"):
        return None
    import ssl

    ca = os.environ.get("RAYLITE_TLS_CA")
    if not ca:
        for node in _local_heads():
            if _same_endpoint(str(node["dashboard_url"]), url):
                path = os.path.join(str(node.get("session_dir", "")), "tls", "ca.crt")
                if os.path.exists(path):
                    ca = path
                    break
    if not ca:
        return ssl.create_default_context()
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    return ctx


def find_token(url: str) -> bytes | None:
    """RAYLITE_TOKEN, else the token file of the local head whose dashboard is `url`."""
    token = local.token_from_env()
    if token is not None:
        return token
    for node in _local_heads():
        if _same_endpoint(node["dashboard_url"], url):
            try:
                return local.read_token(node["token_file"])
            except OSError:
                return None
    return None


class _Reply:
    def __init__(self, status: int, body: bytes) -> None:
        self.status_code = status
        self.text = body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.text)


class JobSubmissionClient:
    """Ray's JobSubmissionClient: submit, follow, stop and delete jobs on a cluster."""

    def __init__(
        self,
        address: str | None = None,
        create_cluster_if_needed: bool = False,
        cookies: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        verify: str | bool | None = True,
    ) -> None:
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address must be a string, got {type(address)}")
        if cookies is not None and not isinstance(cookies, dict):
            raise TypeError(f"cookies must be a dict, got {type(cookies)}")
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, got {type(metadata)}")
        if headers is not None and not isinstance(headers, dict):
            raise TypeError(f"headers must be a dict, got {type(headers)}")
        if verify is not True:
            raise NotImplementedError("verify=: raylite's dashboard serves plain HTTP")
        self._address = resolve_address(address)
        self._ssl = ssl_context(self._address)
        self._default_metadata = dict(metadata or {})
        self._headers = {str(k): str(v) for k, v in (headers or {}).items()}
        self._cookies = dict(cookies or {})
        if not any(k.lower() == "authorization" for k in self._headers):
            token = find_token(self._address)
            if token is not None:
                self._headers["Authorization"] = f"Bearer {token.hex()}"
        if self._cookies:
            self._headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self._cookies.items())
        r = self._do_request("GET", "/api/version")
        if r.status_code != 200:
            self._raise_error(r)

    # ---------------------------------------------------------------- HTTP
    def get_address(self) -> str:
        return self._address

    def _do_request(
        self, method: str, endpoint: str, *, data: bytes | None = None, json_data: Any = None
    ) -> _Reply:
        headers = dict(self._headers)
        if json_data is not None or method == "POST":
            data = json.dumps(json_data if json_data is not None else {}).encode()
            headers["Content-Type"] = "application/json"
        elif data is not None:
            headers["Content-Type"] = "application/octet-stream"
        req = urllib.request.Request(
            self._address + endpoint, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S, context=self._ssl) as resp:
                reply = _Reply(resp.status, resp.read())
        except urllib.error.HTTPError as err:
            reply = _Reply(err.code, err.read())
        except (urllib.error.URLError, OSError) as exc:
            raise ConnectionError(
                f"Failed to connect to Ray at address: {self._address}. ({exc})"
            ) from exc
        if reply.status_code == 401:
            raise RuntimeError(
                f"Request failed with status code 401: the dashboard at {self._address} "
                "refused the token; set RAYLITE_TOKEN to the cluster's token "
                "(the head prints where its token file is)."
            )
        return reply

    @staticmethod
    def _raise_error(r: _Reply) -> None:
        raise RuntimeError(f"Request failed with status code {r.status_code}: {r.text}.")

    def get_version(self) -> str:
        r = self._do_request("GET", "/api/version")
        if r.status_code != 200:
            self._raise_error(r)
        return str(r.json().get("version"))

    # ------------------------------------------------------------- packages
    def _upload_working_dir_if_needed(self, runtime_env: dict[str, Any]) -> None:
        working_dir = runtime_env.get("working_dir")
        if working_dir is None:
            return
        if not isinstance(working_dir, str):
            raise TypeError(f"working_dir must be a string, got {type(working_dir)}")
        package = local_package(working_dir, runtime_env.get("excludes"))
        if package is None:
            return
        name, data = package
        r = self._do_request("GET", f"/api/packages/gcs/{name}")
        if r.status_code == 404:
            log.info("Uploading package gcs://%s.", name)
            r = self._do_request("PUT", f"/api/packages/gcs/{name}", data=data)
        if r.status_code != 200:
            self._raise_error(r)
        runtime_env["working_dir"] = f"gcs://{name}"
        runtime_env.pop("excludes", None)  # applied here, before the upload

    # ----------------------------------------------------------------- jobs
    def submit_job(
        self,
        *,
        entrypoint: str,
        job_id: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        submission_id: str | None = None,
        entrypoint_num_cpus: float | None = None,
        entrypoint_num_gpus: float | None = None,
        entrypoint_memory: int | None = None,
        entrypoint_resources: dict[str, float] | None = None,
        entrypoint_label_selector: dict[str, str] | None = None,
    ) -> str:
        """Submit `entrypoint` (a shell command) to run on the head as a driver of the
        cluster; returns its submission id. RuntimeError if the id was used before."""
        if entrypoint_label_selector:
            raise NotImplementedError(LABEL_SELECTOR_REFUSED)
        if job_id:
            log.warning("job_id kwarg is deprecated. Please use submission_id instead.")
        runtime_env = copy.deepcopy(runtime_env or {})
        if not isinstance(runtime_env, dict):
            raise TypeError(f"runtime_env must be a dict, got {type(runtime_env)}")
        metadata = dict(metadata or {})
        metadata.update(self._default_metadata)
        self._upload_working_dir_if_needed(runtime_env)
        body = {
            "entrypoint": entrypoint,
            "submission_id": submission_id or job_id,
            "runtime_env": runtime_env,
            "metadata": metadata,
            "entrypoint_num_cpus": entrypoint_num_cpus,
            "entrypoint_num_gpus": entrypoint_num_gpus,
            "entrypoint_memory": entrypoint_memory,
            "entrypoint_resources": entrypoint_resources,
        }
        body = {k: v for k, v in body.items() if v is not None}
        r = self._do_request("POST", "/api/jobs/", json_data=body)
        if r.status_code != 200:
            self._raise_error(r)
        return str(r.json()["submission_id"])

    def stop_job(self, job_id: str) -> bool:
        """Stop a job: True if it was running (SIGTERM, then SIGKILL after 3 s)."""
        r = self._do_request("POST", f"/api/jobs/{job_id}/stop")
        if r.status_code != 200:
            self._raise_error(r)
        return bool(r.json()["stopped"])

    def delete_job(self, job_id: str) -> bool:
        """Forget a job that has ended; RuntimeError if it has not."""
        r = self._do_request("DELETE", f"/api/jobs/{job_id}")
        if r.status_code != 200:
            self._raise_error(r)
        return bool(r.json()["deleted"])

    def get_job_info(self, job_id: str) -> JobDetails:
        r = self._do_request("GET", f"/api/jobs/{job_id}")
        if r.status_code != 200:
            self._raise_error(r)
        return JobDetails.from_dict(r.json())

    def list_jobs(self) -> list[JobDetails]:
        r = self._do_request("GET", "/api/jobs/")
        if r.status_code != 200:
            self._raise_error(r)
        return [JobDetails.from_dict(row) for row in r.json()]

    def get_job_status(self, job_id: str) -> JobStatus:
        status = self.get_job_info(job_id).status
        assert isinstance(status, JobStatus)
        return status

    def get_job_logs(self, job_id: str) -> str:
        r = self._do_request("GET", f"/api/jobs/{job_id}/logs")
        if r.status_code != 200:
            self._raise_error(r)
        return str(r.json()["logs"])

    async def tail_job_logs(self, job_id: str) -> AsyncIterator[str]:
        """The job's output as it comes, chunk by chunk, until the job has ended."""
        import aiohttp

        ws_url = self._address.replace("http", "ws", 1) + f"/api/jobs/{job_id}/logs/tail"
        async with aiohttp.ClientSession(headers=self._headers) as session:
            try:
                ws = await session.ws_connect(ws_url, ssl=self._ssl if self._ssl else True)
            except aiohttp.WSServerHandshakeError as exc:
                raise RuntimeError(
                    f"Request failed with status code {exc.status}: {exc.message}."
                ) from exc
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    yield msg.data
                elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    if ws.close_code == aiohttp.WSCloseCode.ABNORMAL_CLOSURE:
                        raise RuntimeError(
                            "WebSocket connection closed unexpectedly with close code "
                            f"{ws.close_code}"
                        )
                    break
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    raise RuntimeError(f"WebSocket error for job {job_id}: {ws.exception()}")


__all__ = ["JobSubmissionClient", "find_token", "resolve_address"]
