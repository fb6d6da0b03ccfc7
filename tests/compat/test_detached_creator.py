"""A detached actor does not depend on the driver that created it: killed right after
`.remote()`, before the constructor ran, the actor still comes up, as on Ray.

Each test starts a cluster with the engine's own command line (`raylite start --head` /
`ray start --head`, `--block`, stopped by SIGTERM) and runs the creator as a separate
driver process, which ends with os._exit (no shutdown, no goodbye).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests._engine import AGAINST_RAY, ENGINE_NAME, exceptions, ray, raylite_only, wait_for

pytestmark = pytest.mark.timeout(240)

CREATOR = """
import os, sys, time
import {engine} as ray

ray.init(address=sys.argv[1], namespace="keep")


@ray.remote(num_cpus=0.5)
class Keeper:
    def __init__(self, gate, fail):
        deadline = time.monotonic() + 60
        while not os.path.exists(gate):  # not before the test says: its creator is gone
            assert time.monotonic() < deadline, "no gate"
            time.sleep(0.01)
        if fail:
            raise ValueError("no keeper today")

    def pid(self):
        return os.getpid()


Keeper.options(name=sys.argv[2], lifetime="detached").remote(sys.argv[3], sys.argv[4] == "1")
time.sleep(float(sys.argv[5]))
os._exit(0)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(no_engine, tmp_path):
    port = _free_port()
    env = dict(os.environ)
    if AGAINST_RAY:
        cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block"]
        cmd += ["--include-dashboard", "false", "--disable-usage-stats"]
        env["RAY_AUTH_MODE"] = "disabled"  # a token file in ~/.ray would turn it on
    else:
        cmd = [sys.executable, "-m", "raylite.cli", "start", "--head", "--block"]
        cmd += ["--include-dashboard", "false"]
    cmd += ["--port", str(port), "--num-cpus", "2"]
    head = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    address = f"127.0.0.1:{port}"
    try:
        yield address, env, tmp_path
    finally:
        if ray.is_initialized():
            ray.shutdown()
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(10)


def _create(cluster, name: str, *, fail: bool = False, linger: float) -> Path:
    """Run a creator driver that makes the detached actor `name` and exits `linger` s
    later; returns the gate file that lets the constructor finish."""
    address, env, tmp = cluster
    gate = tmp / f"gate-{name}"
    prog = textwrap.dedent(CREATOR).format(engine=ENGINE_NAME)
    argv = [sys.executable, "-c", prog, address, name, str(gate), "1" if fail else "0"]
    done = subprocess.run(
        [*argv, str(linger)], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return gate


def _get_actor(name: str, timeout: float = 60):
    def found():
        try:
            return ray.get_actor(name, namespace="keep")
        except ValueError:
            return None

    return wait_for(found, timeout, f"the actor {name!r}", interval=0.1)


def _connect(cluster) -> None:
    # A driver may come before the head listens: the engines retry differently, so wait.
    error = None
    for _ in range(150):
        try:
            ray.init(address=cluster[0], namespace="keep")
            return
        except ConnectionError as exc:
            error = exc
            time.sleep(0.2)
    raise AssertionError(f"no cluster at {cluster[0]}: {error}")


def test_a_detached_actor_lives_on_when_its_creator_is_killed(cluster):
    _connect(cluster)
    gate = _create(cluster, "keeper", linger=0.5)  # its creator is gone now
    keeper = _get_actor("keeper")
    gate.touch()  # only now may its constructor finish
    pid = ray.get(keeper.pid.remote(), timeout=60)
    assert pid != os.getpid()
    ray.kill(keeper)
    with pytest.raises(exceptions.RayActorError):
        ray.get(keeper.pid.remote(), timeout=60)
    wait_for(lambda: _gone("keeper"), 30, "the name released")


@raylite_only  # Ray 2.60 registers it with the GCS after .remote() returns: a creator
# killed within milliseconds loses it there (seen); raylite's head has it before.
def test_a_detached_actor_lives_on_when_its_creator_dies_at_once(cluster):
    _connect(cluster)
    gate = _create(cluster, "at_once", linger=0)
    keeper = _get_actor("at_once", timeout=5)
    gate.touch()
    assert ray.get(keeper.pid.remote(), timeout=60) > 0
    ray.kill(keeper)


def test_a_detached_actor_whose_constructor_raised_is_dead_for_its_callers(cluster):
    _connect(cluster)
    gate = _create(cluster, "failing", fail=True, linger=0.5)
    # The handle first: Ray 2.60 cannot make one by name for an actor that died in its
    # constructor after its job ended (an AssertionError loading its class).
    keeper = _get_actor("failing")
    gate.touch()
    with pytest.raises(exceptions.ActorDiedError) as info:
        ray.get(keeper.pid.remote(), timeout=60)
    assert "no keeper today" in str(info.value)


def _gone(name: str) -> bool:
    try:
        ray.get_actor(name, namespace="keep")
    except ValueError:
        return True
    return False
