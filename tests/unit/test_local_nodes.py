"""node/local.py: which nodes `raylite status`, `list` and init(address="auto") find
"here". A node on 127.0.0.1 in another network namespace (a container, a testnet host)
shares /tmp but is another machine's: it is not local (the chaos soak's `raylite list
actors` in a testnet host listed other tests' clusters on this machine)."""

from __future__ import annotations

import os
import tempfile

import pytest

from raylite.node import local


@pytest.fixture
def nodes_here(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _node(pid: int, ip: str, started: float, **extra: str) -> dict:
    return {"pid": pid, "ip": ip, "started": started, "tcp_address": f"tcp:{ip}:1", **extra}


def test_a_node_of_another_network_namespace_is_not_local(nodes_here) -> None:
    alive = os.getpid()  # any live process will do: local_nodes checks the pid runs
    local.write_node(_node(alive, "127.0.0.1", 1.0))  # this namespace's, written here
    other = _node(os.getppid(), "127.0.0.1", 2.0, netns="4:4026531999")  # newer, elsewhere
    local.write_node(other)
    found = local.local_nodes()
    assert [n["pid"] for n in found] == [alive]
    assert found[0]["netns"] == local.netns_id()
    assert local.find_local_node("auto")["pid"] == alive


def test_a_node_file_without_a_namespace_is_still_found(nodes_here) -> None:
    # Files written before nodes recorded their namespace (or where there is none).
    local.write_node(_node(os.getpid(), "127.0.0.1", 1.0, netns=""))
    assert [n["pid"] for n in local.local_nodes()] == [os.getpid()]


def test_tools_look_at_this_hosts_node_before_any_newer_session(nodes_here) -> None:
    from raylite.util import state

    ours, newer = nodes_here / "raylite" / "n1-ours", nodes_here / "raylite" / "n2-other"
    for d in (ours, newer):
        d.mkdir(parents=True)
        (d / "node.sock").touch()
    os.utime(ours, (1, 1))  # the other session is the newest on the machine
    local.write_node(_node(os.getpid(), "127.0.0.1", 1.0, session_dir=str(ours)))
    assert state.sessions()[0] == str(newer)
    assert state._default_sessions() == [str(ours), str(newer)]
