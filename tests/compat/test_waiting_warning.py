"""A task that cannot get a CPU because actors hold every CPU (a tree of actors waiting
on work it has no CPU for): Ray hangs in silence; raylite warns after pending_warn_s,
naming what holds the CPUs (issue 13). raylite only: Ray prints nothing here."""

from __future__ import annotations

import pytest

from tests._engine import ray, raylite_only, strip_ansi, wait_for

pytestmark = [raylite_only, pytest.mark.timeout(120)]


@ray.remote
def needs_a_cpu():
    return 1


@ray.remote(num_cpus=1)
class Holder:
    def ready(self):
        return True


def test_a_task_starved_by_waiting_actors_gets_a_warning(no_engine, monkeypatch, capfd):
    monkeypatch.setenv("RAYLITE_PENDING_WARN_S", "0.5")
    ray.init(num_cpus=1)
    try:
        holder = Holder.remote()
        assert ray.get(holder.ready.remote(), timeout=60)
        ref = needs_a_cpu.remote()  # the actor holds the only CPU: it waits
        seen = [""]

        def warned():
            out, err = capfd.readouterr()
            seen[0] += strip_ansi(out + err)
            return "Warning: a task or actor has waited" in seen[0]

        wait_for(warned, timeout=30, message=lambda: f"a warning; got {seen[0]!r}")
        assert "1 actor(s)" in seen[0]
        assert "{'CPU': 1.0}" in seen[0]
        ray.kill(holder)  # the CPU comes back: the task runs
        assert ray.get(ref, timeout=60) == 1
    finally:
        ray.shutdown()
