"""The worker process cap on a real node: with max_workers=3, more actors and tasks
than that are asked for; the node never has more than 3 worker processes, the rest
wait (the owner is told why) and run once earlier work ends."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import psutil
import pytest

from tests._engine import StdStreams, ray, raylite_only, wait_for

pytestmark = [raylite_only, pytest.mark.timeout(120)]

CAP = 3


def worker_pids(node_manager: psutil.Process) -> set[int]:
    """The node's worker processes: the fork server's children (the node manager's
    only child is the fork server)."""
    pids: set[int] = set()
    for forks in node_manager.children():
        try:
            pids.update(p.pid for p in forks.children())
        except psutil.NoSuchProcess:
            pass
    return pids


class Sampler:
    """Counts the node's worker processes every few ms on a thread, keeping the most."""

    def __init__(self, node_manager: psutil.Process) -> None:
        self.node_manager = node_manager
        self.most = 0
        self.seen: set[int] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                pids = worker_pids(self.node_manager)
            except psutil.NoSuchProcess:
                return
            self.most = max(self.most, len(pids))
            self.seen |= pids
            self.stop.wait(0.005)


@pytest.fixture(params=["system_config", "env"])
def capped_node(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Sampler]:
    """A node capped at CAP workers, set by init(_system_config=...) or by
    RAYLITE_MAX_WORKERS (the node manager reads its settings from the environment)."""
    from raylite import api  # here: under Ray the module still imports (and skips)

    monkeypatch.setenv("RAYLITE_PENDING_WARN_S", "0.3")  # warn soon
    if request.param == "env":
        monkeypatch.setenv("RAYLITE_MAX_WORKERS", str(CAP))
        ray.init(num_cpus=4)
    else:
        ray.init(num_cpus=4, _system_config={"max_workers": CAP})
    assert api._runtime is not None
    sampler = Sampler(psutil.Process(api._runtime.proc.pid))
    sampler.thread.start()
    try:
        yield sampler
    finally:
        sampler.stop.set()
        sampler.thread.join(5)
        ray.shutdown()


@ray.remote(num_cpus=0)
class Holder:
    def pid(self) -> int:
        return os.getpid()


@ray.remote(num_cpus=1)
def task_pid() -> int:
    return os.getpid()


def test_actors_and_tasks_past_the_cap_wait_then_run(capped_node: Sampler, monkeypatch):
    streams = StdStreams(monkeypatch)  # no line lost to a capture's truncation
    actors = [Holder.remote() for _ in range(CAP + 2)]
    pings = [a.pid.remote() for a in actors]
    # Three actors come alive (the prestarted idle workers make room for them)...
    ready, _ = ray.wait(pings, num_returns=CAP, timeout=60)
    assert len(ready) == CAP
    # ...and the other two wait: no fourth process was forked.
    assert len(worker_pids(capped_node.node_manager)) == CAP
    tasks = [task_pid.remote() for _ in range(10)]
    # The owner is told what holds the processes (after pending_warn_s).
    wait_for(
        lambda: "cap of 3 worker processes" in streams.err,
        30,
        lambda: f"a warning about the cap in stderr: {streams.err!r}",
    )
    assert "3 actor(s)" in streams.err
    # The first actors end: their processes go, and the waiting work gets them.
    first = {ray.get(r) for r in ready}
    for ref, actor in zip(pings, actors, strict=True):
        if ref in ready:
            ray.kill(actor)
    rest = ray.get([r for r in pings if r not in ready], timeout=60)
    assert not first & set(rest)
    assert len(ray.get(tasks, timeout=60)) == 10
    assert capped_node.most <= CAP, f"{capped_node.most} worker processes at once"
    assert len(capped_node.seen) > CAP  # processes came and went


@ray.remote(num_cpus=1)
def nested(depth: int) -> int:
    """A chain of tasks each blocked in get on the next: one process per level."""
    if depth == 0:
        return 0
    return 1 + ray.get(nested.remote(depth - 1))


def test_blocked_tasks_within_the_cap_finish(capped_node: Sampler):
    # Three levels blocked in get need three processes: the cap allows it.
    assert ray.get(nested.remote(CAP - 1), timeout=60) == CAP - 1
    assert ray.get([task_pid.remote() for _ in range(20)], timeout=60)
    assert capped_node.most <= CAP


def test_a_bad_cap_is_refused_at_init(tmp_path):
    with pytest.raises(ValueError, match="max_workers must be an int >= 1"):
        ray.init(num_cpus=1, _system_config={"max_workers": 0}, _temp_dir=str(tmp_path))
    assert not ray.is_initialized()
    assert list(tmp_path.iterdir()) == []  # refused before a session directory was made


def test_a_failed_start_leaves_no_session_directories(tmp_path):
    """A start that fails once the session's directories exist (here a setting that is
    no number): init raises and removes them, the store's too."""
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    with pytest.raises(ValueError):
        ray.init(num_cpus=1, _system_config={"max_spill_bytes": "lots"}, _temp_dir=str(tmp_path))
    assert not ray.is_initialized()
    assert list(tmp_path.iterdir()) == []
    if shm_before:
        mine = f"raylite-s{os.getpid()}-"
        assert not [d for d in set(os.listdir("/dev/shm")) - shm_before if d.startswith(mine)]


def test_raylite_start_refuses_a_bad_cap(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # starts nothing; if it did, only here
    r = subprocess.run(
        [sys.executable, "-m", "raylite.cli", "start", "--head", "--max-workers", "0"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert r.returncode != 0
    assert "--max-workers must be 1 or more" in r.stderr
