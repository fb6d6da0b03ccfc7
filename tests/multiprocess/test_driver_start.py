"""`raylite.init` starts a new local session's node manager before the driver's modules
load (driver_start.py), adopts it once they have, and leaves nothing behind when the
call fails after the node was started.

raylite only: Ray has no such start-up path (its init starts its processes itself, after
its modules have loaded). Each case runs in a fresh interpreter: the path is taken only
by a first init() before anything has loaded the API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import psutil
import pytest

from tests._engine import raylite_only

pytestmark = [raylite_only, pytest.mark.timeout(90)]


def run(code: str) -> dict:
    """Run `code` in a fresh interpreter; the JSON it prints last."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "RAYLITE_ADDRESS"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


WATCH = """
    import json, os, sys
    import raylite as ray
    from raylite import driver_start

    seen = {}
    first = driver_start._node_first

    def node_first(address, kwargs):
        node = first(address, kwargs)
        seen["api_loaded"] = "raylite.api" in sys.modules
        if node is not None:
            seen.update(pid=node.proc.pid, session=node.session_dir, store=node.store_dir)
        return node

    driver_start._node_first = node_first
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_first_plain_init_starts_the_node_before_the_api_loads_and_adopts_it():
    out = run(
        WATCH
        + """
    ray.init(num_cpus=2, namespace="n")
    from raylite import api
    seen["adopted"] = api._runtime.proc.pid == seen.get("pid")
    seen["value"] = ray.get(ray.remote(lambda: 41 + 1).remote())
    seen["cpus"] = ray.cluster_resources()["CPU"]
    ray.shutdown()
    print(json.dumps(seen))
    """
    )
    assert out["api_loaded"] is False  # the node was started before api.py loaded
    assert out["adopted"]
    assert out["value"] == 42
    assert out["cpus"] == 2.0
    assert gone(out["pid"])
    assert not os.path.exists(out["session"])


def test_remote_functions_and_actors_declared_before_init_leave_it_the_early_start():
    """Most Ray programs decorate before they call init(): @remote loads none of the
    driver's modules (remote_function.py, actors.py), so the node still starts first."""
    out = run(
        WATCH
        + """
    @ray.remote
    def f(x):
        return x + 1

    @ray.remote(num_cpus=0)
    class Counter:
        def __init__(self):
            self.n = 0

        def add(self, k):
            self.n += k
            return self.n

        def count(self, k):
            yield from range(k)

    seen["loaded_before_init"] = sorted(
        m for m in ("raylite.api", "raylite.protocol", "raylite.serialization",
                    "raylite.local_mode", "cloudpickle", "msgspec")
        if m in sys.modules
    )
    ray.init(num_cpus=2)
    from raylite import api

    seen["adopted"] = api._runtime.proc.pid == seen.get("pid")
    c = Counter.remote()
    seen["values"] = [ray.get(f.remote(1)), ray.get(c.add.remote(5)),
                      [ray.get(r) for r in c.count.remote(3)]]
    ray.shutdown()
    print(json.dumps(seen))
    """
    )
    assert out["loaded_before_init"] == []
    assert out["api_loaded"] is False
    assert out["adopted"]
    assert out["values"] == [2, 5, [0, 1, 2]]
    assert gone(out["pid"])


def test_init_after_the_api_loaded_or_with_other_options_starts_its_node_as_before():
    out = run(
        WATCH
        + """
    out = {}
    ray.init(num_cpus=1, _system_config={"max_workers": 4})  # not a plain start
    out["other"] = "pid" in seen
    ray.shutdown()
    ray.init(num_cpus=1)  # api.py is loaded now: nothing to overlap
    out["after"] = "pid" in seen
    out["value"] = ray.get(ray.remote(lambda: 7).remote())
    ray.shutdown()
    print(json.dumps(out))
    """
    )
    assert out == {"other": False, "after": False, "value": 7}


@pytest.mark.parametrize(
    ("call", "error", "started"),
    [
        ("ray.init(num_cpus=-1)", "ValueError: num_cpus must be a non-negative int", False),
        ("ray.init(num_cpus=1, logging_level='NO SUCH LEVEL')", "ValueError", True),
    ],
)
def test_a_failed_init_leaves_no_node_behind(call, error, started):
    """Refused before the node starts (Ray's argument errors), or after (here: a
    logging level api.py refuses): no process, session or store directory stays."""
    out = run(
        WATCH
        + f"""
    try:
        {call}
        seen["raised"] = None
    except Exception as exc:
        seen["raised"] = f"{{type(exc).__name__}}: {{exc}}"
    print(json.dumps(seen))
    """
    )
    assert out["raised"] is not None
    assert out["raised"].startswith(error)
    assert ("pid" in out) is started
    if started:  # stopped, its directories gone
        assert gone(out["pid"])
        assert not os.path.exists(out["session"])
        assert not os.path.exists(out["store"])


def test_a_node_started_for_other_arguments_is_stopped_and_another_started():
    out = run(
        """
    import json, sys
    import raylite as ray
    from raylite import driver_start, node_start

    early = []

    def node_first(address, kwargs):  # a node started for other arguments than these
        early.append(node_start.StartingNode(node_start.LocalNodeArgs(num_cpus=1)))
        return early[0]

    driver_start._node_first = node_first
    ray.init(num_cpus=2, num_gpus=0)
    from raylite import api

    out = {"early": early[0].proc.pid, "used": api._runtime.proc.pid,
           "session": early[0].session_dir, "cpus": ray.cluster_resources()["CPU"]}
    ray.shutdown()
    print(json.dumps(out))
    """
    )
    assert out["used"] != out["early"]
    assert out["cpus"] == 2.0
    assert gone(out["early"])
    assert not os.path.exists(out["session"])
