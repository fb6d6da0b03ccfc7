"""A task that cannot get a CPU because actors hold every CPU (a tree of actors waiting
on work it has no CPU for): Ray hangs in silence; raylite warns after pending_warn_s,
naming what holds the CPUs (issue 13). raylite only: Ray prints nothing here."""

from __future__ import annotations

import pytest

from tests._engine import StdStreams, ray, raylite_only, wait_for

pytestmark = [raylite_only, pytest.mark.timeout(120)]


@ray.remote
def needs_a_cpu():
    return 1


@ray.remote(num_cpus=1)
class Holder:
    def ready(self):
        return True


def test_a_task_starved_by_waiting_actors_gets_a_warning(no_engine, monkeypatch):
    monkeypatch.setenv("RAYLITE_PENDING_WARN_S", "0.5")
    streams = StdStreams(monkeypatch)  # no line lost to a capture's truncation
    ray.init(num_cpus=1)
    try:
        holder = Holder.remote()
        assert ray.get(holder.ready.remote(), timeout=60)
        ref = needs_a_cpu.remote()  # the actor holds the only CPU: it waits

        def warned():
            return "Warning: a task or actor has waited" in streams.err

        wait_for(warned, timeout=30, message=lambda: f"a warning; got {streams.err!r}")
        assert "1 actor(s)" in streams.err
        assert "{'CPU': 1.0}" in streams.err
        ray.kill(holder)  # the CPU comes back: the task runs
        assert ray.get(ref, timeout=60) == 1
    finally:
        ray.shutdown()
