"""The lifecycles of a task and of an actor as their owner sees them.

Owns the two state tables (TaskState, ActorState and the moves each allows) and
`spend_retry()`, the one place a task's retry budget or an actor's restart budget
is spent; `transition()` (transitions.py: the one check of every lifecycle table)
is re-exported here. Pure: no locks, no I/O; the core worker holds its lock around
every call. Not what a state means for the work (submission,
lineage, actor_life), not the head's actor table (head).

    WAITING_ARGS ──args ready──▶ QUEUED ──push──▶ PUSHED ──reply──▶ FINISHED
                                   ▲────bounced───┘ (pipelined, never begun)
         │                         │                │         ╲──▶ FAILED ──retry──▶ QUEUED
         └──────── a dependency failed, or cancel ──┴──────────▶ FAILED | CANCELLED
    FINISHED | FAILED ──a stored return (or an argument) was lost──▶ WAITING_ARGS

    PENDING ──constructed──▶ ALIVE ──its process died, restarts left──▶ RESTARTING
       │                       │                                          │  ╲ died again
       └───────────────────────┴──────── no restarts left, killed ────────┴──▶ DEAD
"""

from __future__ import annotations

import enum

from ..transitions import transition

__all__ = ["transition"]  # the one check of every table (transitions.py), re-exported


class TaskState(enum.StrEnum):  # a str: it is stored and sent as its name
    WAITING_ARGS = "WAITING_ARGS"  # submitted; some ref arguments are not ready yet
    QUEUED = "QUEUED"  # ready: waits for a lease (or, an actor call, for its turn)
    PUSHED = "PUSHED"  # sent to a worker, not answered yet
    FINISHED = "FINISHED"  # the worker sent its returns
    FAILED = "FAILED"  # it raised, a dependency failed, or its worker died
    CANCELLED = "CANCELLED"  # raylite.cancel() ended it


WAITING_ARGS, QUEUED, PUSHED, FINISHED, FAILED, CANCELLED = TaskState

TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    WAITING_ARGS: frozenset({QUEUED, FAILED, CANCELLED}),
    QUEUED: frozenset({PUSHED, FAILED, CANCELLED}),
    # Bounced (QUEUED): pushed behind a task that then blocked, its worker sent it
    # back unrun (TaskBounced) and it waits for another lease.
    PUSHED: frozenset({FINISHED, FAILED, CANCELLED, QUEUED}),
    # A retry (QUEUED), or a rerun that resolves its arguments again (WAITING_ARGS):
    # rebuilding a lost argument, or lineage of a result an error value stands for.
    FAILED: frozenset({QUEUED, WAITING_ARGS}),
    # Lineage: a stored return was lost (WAITING_ARGS); an actor's constructor runs
    # again when the actor restarts (QUEUED).
    FINISHED: frozenset({WAITING_ARGS, QUEUED}),
    CANCELLED: frozenset(),
}

# States in which a task is over until something reruns it.
TASK_ENDED = frozenset({FINISHED, FAILED, CANCELLED})


class ActorState(enum.StrEnum):  # a str: the head stores it, ActorInfo sends it
    PENDING = "PENDING"  # its constructor has not finished (or, a borrower: not located)
    ALIVE = "ALIVE"
    RESTARTING = "RESTARTING"  # a life ended; the next one is starting (or being located)
    DEAD = "DEAD"


PENDING, ALIVE, RESTARTING, DEAD = ActorState

ACTOR_TRANSITIONS: dict[ActorState, frozenset[ActorState]] = {
    PENDING: frozenset({ALIVE, RESTARTING, DEAD}),  # RESTARTING: died in its constructor
    ALIVE: frozenset({RESTARTING, DEAD}),
    RESTARTING: frozenset({ALIVE, RESTARTING, DEAD}),  # RESTARTING: died again while starting
    DEAD: frozenset(),
}


def spend_retry(record: object, budget: str = "max_retries") -> bool:
    """Spend one retry of a task (`max_retries`) or one restart of an actor
    (`restarts_left`): False, and nothing spent, when none is left.

    -1 is unlimited; 0 is none left (cancelling a task sets it to 0).
    """
    left: int = getattr(record, budget)
    if left == 0:
        return False
    if left > 0:
        setattr(record, budget, left - 1)
    return True
