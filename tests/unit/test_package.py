"""`import raylite` is cheap: the public names load on first use (PEP 562), so a
process that only runs a node never loads the driver's API; every name still works."""

from __future__ import annotations

import subprocess
import sys


def run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return proc.stdout.strip()


def test_the_api_loads_on_first_use_and_every_public_name_is_there() -> None:
    out = run(
        "import sys, raylite\n"
        "print('raylite.api' in sys.modules)\n"
        "raylite.remote\n"  # not the driver's API: driver_start.py starts the node first
        "print('raylite.api' in sys.modules)\n"
        "raylite.get\n"
        "print('raylite.api' in sys.modules)\n"
        "missing = [n for n in raylite.__all__ if not hasattr(raylite, n)]\n"
        "print(missing, set(raylite.__all__) <= set(dir(raylite)))\n"
        "from raylite import *  # noqa\n"
        "print(init is raylite.init, ObjectRef is raylite.ObjectRef, actor.ActorClass is ActorClass)\n"
    )
    assert out.splitlines() == ["False", "False", "True", "[] True", "True True True"]


def test_the_node_manager_does_not_load_the_driver_api() -> None:
    out = run(
        "import sys, raylite.node.manager\n"
        "print(sorted(m for m in ('raylite.api', 'raylite.core.core_worker', 'raylite.worker')"
        " if m in sys.modules))\n"
    )
    assert out == "[]"


def test_the_node_manager_loads_optional_features_on_first_use() -> None:
    """Placement groups, runtime envs and the SQLite/Redis head storage load when a
    program first uses them, not with every node (issue 17: start-up time)."""
    out = run(
        "import sys, raylite.node.manager\n"
        "from raylite.head.head import Head\n"
        "from raylite.head.storage import MemoryStorage\n"
        "class Node:\n"
        "    node_id = b'n' * 16\n"
        "    def on_head_event(self, msg): pass\n"
        "head = Head(Node(), MemoryStorage(), 10.0)\n"
        "head.pgs.kick(); head.pgs.client_died('x'); head.pgs.node_died(b'n')\n"
        "lazy = ('raylite.head.pg_service', 'raylite.head.placement_groups',\n"
        "        'raylite.runtime_env.agent', 'sqlite3', 'zipfile')\n"
        "print(sorted(m for m in lazy if m in sys.modules), head.pgs.statistics())\n"
        "head.pgs.table\n"
        "print(type(head.pgs).__name__)\n"
    )
    assert out.splitlines() == ["[] ()", "PlacementGroupService"]


def test_an_unknown_name_is_an_attribute_error() -> None:
    out = run(
        "import raylite\n"
        "try:\n"
        "    raylite.no_such_thing\n"
        "except AttributeError as e:\n"
        "    print(e)\n"
    )
    assert out == "module 'raylite' has no attribute 'no_such_thing'"


def test_raylite_util_loads_its_names_on_first_use() -> None:
    # The CLI imports util.state and the driver util.scheduling_strategies: neither may
    # pull in the driver's API through util's __init__; `raylite.util.x` still works.
    out = run(
        "import sys, raylite.util.state, raylite.util.scheduling_strategies\n"
        "print('raylite.api' in sys.modules)\n"
        "import raylite\n"
        "missing = [n for n in raylite.util.__all__ if not hasattr(raylite.util, n)]\n"
        "print(missing, raylite.util.accelerators.NVIDIA_H100)\n"
    )
    assert out.splitlines() == ["False", "[] H100"]
