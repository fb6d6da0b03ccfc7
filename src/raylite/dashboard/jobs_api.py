"""The job API's HTTP routes on the dashboard's port, as Ray's job server has them.

Owns the routes, their JSON bodies and status codes, and the checks on writing
requests; not the jobs (head/jobs.py keeps the records, node/job_supervisor.py runs
them: `nm.jobs`). The dashboard's guard (server.py) has already checked the cluster
token (Bearer header or the session cookie) before any of these runs.

    POST   /api/jobs/                 submit            GET /api/jobs/           list
    GET    /api/jobs/{id}             JobDetails        GET /api/jobs/{id}/logs  {"logs": ...}
    GET    /api/jobs/{id}/logs/tail   websocket: text chunks until the job ended
    POST   /api/jobs/{id}/stop        {"stopped": b}    DELETE /api/jobs/{id}    {"deleted": b}
    GET|PUT /api/packages/gcs/{name}  a working_dir zip: exists? / upload
    GET    /api/version

Writing routes (POST, PUT, DELETE) run code on the cluster, so beyond the token they
refuse what a browser sends on another site's behalf: an Origin that is not this
host, a Sec-Fetch-Site other than same-origin/none, and (POST) a body that is not
JSON (a cross-site form cannot send application/json without a CORS preflight,
which this server never grants).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import WSCloseCode, web

from ..job_submission.common import DriverInfo, JobDetails, JobSubmitRequest, JobType, driver_job

log = logging.getLogger("raylite.dashboard")

API_VERSION = "4"  # Ray's job API version (the CLI streams logs when it is > 0)
REDACTED = "<redacted>"


def _text(text: str, status: int) -> web.Response:
    return web.Response(text=text, status=status)


def cross_site(request: web.Request) -> str:
    """Why a writing request looks sent by another site, or ""."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site: {site}"
    origin = request.headers.get("Origin")
    if origin is not None:
        host = origin.split("://", 1)[-1].rstrip("/")
        if host != request.host:
            return f"Origin {origin} is not this dashboard ({request.host})"
    if request.method == "POST" and request.content_type != "application/json":
        return f"Content-Type {request.content_type or '(none)'}: send application/json"
    return ""


def details(
    sid: str, info: Any, redact: bool, driver: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A job as Ray's JobDetails JSON (runtime_env as a dict); `driver`: the head's row
    of its driver (its job id and process, as Ray fills them in)."""
    d = JobDetails(
        type=JobType.SUBMISSION,
        job_id=driver["job_id"] if driver else None,
        driver_info=(
            DriverInfo(driver["job_id"], driver["ip"], str(driver["pid"])) if driver else None
        ),
        status=info.status,
        entrypoint=info.entrypoint,
        submission_id=sid,
        message=info.message,
        error_type=info.error_type.value if info.error_type else None,
        start_time=info.start_time,
        end_time=info.end_time,
        metadata=info.metadata,
        runtime_env=info.runtime_env,
        driver_node_id=info.driver_node_id,
        driver_exit_code=info.driver_exit_code,
        entrypoint_num_cpus=info.entrypoint_num_cpus,
        entrypoint_num_gpus=info.entrypoint_num_gpus,
        entrypoint_memory=info.entrypoint_memory,
        entrypoint_resources=info.entrypoint_resources,
    ).dict()
    env = d.get("runtime_env")
    if redact and isinstance(env, dict) and isinstance(env.get("env_vars"), dict):
        d["runtime_env"] = {**env, "env_vars": dict.fromkeys(env["env_vars"], REDACTED)}
    return d


def _browser(request: web.Request) -> bool:
    """A browser's request (it sends Sec-Fetch-Mode): env_vars values are redacted for
    it, as Ray redacts them for the dashboard; the CLI and SDK get them."""
    return "Sec-Fetch-Mode" in request.headers


def add_routes(app: web.Application, nm: Any) -> None:
    """The job routes on `app`; `nm.jobs` (a JobSupervisor, None where the node does
    not run the head of a `raylite start` cluster) serves them."""

    def supervisor() -> Any:
        jobs = nm.jobs
        if jobs is None:
            raise web.HTTPServiceUnavailable(
                text="job submission needs a cluster started with `raylite start --head` "
                "(this dashboard belongs to an init() session)"
            )
        return jobs

    def refuse_cross_site(request: web.Request) -> None:
        why = cross_site(request)
        if why:
            log.warning("dashboard: refused %s %s (%s)", request.method, request.path, why)
            raise web.HTTPForbidden(text=f"cross-site request refused: {why}")

    def found(request: web.Request) -> tuple[Any, str, Any]:
        jobs = supervisor()
        sid = request.match_info["job_id"]
        info = jobs.table.info(sid)
        if info is None:
            raise web.HTTPNotFound(text=f"Job {sid} does not exist")
        return jobs, sid, info

    async def version(request: web.Request) -> web.Response:
        from .. import __version__

        return web.json_response(
            {
                "version": API_VERSION,
                "ray_version": __version__,
                "ray_commit": "",
                "session_name": "",
            }
        )

    def package(request: web.Request) -> str:
        protocol, name = request.match_info["protocol"], request.match_info["name"]
        if protocol != "gcs":
            raise web.HTTPBadRequest(text=f"package protocol {protocol!r}: only gcs is served")
        return name

    async def get_package(request: web.Request) -> web.Response:
        name = package(request)
        try:
            there = supervisor().has_package(name)
        except ValueError as exc:
            return _text(str(exc), 400)
        if not there:
            return _text(f"Package gcs://{name} does not exist", 404)
        return web.Response()

    async def put_package(request: web.Request) -> web.Response:
        refuse_cross_site(request)
        name = package(request)

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in request.content.iter_chunked(1 << 20):
                yield chunk

        try:
            await supervisor().put_package(name, chunks())
        except ValueError as exc:
            return _text(str(exc), 400)
        return web.Response()

    async def submit(request: web.Request) -> web.Response:
        refuse_cross_site(request)
        try:
            data = await request.json()
            if not isinstance(data, dict):
                raise TypeError("the body must be a JSON object")
            req = JobSubmitRequest(**{k: v for k, v in data.items() if v is not None})
            sid = supervisor().submit(req)
        except web.HTTPException:
            raise
        except (TypeError, ValueError, NotImplementedError) as exc:
            return _text(f"{type(exc).__name__}: {exc}", 400)
        return web.json_response({"job_id": sid, "submission_id": sid})

    def drivers() -> tuple[list[Mapping[str, Any]], dict[str, Mapping[str, Any]]]:
        """The drivers that called init() themselves (DRIVER jobs, by job id), and the
        last driver of each submission (by submission id), as Ray's get_driver_jobs."""
        own, of_submission = [], {}
        stats = nm.head_statistics()
        rows = stats.driver_jobs if stats is not None else ()
        for row in sorted(rows, key=lambda r: r["job_id"]):
            if row["submission_id"]:
                of_submission[row["submission_id"]] = row
            else:
                own.append(row)
        return own, of_submission

    async def list_jobs(request: web.Request) -> web.Response:
        jobs = supervisor()
        redact = _browser(request)
        own, of_submission = drivers()
        rows = [
            details(r.submission_id, r.info, redact, of_submission.get(r.submission_id))
            for r in jobs.table.records()
        ]
        rows += [driver_job(row).dict() for row in own]
        return web.json_response(rows)

    async def get_job(request: web.Request) -> web.Response:
        jobs = supervisor()
        sid = request.match_info["job_id"]
        own, of_submission = drivers()
        info = jobs.table.info(sid)
        if info is not None:
            return web.json_response(details(sid, info, _browser(request), of_submission.get(sid)))
        for row in own:  # a DRIVER job, by its job id (Ray's find_job_by_ids)
            if row["job_id"] == sid:
                return web.json_response(driver_job(row).dict())
        raise web.HTTPNotFound(text=f"Job {sid} does not exist")

    async def logs(request: web.Request) -> web.Response:
        jobs, sid, _ = found(request)
        return web.json_response({"logs": jobs.logs(sid)})

    async def tail(request: web.Request) -> web.StreamResponse:
        jobs, sid, _ = found(request)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        try:
            async for chunk in jobs.tail(sid):
                await ws.send_str(chunk)
        except ConnectionResetError:
            return ws  # the client went away
        await ws.close(code=WSCloseCode.OK)
        return ws

    async def stop(request: web.Request) -> web.Response:
        refuse_cross_site(request)
        jobs, sid, _ = found(request)
        return web.json_response({"stopped": jobs.stop(sid)})

    async def delete(request: web.Request) -> web.Response:
        refuse_cross_site(request)
        jobs, sid, _ = found(request)
        try:
            deleted = jobs.table.delete(sid)
        except RuntimeError as exc:
            return _text(str(exc), 400)
        return web.json_response({"deleted": deleted})

    r = app.router
    r.add_get("/api/version", version)
    r.add_get("/api/packages/{protocol}/{name}", get_package)
    r.add_put("/api/packages/{protocol}/{name}", put_package)
    r.add_post("/api/jobs/", submit)
    r.add_get("/api/jobs/", list_jobs)
    r.add_get("/api/jobs/{job_id}", get_job)
    r.add_get("/api/jobs/{job_id}/logs", logs)
    r.add_get("/api/jobs/{job_id}/logs/tail", tail)
    r.add_post("/api/jobs/{job_id}/stop", stop)
    r.add_delete("/api/jobs/{job_id}", delete)


__all__ = ["add_routes", "cross_site", "details"]
