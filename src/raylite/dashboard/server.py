"""The dashboard's HTTP server: routes, the token check, static files.

An aiohttp application the head's node manager runs in its own event loop
(`start_dashboard`, from NodeManager.serve). Every route here is a GET of a page, of
JSON from views.py or of /metrics (util.metrics in Prometheus text), except POST /login, which only compares a token and sets a
cookie. The one way to run code is the job API (jobs_api.py: submit a job, upload
its working_dir), which takes the same token and refuses cross-site writes; no route
reads a file outside static/ and the jobs' own logs. Handlers take snapshots (nm.statistics(), nm.head_statistics(): frozen
copies) and render them with views.py, bounded there, so a request holds the loop
for milliseconds; they read nothing else of the node manager (Source says what).

    GET /?token=T ──valid──▶ 303 to / + Set-Cookie ──▶ GET / (cookie) ──▶ index.html
    GET /api/... without cookie ──▶ 401            POST /login token=T ──▶ 303 | 401
"""

from __future__ import annotations

import errno
import functools
import hmac
import html
import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from .. import transport
from ..head.statistics import HeadStatistics
from ..node.statistics import NodeStatistics
from ..task_events import TaskEventStore, WorkerLogs
from . import DEFAULT_PORT, URL_FILE, jobs_api, login_token, session_cookie, views

log = logging.getLogger("raylite.dashboard")

STATIC = Path(__file__).parent / "static"
# Reachable without the token: the login form and its style sheet.
PUBLIC = {"/login", "/static/style.css"}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=_dumps)


class Auth:
    """Which tokens open the dashboard, and the cookie that remembers one did."""

    def __init__(self, token: bytes) -> None:
        self.accepted = [token.hex().encode(), login_token(token).encode()]
        self.cookie_value = session_cookie(token).encode()
        # Named after the port once bound: cookies are per host, not per port, and two
        # clusters on one host must not overwrite each other's.
        self.cookie_name = "raylite_dashboard"

    def token_ok(self, given: str) -> bool:
        raw = given.strip().lower().encode("utf-8", "replace")
        # Compare with every accepted token (no early exit): constant time either way.
        return sum(hmac.compare_digest(raw, t) for t in self.accepted) > 0

    def request_ok(self, request: web.Request) -> bool:
        cookie = request.cookies.get(self.cookie_name, "").encode("utf-8", "replace")
        if cookie and hmac.compare_digest(cookie, self.cookie_value):
            return True
        bearer = request.headers.get("Authorization", "")
        return bearer.startswith("Bearer ") and self.token_ok(bearer[7:])

    def set_cookie(self, response: web.StreamResponse) -> None:
        response.set_cookie(
            self.cookie_name,
            self.cookie_value.decode(),
            httponly=True,
            samesite="Strict",
            path="/",
        )


PROM_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus' text format
AUTH = web.AppKey("auth", Auth)


@functools.cache
def _static_text(name: str) -> str:
    return (STATIC / name).read_text()


def login_page(message: str = "", status: int = 401) -> web.Response:
    body = _static_text("login.html").replace("{{message}}", html.escape(message))
    return web.Response(text=body, status=status, content_type="text/html")


class Source(Protocol):
    """What the dashboard uses of the head's node manager: snapshots, the task records
    and log rings (read through their queries), and its connections to other nodes.
    A test checks the dashboard reads nothing else of it."""

    token: bytes
    ip: str
    session_dir: str
    task_events: TaskEventStore
    worker_logs: WorkerLogs
    jobs: Any  # node.job_supervisor.JobSupervisor, or None: the job API (jobs_api.py)

    def statistics(self, objects: bool = False) -> NodeStatistics: ...

    def head_statistics(self) -> HeadStatistics | None: ...

    def metrics_text(self) -> str: ...

    async def connect_nm(self, address: str) -> Any: ...


# Never sent on to a proxy server (init(proxy_server_url=...)): the hop-by-hop headers
# Ray drops, and this cluster's credentials.
_NOT_PROXIED = {
    "content-encoding", "content-length", "host", "connection", "keep-alive", "te",
    "trailers", "upgrade", "proxy-authenticate", "proxy-authorization",
    "transfer-encoding", "authorization", "cookie",
}  # fmt: skip
_NOT_PROXIED_PATHS = ("/api/gcs_healthz", "/usage_stats_enabled", "/api/healthz", "/login")


async def _proxied(request: web.Request, proxy_url: str) -> web.Response | None:
    """The proxy server's answer to `request` (Ray's proxy_server_url: a history
    server answers for the dashboard); None where it answers 404 or fails: the
    dashboard's own handler answers then."""
    import aiohttp

    headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_PROXIED}
    headers.setdefault("Content-Type", "application/json")
    url = f"{proxy_url.rstrip('/')}{request.rel_url}"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.request(
                request.method, url, headers=headers, data=await request.read()
            ) as resp,
        ):
            body = await resp.read()
            if resp.status == 404:
                log.warning("proxy server: %s answered 404, falling back", url)
                return None
            kept = {
                k: v
                for k, v in resp.headers.items()
                if k.lower() not in ("transfer-encoding", "content-encoding", "content-length")
            }
            return web.Response(body=body, status=resp.status, headers=kept)
    except Exception as exc:
        log.warning("proxy server %s failed (%s); falling back", url, exc)
        return None


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for k, v in HEADERS.items():
        response.headers.setdefault(k, v)
    # A proxied answer (proxy_url) keeps its own policy, but never one that allows
    # framing: X-Frame-Options and the frame-ancestors directive are always ours.
    response.headers["X-Frame-Options"] = "DENY"
    kept = [
        d.strip()
        for d in response.headers["Content-Security-Policy"].split(";")
        if d.strip() and not d.strip().lower().startswith("frame-ancestors")
    ]
    response.headers["Content-Security-Policy"] = "; ".join([*kept, "frame-ancestors 'none'"])


def make_app(nm: Source, proxy_url: str | None = None) -> web.Application:
    """The application; `nm` is the head's node manager (read, never changed).
    `proxy_url`: requests (once authenticated) go there first (Ray's proxy_server_url)."""
    auth = Auth(nm.token)

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        if path in PUBLIC:
            return await handler(request)
        given = request.query.get("token")
        if given is not None and request.method in ("GET", "HEAD"):
            if not auth.token_ok(given):
                return login_page("That token is not this cluster's.")
            query = {k: v for k, v in request.query.items() if k != "token"}
            target = (
                request.rel_url.with_query(query) if query else request.rel_url.with_query(None)
            )
            response = web.HTTPSeeOther(location=str(target))
            auth.set_cookie(response)
            return response
        if not auth.request_ok(request):
            if path.startswith("/api/") or path == "/metrics":
                return _json({"error": "unauthorized: log in at /login"}, status=401)
            return login_page()
        if proxy_url and not path.startswith(_NOT_PROXIED_PATHS):
            answer = await _proxied(request, proxy_url)
            if answer is not None:
                return answer
        try:
            return await handler(request)
        except web.HTTPException as exc:
            return exc

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=_static_text("index.html"), content_type="text/html")

    async def login_form(request: web.Request) -> web.Response:
        if auth.request_ok(request):
            raise web.HTTPSeeOther(location="/")
        return login_page(status=200)

    async def login_post(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        given = form.get("token")
        if not isinstance(given, str) or not auth.token_ok(given):
            return login_page("That token is not this cluster's.")
        response = web.HTTPSeeOther(location="/")
        auth.set_cookie(response)
        return response

    def q(request: web.Request, name: str, default: int, high: int) -> int:
        return views.clamp(request.query.get(name), default, high)

    def qf(request: web.Request, name: str) -> float | None:
        raw = request.query.get(name)
        if raw in (None, ""):
            return None
        try:
            return float(raw)
        except ValueError:
            raise web.HTTPBadRequest(text=f"{name} must be a number (unix seconds)")

    def snapshots(objects: bool = False) -> tuple[NodeStatistics, HeadStatistics]:
        head = nm.head_statistics()
        if head is None:  # the dashboard is served where the head runs
            raise web.HTTPServiceUnavailable(text="the head does not run in this process")
        return nm.statistics(objects=objects), head

    async def api_cluster(request: web.Request) -> web.Response:
        node, head = snapshots()
        data = views.cluster(node, head)
        stores = await views.other_stores(nm.connect_nm, node, head)
        for node in data["nodes"]:
            if node["store"] is None and node["node_id"] in stores:
                node["store"] = stores[node["node_id"]].stats
        return _json(data)

    async def api_tasks(request: web.Request) -> web.Response:
        return _json(
            views.tasks(
                nm.task_events,
                state=request.query.get("state", ""),
                func=request.query.get("func", ""),
                limit=q(request, "limit", 100, views.MAX_LIMIT),
                offset=q(request, "offset", 0, 1 << 30),
            )
        )

    async def api_task(request: web.Request) -> web.Response:
        row = views.task(nm.task_events, request.match_info["task_id"])
        if row is None:
            return _json({"error": "no such task recorded on this node"}, status=404)
        return _json(row)

    async def api_actors(request: web.Request) -> web.Response:
        node, head = snapshots()
        return _json(
            views.actors(
                node,
                head,
                state=request.query.get("state", ""),
                limit=q(request, "limit", 100, views.MAX_LIMIT),
            )
        )

    async def api_placement_groups(request: web.Request) -> web.Response:
        _, head = snapshots()
        return _json(views.placement_groups(head, limit=q(request, "limit", 100, views.MAX_LIMIT)))

    async def api_objects(request: web.Request) -> web.Response:
        sort = "size" if request.query.get("sort") == "size" else "recent"
        limit = q(request, "limit", 100, views.MAX_LIMIT)
        node, head = snapshots(objects=True)
        stores = await views.other_stores(nm.connect_nm, node, head)
        return _json(views.merge_objects(views.objects(node, sort, limit), stores, sort, limit))

    async def api_workers(request: web.Request) -> web.Response:
        node, head = snapshots()
        return _json(views.workers(node, head, limit=q(request, "limit", views.MAX_WORKERS, 5000)))

    async def api_logs(request: web.Request) -> web.Response:
        pid = q(request, "pid", 0, 1 << 31)
        out = views.logs(
            nm.statistics(),
            nm.worker_logs,
            pid,
            after=q(request, "after", 0, 1 << 62),
            tail=q(request, "tail", 500, 5000),
        )
        if out is None:
            return _json({"error": f"no worker with pid {pid} on this node"}, status=404)
        return _json(out)

    async def api_timeline(request: web.Request) -> web.Response:
        limit = q(request, "limit", views.DEFAULT_TIMELINE, views.MAX_TIMELINE)
        node, head = snapshots()
        start, end = qf(request, "start"), qf(request, "end")
        return _json(views.timeline(nm.task_events, node, head, start, end, limit))

    async def api_jobs(request: web.Request) -> web.Response:
        jobs = nm.jobs
        return _json(views.jobs(jobs.table.records() if jobs is not None else []))

    async def metrics(request: web.Request) -> web.Response:
        # util.metrics of every process, Prometheus' text format (a scraper sends the
        # token as "Authorization: Bearer <token>").
        return web.Response(body=nm.metrics_text().encode(), headers={"Content-Type": PROM_TYPE})

    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    # On every response as it is sent, aiohttp's own errors (a 404 of a public path, a
    # 405, a 500) and static files included: no other origin may frame any page.
    app.on_response_prepare.append(_security_headers)
    app[AUTH] = auth
    app.router.add_get("/", index)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login_post)
    app.router.add_get("/api/cluster", api_cluster)
    app.router.add_get("/api/tasks", api_tasks)
    app.router.add_get("/api/tasks/{task_id}", api_task)
    app.router.add_get("/api/actors", api_actors)
    app.router.add_get("/api/placement_groups", api_placement_groups)
    app.router.add_get("/api/objects", api_objects)
    app.router.add_get("/api/workers", api_workers)
    app.router.add_get("/api/logs", api_logs)
    app.router.add_get("/api/timeline", api_timeline)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/submitted_jobs", api_jobs)
    jobs_api.add_routes(app, nm)
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
    return app


class Dashboard:
    """A started dashboard: its URL, and `stop()` for the node manager's shutdown."""

    def __init__(self, runner: web.AppRunner, url: str) -> None:
        self.runner = runner
        self.url = url

    async def stop(self) -> None:
        await self.runner.cleanup()


def _url_host(host: str, nm: Source) -> str:
    if host in ("", "0.0.0.0", "::"):  # every address: name one a browser here can use
        host = nm.ip if nm.ip not in ("", "0.0.0.0") else "127.0.0.1"
    return f"[{host}]" if ":" in host else host


async def start_dashboard(
    nm: Source, host: str, port: int, proxy_url: str | None = None
) -> Dashboard | None:
    """Serve the dashboard on host:port (0: any free port); None, with a warning, if it
    cannot listen. Ray's default port, when taken, gives way to a free one."""
    app = make_app(nm, proxy_url)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    tls = transport.TLS  # --tls: HTTPS only, with the node's certificate (tls.py)
    https = tls.https if tls is not None else None
    for attempt in (port, 0):
        try:
            await web.TCPSite(runner, host, attempt, reuse_address=True, ssl_context=https).start()
            break
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE and attempt == DEFAULT_PORT:
                log.warning("dashboard: port %d is taken, using a free one", attempt)
                continue
            await runner.cleanup()
            log.warning(
                "the dashboard cannot listen on %s:%d (%s); the cluster runs without it. "
                "Pick another port (dashboard_port= or --dashboard-port=).",
                host,
                attempt,
                exc,
            )
            return None
    bound = runner.addresses[0][1]
    app[AUTH].cookie_name = f"raylite_dashboard_{bound}"
    url = f"{'https' if https else 'http'}://{_url_host(host, nm)}:{bound}"
    path = os.path.join(nm.session_dir, URL_FILE)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(url + "\n")
    os.rename(path + ".tmp", path)  # readers see the whole URL or no file
    return Dashboard(runner, url)


async def start_metrics_server(nm: Source, host: str, port: int) -> Dashboard | None:
    """Serve only GET /metrics (util.metrics, Prometheus text) on host:port, without the
    token, as Ray's metrics export port (init(_metrics_export_port=...)) is scraped; None,
    with a warning, if it cannot listen."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=nm.metrics_text().encode(), headers={"Content-Type": PROM_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    tls = transport.TLS  # --tls: HTTPS, as the dashboard
    https = tls.https if tls is not None else None
    try:
        await web.TCPSite(runner, host, port, reuse_address=True, ssl_context=https).start()
    except OSError as exc:
        await runner.cleanup()
        log.warning("the metrics export port %s:%d cannot listen (%s)", host, port, exc)
        return None
    scheme = "https" if https else "http"
    return Dashboard(runner, f"{scheme}://{_url_host(host, nm)}:{port}/metrics")
