"""Workers come from the fork server (node/forkserver.py), a single-threaded process.

The node manager runs threads (spills, pulls, the dashboard); forking from it could
hang a child on a lock another thread held. These tests check the process tree a
driver sees: node manager -> fork server -> workers, the fork server with one thread
while the node manager has several, and that killing the node manager or the fork
server leaves no process of the node behind. Only processes these tests started are
killed, by pid.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
from pathlib import Path

import pytest

from tests._engine import raylite_only
from tests.multiprocess.test_leaks import (
    is_gone,
    raylite_shm_entries,
    start_driver,
    wait_until_gone,
    wait_until_no_new_shm,
)

pytestmark = [raylite_only, pytest.mark.timeout(90)]
RAY_INIT = {"num_cpus": 2}

REPO_ROOT = Path(__file__).resolve().parents[2]

# Reports the process tree as JSON, once the node manager has threads, then waits.
DRIVER = textwrap.dedent(
    """
    import json, os, sys, time
    import numpy as np
    import psutil
    import raylite as ray

    @ray.remote
    def where():
        return os.getpid(), os.getppid()

    @ray.remote
    class Where:
        def where(self):
            return os.getpid(), os.getppid()

    ray.init(num_cpus=2, object_store_memory=60 * 1024 * 1024)
    nm = psutil.Process().children()[0]
    # Past the store's capacity: the node manager spills, in its executor's threads.
    refs = [ray.put(np.ones(20 * 1024 * 1024 // 8)) for _ in range(6)]
    deadline = time.monotonic() + 30
    while nm.num_threads() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    nm_threads = nm.num_threads()
    # Forked now, with the node manager's threads about: an actor gets a new worker.
    actor = Where.remote()
    pids = ray.get([where.remote() for _ in range(4)]) + [ray.get(actor.where.remote())]
    servers = nm.children()
    report = {
        "nm": nm.pid,
        "nm_threads": nm_threads,
        "servers": [p.pid for p in servers],
        "server_tasks": [len(os.listdir(f"/proc/{p.pid}/task")) for p in servers],
        "workers": pids,
        "tree": {p.pid: p.create_time() for p in nm.children(recursive=True)},
    }
    report["tree"][nm.pid] = nm.create_time()
    print(json.dumps(report), flush=True)
    sys.stdin.read()   # wait to be killed
    """
)


@pytest.fixture
def driver(tmp_path):
    shm_before = raylite_shm_entries()
    proc = start_driver(tmp_path, DRIVER)
    tree: dict[int, float] = {}
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            _, err = proc.communicate(timeout=30)
            pytest.fail(f"driver failed before reporting its processes:\n{err[-3000:]}")
        report = json.loads(line)
        tree.update({int(pid): t for pid, t in report["tree"].items()})
        yield proc, report, tree, shm_before
        # The driver dies: its node sees stdin close and stops, removing its files.
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        wait_until_gone(tree, zombie_is_gone=True)
        wait_until_no_new_shm(shm_before)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pid, create_time in tree.items():  # after a failed check: what is left
            if not is_gone(pid, create_time, zombie_is_gone=True):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
def test_workers_are_children_of_a_single_threaded_fork_server(driver):
    _, report, _, _ = driver
    assert report["nm_threads"] >= 2, "the node manager never ran a thread: the test proves nothing"
    assert len(report["servers"]) == 1, "the node manager's only child is the fork server"
    [server] = report["servers"]
    assert report["server_tasks"] == [1]
    assert {ppid for _, ppid in report["workers"]} == {server}
    assert len({pid for pid, _ in report["workers"]}) >= 2  # the actor has its own


def test_killing_the_node_manager_leaves_no_process_or_store_behind(driver):
    proc, report, tree, shm_before = driver
    os.kill(report["nm"], signal.SIGKILL)
    # Orphans are reaped by init (the node manager, by the driver): a zombie is gone.
    wait_until_gone(tree, zombie_is_gone=True)
    # The node manager could not remove its store: the fork server did, as it exited.
    wait_until_no_new_shm(shm_before)
    assert proc.poll() is None  # the driver itself lives on


def test_a_dead_fork_server_stops_its_node(driver):
    _, report, tree, shm_before = driver
    [server] = report["servers"]
    os.kill(server, signal.SIGKILL)
    # A node that cannot start workers is broken: it stops (the node manager too is in
    # the tree), and so do its workers; the node manager removes its store.
    wait_until_gone(tree, zombie_is_gone=True)
    wait_until_no_new_shm(shm_before)


def test_workers_forked_once_the_fork_server_is_idle_share_every_decoder(ray_fresh):
    """The fork server makes the wire's decoders while no request waits (not before
    its first fork, which a new session's first task waits for): a worker forked
    after that finds them all made, instead of making its own."""
    from tests._engine import wait_for

    ray = ray_fresh

    @ray.remote
    class Decoders:
        def unprepared(self):
            from raylite import codec

            return len(codec.unprepared())

    def fresh_worker_has_all() -> bool:
        actor = Decoders.remote()  # a new process, forked now
        try:
            return ray.get(actor.unprepared.remote(), timeout=30) == 0
        finally:
            ray.kill(actor)

    wait_for(fresh_worker_has_all, timeout=30, interval=0.2)
