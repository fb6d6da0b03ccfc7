"""Statistics snapshots: the node manager's and the head's are frozen copies, the state
listings render from snapshots made by hand, and the tools read nothing else.

Every reader outside the components (the dashboard, util.state, the CLI) sees a
component only through `statistics()`; the last tests scan their source for reads
of private attributes and of the live objects' tables.
"""

from __future__ import annotations

import ast
import pathlib
from typing import Any

import pytest

import raylite
from raylite import protocol as P
from raylite import task_events as TE
from raylite.core.lifecycle import ALIVE, DEAD, PENDING
from raylite.head.head import ActorRec
from raylite.node import listings
from raylite.node.manager import NodeManager
from raylite.node.pool import WorkerRec
from raylite.node.store import Segment
from tests.unit.snapshots import NODE, OTHER, actor, head_stats, node_entry, node_stats, worker
from tests.unit.test_task_events import event, tid

SRC = pathlib.Path(raylite.__file__).parent


class Conn:
    """Stands for a connection: keeps the replies."""

    closed = False
    peer: Any = None

    def __init__(self) -> None:
        self.replies: list[Any] = []

    def reply(self, rid: int, msg: Any) -> None:
        self.replies.append(msg)

    def send(self, msg: Any) -> None:
        pass


@pytest.fixture
def nm(tmp_path):
    node = NodeManager(
        str(tmp_path / "session"), str(tmp_path / "store"), b"t" * 32, {"CPU": 40_000}, 0, 0
    )
    node.head.add_own_node()
    return node


def test_node_statistics_is_a_frozen_copy(nm):
    nm.workers[b"w1"] = WorkerRec(b"w1", 11, -1, -1, address="unix:/w-11", state="idle")
    nm.worker_logs.add(11, "stdout", "hello")
    nm.segments[b"o1"] = Segment(100, "unix:/d-1.sock")
    nm.client_pids["unix:/d-1.sock"] = 42
    nm.task_events.add_events([event(1), event(2, end=None)])
    stats = nm.statistics(objects=True)
    assert [(w.pid, w.state, w.log_lines) for w in stats.workers] == [(11, "idle", 1)]
    assert [(s.object_id, s.size) for s in stats.objects] == [(b"o1", 100)]
    assert stats.store.num_objects == 1
    assert stats.total == {"CPU": 40_000}
    assert stats.task_states == {"FINISHED": 1, "RUNNING": 1}
    assert stats.tasks_recorded == 2
    assert stats.runs_head
    assert nm.statistics().objects is None  # the segments only when asked for

    with pytest.raises(AttributeError):
        stats.workers = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        stats.available["CPU"] = 0  # type: ignore[index]

    # The node moves on; the snapshot does not.
    nm.workers[b"w1"].state = "leased"
    nm.workers[b"w2"] = WorkerRec(b"w2", 12, -1, -1)
    nm.available["CPU"] = 0
    nm.segments.clear()
    nm.client_pids.clear()
    nm.task_events.add_events([event(2)])
    assert [(w.pid, w.state) for w in stats.workers] == [(11, "idle")]
    assert stats.available == {"CPU": 40_000}
    assert len(stats.objects) == 1
    assert stats.clients == {"unix:/d-1.sock": 42}
    assert stats.task_states == {"FINISHED": 1, "RUNNING": 1}
    assert nm.statistics().available == {"CPU": 0}


def test_head_statistics_is_a_frozen_copy(nm):
    head = nm.head
    alive = head.actors.setdefault(b"a" * 16, ActorRec(b"a" * 16))
    head.on_register_name(Conn(), P.RegisterActorName("c", "ns", b"a" * 16, "Counter", {}), 1)
    head.set_actor(alive, ALIVE)
    head.actors[b"b" * 16] = ActorRec(b"b" * 16)  # only asked about
    stats = head.statistics()
    assert [(a.actor_id, a.state, a.name, a.namespace) for a in stats.actors] == [
        (b"a" * 16, ALIVE, "c", "ns"),
        (b"b" * 16, PENDING, None, None),
    ]
    assert [a.created for a in stats.actors] == [True, False]
    assert stats.named_actors == {("ns", "c"): b"a" * 16}
    (own,) = stats.nodes
    assert own.node_id == nm.node_id
    assert own.is_head
    assert stats.total == {"CPU": 40_000}
    with pytest.raises(AttributeError):
        stats.jobs = 3  # type: ignore[misc]

    head.set_actor(alive, DEAD, "killed")
    nm.available["CPU"] = 10_000
    head.new_job()
    assert stats.actors[0].state is ALIVE
    assert stats.named_actors == {("ns", "c"): b"a" * 16}
    assert stats.nodes[0].available == {"CPU": 40_000}
    assert stats.jobs == 0
    again = head.statistics()
    assert again.actors[0].state is DEAD
    assert again.actors[0].cause == "killed"
    assert again.named_actors == {}
    assert again.available == {"CPU": 10_000}
    assert again.jobs == 1


def test_status_and_store_replies_are_built_from_snapshots(nm):
    nm.segments[b"o1"] = Segment(100, "unix:/d-1.sock", spilled=True)
    nm.client_pids["unix:/d-1.sock"] = 42
    conn = Conn()
    nm.on_get_store_stats(conn, P.GetStoreStats(), 1)
    (reply,) = conn.replies
    assert reply.stats["num_objects"] == 1
    assert reply.stats["clients"] == {"unix:/d-1.sock": 42}
    assert reply.objects == [
        {
            "object_id": b"o1".hex(),
            "size": 100,
            "owner": "unix:/d-1.sock",
            "owner_pid": 42,
            "spilled": True,
        }
    ]
    nm.head.on_node_status(conn, P.GetNodeStatus(), 2)
    status = conn.replies[1]
    (row,) = status.nodes
    assert row["node_id"] == nm.node_id
    assert row["is_head"]
    assert row["alive"]
    assert row["total"] == {"CPU": 40_000}
    assert status.head["storage"] == "memory"
    assert status.head["actors"] == 0


# --- listings from snapshots made by hand --------------------------------------------------
def test_actor_and_worker_rows_from_snapshots():
    node = node_stats(
        workers=(worker(5), worker(6, state="dead"), worker(7, "starting", actor=b"s" * 16)),
        clients={"unix:/tmp/d-abc.sock": 99, "unix:/w-5": 5},
    )
    head = head_stats(
        actors=(
            actor(1, ALIVE, name="c", namespace="ns"),
            actor(2, DEAD, cause="killed"),
            actor(3, PENDING, class_name="", pid=0),  # only asked about: not listed
        )
    )
    rows = listings.actor_rows(node, head, 0.0)
    assert [(r["actor_id"][:2], r["state"]) for r in rows] == [
        ("01", "ALIVE"),
        ("02", "DEAD"),
        ("73", "PENDING_CREATION"),
    ]
    assert rows[0]["name"] == "c"
    assert rows[0]["ray_namespace"] == "ns"
    assert rows[1]["death_cause"] == {"message": "killed"}
    assert rows[2]["pid"] == 7

    workers = listings.worker_rows(node, head, 0.0, pid_alive=lambda pid: pid == 99)
    assert [(r["pid"], r["worker_type"], r["is_alive"], r["state"]) for r in workers] == [
        (5, "WORKER", True, "IDLE"),
        (6, "WORKER", False, "DEAD"),
        (7, "WORKER", True, "STARTING"),
        (99, "DRIVER", True, "ALIVE"),
    ]
    assert workers[3]["worker_id"] == "abc"


def test_node_and_object_rows_from_snapshots():
    from tests.unit.snapshots import segment

    node = node_stats(objects=(segment(1, 10, owner="unix:/s/w-1"),), clients={"unix:/s/w-1": 8})
    head = head_stats(nodes=(node_entry(), node_entry(OTHER, alive=False)))
    own, dead = listings.node_rows(node, head, 2.0)
    assert own["node_id"] == NODE.hex()
    assert own["is_head_node"]
    assert own["resources_total"] == {"CPU": 4.0}
    assert own["resources_available"] == {"CPU": 3.0}
    assert own["start_time_ms"] == 2000
    assert (dead["state"], dead["resources_total"], dead["node_name"]) == ("DEAD", {}, "there")
    (alone,) = listings.node_rows(node, None, 2.0)  # no head here: the node itself
    assert alone["resources_available"] == {"CPU": 3.0}
    (obj,) = listings.object_rows(node, None, 0.0)
    assert (obj["object_size"], obj["type"], obj["pid"]) == (10, "WORKER", 8)


def test_log_pid_finds_actors_tasks_and_workers():
    node = node_stats(workers=(worker(5, actor=b"s" * 16),))
    head = head_stats(actors=(actor(1, ALIVE),))
    tasks = TE.TaskEventStore(10)
    tasks.add_events([event(1, pid=6)])
    logs = TE.WorkerLogs()
    logs.add(8, "stdout", "from another node")

    def find(**kw: Any) -> tuple[int, bool]:
        msg = P.GetLogs(kw.get("pid", 0), kw.get("actor_id"), kw.get("task_id"), 0, 10)
        return listings.log_pid(msg, node, head, tasks, logs)

    assert find(actor_id=bytes([1]) * 16) == (101, True)
    assert find(actor_id=b"s" * 16) == (5, True)  # its worker starts
    assert find(actor_id=b"x" * 16) == (0, False)
    assert find(task_id=tid(1)) == (6, True)
    assert find(task_id=tid(2)) == (0, False)
    assert find(pid=5) == (5, True)
    assert find(pid=8) == (8, True)
    assert find(pid=9) == (9, False)


# --- the tools read snapshots only ---------------------------------------------------------
READERS = sorted(
    [*SRC.glob("dashboard/*.py"), *SRC.glob("util/*.py"), SRC / "cli.py", SRC / "cli_cluster.py"]
)
# Private attributes these modules may read, by (file, expression), with the reason.
ALLOWED_PRIVATE = {
    # Queue.shutdown asks the queue's own actor (_QueueActor, same module) to exit.
    ("util/queue.py", "actor._exit"),
}
# What the tools may use of a live component (the names they give it): its snapshots,
# and for the dashboard what dashboard.server.Source declares.
LIVE = {
    "nm": {
        "statistics", "head_statistics", "task_events", "worker_logs", "connect_nm",
        "token", "ip", "session_dir", "metrics_text", "jobs",
    },
    "cw": {"statistics", "ask_node"},
}  # fmt: skip


def _module_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names)
    return names


def _private_reads(source: str) -> list[str]:
    tree = ast.parse(source)
    modules = _module_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__") and node.attr.endswith("__"):
            continue  # dunders (__dataclass_fields__, ...) are public protocol
        base = node.value
        if isinstance(base, ast.Name) and base.id in ("self", "cls", *modules):
            continue
        found.append(ast.unparse(node))
    return found


def test_tools_read_no_private_attribute_of_another_object():
    found = []
    for path in READERS:
        rel = path.relative_to(SRC).as_posix()
        found += [
            f"{rel}: {expr}"
            for expr in _private_reads(path.read_text())
            if (rel, expr) not in ALLOWED_PRIVATE
        ]
    assert not found, "private attributes read outside their component:\n" + "\n".join(found)


def test_tools_use_only_the_snapshots_of_live_components():
    found = []
    for path in READERS:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                allowed = LIVE.get(node.value.id)
                if allowed is not None and node.attr not in allowed:
                    found.append(f"{path.relative_to(SRC)}: {ast.unparse(node)}")
    assert not found, "read statistics() instead of:\n" + "\n".join(found)


def test_the_scan_sees_what_it_forbids():
    source = "import os\nfrom . import views\nx = nm._tables\ny = self._a\nz = os._exit\n"
    source += "w = a.b._c\nv = views._rows\nd = T.__dataclass_fields__\n"
    assert _private_reads(source) == ["nm._tables", "a.b._c"]
