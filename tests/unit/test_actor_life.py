"""An actor's lives in-process, dask-style: feed ActorLives events, assert the actions.

No core worker, no connection, no lock: an actor is an ActorClient built here, its
constructor and calls TaskSpecs, a lease one built from a LeaseGranted. Every way a
life ends (the node's word, a call's broken connection, a failed dial, the
constructor raising, kill, the head's word) goes through life_ended; what the shell
does with the actions is test_core_lifecycles'.
"""

from __future__ import annotations

import itertools

from raylite import protocol as P
from raylite.core import lifecycle as L
from raylite.core.actor_life import (
    ActorClient,
    ActorLives,
    FailCalls,
    Flush,
    KillLease,
    ReportState,
    Resolve,
    RestartActor,
    process_died,
)
from raylite.core.lease_queue import Lease, SchedulingClass
from raylite.core.tasks import TaskSpec

ADDRESS = "unix:/w1.sock"
_ids = itertools.count(1)


def task(max_retries: int = 0, state: L.TaskState = L.PUSHED) -> TaskSpec:
    n = next(_ids).to_bytes(4, "big")
    spec = TaskSpec(n, "Counter.f", b"f", None, b"", [n + b"r"], {}, (), max_retries, False)
    spec.actor_id = b"actor"
    spec.state = state
    return spec


def lease(address: str = ADDRESS) -> Lease:
    n = next(_ids)
    grant = P.LeaseGranted(b"L%d" % n, b"w%d" % n, address, n, [], b"node")
    return Lease(grant, SchedulingClass((("CPU", 10000),)))


def alive(lives: ActorLives, restarts: int) -> ActorClient:
    """An actor this process created, its constructor answered on a granted lease."""
    client = ActorClient(b"actor", "Counter")
    client.creator = True
    client.restarts_left = restarts
    lives.actors[client.actor_id] = client
    creation = task()
    creation.actor_creation = True
    client.creation_spec = creation
    grant = lease()
    lives.leases[grant.lease_id] = grant
    client.lease, client.address = grant, grant.address
    assert lives.created(client, creation, 7, None) == [
        ReportState(client, L.ALIVE, ADDRESS, 7, "", restarts),
        Flush(client),
    ]
    assert client.state is L.ALIVE
    assert creation.state is L.FINISHED
    return client


def started(book: ActorLives, client: ActorClient, pid: int = 8) -> list:
    """The shell ran RestartActor: the constructor was pushed to a new worker at
    ADDRESS, and it answered."""
    creation = client.creation_spec
    assert creation is not None
    creation.incarnation = client.incarnation
    creation.state = L.PUSHED
    client.address = ADDRESS
    return book.created(client, creation, pid, None)


def sent(client: ActorClient, max_retries: int = 0) -> TaskSpec:
    """A call sent to the actor's current life, not answered."""
    spec = task(max_retries)
    spec.incarnation = client.incarnation
    client.inflight.append(spec)
    return spec


def lives() -> ActorLives:
    return ActorLives({}, {})


def test_a_life_ends_with_restarts_left_so_the_constructor_runs_again() -> None:
    book = lives()
    client = alive(book, restarts=1)
    old = client.lease
    assert old is not None
    actions = book.life_ended(client, 0, "it crashed")
    assert actions == [
        KillLease(old),
        ReportState(client, L.RESTARTING, "", 0, "restarting", 0),
        RestartActor(client, client.creation_spec),  # type: ignore[arg-type]
    ]
    assert client.state is L.RESTARTING
    assert client.incarnation == 1
    assert client.restarts_left == 0
    assert client.address is None
    assert client.lease is None
    assert old.lease_id not in book.leases  # the old life's lease is not ours any more
    assert client.creation_spec is not None
    assert client.creation_spec.state is L.QUEUED


def test_the_budget_spent_the_actor_dies_and_its_waiting_calls_fail() -> None:
    book = lives()
    client = alive(book, restarts=0)
    waiting, queued = task(state=L.QUEUED), task(state=L.QUEUED)
    client.retry_buffer.append(waiting)
    client.queue.append(queued)
    actions = book.life_ended(client, 0, "it crashed")
    assert actions == [
        ReportState(client, L.DEAD, ADDRESS, 0, "it crashed", 0),
        FailCalls(client, [waiting, queued], "it crashed", client.creation_spec),
    ]
    assert client.state is L.DEAD
    assert client.dead_cause == "it crashed"
    assert not client.queue
    assert not client.retry_buffer


def test_unlimited_restarts_are_never_spent() -> None:
    book = lives()
    client = alive(book, restarts=-1)
    for life in range(3):
        assert type(book.life_ended(client, life, "it crashed")[-1]) is RestartActor
        started(book, client)
    assert client.restarts_left == -1
    assert client.incarnation == 3


def test_a_word_about_an_older_life_or_a_dead_actor_is_ignored() -> None:
    book = lives()
    client = alive(book, restarts=1)
    book.life_ended(client, 0, "the node said so")
    assert book.life_ended(client, 0, "a call's connection broke") == []  # same life
    assert client.state is L.RESTARTING
    assert client.incarnation == 1
    creation = client.creation_spec
    assert creation is not None
    stale = task()
    assert book.created(client, stale, 7, None) == []  # the old life's constructor
    started(book, client)
    book.life_ended(client, 1, "it crashed")
    assert client.state is L.DEAD
    assert book.life_ended(client, None, "killed", final=True) == []


def test_every_source_of_death_is_the_one_event() -> None:
    # The node says the process died (ClientDied, NodeDied): each actor there.
    book = lives()
    client = alive(book, restarts=0)
    other = ActorClient(b"other", "Other")
    other.creator, other.address = True, "unix:/elsewhere.sock"
    book.actors[other.actor_id] = other
    cause = process_died(client)
    assert book.process_died(ADDRESS) == [
        ReportState(client, L.DEAD, ADDRESS, 0, cause, 0),
        FailCalls(client, [], cause, client.creation_spec),
    ]
    assert other.state is L.PENDING
    # A call's connection broke: the same life ends.
    book = lives()
    client = alive(book, restarts=0)
    call = sent(client)
    assert book.call_lost(client, call, closed=False) == [
        ReportState(client, L.DEAD, ADDRESS, 0, cause, 0),
        FailCalls(client, [], cause, client.creation_spec),
        FailCalls(client, [call], cause),  # with the actor's cause of death
    ]
    # The constructor raised: dead, whatever restarts are left.
    book = lives()
    client = ActorClient(b"actor", "Counter")
    client.creator, client.restarts_left = True, 5
    creation = task()
    client.creation_spec = creation
    actions = book.created(client, creation, 7, "ValueError('no')")
    why = "The actor Counter died in its constructor: ValueError('no')"
    assert actions == [
        ReportState(client, L.DEAD, "", 0, why, 0),
        FailCalls(client, [], why, creation),
    ]
    assert creation.state is L.FAILED
    assert client.restarts_left == 5


def test_kill_without_restart_is_final_and_the_head_hears_it_from_kill() -> None:
    book = lives()
    client = alive(book, restarts=3)
    queued = task(state=L.QUEUED)
    client.queue.append(queued)
    actions = book.life_ended(client, None, "killed", final=True, report=False)
    assert actions == [FailCalls(client, [queued], "killed", client.creation_spec)]
    assert client.state is L.DEAD
    assert client.restarts_left == 3


def test_kill_with_restart_is_a_process_death_that_restarts() -> None:
    book = lives()
    client = alive(book, restarts=3)
    actions = book.process_died(ADDRESS)  # raylite.kill(no_restart=False) killed it
    assert type(actions[-1]) is RestartActor
    assert client.state is L.RESTARTING
    assert client.restarts_left == 2


def test_a_call_in_flight_is_sent_again_to_the_next_life_when_it_has_retries() -> None:
    book = lives()
    client = alive(book, restarts=1)
    retried, lost = sent(client, max_retries=1), sent(client, max_retries=0)
    actions = book.call_lost(client, retried, closed=False)
    assert type(actions[-1]) is RestartActor  # the first word about the life restarts it
    assert retried.state is L.QUEUED
    assert retried.max_retries == 0
    assert client.retry_buffer == [retried]
    # The second call of that life: a word about an older life now, the restart is
    # under way; it has no retry (a Flush waits for the new life's connection).
    cause = "The actor Counter's process died while running this call."
    assert book.call_lost(client, lost, closed=False) == [
        FailCalls(client, [lost], cause),
        Flush(client),
    ]
    assert lost.state is L.PUSHED  # the shell's FailCalls ends it
    later = task(state=L.QUEUED)
    client.queue.append(later)
    assert started(book, client) == [
        ReportState(client, L.ALIVE, ADDRESS, 8, "", 0),
        Flush(client),
    ]
    assert list(client.queue) == [retried, later]  # the retried call goes first


def test_a_call_of_an_older_life_is_resent_at_once_to_the_running_one() -> None:
    book = lives()
    client = alive(book, restarts=1)
    call = sent(client, max_retries=1)
    book.process_died(ADDRESS)
    started(book, client)
    assert book.call_lost(client, call, closed=False) == [Flush(client)]
    assert list(client.queue) == [call]
    assert client.state is L.ALIVE
    assert client.restarts_left == 0


def test_no_retry_while_shutting_down_nor_for_a_call_never_made() -> None:
    book = lives()
    client = alive(book, restarts=1)
    call = sent(client, max_retries=3)
    cause = "The actor Counter's process died while running this call."
    actions = book.call_lost(client, call, closed=True)
    assert actions[-1] == FailCalls(client, [call], cause)
    assert call.max_retries == 3
    assert book.call_lost(client, call, closed=False) == []  # no longer in flight


def test_a_borrower_looks_again_then_hears_the_actor_is_dead() -> None:
    book = lives()
    client = ActorClient(b"actor", "Counter", ADDRESS)
    waiting = task(state=L.QUEUED)
    client.queue.append(waiting)
    call = sent(client, max_retries=1)
    assert book.call_lost(client, call, closed=False) == [Resolve(client)]
    assert client.state is L.RESTARTING
    assert client.failed_address == ADDRESS
    assert client.address is None
    assert client.retry_buffer == [call]
    assert book.located(client, "unix:/w2.sock") == [Flush(client)]
    assert client.state is L.ALIVE
    assert list(client.queue) == [call, waiting]
    # The head says it is dead: final, and the head need not be told.
    assert book.life_ended(client, None, "gone", final=True, report=False) == [
        FailCalls(client, [call, waiting], "gone", None)
    ]
    assert client.state is L.DEAD


def test_a_constructor_still_waiting_for_its_arguments_fails_with_the_actor() -> None:
    creation = task(state=L.WAITING_ARGS)
    book = ActorLives({}, {creation.return_ids[0]: creation})

    class Ref:
        id = creation.return_ids[0]

    client = ActorClient(b"actor", "Counter")
    client.creator = True
    client.creation_ref = Ref()  # type: ignore[assignment]
    actions = book.life_ended(client, None, "killed", final=True, report=False)
    assert actions == [FailCalls(client, [], "killed", creation)]


def test_a_granted_worker_becomes_the_actors_home_unless_it_was_killed_meanwhile() -> None:
    lives = ActorLives({}, {})
    client = ActorClient(b"actor", "Counter")
    client.creator = True
    lives.actors[client.actor_id] = client
    creation = task(state=L.QUEUED)
    creation.actor_creation = True
    grant = lease()
    assert lives.granted(client, creation, grant) == []
    assert (client.lease, client.address) == (grant, ADDRESS)
    assert lives.leases[grant.lease_id] is grant
    assert creation.state is L.PUSHED
    # killed while the next life's worker started: that worker goes, the actor stays dead
    lives.life_ended(client, None, "killed", final=True)
    assert client.state is L.DEAD
    late = lease("unix:/w2.sock")
    assert lives.granted(client, task(state=L.QUEUED), late) == [KillLease(late)]
    assert client.address != late.address
    assert late.lease_id not in lives.leases


def test_a_dead_node_ends_the_lives_of_the_actors_created_on_it() -> None:
    book = lives()
    here = alive(book, restarts=0)  # its lease is from node b"node", its process at ADDRESS
    remote = ActorClient(b"remote", "Remote")  # another node's process, by its IP prefix
    remote.creator, remote.address = True, "tcp:10.0.0.9:4000"
    starting = ActorClient(b"starting", "Starting")  # no address yet: known by its lease
    starting.creator, starting.lease = True, lease("tcp:10.0.0.9:4001")
    elsewhere = ActorClient(b"elsewhere", "Elsewhere")
    elsewhere.creator, elsewhere.address = True, "tcp:10.0.0.7:4000"
    borrowed = ActorClient(b"borrowed", "Borrowed", "tcp:10.0.0.9:4002")  # not ours
    for client in (remote, starting, elsewhere, borrowed):
        book.actors[client.actor_id] = client
    actions = book.node_died(b"node", "tcp:10.0.0.9:7000", "tcp:10.0.0.9:")
    ended = {a.client.actor_id for a in actions if isinstance(a, ReportState)}
    assert ended == {here.actor_id, remote.actor_id, starting.actor_id}
    assert here.state is L.DEAD  # no restarts left
    assert elsewhere.state is L.PENDING
    assert borrowed.state is L.PENDING
