"""The web dashboard, through headless Chromium (Playwright) and plain HTTP.

One node with the dashboard on a free port (`include_dashboard=True,
dashboard_port=0`). The browser checks open the printed link and read what the
pages show: the nodes, a running job's tasks and actor, the timeline's bars and
arrows for a tree reduce (the canvas reports what it drew in data-bars and
data-arrows). The HTTP checks need no browser: every request without the token or
its cookie is refused, a wrong token is refused by the login form, and no route
but the login form takes a POST.

Chromium is Debian's (`apt-get install chromium`, run here when missing and we are
root) and Playwright the PyPI package (the `test` extra); the tests skip, saying
why, where either cannot be had. `playwright install` is never run: its browser
download cannot reach the network from here.
"""

from __future__ import annotations

import http.client
import importlib
import os
import shutil
import subprocess
import sys
import types
import urllib.parse
import uuid

import pytest

from tests._engine import ray, raylite_only, wait_for, wait_for_path

pytestmark = [
    raylite_only,
    pytest.mark.timeout(900),  # the first test may install Chromium
    pytest.mark.skipif(
        int(os.environ.get("RAYLITE_TESTS_CLUSTER", "0") or 0) > 0,
        reason="starts its own node with init(include_dashboard=True), not a test cluster",
    ),
]

RAY_INIT = {"num_cpus": 2, "include_dashboard": True, "dashboard_port": 0}
WAIT_MS = 20_000
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# --- getting a browser -------------------------------------------------------------------
def _apt(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def _install_chromium() -> str | None:
    """None once /usr/bin/chromium exists, else why it cannot be had."""
    if os.path.exists(CHROMIUM):
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "Chromium is not installed (apt-get install chromium needs root and apt)"
    try:
        if _apt("install", "-y", "chromium", timeout=400).returncode != 0:
            _apt("update", timeout=200)  # the package lists may be missing or stale
            result = _apt("install", "-y", "chromium", timeout=400)
            if result.returncode != 0:
                return f"apt-get install chromium failed: {result.stderr[-500:]}"
    except subprocess.TimeoutExpired as exc:
        return f"apt-get took too long: {exc}"
    return None if os.path.exists(CHROMIUM) else f"apt-get installed no {CHROMIUM}"


def _import_playwright() -> types.ModuleType | str:
    try:
        return importlib.import_module("playwright.sync_api")
    except ImportError:
        pass
    try:  # not installed with the test extra: fetch it from PyPI now
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "playwright>=1.40"],
            capture_output=True,
            timeout=300,
            check=True,
        )
        importlib.invalidate_caches()
        return importlib.import_module("playwright.sync_api")
    except Exception as exc:
        return f"the playwright package cannot be installed: {exc}"


@pytest.fixture(scope="session")
def playwright_api() -> types.ModuleType:
    """Playwright's sync API with Debian's Chromium available (installed if needed)."""
    api = _import_playwright()
    if isinstance(api, str):
        pytest.skip(api)
    why = _install_chromium()
    if why is not None:
        pytest.skip(why)
    return api


@pytest.fixture(scope="module")
def browser(playwright_api):
    # Module-scoped: its processes end before the module's leak check.
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, dash):
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    pg.goto(dash.login_url)  # the printed link: its token becomes a cookie
    try:
        yield pg
    finally:
        context.close()


# --- the cluster and its dashboard -------------------------------------------------------
@pytest.fixture
def dash(ray_start):
    ctx = ray.init(ignore_reinit_error=True)  # the running session's context
    assert ctx.dashboard_url.startswith("127.0.0.1:"), ctx.dashboard_url  # loopback only
    with open(os.path.join(ctx["session_dir"], "token")) as f:
        token = f.read().strip()
    host, port = ctx.dashboard_url.split(":")
    return types.SimpleNamespace(
        base=f"http://{ctx.dashboard_url}",
        login_url=ctx.dashboard_login_url,
        host=host,
        port=int(port),
        token=token,
    )


def request(dash, method, path, *, headers=None, body=None):
    """(status, headers, body) of one request, redirects not followed."""
    conn = http.client.HTTPConnection(dash.host, dash.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode(errors="replace")
    finally:
        conn.close()


def login_cookie(dash):
    status, headers, _ = request(
        dash,
        "POST",
        "/login",
        body=urllib.parse.urlencode({"token": dash.token}),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 303, status
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    return cookie.split(";", 1)[0]


@ray.remote
def dash_gated(path):
    wait_for_path(path)
    return os.getpid()


@ray.remote
class DashActor:
    def ping(self):
        return os.getpid()


@ray.remote
def dash_leaf(i):
    return i


@ray.remote
def dash_combine(a, b):
    return a + b


def tree_reduce(n):
    refs = [dash_leaf.remote(i) for i in range(n)]
    while len(refs) > 1:
        refs = [dash_combine.remote(refs[i], refs[i + 1]) for i in range(0, len(refs), 2)]
    return ray.get(refs[0])


# --- in the browser ------------------------------------------------------------------------
def test_page_loads_with_the_token_link_and_shows_the_nodes(page, dash):
    assert "token=" not in page.url  # the token went into a cookie and out of the URL
    assert page.url.rstrip("/") == dash.base
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert cookie["value"] != dash.token  # a session value, not the cluster token
    page.wait_for_selector("#nodes-table tbody tr")
    row = page.locator("#nodes-table tbody tr").first
    assert "head" in row.inner_text()
    assert "ALIVE" in row.inner_text()
    assert "CPU" in row.inner_text()
    cards = page.locator("#cluster-cards").inner_text()
    assert "nodes alive" in cards
    assert "object store" in cards


def test_a_running_jobs_tasks_and_actor_appear(page, dash, tmp_path):
    gate = tmp_path / "gate"
    name = f"dash_gated_{uuid.uuid4().hex[:6]}"
    actor = DashActor.remote()
    actor_pid = ray.get(actor.ping.remote())
    running = dash_gated.options(name=name).remote(str(gate))
    try:
        page.goto(f"{dash.base}/#tasks")
        row = page.locator("#task-rows tbody tr", has_text=name)
        row.wait_for()
        page.wait_for_function(
            "n => [...document.querySelectorAll('#task-rows tbody tr')].some("
            "r => r.innerText.includes(n) && r.innerText.includes('RUNNING'))",
            arg=name,
        )
        functions = page.locator("#task-functions tbody").inner_text()
        assert "dash_gated" in functions

        page.goto(f"{dash.base}/#actors")
        actor_row = page.locator("#actor-rows tbody tr", has_text="DashActor")
        actor_row.wait_for()
        text = actor_row.inner_text()
        assert "ALIVE" in text
        assert str(actor_pid) in text
    finally:
        gate.touch()
    ray.get(running)
    page.goto(f"{dash.base}/#tasks")
    page.wait_for_function(
        "n => [...document.querySelectorAll('#task-rows tbody tr')].some("
        "r => r.innerText.includes(n) && r.innerText.includes('FINISHED'))",
        arg=name,
    )
    ray.kill(actor)


def test_a_failed_tasks_traceback_expands(page, dash):
    @ray.remote
    def dash_fails():
        raise ValueError("dashboard shows this")

    with pytest.raises(ValueError):
        ray.get(dash_fails.remote())
    page.goto(f"{dash.base}/#tasks")
    failed = page.locator("#task-rows tbody tr.failed", has_text="dash_fails")
    failed.first.click()
    trace = page.locator("#task-rows pre.traceback").first
    trace.wait_for()
    assert "dashboard shows this" in trace.inner_text()
    assert "Traceback" in trace.inner_text()


def test_the_timeline_draws_bars_and_arrows_for_a_tree_reduce(page, dash):
    assert tree_reduce(8) == sum(range(8))  # 8 leaves + 7 combines, 14 dependencies
    page.goto(f"{dash.base}/#timeline")
    canvas = page.locator("#timeline-canvas")
    page.wait_for_function(
        "() => { const c = document.getElementById('timeline-canvas');"
        " return +c.dataset.bars >= 15 && +c.dataset.arrows >= 14; }"
    )
    assert int(canvas.get_attribute("data-tasks")) >= 15
    # Zoom in with the wheel over the plot: the window narrows and live mode stops.
    before = page.evaluate("window.rayliteTimeline.t1 - window.rayliteTimeline.t0")
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + 40)
    page.mouse.wheel(0, -400)
    page.wait_for_function(
        f"() => window.rayliteTimeline.t1 - window.rayliteTimeline.t0 < {before}"
    )
    assert not page.locator("#timeline-live").is_checked()
    # Drag pans: the window moves, its width stays.
    width = page.evaluate("window.rayliteTimeline.t1 - window.rayliteTimeline.t0")
    t0 = page.evaluate("window.rayliteTimeline.t0")
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + 40, steps=5)
    page.mouse.up()
    assert page.evaluate("window.rayliteTimeline.t0") > t0
    moved = page.evaluate("window.rayliteTimeline.t1 - window.rayliteTimeline.t0")
    assert moved == pytest.approx(width, rel=1e-3)


# --- plain HTTP ------------------------------------------------------------------------------
def test_requests_without_the_token_are_refused(dash):
    for path in ("/", "/api/cluster", "/api/tasks", "/api/timeline", "/static/app.js", "/metrics"):
        status, _, _ = request(dash, "GET", path)
        assert status == 401, path
    status, _, body = request(dash, "GET", "/api/tasks", headers={"Cookie": "raylite_dashboard=x"})
    assert status == 401
    status, _, _ = request(dash, "GET", f"/?token={'0' * 64}")
    assert status == 401

    # The login form refuses a wrong token and takes the cluster token.
    wrong = urllib.parse.urlencode({"token": "00" * 32})
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, headers, body = request(dash, "POST", "/login", body=wrong, headers=form)
    assert status == 401
    assert "Set-Cookie" not in headers
    assert "not this cluster" in body
    cookie = login_cookie(dash)
    status, _, body = request(dash, "GET", "/api/cluster", headers={"Cookie": cookie})
    assert status == 200
    assert '"nodes"' in body

    # The printed link's token sets the cookie and leaves the URL.
    query = urllib.parse.urlparse(dash.login_url).query
    status, headers, _ = request(dash, "GET", f"/?{query}")
    assert status == 303
    assert headers["Location"] == "/"
    assert "HttpOnly" in headers["Set-Cookie"]
    # Any page may carry it; the other query parameters stay.
    status, headers, _ = request(dash, "GET", f"/api/tasks?limit=5&{query}")
    assert status == 303
    assert headers["Location"] == "/api/tasks?limit=5"


def test_metrics_serves_a_tasks_counter_in_prometheus_text(dash):
    from raylite.util.metrics import Counter

    @ray.remote
    def dash_counted(n):
        Counter("dash_test_calls", description="calls", tag_keys=("k",)).inc(n, tags={"k": "v"})

    ray.get([dash_counted.remote(2), dash_counted.remote(3)])
    bearer = {"Authorization": f"Bearer {dash.token}"}

    def scraped():
        status, headers, body = request(dash, "GET", "/metrics", headers=bearer)
        assert status == 200
        assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        return body if 'ray_dash_test_calls_total{k="v"} 5.0' in body.splitlines() else None

    body = wait_for(scraped, timeout=30, message="the tasks' counts at /metrics")
    assert "# TYPE ray_dash_test_calls counter" in body
    status, _, _ = request(dash, "GET", "/metrics", headers={"Cookie": login_cookie(dash)})
    assert status == 200


def test_no_route_but_login_and_the_job_api_takes_a_write(dash):
    cookie = {"Cookie": login_cookie(dash)}
    paths = ["/", "/api/cluster", "/api/tasks", "/api/actors", "/api/objects", "/api/workers"]
    paths += ["/api/logs", "/api/timeline", "/api/tasks/00", "/static/app.js", "/metrics"]
    for path in paths:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            status, _, _ = request(dash, method, path, headers=cookie, body=b"")
            assert status == 405, (method, path, status)
    from raylite.dashboard.server import make_app

    app = make_app(types.SimpleNamespace(token=os.urandom(32)))
    routes = {(r.method, r.resource.canonical) for r in app.router.routes()}
    writes = {(m, p) for m, p in routes if m not in ("GET", "HEAD")}
    # The job API (jobs_api.py) is the one way to run code: token and same-site only.
    assert writes == {
        ("POST", "/login"),
        ("POST", "/api/jobs/"),
        ("POST", "/api/jobs/{job_id}/stop"),
        ("DELETE", "/api/jobs/{job_id}"),
        ("PUT", "/api/packages/{protocol}/{name}"),
    }


def test_api_answers_are_bounded(dash):
    cookie = {"Cookie": login_cookie(dash)}
    ray.get([dash_leaf.remote(i) for i in range(30)])

    def listed():
        status, _, body = request(dash, "GET", "/api/tasks?func=dash_leaf&limit=5", headers=cookie)
        return body if status == 200 and body.count('"task_id"') == 5 else None

    body = wait_for(listed, 20, "five dash_leaf rows")
    assert '"matching":' in body
    status, _, body = request(dash, "GET", "/api/timeline?limit=3", headers=cookie)
    assert status == 200
    assert body.count('"FINISHED"') <= 3
    status, _, _ = request(dash, "GET", "/api/timeline?start=soon", headers=cookie)
    assert status == 400
