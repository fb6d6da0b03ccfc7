"""The dashboard with hostile text and hostile pages, in headless Chromium (Playwright).

Task names, actor class names and log lines come from user code. A task whose function
is named `<script>alert(1)</script>`, one named with an `<img onerror>`, an actor class
of that name and a worker printing HTML are shown as text: the page fires no dialog and
shows the markup literally. The page's Content-Security-Policy would block inline
scripts even if the text were parsed as HTML, so the browser context here bypasses CSP:
what is checked is the escaping in static/app.js itself.

Every response (pages, API, static files, errors, redirects) forbids framing by any
origin, and a page from another origin that frames the dashboard gets a refusal from
the browser. Browser and dashboard come from test_dashboard.py's fixtures.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.server
import os
import threading
import types
import urllib.parse

import pytest

from tests._engine import ray
from tests.multiprocess import test_dashboard as base

# The same browser, dashboard and settings as test_dashboard.py.
pytestmark = base.pytestmark
RAY_INIT = base.RAY_INIT  # the ray_start fixture's settings: the dashboard on a free port
playwright_api = base.playwright_api
browser = base.browser
dash = base.dash
request = base.request
login_cookie = base.login_cookie
WAIT_MS = base.WAIT_MS


SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
LOG = "<b>bold</b><script>alert(3)</script><img src=x onerror=alert(4)> &amp; done"
HOSTILE = (SCRIPT, IMG, LOG)


def _hostile_function():
    print(LOG, flush=True)
    return os.getpid()


_hostile_function.__name__ = SCRIPT
_hostile_function.__qualname__ = SCRIPT
hostile_task = ray.remote(_hostile_function)


def _ping(self):
    return os.getpid()


HostileActor = ray.remote(type(SCRIPT, (), {"ping": _ping, "__module__": __name__}))


@pytest.fixture
def page_without_csp(browser, dash):
    """A logged-in page whose context ignores the dashboard's CSP, collecting dialogs."""
    context = browser.new_context(viewport={"width": 1300, "height": 900}, bypass_csp=True)
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    pg.dialogs = []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.goto(dash.login_url)
    try:
        yield pg
    finally:
        context.close()


def _injected(page, section: str) -> int:
    """Elements in `section` that only parsed user text could have made."""
    return page.locator(f"{section} script, {section} img, {section} b").count()


def test_hostile_task_actor_and_log_text_is_shown_as_text(page_without_csp, dash):
    page = page_without_csp
    pid = ray.get(hostile_task.remote())
    ray.get(hostile_task.options(name=IMG).remote())
    actor = HostileActor.remote()
    actor_pid = ray.get(actor.ping.remote())
    try:
        page.goto(f"{dash.base}/#tasks")
        for name in (SCRIPT, IMG):
            page.locator("#task-rows tbody tr", has_text=name).first.wait_for()
        assert SCRIPT in page.locator("#task-functions tbody").inner_text()
        assert _injected(page, "#page-tasks") == 0

        page.goto(f"{dash.base}/#actors")
        row = page.locator("#actor-rows tbody tr", has_text=SCRIPT)
        row.wait_for()
        assert str(actor_pid) in row.inner_text()
        assert _injected(page, "#page-actors") == 0

        page.goto(f"{dash.base}/#logs")
        page.wait_for_function(
            "pid => [...document.querySelectorAll('#log-worker option')].some(o => o.value == pid)",
            arg=str(pid),
        )
        page.select_option("#log-worker", str(pid))
        page.wait_for_function(
            "line => document.getElementById('log-lines').textContent.includes(line)", arg=LOG
        )
        # The actor's worker is listed with its class name, as text.
        options = page.locator("#log-worker").inner_text()
        assert f"pid {actor_pid}" in options
        assert SCRIPT in options
        assert _injected(page, "#page-logs") == 0
        assert page.locator("#log-lines").inner_text().count(LOG) >= 1
        assert page.dialogs == []
    finally:
        ray.kill(actor)


# --- framing -------------------------------------------------------------------------------
def _assert_unframable(headers: dict[str, str], what: str) -> None:
    assert headers.get("X-Frame-Options") == "DENY", (what, headers)
    directives = [d.strip() for d in headers.get("Content-Security-Policy", "").split(";")]
    assert [d for d in directives if d.startswith("frame-ancestors")] == [
        "frame-ancestors 'none'"
    ], (what, headers)


def test_every_response_forbids_framing(dash):
    cookie = {"Cookie": login_cookie(dash)}
    token_query = urllib.parse.urlparse(dash.login_url).query
    cases = [
        ("GET", "/", {}),  # the login page (401)
        ("GET", "/login", {}),
        ("GET", "/static/style.css", {}),
        ("GET", "/static/missing.css", {}),  # public-looking, not there
        ("GET", f"/?{token_query}", {}),  # the 303 that sets the cookie
        ("GET", f"/?token={'0' * 64}", {}),
        ("GET", "/api/cluster", {}),  # 401 JSON
        ("GET", "/", cookie),
        ("GET", "/static/app.js", cookie),
        ("GET", "/static/nothing.js", cookie),  # 404
        ("GET", "/no/such/page", cookie),
        ("GET", "/api/cluster", cookie),
        ("GET", "/api/tasks/zz", cookie),
        ("GET", "/api/jobs/", cookie),
        ("GET", "/metrics", cookie),
        ("POST", "/api/cluster", cookie),  # 405
        ("PUT", "/login", {}),
    ]
    seen = set()
    for method, path, headers in cases:
        status, got, _ = request(dash, method, path, headers=headers, body=b"")
        seen.add(status)
        _assert_unframable(got, f"{method} {path} -> {status}")
    assert {200, 303, 401, 404, 405} <= seen


def test_a_proxied_answer_cannot_allow_framing():
    from aiohttp import web

    from raylite.dashboard.server import _security_headers

    answer = web.Response(
        headers={
            "Content-Security-Policy": "default-src *; frame-ancestors *",
            "X-Frame-Options": "ALLOWALL",
        }
    )
    # In a thread of its own: Playwright's sync API runs a loop in this one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _security_headers(None, answer)).result(timeout=10)  # type: ignore[arg-type]
    _assert_unframable(dict(answer.headers), "a proxied answer")
    assert "default-src *" in answer.headers["Content-Security-Policy"]  # the rest is kept


@pytest.fixture
def other_origin():
    """Another origin on loopback (another port), with no framing headers: it serves
    `pages[path]`. A page Playwright made up would count as a public address, which
    Chromium never lets frame loopback (Private Network Access), headers or not."""
    pages: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield types.SimpleNamespace(
            base=f"http://127.0.0.1:{server.server_address[1]}", pages=pages
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_page_of_another_origin_cannot_frame_the_dashboard(browser, dash, other_origin):
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(dash.login_url)  # logged in: the dashboard's cookie is in this browser
        control = f"{other_origin.base}/form"  # framable: it sends no framing headers
        other_origin.pages["/form"] = b"<!doctype html><form><input name=x></form>"
        paths = ("/", "/login", "/#tasks", "/static/app.js")
        frames = "".join(f'<iframe src="{dash.base}{p}"></iframe>' for p in paths)
        frames += f'<iframe src="{control}"></iframe>'
        other_origin.pages["/attack"] = f"<!doctype html>{frames}".encode()
        page.goto(f"{other_origin.base}/attack", wait_until="load")
        children = page.frames[1:]
        # The control loads; each of the dashboard's frames is Chromium's error page.
        refused = "chrome-error://chromewebdata/"
        assert sorted(f.url for f in children) == sorted([control] + [refused] * len(paths))
        for frame in children:
            assert frame.locator("form input").count() == (frame.url == control)
            assert frame.locator("#tabs").count() == 0
    finally:
        context.close()
