"""The web dashboard: read-only pages over the head node's tables, served by the head.

Owns the dashboard's HTTP server (server.py, aiohttp in the node manager's event
loop: no thread, no process of its own), its JSON views (views.py) and the static
page (static/: plain HTML, JS and CSS, nothing to build). Not the data: it reads
snapshots (the node manager's and the head's statistics(), frozen copies) and the
task records in-process, and changes nothing; no route runs code.

    browser ──GET /api/...──▶ aiohttp (node manager's loop) ──views.*(snapshots)──▶ JSON
    init(include_dashboard=True) / raylite start --head
        └─▶ node manager --dashboard-port ──▶ <session_dir>/dashboard_url

Protected like the cluster's other ports: it binds to loopback unless told
otherwise, and every request needs the cluster token. A browser brings it once,
as `?token=` in the URL or through the login form, and gets a session cookie
(HttpOnly, SameSite=Strict) derived from the token, not the token itself. The
URL raylite prints carries a login token derived from the cluster token too, so
a copied dashboard link opens the dashboard and nothing else: the cluster token
itself (which lets a process run code on the cluster) is never printed.

This module imports nothing heavy: drivers and the CLI use it for the names below;
the node manager starts the server with server.start_dashboard.
"""

from __future__ import annotations

import os

DEFAULT_PORT = 8265  # Ray's
URL_FILE = "dashboard_url"  # in the session dir: the base URL, written once it listens


def login_token(token: bytes) -> str:
    """The token of the printed dashboard URL: opens the dashboard, nothing else."""
    import hashlib  # here: hashlib maps OpenSSL's libcrypto into a driver that imports it
    import hmac

    return hmac.new(token, b"raylite dashboard login", hashlib.sha256).hexdigest()[:32]


def session_cookie(token: bytes) -> str:
    """The value of the dashboard's session cookie."""
    import hashlib
    import hmac

    return hmac.new(token, b"raylite dashboard session", hashlib.sha256).hexdigest()


def read_url(session_dir: str) -> str:
    """The dashboard's base URL (http://HOST:PORT) the node in `session_dir` serves, or ""."""
    try:
        with open(os.path.join(session_dir, URL_FILE)) as f:
            return f.read().strip()
    except OSError:
        return ""


def login_url(base_url: str, token: bytes) -> str:
    return f"{base_url}/?token={login_token(token)}" if base_url else ""


__all__ = [
    "DEFAULT_PORT",
    "URL_FILE",
    "login_token",
    "login_url",
    "read_url",
    "session_cookie",
]
