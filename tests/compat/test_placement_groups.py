"""Placement groups on one machine (issue 14): placement_group(), ready/wait, each
strategy as far as one node allows, bundle isolation, removal, pending groups, names,
the table, capture of child tasks."""

from __future__ import annotations

import importlib
import os

import pytest

from tests._engine import exceptions, ray, raylite_only, wait_for, wait_for_path

RAY_INIT = {"num_cpus": 4, "num_gpus": 2}

PGS = importlib.import_module(f"{ray.__name__}.util.placement_group")
S = importlib.import_module(
    f"{ray.__name__}.util.scheduling_strategies"
).PlacementGroupSchedulingStrategy
placement_group = PGS.placement_group
remove_placement_group = PGS.remove_placement_group
get_placement_group = PGS.get_placement_group
get_current_placement_group = PGS.get_current_placement_group
placement_group_table = PGS.placement_group_table


@pytest.fixture
def groups(ray_start):
    """Groups made by a test, removed after it (so the next test has the node whole)."""
    made = []

    def make(*args, **kwargs):
        pg = placement_group(*args, **kwargs)
        made.append(pg)
        return pg

    yield make
    for pg in made:
        if placement_group_table(pg).get("state") != "REMOVED":
            remove_placement_group(pg)
    wait_for(lambda: ray.available_resources().get("CPU", 0) == 4, 30, "the node's CPUs back")


@ray.remote
def current():
    pg = get_current_placement_group()
    return None if pg is None else pg.id.hex()


@ray.remote
def parent():
    return ray.get(current.remote())


@ray.remote
def gated(path):
    wait_for_path(path)
    return os.getpid()


@ray.remote(max_retries=0)
def blocked_forever(path):
    wait_for_path(path, timeout=300)


@ray.remote
class Member:
    def group(self):
        pg = get_current_placement_group()
        return None if pg is None else pg.id.hex()


def test_ready_resolves_to_the_group_and_wait_says_true(groups):
    pg = groups([{"CPU": 1}, {"CPU": 1}])
    assert ray.get(pg.ready(), timeout=30) == pg
    assert pg.wait(10) is True
    assert pg.bundle_specs == [{"CPU": 1.0}, {"CPU": 1.0}]
    assert pg.bundle_count == 2
    ready, _ = ray.wait([pg.ready()], timeout=30)
    assert len(ready) == 1


def test_ready_of_groups_made_and_removed_in_a_loop(ray_start):
    for _ in range(20):  # the answer may come before ready() returns its ref
        pg = placement_group([{"CPU": 1}])
        assert ray.get(pg.ready(), timeout=30) == pg
        remove_placement_group(pg)


@pytest.mark.parametrize("strategy", ["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"])
def test_each_strategy_places_a_group_one_node_can_hold(groups, strategy):
    bundles = [{"CPU": 1}] if strategy == "STRICT_SPREAD" else [{"CPU": 1}, {"CPU": 1}]
    pg = groups(bundles, strategy=strategy)
    assert pg.wait(30)
    row = placement_group_table(pg)
    assert row["strategy"] == strategy
    assert row["state"] == "CREATED"
    if len(ray.nodes()) == 1:  # (RAYLITE_TESTS_CLUSTER splits the CPUs over nodes)
        assert len(set(row["bundles_to_node_id"].values())) == 1


def test_strict_spread_over_more_bundles_than_nodes_stays_pending(groups):
    if len(ray.nodes()) != 1:
        pytest.skip("needs one node")
    pg = groups([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    assert pg.wait(1) is False
    assert placement_group_table(pg)["state"] == "PENDING"


def test_a_group_reserves_its_resources_and_removal_frees_them(groups):
    pg = groups([{"CPU": 1}, {"CPU": 2}])
    assert pg.wait(30)
    assert ray.available_resources().get("CPU", 0) == 1
    assert ray.cluster_resources()["CPU"] == 4  # its renamed resources are not shown
    assert not [k for k in ray.available_resources() if "_group_" in k]
    remove_placement_group(pg)
    wait_for(lambda: ray.available_resources().get("CPU", 0) == 4, 30, "CPUs back")


def test_a_task_in_a_bundle_uses_only_that_bundles_resources(groups, tmp_path):
    pg = groups([{"CPU": 1}, {"CPU": 1}])
    assert pg.wait(30)
    in_zero = S(pg, placement_group_bundle_index=0)
    gate = tmp_path / "go"
    first = gated.options(scheduling_strategy=in_zero).remote(str(gate))
    wait_for(lambda: ray.available_resources().get("CPU", 0) == 2, 30, "the node's own CPUs")
    second = gated.options(scheduling_strategy=in_zero).remote(str(gate))
    # Bundle 0's CPU is held by the first: the second waits though the node has 2 free.
    ready, _ = ray.wait([second], timeout=1.0)
    assert ready == []
    other = gated.options(scheduling_strategy=S(pg, placement_group_bundle_index=1)).remote(
        str(tmp_path / "open")
    )
    (tmp_path / "open").touch()
    assert ray.get(other, timeout=30) > 0  # bundle 1 is free: it ran meanwhile
    gate.touch()
    assert ray.get([first, second], timeout=30)


def test_placement_group_arguments_are_checked_as_ray_does(ray_start):
    with pytest.raises(ValueError, match="Invalid placement group strategy X"):
        placement_group([{"CPU": 1}], strategy="X")
    with pytest.raises(ValueError, match="Got empty list instead"):
        placement_group([])
    with pytest.raises(ValueError, match="Bundles cannot be an empty dictionary"):
        placement_group([{"CPU": 0}])
    with pytest.raises(ValueError, match="must be a list"):
        placement_group({"CPU": 1})
    with pytest.raises(ValueError, match="lifetime"):
        placement_group([{"CPU": 1}], lifetime="forever")
    with pytest.raises(ValueError, match="Bundles must be a non-empty list"):
        placement_group([{"CPU": "one"}])


def test_a_task_that_fits_no_bundle_or_names_a_bad_index_is_refused(groups):
    pg = groups([{"CPU": 1}, {"CPU": 1}])
    with pytest.raises(ValueError, match="bundle index 5 is invalid"):
        current.options(scheduling_strategy=S(pg, placement_group_bundle_index=5)).remote()
    with pytest.raises(ValueError, match="bundle index -2 is invalid"):
        current.options(scheduling_strategy=S(pg, placement_group_bundle_index=-2)).remote()
    with pytest.raises(ValueError, match="cannot fit into any bundles"):
        current.options(scheduling_strategy=S(pg), num_cpus=2).remote()
    with pytest.raises(ValueError, match="requires 1 CPU for creation"):
        Member.options(scheduling_strategy=S(groups([{"GPU": 0.5, "custom": 1}]))).remote()


def test_get_placement_group_finds_a_named_group(groups):
    pg = groups([{"CPU": 1}], name="compat-pg-named")
    assert get_placement_group("compat-pg-named") == pg
    with pytest.raises(ValueError, match="Failed to look up placement group with name: nope"):
        get_placement_group("nope")
    with pytest.raises(ValueError):
        get_placement_group("")


def test_a_taken_name_is_refused(groups):
    groups([{"CPU": 1}], name="compat-pg-dup")
    with pytest.raises(exceptions.RaySystemError, match="already exists"):
        groups([{"CPU": 1}], name="compat-pg-dup")


def test_the_table_shows_each_group_and_its_state(groups):
    pg = groups([{"CPU": 1}, {"CPU": 0.5}], strategy="SPREAD", name="compat-pg-table")
    assert pg.wait(30)
    row = placement_group_table(pg)
    assert row["placement_group_id"] == pg.id.hex()
    assert row["name"] == "compat-pg-table"
    assert row["bundles"] == {0: {"CPU": 1.0}, 1: {"CPU": 0.5}}
    assert row["state"] == "CREATED"
    assert set(row["bundles_to_node_id"]) == {0, 1}
    assert pg.id.hex() in placement_group_table()
    remove_placement_group(pg)
    wait_for(lambda: placement_group_table(pg)["state"] == "REMOVED", 30, "REMOVED")


def test_removal_kills_its_actors_and_fails_its_tasks(groups, tmp_path):
    pg = groups([{"CPU": 1}, {"CPU": 1}])
    assert pg.wait(30)
    actor = Member.options(scheduling_strategy=S(pg, placement_group_bundle_index=1)).remote()
    assert ray.get(actor.group.remote(), timeout=30) == pg.id.hex()
    gate = str(tmp_path / "never")
    in_zero = S(pg, placement_group_bundle_index=0)
    running = blocked_forever.options(scheduling_strategy=in_zero).remote(gate)
    wait_for(lambda: ray.available_resources().get("CPU", 0) == 2, 30, "the task runs")
    queued = blocked_forever.options(scheduling_strategy=in_zero).remote(gate)
    ready, _ = ray.wait([queued], timeout=0.5)
    assert ready == []
    remove_placement_group(pg)
    with pytest.raises(exceptions.WorkerCrashedError):
        ray.get(running, timeout=60)
    with pytest.raises(exceptions.TaskPlacementGroupRemoved):
        ray.get(queued, timeout=60)

    def actor_gone():
        try:
            ray.get(actor.group.remote(), timeout=30)
        except exceptions.RayActorError:
            return True
        return False

    wait_for(actor_gone, 60, "the group's actor dead")
    wait_for(lambda: ray.available_resources().get("CPU", 0) == 4, 30, "CPUs back")


def test_a_group_that_does_not_fit_now_is_placed_when_resources_free(groups):
    big = groups([{"CPU": 3}])
    assert big.wait(30)
    waiting = groups([{"CPU": 2}])
    assert waiting.wait(0.5) is False
    assert placement_group_table(waiting)["state"] == "PENDING"
    remove_placement_group(big)
    assert waiting.wait(30) is True


def test_an_infeasible_group_stays_pending(groups):
    pg = groups([{"CPU": 64}])
    assert pg.wait(1) is False
    assert placement_group_table(pg)["state"] == "PENDING"


def test_children_run_in_the_group_only_when_captured(groups):
    pg = groups([{"CPU": 1}, {"CPU": 1}])
    assert pg.wait(30)
    assert get_current_placement_group() is None  # a driver is in no group
    assert ray.get(current.options(scheduling_strategy=S(pg)).remote(), timeout=30) == pg.id.hex()
    captured = S(pg, placement_group_capture_child_tasks=True)
    assert ray.get(parent.options(scheduling_strategy=captured).remote(), timeout=30) == (
        pg.id.hex()
    )
    assert ray.get(parent.options(scheduling_strategy=S(pg)).remote(), timeout=30) is None


def test_an_actor_in_a_group_knows_it(groups):
    pg = groups([{"CPU": 1}], strategy="STRICT_PACK")
    actor = Member.options(scheduling_strategy=S(pg)).remote()
    assert ray.get(actor.group.remote(), timeout=30) == pg.id.hex()


def test_the_older_placement_group_options_still_work(groups):
    pg = groups([{"CPU": 1}, {"CPU": 1}])
    with pytest.warns(DeprecationWarning, match="placement_group parameter is deprecated"):
        ref = current.options(placement_group=pg, placement_group_bundle_index=1).remote()
    assert ray.get(ref, timeout=30) == pg.id.hex()


def test_a_detached_group_is_made_and_removed(groups):
    pg = groups([{"CPU": 1}], lifetime="detached")
    assert pg.wait(30)
    remove_placement_group(pg)
    wait_for(lambda: placement_group_table(pg)["state"] == "REMOVED", 30, "REMOVED")


@raylite_only  # Ray 2.60 leaves such a task pending for ever
def test_a_task_sent_to_a_removed_group_fails(groups):
    pg = groups([{"CPU": 1}])
    assert pg.wait(30)
    remove_placement_group(pg)
    with pytest.raises(exceptions.TaskPlacementGroupRemoved):
        ray.get(current.options(scheduling_strategy=S(pg)).remote(), timeout=30)


def test_wait_on_a_removed_group_raises(groups):
    pg = groups([{"CPU": 1}])
    remove_placement_group(pg)
    wait_for(lambda: placement_group_table(pg)["state"] == "REMOVED", 30, "REMOVED")
    with pytest.raises(Exception, match="does not exist"):
        pg.wait(1)


@ray.remote
def gpu_ids():
    return ray.get_gpu_ids()


def test_a_task_in_a_gpu_bundle_gets_that_bundles_gpu(groups):
    pg = groups([{"CPU": 1, "GPU": 1}, {"CPU": 1, "GPU": 1}], strategy="STRICT_PACK")
    assert pg.wait(30)
    assert ray.available_resources().get("GPU", 0) == 0
    ids = [
        ray.get(
            gpu_ids.options(
                num_gpus=1, scheduling_strategy=S(pg, placement_group_bundle_index=i)
            ).remote(),
            timeout=30,
        )
        for i in (0, 1)
    ]
    assert sorted(int(g) for one in ids for g in one) == [0, 1]  # each bundle its own GPU
    halves = ray.get(
        [gpu_ids.options(num_gpus=0.5, scheduling_strategy=S(pg)).remote() for _ in range(2)],
        timeout=30,
    )
    assert all(len(h) == 1 for h in halves)


@ray.remote
def make_group():
    pg = placement_group([{"CPU": 1}], name="compat-pg-made-in-a-task")
    assert pg.wait(30)
    return os.getpid()


def test_a_group_made_in_a_task_outlives_the_tasks_worker(groups):
    import signal

    pid = ray.get(make_group.remote(), timeout=60)
    pg = get_placement_group("compat-pg-made-in-a-task")
    try:
        os.kill(pid, signal.SIGKILL)  # the worker that made it dies: the job goes on
        wait_for(lambda: not _alive(pid), 30, "the worker gone")
        assert pg.wait(5)
        ready, _ = ray.wait([current.options(scheduling_strategy=S(pg)).remote()], timeout=30)
        assert ready
        assert placement_group_table(pg)["state"] == "CREATED"
    finally:
        remove_placement_group(pg)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
