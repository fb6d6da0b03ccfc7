"""The dashboard's JSON views and its token check, in process: a task table and
snapshots made by hand, no node."""

from __future__ import annotations

import types

from raylite import dashboard
from raylite import task_events as TE
from raylite.core.lifecycle import ALIVE, DEAD, PENDING, RESTARTING
from raylite.dashboard import views
from tests.unit.snapshots import (
    CPU,
    NODE,
    OTHER,
    actor,
    head_stats,
    node_entry,
    node_stats,
    segment,
    worker,
)
from tests.unit.test_task_events import event, oid, tid


def test_task_listing_is_bounded_and_counts_come_from_the_summary():
    store = TE.TaskEventStore(50)  # keeps 50 records, counts all 200
    store.add_events([event(i, name="ok" if i % 4 else "bad") for i in range(200)])
    store.add_events([event(1000, name="boom", error=["TASK_EXECUTION_EXCEPTION", "Traceback..."])])
    out = views.tasks(store, limit=10)
    assert len(out["rows"]) == 10
    assert out["rows"][0]["task_id"] == tid(1000).hex()  # newest first
    assert out["matching"] == 201
    assert out["recorded"] == 50
    assert out["evicted"] == 151
    by_func = {f["func"]: f["counts"] for f in out["functions"]}
    assert by_func == {"ok": {"FINISHED": 150}, "bad": {"FINISHED": 50}, "boom": {"FAILED": 1}}

    failed = views.tasks(store, state="failed", limit=10)
    (row,) = failed["rows"]
    assert row["error_type"] == "TASK_EXECUTION_EXCEPTION"
    assert row["error"] == "Traceback..."
    assert failed["matching"] == 1
    page = views.tasks(store, func="ok", limit=5, offset=5)
    assert [r["func"] for r in page["rows"]] == ["ok"] * 5
    assert page["matching"] == 150


def test_timeline_windows_limits_and_flows():
    store = TE.TaskEventStore(1000)
    # A tree reduce: two leaves, one combine reading both; then a late unrelated task.
    store.add_events([event(1, start=10, end=11), event(2, start=10, end=11, pid=8)])
    store.add_events([event(3, start=11.5, end=12, deps=[oid(1), oid(2)])])
    store.add_events([event(4, start=500, end=501)])
    store.add_events([event(5, start=502, end=None, pid=9)])  # running
    node = node_stats()

    out = views.timeline(store, node, None, start=0, end=100)
    assert [t[0] for t in out["tasks"]] == [tid(3).hex(), tid(2).hex(), tid(1).hex()]
    flows = {(out["tasks"][a][0], out["tasks"][b][0]) for a, b in out["flows"]}
    assert flows == {(tid(1).hex(), tid(3).hex()), (tid(2).hex(), tid(3).hex())}
    assert [lane["pid"] for lane in out["lanes"]] == [7, 8]
    assert not out["truncated"]

    newest = views.timeline(store, node, None, limit=2)  # no window: the newest, running ones first
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


def test_cluster_view_renders_from_snapshots():
    node = node_stats(workers=(worker(5), worker(6, state="dead")))
    head = head_stats(
        nodes=(node_entry(), node_entry(OTHER, alive=False)),
        actors=(actor(1, ALIVE), actor(2, DEAD), actor(3, ALIVE)),
    )
    out = views.cluster(node, head)
    own, other = out["nodes"]
    assert own["node_id"] == NODE.hex()
    assert own["is_head"]
    assert own["hostname"] == "here"
    assert own["workers"] == 1  # the dead one is not counted
    assert own["used"] == {"CPU": 1.0}
    assert own["store"]["used_bytes"] == 100
    assert not other["alive"]
    assert other["used"] == {}
    assert other["store"] is None
    assert other["cause"] == "no heartbeat for 3 s"
    assert out["total"] == {"CPU": 4.0}
    assert out["used"] == {"CPU": 1.0}
    assert out["head"]["actors_alive"] == 2
    assert out["head"]["jobs"] == 2
    assert out["head"]["address"] == node.address  # no TCP: the unix address
    assert out["tasks"] == {"FINISHED": 3}


def test_actor_view_newest_first_with_workers_that_start():
    starting = worker(9, state="starting", actor=b"s" * 16)
    node = node_stats(workers=(starting,))
    head = head_stats(
        actors=(
            actor(1, ALIVE, name="counter", namespace="ns"),
            actor(2, RESTARTING, restarts=1, restarts_left=2),
            actor(3, PENDING, class_name="", pid=0),  # only asked about
            actor(4, DEAD, cause="killed"),
        )
    )
    out = views.actors(node, head)
    assert [r["actor_id"][:2] for r in out["rows"]] == ["04", "02", "01", "73"]
    assert out["states"] == {"DEAD": 1, "RESTARTING": 1, "ALIVE": 1, "PENDING_CREATION": 1}
    first = out["rows"][2]
    assert (first["name"], first["namespace"], first["node"]) == ("counter", "ns", "127.0.0.1")
    assert out["rows"][1]["restarts"] == 1
    assert out["rows"][3]["pid"] == 9
    assert views.actors(node, head, state="dead")["rows"][0]["cause"] == "killed"


def test_object_worker_and_log_views_render_from_snapshots():
    node = node_stats(
        workers=(worker(5, lines=2), worker(6, state="leased", actor=bytes([1]) * 16)),
        objects=(segment(1, 10), segment(2, 500, spilled=True), segment(3, 50)),
        clients={"unix:/d-1.sock": 42},
    )
    head = head_stats(actors=(actor(1, ALIVE, class_name="Counter"),))
    recent = views.objects(node, "recent", 2)
    assert [r["size"] for r in recent["rows"]] == [50, 500]  # newest first
    assert recent["rows"][0]["owner"] == "driver pid=42"
    assert recent["total"] == 3
    biggest = views.objects(node, "size", 1)["rows"]
    assert [(r["size"], r["spilled"]) for r in biggest] == [(500, True)]

    rows = views.workers(node, head)["rows"]
    assert [(r["pid"], r["state"], r["actor_class"], r["log_lines"]) for r in rows] == [
        (5, "IDLE", "", 2),
        (6, "LEASED", "Counter", 0),
    ]

    logs = TE.WorkerLogs()
    logs.add(5, "stdout", "one\ntwo")
    out = views.logs(node, logs, 5, tail=1)
    assert out["lines"] == [[2, "stdout", "two"]]
    assert out["alive"]
    assert views.logs(node, logs, 1234) is None  # no such worker here
    lanes = views.timeline(TE.TaskEventStore(10), node, head)["lanes"]
    assert [lane["label"] for lane in lanes] == ["worker 5", "worker 6 (Counter)"]


def test_merge_objects_sums_every_nodes_store():
    node = node_stats(objects=(segment(1, 10),))
    local = views.objects(node, "size", 10)
    reply = types.SimpleNamespace(
        stats={"clients": {"unix:/w-1": 7}, "num_objects": 1, "used_bytes": 5},
        objects=[{"object_id": "ab", "size": 99, "owner": "unix:/w-1", "spilled": False}],
    )
    out = views.merge_objects(local, {OTHER.hex(): reply}, "size", 10)
    assert [(r["size"], r["node_id"]) for r in out["rows"]] == [(99, OTHER.hex()), (10, NODE.hex())]
    assert out["total"] == 2
    assert out["store"]["used_bytes"] == 105


def test_placement_group_view_and_listing_render_from_snapshots():
    import msgspec

    from raylite.head.placement_groups import PGRec
    from raylite.node.listings import placement_group_rows

    placed = PGRec(b"a" * 16, [{"CPU": CPU}, {"CPU": CPU // 2}], "SPREAD", name="g")
    placed.state = placed.state.CREATED
    placed.nodes = {0: NODE, 1: NODE}
    waiting = PGRec(b"b" * 16, [{"CPU": 64 * CPU}], "STRICT_PACK")
    head = msgspec.structs.replace(head_stats(), placement_groups=(placed.row(), waiting.row()))
    out = views.placement_groups(head)
    assert out["states"] == {"CREATED": 1, "PENDING": 1}
    assert [r["placement_group_id"] for r in out["rows"]] == [(b"b" * 16).hex(), (b"a" * 16).hex()]
    bundles = out["rows"][1]["bundles"]
    assert bundles[1] == {"resources": {"CPU": 0.5}, "node_id": NODE.hex(), "node": "127.0.0.1"}
    assert out["rows"][0]["bundles"][0]["node_id"] is None
    rows = placement_group_rows(node_stats(), head, 0.0)
    assert rows[0]["name"] == "g"
    assert rows[0]["state"] == "CREATED"
    assert rows[0]["bundles"][0]["unit_resources"] == {"CPU": 1.0}
    assert rows[1]["bundles"][0]["node_id"] is None
