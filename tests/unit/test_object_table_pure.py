"""The object table alone: feed it events, assert the actions that come out.

No CoreWorker, lock, connection or store: an ObjectTable over a dict of local ref
counts, entries written as completions write them, and TaskSpecs standing for the
tasks that made them. test_object_table checks the same behaviours through the
façade, which runs these actions.
"""

from __future__ import annotations

from typing import Any

import pytest

from raylite import protocol as P
from raylite.core.objects import (
    PENDING,
    RELEASED,
    FreeSegment,
    ObjectEntry,
    ObjectTable,
    Resubmit,
    RunWaiters,
)
from raylite.core.tasks import TaskSpec
from raylite.exceptions import ObjectLostError
from raylite.object_ref import ObjectRef, new_id
from raylite.serialization import loads_inline

OWNER = "unix:/owner.sock"
STORED = P.StoredAt(1 << 20, "")  # an IN_STORE value on the owner's own node


@pytest.fixture
def local() -> dict[bytes, int]:
    return {}


@pytest.fixture
def table(local: dict[bytes, int]) -> ObjectTable:
    return ObjectTable(local)


def task(*deps: bytes, max_retries: int = 1, returns: int = 1) -> TaskSpec:
    """A rebuildable task reading `deps` (owned refs) at the top level."""
    spec = TaskSpec(
        new_id(), "f", b"f" * 16, None, b"", [new_id() for _ in range(returns)], {}, (),
        max_retries, False,
    )  # fmt: skip
    spec.dep_ids = [(i, dep, OWNER) for i, dep in enumerate(deps)]
    spec.rebuildable = True
    return spec


def finish(
    table: ObjectTable, spec: TaskSpec, kind: int = P.IN_STORE, data: Any = STORED
) -> list[Any]:
    """Its returns complete (as _complete writes them), then it keeps its lineage."""
    returns = []
    for oid in spec.return_ids:
        entry = table.entries.setdefault(oid, ObjectEntry())
        entry.kind, entry.data = kind, data
        returns.append(P.TaskReturn(oid, kind, data, {}))
    return table.keep_lineage(spec, returns, OWNER)


def chain(table: ObjectTable, local: dict[bytes, int]) -> tuple[TaskSpec, TaskSpec]:
    """a = f(); b = g(a): both stored, both rebuildable, both with a live local ref."""
    f = task()
    a = f.return_ids[0]
    table.entries[a] = ObjectEntry()
    local[a] = 1
    assert finish(table, f) == []
    g = task(a)
    b = g.return_ids[0]
    table.entries[b] = ObjectEntry()
    local[b] = 1
    assert finish(table, g) == []
    return f, g


def submitted(table: ObjectTable, local: dict[bytes, int], **kw: Any) -> TaskSpec:
    spec = task(**kw)
    for oid in spec.return_ids:
        table.entries[oid] = ObjectEntry()
        local[oid] = 1
    return spec


def test_a_stored_value_is_freed_when_released(table: ObjectTable, local: dict[bytes, int]) -> None:
    spec = submitted(table, local, max_retries=0)
    finish(table, spec)
    oid = spec.return_ids[0]
    assert table.released(oid) == []  # a local ref is still alive
    assert oid in table.entries
    del local[oid]
    assert table.released(oid) == [FreeSegment(oid, STORED)]
    assert oid not in table.entries


def test_an_inline_value_goes_without_an_action(
    table: ObjectTable, local: dict[bytes, int]
) -> None:
    spec = submitted(table, local)
    assert finish(table, spec, P.INLINE, b"x") == []
    oid = spec.return_ids[0]
    del local[oid]
    assert table.released(oid) == []
    assert oid not in table.entries


def test_a_pending_value_is_not_freed(table: ObjectTable, local: dict[bytes, int]) -> None:
    spec = submitted(table, local)
    oid = spec.return_ids[0]
    del local[oid]
    assert table.released(oid) == []
    assert table.entries[oid].kind is PENDING


def test_borrowers_keep_a_value(table: ObjectTable, local: dict[bytes, int]) -> None:
    spec = submitted(table, local, max_retries=0)
    finish(table, spec)
    oid = spec.return_ids[0]
    table.borrower_added(oid, "unix:/b.sock")
    table.borrower_added(oid, "unix:/b.sock")
    del local[oid]
    assert table.released(oid) == []
    assert table.borrower_removed(oid, "unix:/b.sock") == []  # it registered twice
    assert oid in table.entries
    assert table.borrower_removed(oid, "unix:/b.sock") == [FreeSegment(oid, STORED)]
    assert oid not in table.entries
    assert table.borrower_removed(oid, "unix:/b.sock") == []  # gone: nothing to do


def test_a_dead_borrowers_borrows_end(table: ObjectTable, local: dict[bytes, int]) -> None:
    kept, freed = submitted(table, local), submitted(table, local)
    finish(table, kept)
    finish(table, freed)
    k, f = kept.return_ids[0], freed.return_ids[0]
    table.borrower_added(k, "unix:/alive.sock")
    table.borrower_added(f, "unix:/dead.sock")
    table.borrower_added(k, "unix:/dead.sock")
    del local[k], local[f]
    assert table.borrower_died("unix:/dead.sock") == [FreeSegment(f, STORED)]
    assert k in table.entries  # another borrower still has it
    assert table.entries[k].borrowers == {"unix:/alive.sock": 1}


def test_a_value_read_by_a_pending_task_waits_for_it(
    table: ObjectTable, local: dict[bytes, int]
) -> None:
    spec = submitted(table, local, max_retries=0)
    finish(table, spec)
    oid = spec.return_ids[0]
    table.entries[oid].held = 2  # two pending tasks read it from the store
    del local[oid]
    assert table.released(oid) == []
    assert table.unheld([oid]) == []
    assert table.unheld([oid]) == [FreeSegment(oid, STORED)]


def test_a_kept_lineage_keeps_only_its_arguments_recipe(
    table: ObjectTable, local: dict[bytes, int]
) -> None:
    f, _g = chain(table, local)
    a = f.return_ids[0]
    del local[a]
    # g's lineage may need a again: a's segment goes, its entry (the recipe) stays.
    assert table.released(a) == [FreeSegment(a, STORED)]
    entry = table.entries[a]
    assert entry.kind == RELEASED
    assert entry.data is None
    assert entry.lineage is f
    assert entry.lineage_refs == 1


def test_a_lost_value_reruns_its_task_and_a_released_arguments_task_first(
    table: ObjectTable, local: dict[bytes, int]
) -> None:
    f, g = chain(table, local)
    a, b = f.return_ids[0], g.return_ids[0]
    del local[a]
    table.released(a)
    actions = table.lost(b, "its node died", closed=False)
    # g is resubmitted first; it waits for a, which f (resubmitted next) rebuilds.
    assert actions == [Resubmit(g), Resubmit(f), RunWaiters(b)]
    assert table.entries[a].kind is PENDING
    assert table.entries[b].kind is PENDING
    assert f.rerunning
    assert g.rerunning
    assert f.max_retries == 0  # each rerun spent one retry
    assert g.max_retries == 0


def test_a_lost_stored_argument_is_not_rerun_for_its_reader(
    table: ObjectTable, local: dict[bytes, int]
) -> None:
    f, g = chain(table, local)  # a is still stored: g's rerun reads it as it is
    assert table.lost(g.return_ids[0], "its node died", closed=False) == [
        Resubmit(g),
        RunWaiters(g.return_ids[0]),
    ]
    assert table.entries[f.return_ids[0]].kind == P.IN_STORE


def test_one_rerun_rebuilds_all_the_returns_of_a_task(
    table: ObjectTable, local: dict[bytes, int]
) -> None:
    spec = task(returns=2)
    for oid in spec.return_ids:
        table.entries[oid] = ObjectEntry()
        local[oid] = 1
    finish(table, spec)
    first, second = spec.return_ids
    assert table.lost(first, "its node died", closed=False) == [
        Resubmit(spec),
        RunWaiters(first),
    ]
    assert table.lost(second, "its node died", closed=False) == [RunWaiters(second)]
    assert table.entries[second].kind is PENDING
    assert spec.lineage_holders == 0


@pytest.mark.parametrize("why", ["no retries left", "closed"])
def test_a_lost_value_that_cannot_be_rebuilt_is_an_error(
    table: ObjectTable, local: dict[bytes, int], why: str
) -> None:
    spec = submitted(table, local, max_retries=0 if why == "no retries left" else 1)
    finish(table, spec)
    oid = spec.return_ids[0]
    assert table.lost(oid, "its node died", closed=why == "closed") == [RunWaiters(oid)]
    entry = table.entries[oid]
    assert entry.kind == P.ERROR
    err = loads_inline(entry.data)
    assert isinstance(err, ObjectLostError)
    assert "cannot be rebuilt" in str(err)
    assert entry.lineage is None


def test_a_released_argument_that_cannot_be_rebuilt_fails_its_reader(
    table: ObjectTable, local: dict[bytes, int]
) -> None:
    f, g = chain(table, local)
    a, b = f.return_ids[0], g.return_ids[0]
    f.max_retries = 0
    del local[a]
    table.released(a)
    # g reruns; a is an error its rerun will read (and fail with).
    assert table.lost(b, "its node died", closed=False) == [Resubmit(g), RunWaiters(b)]
    assert table.entries[a].kind == P.ERROR


def test_dropping_the_end_of_a_chain_frees_the_chain(
    table: ObjectTable, local: dict[bytes, int]
) -> None:
    f, g = chain(table, local)
    a, b = f.return_ids[0], g.return_ids[0]
    del local[a]
    assert table.released(a) == [FreeSegment(a, STORED)]
    del local[b]
    # b goes; its lineage lets go of a's recipe, which nothing else needs.
    assert table.released(b) == [FreeSegment(b, STORED)]
    assert table.entries == {}
    assert not g.lineage_pinned
    assert g.lineage_holders == 0


def test_a_lineage_that_is_dropped_lets_its_arguments_go(
    table: ObjectTable, local: dict[bytes, int]
) -> None:
    f, g = chain(table, local)
    a = f.return_ids[0]
    del local[a]
    table.released(a)
    assert table.entries[a].kind == RELEASED
    assert table.lineage_dropped(g) == []  # a's recipe goes; it had no segment left
    assert a not in table.entries
    assert table.lineage_dropped(g) == []  # once only


def test_small_returns_keep_no_lineage(table: ObjectTable, local: dict[bytes, int]) -> None:
    f, _ = chain(table, local)
    h = submitted(table, local)
    h.dep_ids = [(0, f.return_ids[0], OWNER)]
    assert finish(table, h, P.INLINE, b"x") == []
    assert not h.lineage_pinned
    assert table.entries[h.return_ids[0]].lineage is None
    assert table.entries[f.return_ids[0]].lineage_refs == 1  # g's only


def test_a_kept_lineage_keeps_the_refs_it_borrows(table: ObjectTable) -> None:
    spec = task()
    table.entries[spec.return_ids[0]] = ObjectEntry()
    mine = ObjectRef(new_id(), OWNER, _count=False)
    borrowed = ObjectRef(new_id(), "unix:/other.sock", _count=False)
    spec.arg_refs = [mine, borrowed]
    finish(table, spec)
    assert spec.kept_refs == [borrowed]
    table.lineage_dropped(spec)
    assert spec.kept_refs == []
