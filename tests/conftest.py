"""Shared fixtures: one engine instance per configuration, and a leak check per module.

Starting a cluster is the expensive part of these tests (Ray takes seconds), so a
module declares its configuration once and its tests share the running instance:

    RAY_INIT = {"num_cpus": 4}            # module level

    def test_x(ray_start): ...            # inits with RAY_INIT unless already running so

A test that needs another configuration says so with a marker, and a test that needs a
cluster of its own (the tutorial's timed exercises) asks for `ray_fresh`:

    @pytest.mark.ray_init(num_cpus=9)
    def test_y(ray_fresh): ...

After every module the engine is shut down; for raylite the module must then leave no
child process behind (raylite is expected to reap what it starts).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

# Fail on a user callback or a dial under a core worker's lock (core/deferring_lock.py),
# in the driver and, through the environment, in every node and worker it starts.
os.environ.setdefault("RAYLITE_LOCK_CHECKS", "1")

from tests._engine import AGAINST_RAY, ENGINE_NAME, ray, wait_for

# RAYLITE_TESTS_CLUSTER=N: each configuration runs on an N-node cluster instead of init().
CLUSTER_NODES = int(os.environ.get("RAYLITE_TESTS_CLUSTER", "0") or 0)

# Generous: on a loaded 2-core machine shutdown may take a moment to reap workers.
LEAK_WAIT_S = 10.0

_current_config: dict[str, Any] | None = None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "ray_init(**kwargs): init() arguments for the ray_start/ray_fresh fixtures"
    )
    config.addinivalue_line("markers", "testnet_hosts(n): hosts of the multinode testnet")


def pytest_report_header(config: pytest.Config) -> str:
    return f"engine under test: {ENGINE_NAME} ({ray.__file__})"


def shutdown_engine() -> None:
    global _current_config
    if ray.is_initialized():
        ray.shutdown()
    if CLUSTER_NODES:
        from tests._cluster import stop_cluster

        stop_cluster()
    _current_config = None


def start_engine(config: dict[str, Any], *, fresh: bool = False) -> None:
    """Make sure the engine runs with exactly `config`, restarting it if needed."""
    global _current_config
    if ray.is_initialized() and not fresh and _current_config == config:
        return
    shutdown_engine()
    if CLUSTER_NODES:  # the same resources, split over several nodes (tests/_cluster.py)
        from tests._cluster import start_cluster

        ray.init(address=start_cluster(config, CLUSTER_NODES))
    else:
        ray.init(**config)
    _current_config = dict(config)


def _requested_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("ray_init")
    if marker is not None:
        return dict(marker.kwargs)
    module_config = getattr(request.module, "RAY_INIT", None)
    if module_config is None:
        raise pytest.UsageError(
            f"{request.module.__name__} uses ray_start but defines neither RAY_INIT "
            "nor a ray_init marker"
        )
    return dict(module_config)


@pytest.fixture
def ray_start(request: pytest.FixtureRequest) -> Any:
    """The engine, running with this module's (or this test's marker's) configuration."""
    start_engine(_requested_config(request))
    return ray


@pytest.fixture
def ray_fresh(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A freshly started engine for this test alone; shut down afterwards."""
    start_engine(_requested_config(request), fresh=True)
    yield ray
    shutdown_engine()


@pytest.fixture
def no_engine() -> Iterator[None]:
    """For tests that call init/shutdown themselves: nothing runs before or after."""
    shutdown_engine()
    yield
    shutdown_engine()


def _describe(proc: psutil.Process) -> str:
    try:
        return f"pid={proc.pid} status={proc.status()} cmdline={' '.join(proc.cmdline())[:200]!r}"
    except psutil.Error:
        return f"pid={proc.pid} (gone while describing)"


def _alive(proc: psutil.Process) -> bool:
    """Still there, zombies included: the driver that started a child must reap it."""
    try:
        return proc.is_running()
    except psutil.Error:
        return False


@pytest.fixture(scope="module", autouse=True)
def _module_engine_teardown() -> Iterator[None]:
    """Shut the engine down after each module; for raylite, fail on leftover children."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    shutdown_engine()
    if AGAINST_RAY:
        return
    new = [p for p in me.children(recursive=True) if p.pid not in before]
    if not new:
        return
    try:
        wait_for(lambda: not any(_alive(p) for p in new), LEAK_WAIT_S)
    except AssertionError:
        left = [_describe(p) for p in new if _alive(p)]
        pytest.fail(
            f"raylite left {len(left)} child process(es) {LEAK_WAIT_S} s after shutdown():\n"
            + "\n".join(left),
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _no_lock_breach() -> Iterator[None]:
    """Fail a test during which this driver ran a callback or dialled under its lock."""
    if AGAINST_RAY:
        yield
        return
    from raylite.core import deferring_lock

    seen = len(deferring_lock.breaches)
    yield
    new = deferring_lock.breaches[seen:]
    if new:
        pytest.fail(f"under the core worker lock: {new}", pytrace=False)
