"""Seeing the cluster: the state API (`util.state`), `raylite list|summary|logs`, timeline
flows and the progress bar, against one running node.

The `util.state` checks use Ray's names and run against Ray too; the command line, the
timeline's dependency flows and the progress bar are raylite's own (`raylite_only`).
Task events reach the node in batches, so every check polls with a bounded wait.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid

import pytest

from tests._engine import ray, raylite_only, wait_for, wait_for_path

RAY_INIT = {"num_cpus": 2}
WAIT_S = 20.0

pytestmark = pytest.mark.timeout(120)


def state():
    return importlib.import_module(f"{ray.__name__}.util.state")


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@ray.remote
def ok_task(x):
    return x + 1


@ray.remote
def failing_task(text):
    raise ValueError(text)


@ray.remote
def gated_task(path):
    wait_for_path(path)
    return os.getpid()


@ray.remote
def add_one(x):
    return x + 1


@ray.remote
def printing_task(text):
    print(text, flush=True)
    return os.getpid()


@ray.remote
class Speaker:
    def say(self, text):
        print(text, flush=True)
        return os.getpid()

    def pid(self):
        return os.getpid()


def tasks_named(name, **kwargs):
    return state().list_tasks(filters=[("name", "=", name)], **kwargs)


def wait_for_tasks(name, predicate, what):
    return wait_for(
        lambda: (lambda ts: ts if predicate(ts) else None)(tasks_named(name)),
        WAIT_S,
        message=lambda: f"{what}: {tasks_named(name)}",
        interval=0.1,
    )


def cli(*args, check=True):
    result = subprocess.run(
        [sys.executable, "-m", "raylite.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


# --- the state API (both engines) ----------------------------------------------------------
def test_list_tasks_shows_finished_and_failed_tasks(ray_start):
    ok_name, bad_name = _unique("ok"), _unique("bad")
    assert ray.get([ok_task.options(name=ok_name).remote(i) for i in range(3)]) == [1, 2, 3]
    with pytest.raises(ValueError, match="the reason"):
        ray.get(failing_task.options(name=bad_name).remote("the reason"))

    done = wait_for_tasks(ok_name, lambda ts: len(ts) == 3, "three finished tasks")
    assert all(t.state == "FINISHED" for t in done), done
    task = done[0]
    assert task["state"] == "FINISHED"  # records read like dicts too, as in Ray
    assert task.type == "NORMAL_TASK"
    assert isinstance(task.worker_pid, int)
    assert task.worker_pid != os.getpid()
    assert task.node_id
    assert task.task_id
    assert task.error_type is None

    (failed,) = wait_for_tasks(
        bad_name, lambda ts: len(ts) == 1 and ts[0].state == "FAILED", "the failed task"
    )
    assert failed.error_type == "TASK_EXECUTION_EXCEPTION"
    assert "the reason" in failed.error_message


def test_list_tasks_filters_and_limit(ray_start):
    name = _unique("filtered")
    ray.get([ok_task.options(name=name).remote(i) for i in range(4)])
    wait_for_tasks(name, lambda ts: len(ts) == 4, "four tasks")
    S = state()
    assert len(S.list_tasks(filters=[("name", "=", name)], limit=2)) == 2
    both = [("name", "=", name), ("state", "=", "FINISHED")]
    assert len(S.list_tasks(filters=both)) == 4
    none_left = [("name", "=", name), ("state", "!=", "FINISHED")]
    assert S.list_tasks(filters=none_left) == []


def test_running_and_pending_tasks_are_listed(ray_start, tmp_path):
    gate = tmp_path / "gate"
    running_name, pending_name = _unique("running"), _unique("pending")
    running = gated_task.options(name=running_name).remote(str(gate))
    pending = add_one.options(name=pending_name).remote(running)  # waits for its argument
    try:
        (task,) = wait_for_tasks(
            running_name, lambda ts: ts and ts[0].state == "RUNNING", "a running task"
        )
        assert task.worker_pid
        (waiting,) = wait_for_tasks(
            pending_name,
            lambda ts: ts and ts[0].state == "PENDING_ARGS_AVAIL",
            "a task waiting for its argument",
        )
        assert waiting.name == pending_name
    finally:
        gate.touch()
    pid = ray.get(running)
    assert ray.get(pending) == pid + 1
    (task,) = wait_for_tasks(
        running_name, lambda ts: ts and ts[0].state == "FINISHED", "the task finished"
    )
    assert task.worker_pid == pid


@ray.remote
def summed_task(i):
    return i


@ray.remote
def summed_failure():
    raise ValueError("counted")


@ray.remote
def cli_summed_task(i):
    return i


def _summary_entry(summary, func):
    """The entry of `func` (Ray may qualify the name with its module)."""
    found = [v for k, v in summary["cluster"]["summary"].items() if k.endswith(func)]
    return found[0] if found else {}


def test_summarize_tasks_counts_by_function_and_state(ray_start):
    # Differently named tasks of one function: the summary groups them by the function.
    ray.get([summed_task.options(name=_unique("part")).remote(i) for i in range(3)])
    with pytest.raises(ValueError):
        ray.get(summed_failure.remote())

    def counts():
        summary = state().summarize_tasks()
        got = _summary_entry(summary, "summed_task"), _summary_entry(summary, "summed_failure")
        return got if got[0].get("state_counts") == {"FINISHED": 3} and got[1] else None

    ok, bad = wait_for(counts, WAIT_S, "summary counts", interval=0.1)
    assert ok["type"] == "NORMAL_TASK"
    assert bad["state_counts"] == {"FAILED": 1}


def test_list_actors_workers_nodes_and_objects(ray_start):
    S = state()
    speaker = Speaker.remote()
    pid = ray.get(speaker.pid.remote())
    actor_id = speaker._actor_id.hex()

    def the_actor():
        found = S.list_actors(filters=[("actor_id", "=", actor_id)])
        return found if found and found[0].state == "ALIVE" else None

    (actor,) = wait_for(the_actor, WAIT_S, "the actor listed ALIVE", interval=0.1)
    assert actor.class_name == "Speaker"
    assert actor.pid == pid
    workers = {w.pid: w for w in S.list_workers(limit=1000)}
    assert workers[pid].is_alive
    assert workers[pid].worker_type == "WORKER"
    (node,) = S.list_nodes()
    assert node.state == "ALIVE"
    assert node.node_id
    assert node.resources_total["CPU"] == 2
    ref = ray.put(b"x" * 1000)
    assert ref.hex() in {o.object_id for o in S.list_objects(limit=10_000)}
    ray.kill(speaker)

    def dead():
        found = S.list_actors(filters=[("actor_id", "=", actor_id)])
        return found and found[0].state == "DEAD"

    wait_for(dead, WAIT_S, "the killed actor listed DEAD", interval=0.1)


@raylite_only
def test_a_running_task_fails_when_its_worker_dies(ray_start, tmp_path):
    name = _unique("doomed")
    ref = gated_task.options(name=name, max_retries=0).remote(str(tmp_path / "never"))
    (task,) = wait_for_tasks(name, lambda ts: ts and ts[0].state == "RUNNING", "running")
    os.kill(task.worker_pid, signal.SIGKILL)
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        ray.get(ref, timeout=WAIT_S)
    (task,) = wait_for_tasks(name, lambda ts: ts and ts[0].state == "FAILED", "failed")
    assert task.error_type == "WORKER_DIED"


# --- the command line (raylite) ----------------------------------------------------------------
@raylite_only
def test_cli_lists_tasks_with_filters_and_json(ray_start):
    ok_name, bad_name = _unique("cli_ok"), _unique("cli_bad")
    ray.get([ok_task.options(name=ok_name).remote(i) for i in range(3)])
    with pytest.raises(ValueError):
        ray.get(failing_task.options(name=bad_name).remote("cli reason"))
    wait_for_tasks(bad_name, lambda ts: ts and ts[0].state == "FAILED", "the failed task")
    wait_for_tasks(ok_name, lambda ts: len(ts) == 3, "three finished tasks")

    rows = json.loads(cli("list", "tasks", "--name", ok_name, "--format", "json").stdout)
    assert len(rows) == 3
    assert {r["state"] for r in rows} == {"FINISHED"}
    assert {"task_id", "name", "state", "worker_pid", "func_or_class_name"} <= set(rows[0])

    failed = json.loads(cli("list", "tasks", "--state", "failed", "--format", "json").stdout)
    mine = [r for r in failed if r["name"] == bad_name]
    assert len(mine) == 1
    assert "cli reason" in mine[0]["error_message"]
    assert all(r["state"] == "FAILED" for r in failed)

    limited = json.loads(cli("list", "tasks", "--limit", "1", "--format", "json").stdout)
    assert len(limited) == 1
    table = cli("list", "tasks", "--name", ok_name).stdout
    assert "TASK_ID" in table
    assert "STATE" in table
    assert "Total: 3" in table
    assert table.count(ok_name) == 3
    neither = cli("list", "tasks", "--filter", f"name={ok_name}", "--filter", "state!=FINISHED")
    assert "Total: 0" in neither.stdout

    bad = cli("list", "tasks", "--filter", "colour=red", check=False)
    assert bad.returncode != 0
    assert "not a column" in bad.stderr


@raylite_only
def test_cli_lists_actors_workers_nodes_objects(ray_start):
    speaker = Speaker.remote()
    pid = ray.get(speaker.pid.remote())
    ref = ray.put(b"y" * (1 << 20))  # 1 MiB: in the store, which `list objects` reads
    actors = json.loads(cli("list", "actors", "--format", "json", "--name", "Speaker").stdout)
    assert speaker._actor_id.hex() in {a["actor_id"] for a in actors}
    alive = json.loads(cli("list", "actors", "--state", "ALIVE", "--format", "json").stdout)
    assert all(a["state"] == "ALIVE" for a in alive)
    workers = json.loads(cli("list", "workers", "--format", "json", "--limit", "1000").stdout)
    assert pid in {w["pid"] for w in workers}
    assert os.getpid() in {w["pid"] for w in workers if w["worker_type"] == "DRIVER"}
    nodes = json.loads(cli("list", "nodes", "--format", "json").stdout)
    assert len(nodes) == 1
    assert nodes[0]["state"] == "ALIVE"
    objects = json.loads(cli("list", "objects", "--format", "json", "--limit", "10000").stdout)
    assert ref.hex() in {o["object_id"] for o in objects}
    assert "NODE_ID" in cli("list", "nodes").stdout
    assert "--name does not apply" in cli("list", "workers", "--name", "x", check=False).stderr
    ray.kill(speaker)


@raylite_only
def test_cli_summary_tasks(ray_start):
    name = _unique("cli_summed")
    ray.get([cli_summed_task.options(name=name).remote(i) for i in range(2)])
    wait_for_tasks(name, lambda ts: len(ts) == 2, "two tasks")
    summary = json.loads(cli("summary", "tasks", "--format", "json").stdout)
    entry = summary["cluster"]["summary"]["cli_summed_task"]
    assert entry["state_counts"] == {"FINISHED": 2}
    table = cli("summary", "tasks").stdout
    line = next(line for line in table.splitlines() if line.startswith("cli_summed_task"))
    assert "NORMAL_TASK" in line
    assert "FINISHED: 2" in line
    assert "CLASS_NAME" in cli("summary", "actors").stdout


@raylite_only
def test_cli_logs_of_a_worker_and_of_an_actor(ray_start):
    text = _unique("logged line")
    pid = ray.get(printing_task.remote(text))

    def shown(*args):
        out = cli("logs", *args).stdout
        return out if text in out else None

    out = wait_for(lambda: shown("--pid", str(pid)), WAIT_S, "the task's print", interval=0.1)
    assert f"pid={pid}) {text}" in out

    speaker = Speaker.remote()
    said = _unique("actor line")
    ray.get(speaker.say.remote(said))
    actor_id = speaker._actor_id.hex()
    wait_for(
        lambda: said in cli("logs", "--actor-id", actor_id).stdout,
        WAIT_S,
        "the actor's print",
        interval=0.1,
    )
    assert str(pid) in cli("logs").stdout  # without a selector: the workers with output
    missing = cli("logs", "--actor-id", "ab" * 16, check=False)
    assert missing.returncode != 0
    assert "no output known" in missing.stderr
    ray.kill(speaker)


@raylite_only
def test_cli_logs_follow_streams_new_lines(ray_start):
    speaker = Speaker.remote()
    ray.get(speaker.say.remote("before following"))
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "raylite.cli",
            "logs",
            "--actor-id",
            speaker._actor_id.hex(),
            "--follow",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in follower.stdout], daemon=True)
    reader.start()
    seen: list[str] = []

    def saw(text):
        while not lines.empty():
            seen.append(lines.get())
        return any(text in line for line in seen)

    try:
        wait_for(lambda: saw("before following"), WAIT_S, "the earlier line")
        later = _unique("while following")
        ray.get(speaker.say.remote(later))
        wait_for(lambda: saw(later), WAIT_S, lambda: f"the new line streamed, saw {seen}")
    finally:
        follower.send_signal(signal.SIGINT)
        code = follower.wait(timeout=30)
        reader.join(timeout=10)
    assert code == 0, follower.stderr.read()
    ray.kill(speaker)


# --- timeline flows and the progress bar (raylite) ------------------------------------------
@raylite_only
def test_timeline_has_a_flow_from_producer_to_consumer(ray_start, tmp_path):
    produce, consume = _unique("produce"), _unique("consume")
    first = ok_task.options(name=produce).remote(1)
    second = add_one.options(name=consume).remote(first)
    assert ray.get(second) == 3
    filename = str(tmp_path / "trace.json")

    def linked():
        ray.timeline(filename=filename)
        with open(filename) as f:
            trace = json.load(f)
        spans = {e["name"]: e for e in trace if e.get("ph") == "X"}
        if produce not in spans or consume not in spans:
            return None
        return trace, spans

    trace, spans = wait_for(linked, WAIT_S, "both tasks in the timeline", interval=0.2)
    p, c = spans[produce], spans[consume]
    flows = {}
    for e in trace:
        if e.get("ph") in ("s", "f") and e.get("cat") == "dependency":
            flows.setdefault(e["id"], {})[e["ph"]] = e
    pairs = [
        f
        for f in flows.values()
        if "s" in f
        and "f" in f
        and f["s"]["tid"] == p["tid"]
        and p["ts"] <= f["s"]["ts"] <= p["ts"] + p["dur"]
        and f["f"]["tid"] == c["tid"]
        and c["ts"] <= f["f"]["ts"] <= c["ts"] + c["dur"]
    ]
    assert len(pairs) == 1, flows
    assert pairs[0]["f"]["bp"] == "e"
    assert pairs[0]["f"]["args"]["object_id"] == first.hex()


@raylite_only
def test_progress_returns_the_values_and_draws_a_bar(ray_start):
    from raylite.util import progress

    stream = io.StringIO()
    refs = [ok_task.remote(i) for i in range(5)]
    assert progress(refs + refs[:1], desc="adding", file=stream) == [1, 2, 3, 4, 5, 1]
    drawn = stream.getvalue()
    assert "adding" in drawn
    assert "5/5" in drawn
    assert "100%" in drawn
    assert progress(ok_task.remote(41), file=io.StringIO()) == 42
    with pytest.raises(ValueError, match="boom"):
        progress([failing_task.remote("boom")], file=io.StringIO())
    stuck = gated_task.remote("/nonexistent/gate")
    with pytest.raises(ray.exceptions.GetTimeoutError):
        progress([stuck], timeout=0.3, file=io.StringIO())
    ray.cancel(stuck, force=True)


@raylite_only
@pytest.mark.timeout(60)
def test_cli_lists_tasks_that_wait_for_a_worker(ray_start, tmp_path):
    """Owners report what they submitted: another process sees tasks not yet started."""
    gate = tmp_path / "gate"
    name = _unique("queued")
    blockers = [gated_task.remote(str(gate)) for _ in range(2)]  # both CPUs busy
    queued = [add_one.options(name=name).remote(i) for i in range(3)]

    def listed():
        return json.loads(cli("list", "tasks", "--name", name, "--format", "json").stdout)

    try:
        wait_for(
            lambda: (
                (rows := listed())
                and len(rows) == 3
                and all(r["state"] == "PENDING_NODE_ASSIGNMENT" for r in rows)
            ),
            timeout=30,
            message=lambda: f"the queued tasks listed as waiting: {listed()}",
        )
    finally:
        gate.touch()
    assert sorted(ray.get(queued)) == [1, 2, 3]
    ray.get(blockers)
    wait_for_tasks(
        name,
        lambda ts: len(ts) == 3 and all(t.state == "FINISHED" for t in ts),
        "the queued tasks finished",
    )


@raylite_only  # raylite's command line; Ray's list_placement_groups needs its dashboard
def test_cli_and_state_api_list_placement_groups(ray_start):
    pgs = importlib.import_module(f"{ray.__name__}.util.placement_group")
    name = _unique("pg")
    pg = pgs.placement_group([{"CPU": 1}], strategy="STRICT_PACK", name=name)
    try:
        assert pg.wait(WAIT_S)
        (row,) = [p for p in state().list_placement_groups() if p.name == name]
        assert row.placement_group_id == pg.id.hex()
        assert row.state == "CREATED"
        assert row.bundles[0]["unit_resources"] == {"CPU": 1.0}
        listed = json.loads(cli("list", "placement-groups", "--format", "json").stdout)
        assert name in {p["name"] for p in listed}
        table = cli("list", "placement-groups", "--name", name).stdout
        assert pg.id.hex() in table
        assert "STRICT_PACK" in table
    finally:
        pgs.remove_placement_group(pg)
    removed = json.loads(
        cli("list", "placement-groups", "--state", "REMOVED", "--format", "json").stdout
    )
    assert pg.id.hex() in {p["placement_group_id"] for p in removed}
