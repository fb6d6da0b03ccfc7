"""The head's actor table in-process: reports in, states and replies out.

A Head is built on MemoryStorage with a stand-in for its own node (NodePort);
the test plays the owners and nodes that report (ActorStateChanged, a process
death as the PROCESS_DIED event), and askers (GetActorInfo). Each test asserts
the state the table holds, what survives in storage, and the replies askers get.
No process, socket or event loop.
"""

from __future__ import annotations

from typing import Any

import pytest

from raylite import protocol as P
from raylite.core.lifecycle import ALIVE, DEAD, PENDING, RESTARTING
from raylite.head.head import Head
from raylite.head.storage import MemoryStorage

ACTOR = b"a" * 16


class Node:
    """The head's own node, as far as its actor table reaches it."""

    node_id = b"n" * 16
    tcp_address = "tcp:127.0.0.1:1"
    ip = "127.0.0.1"
    total: dict[str, int] = {}
    available: dict[str, int] = {}
    pending: list[Any] = []
    head_only = False

    def node_info(self) -> dict[str, Any]:
        return {}

    def on_head_event(self, msg: Any) -> None:
        pass

    def kill_actor_worker(self, actor_id: bytes) -> None:
        pass


class Asker:
    """A connection waiting for an answer."""

    closed = False
    peer = None  # a driver of the head's own node, not another node

    def __init__(self) -> None:
        self.replies: list[tuple[int, Any]] = []

    def reply(self, rid: int, msg: Any) -> None:
        self.replies.append((rid, msg))

    def send(self, msg: Any) -> None:
        self.replies.append((0, msg))


@pytest.fixture
def head() -> Head:
    return Head(Node(), MemoryStorage(), node_timeout_s=10.0)  # type: ignore[arg-type]


def report(head: Head, state: str, pid: int = 0, restarts_left: int = 0, cause: str = "") -> None:
    address = f"unix:/worker-{pid}.sock" if pid else ""
    msg = P.ActorStateChanged(ACTOR, state, "Counter", address, pid, cause, restarts_left)
    head.on_actor_state(Asker(), msg, 0)  # type: ignore[arg-type]


def test_an_owner_reports_alive_and_askers_get_the_address(head: Head) -> None:
    asker = Asker()
    head.on_get_actor(asker, P.GetActorInfo(ACTOR), 5)  # type: ignore[arg-type]
    assert asker.replies == []  # PENDING: the asker waits
    report(head, "ALIVE", pid=101, restarts_left=1)
    ((rid, info),) = asker.replies
    assert rid == 5
    assert (info.state, info.address) == ("ALIVE", "unix:/worker-101.sock")
    assert head.actors[ACTOR].state is ALIVE


def test_a_process_death_with_restarts_left_is_restarting_then_alive(head: Head) -> None:
    report(head, "ALIVE", pid=101, restarts_left=1)
    report(head, P.PROCESS_DIED, pid=101, cause="its worker crashed")
    actor = head.actors[ACTOR]
    assert actor.state is RESTARTING
    assert actor.restarts == 1
    asker = Asker()
    head.on_get_actor(asker, P.GetActorInfo(ACTOR), 1)  # type: ignore[arg-type]
    assert asker.replies == []  # waits for the next life's address
    report(head, "ALIVE", pid=202, restarts_left=0)
    assert asker.replies[0][1].address == "unix:/worker-202.sock"


def test_a_late_death_of_an_earlier_life_is_ignored(head: Head) -> None:
    report(head, "ALIVE", pid=101, restarts_left=1)
    report(head, P.PROCESS_DIED, pid=101)
    report(head, "ALIVE", pid=202, restarts_left=0)
    # The node of the first life reports its death again, late: the actor lives on.
    report(head, P.PROCESS_DIED, pid=101, cause="late news")
    assert head.actors[ACTOR].state is ALIVE
    assert head.actors[ACTOR].pid == 202


def test_the_node_reporting_a_death_after_the_owner_restarts_it_is_not_a_second_death(
    head: Head,
) -> None:
    """The owner saw its actor's process die first (its connection) and restarts it,
    spending its one restart; its node's word about that same process comes after:
    the actor is restarting, not dead (it was: the memory monitor's kills showed it)."""
    report(head, "ALIVE", pid=101, restarts_left=1)
    report(head, "RESTARTING", restarts_left=0)
    report(head, P.PROCESS_DIED, pid=101, cause="killed for memory")
    assert head.actors[ACTOR].state is RESTARTING
    report(head, "ALIVE", pid=202, restarts_left=0)
    assert head.actors[ACTOR].state is ALIVE


def test_a_process_death_without_restarts_is_dead_and_frees_the_name(head: Head) -> None:
    conn = Asker()
    head.on_register_name(conn, P.RegisterActorName("c", "ns", ACTOR, "Counter", {}), 1)  # type: ignore[arg-type]
    report(head, "ALIVE", pid=101, restarts_left=0)
    report(head, P.PROCESS_DIED, pid=101, cause="its worker crashed")
    assert head.actors[ACTOR].state is DEAD
    assert head.actors[ACTOR].cause == "its worker crashed"
    assert ("ns", "c") not in head.names
    asker = Asker()
    head.on_get_named(asker, P.GetNamedActor("c", "ns"), 2)  # type: ignore[arg-type]
    assert asker.replies[0][1].found is False


def test_nothing_moves_a_dead_actor(head: Head) -> None:
    report(head, "ALIVE", pid=101)
    report(head, "DEAD", cause="killed")
    report(head, "ALIVE", pid=303)  # a late report from the owner
    report(head, P.PROCESS_DIED, pid=303)
    actor = head.actors[ACTOR]
    assert (actor.state, actor.cause) == (DEAD, "killed")


def test_a_move_the_table_lacks_is_refused_and_not_stored(head: Head) -> None:
    report(head, "ALIVE", pid=101)
    actor = head.actors[ACTOR]
    assert head.set_actor(actor, PENDING, "an old report") is False
    assert actor.state is ALIVE
    # What storage holds is what a restarted head loads: the refused move is not there.
    again = Head(Node(), head.storage, node_timeout_s=10.0)  # type: ignore[arg-type]
    assert again.actors[ACTOR].state is ALIVE


def test_a_restarted_head_loads_the_table_with_its_states(head: Head) -> None:
    report(head, "ALIVE", pid=101, restarts_left=2)
    report(head, P.PROCESS_DIED, pid=101)
    again = Head(Node(), head.storage, node_timeout_s=10.0)  # type: ignore[arg-type]
    actor = again.actors[ACTOR]
    assert actor.state is RESTARTING
    assert actor.restarts == 1


class StartingNode(Node):
    """The head's own node, which runs work: it is where a detached actor starts."""

    def __init__(self) -> None:
        self.started: list[P.StartActor] = []
        self.killed: list[bytes] = []

    def place_shape(self, shape: dict[str, int], actor_id: bytes) -> Any:
        from raylite.scheduling import HERE, Placement

        return Placement(None, HERE)

    def start_detached_actor(self, msg: P.StartActor) -> None:
        self.started.append(msg)

    def kill_actor_worker(self, actor_id: bytes) -> None:
        self.killed.append(actor_id)


def _create(head: Head, restarts: int) -> None:
    push = P.PushTask(
        b"t" * 16, "Counter.__init__", b"f" * 16, b"code", b"args", [], [b"r" * 16],
        "unix:/creator", ACTOR, True, [], b"j" * 4, None, {"detached": True}, "ns",
    )  # fmt: skip
    msg = P.CreateDetached(ACTOR, "unix:/creator", "Counter", push, {"CPU": 10000}, restarts)
    asker = Asker()
    head.on_create_detached(asker, msg, 3)  # type: ignore[arg-type]
    assert asker.replies == [(3, P.Ok())]  # the creator may go now


def test_the_head_creates_a_detached_actor_and_owns_its_restarts() -> None:
    node = StartingNode()
    head = Head(node, MemoryStorage(), node_timeout_s=10.0)  # type: ignore[arg-type]
    _create(head, restarts=1)
    (first,) = node.started
    assert head.actors[ACTOR].state is PENDING
    assert not (first.push.actor_options or {}).get("reconstructed")  # a first life
    report(head, "ALIVE", pid=101, restarts_left=1)
    died = P.ActorStateChanged(ACTOR, P.PROCESS_DIED, "", "", 101, "", 0)
    head.on_actor_state(Asker(), died, 0)  # type: ignore[arg-type]
    assert head.actors[ACTOR].state is RESTARTING  # by the head: no owner does it
    second = node.started[1]
    assert second.push.actor_options["reconstructed"] is True
    assert second.restarts_left == 0


def test_a_detached_actor_killed_while_it_starts_has_that_life_ended() -> None:
    node = StartingNode()
    head = Head(node, MemoryStorage(), node_timeout_s=10.0)  # type: ignore[arg-type]
    _create(head, restarts=0)
    kill = P.KillActor(ACTOR, "killed", True)
    head.on_kill_actor(Asker(), kill, 4)  # type: ignore[arg-type]
    assert head.actors[ACTOR].state is DEAD
    node.killed.clear()
    report(head, "ALIVE", pid=102)  # its node had started it meanwhile
    assert head.actors[ACTOR].state is DEAD
    assert node.killed == [ACTOR]  # the worker it started is killed, not left running
