"""The dashboard's JSON views and its token check, in process: a task table, no node."""

from __future__ import annotations

import types

from raylite import dashboard
from raylite import task_events as TE
from raylite.dashboard import views
from tests.unit.test_task_events import event, oid, tid


def node(store: TE.TaskEventStore) -> types.SimpleNamespace:
    head = types.SimpleNamespace(actors={}, nodes={})
    return types.SimpleNamespace(task_events=store, head=head, workers={}, ip="127.0.0.1")


def test_task_listing_is_bounded_and_counts_come_from_the_summary():
    store = TE.TaskEventStore(50)  # keeps 50 records, counts all 200
    store.add_events([event(i, name="ok" if i % 4 else "bad") for i in range(200)])
    store.add_events([event(1000, name="boom", error=["TASK_EXECUTION_EXCEPTION", "Traceback..."])])
    out = views.tasks(node(store), limit=10)
    assert len(out["rows"]) == 10
    assert out["rows"][0]["task_id"] == tid(1000).hex()  # newest first
    assert out["matching"] == 201
    assert out["recorded"] == 50
    assert out["evicted"] == 151
    by_func = {f["func"]: f["counts"] for f in out["functions"]}
    assert by_func == {"ok": {"FINISHED": 150}, "bad": {"FINISHED": 50}, "boom": {"FAILED": 1}}

    failed = views.tasks(node(store), state="failed", limit=10)
    (row,) = failed["rows"]
    assert row["error_type"] == "TASK_EXECUTION_EXCEPTION"
    assert row["error"] == "Traceback..."
    assert failed["matching"] == 1
    page = views.tasks(node(store), func="ok", limit=5, offset=5)
    assert [r["func"] for r in page["rows"]] == ["ok"] * 5
    assert page["matching"] == 150


def test_timeline_windows_limits_and_flows():
    store = TE.TaskEventStore(1000)
    # A tree reduce: two leaves, one combine reading both; then a late unrelated task.
    store.add_events([event(1, start=10, end=11), event(2, start=10, end=11, pid=8)])
    store.add_events([event(3, start=11.5, end=12, deps=[oid(1), oid(2)])])
    store.add_events([event(4, start=500, end=501)])
    store.add_events([event(5, start=502, end=None, pid=9)])  # running
    nm = node(store)

    out = views.timeline(nm, start=0, end=100)
    assert [t[0] for t in out["tasks"]] == [tid(3).hex(), tid(2).hex(), tid(1).hex()]
    flows = {(out["tasks"][a][0], out["tasks"][b][0]) for a, b in out["flows"]}
    assert flows == {(tid(1).hex(), tid(3).hex()), (tid(2).hex(), tid(3).hex())}
    assert [lane["pid"] for lane in out["lanes"]] == [7, 8]
    assert not out["truncated"]

    newest = views.timeline(nm, limit=2)  # no window: the newest, running ones first
    assert newest["truncated"]
    assert [t[0] for t in newest["tasks"]] == [tid(5).hex(), tid(4).hex()]
    assert newest["tasks"][0][3] is None  # running: no end yet
    assert newest["flows"] == []


def test_tokens_and_cookies_are_derived_not_the_cluster_token():
    token = bytes(range(32))
    login = dashboard.login_token(token)
    assert token.hex() not in (login, dashboard.session_cookie(token))
    assert login != dashboard.login_token(bytes(32))
    assert dashboard.login_url("http://127.0.0.1:1", token) == f"http://127.0.0.1:1/?token={login}"
    assert dashboard.login_url("", token) == ""

    from raylite.dashboard.server import Auth

    auth = Auth(token)
    assert auth.token_ok(token.hex())
    assert auth.token_ok(login.upper())
    assert not auth.token_ok("00" * 32)
    assert not auth.token_ok("é" * 10)
