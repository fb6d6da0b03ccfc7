"""Node labels and label_selector scheduling: init(labels=...), the default
`ray.io/node-id` label, selectors with Ray's operators (!v, in(a,b), !in(a,b)) on tasks
and actors; a selector no node matches leaves the work pending."""

from __future__ import annotations

import importlib

import pytest

from tests._engine import exceptions, ray

RAY_INIT = {"num_cpus": 2, "labels": {"zone": "a", "tier": "gold"}}


@ray.remote
def where():
    return ray.get_runtime_context().get_node_id()


@ray.remote
class Pinger:
    def ping(self):
        return "pong"


def test_node_has_the_given_and_the_default_labels(ray_start):
    node_id = ray.get_runtime_context().get_node_id()
    (node,) = ray.nodes()
    assert node["Labels"] == {"zone": "a", "tier": "gold", "ray.io/node-id": node_id}
    assert ray.get_runtime_context().get_node_labels() == node["Labels"]


@pytest.mark.parametrize(
    "selector",
    [
        {"zone": "a"},
        {"zone": "!b"},
        {"zone": "in(a,c)"},
        {"zone": "in(a, c)"},
        {"zone": "!in(b,c)"},
        {"zone": "a", "tier": "gold"},
        {"nokey": "!x"},
        {"nokey": "!in(x,y)"},
    ],
)
def test_a_selector_the_node_matches_runs(ray_start, selector):
    ref = where.options(label_selector=selector).remote()
    assert ray.get(ref, timeout=60) == ray.get_runtime_context().get_node_id()


def test_a_selector_on_the_node_id_label_runs(ray_start):
    node_id = ray.get_runtime_context().get_node_id()
    assert ray.get(where.options(label_selector={"ray.io/node-id": node_id}).remote(), timeout=60)


@pytest.mark.parametrize(
    "selector",
    [{"zone": "b"}, {"zone": "!a"}, {"zone": "in(b,c)"}, {"zone": "!in(a)"}, {"nokey": "x"}],
)
def test_a_selector_no_node_matches_stays_pending(ray_start, selector):
    ref = where.options(label_selector=selector).remote()
    ready, pending = ray.wait([ref], timeout=1.5)
    assert ready == []
    assert pending == [ref]
    # Meanwhile work without a selector runs (the pending one holds nothing).
    assert ray.get(where.remote(), timeout=60)
    ray.cancel(ref)
    with pytest.raises(exceptions.TaskCancelledError):
        ray.get(ref, timeout=30)


def test_an_actor_with_a_matching_selector_runs(ray_start):
    actor = Pinger.options(label_selector={"tier": "in(gold,silver)"}).remote()
    assert ray.get(actor.ping.remote(), timeout=60) == "pong"
    ray.kill(actor)


def test_a_decorator_selector_applies(ray_start):
    @ray.remote(label_selector={"zone": "a"})
    def labelled():
        return 1

    assert ray.get(labelled.remote(), timeout=60) == 1


@pytest.mark.parametrize(
    ("selector", "error"),
    [
        ("zone=a", TypeError),
        (["zone"], TypeError),
        ({"zone": "in()"}, ValueError),
        ({"-bad": "a"}, ValueError),
        ({"zone": "a b"}, ValueError),
    ],
)
def test_a_bad_selector_is_refused(ray_start, selector, error):
    with pytest.raises(error):
        where.options(label_selector=selector).remote()


def test_task_labels_option(ray_start):
    assert ray.get(where.options(_labels={"team": "x"}).remote(), timeout=60)
    with pytest.raises(TypeError):
        where.options(_labels="team=x").remote()
    with pytest.raises(ValueError, match="Label value must be string"):
        where.options(_labels={"team": 1}).remote()


def test_an_actor_no_node_matches_stays_pending(ray_start):
    actor = Pinger.options(label_selector={"zone": "nowhere"}).remote()
    call = actor.ping.remote()
    ready, pending = ray.wait([call], timeout=1.5)
    assert ready == []
    assert pending == [call]
    ray.kill(actor)
    with pytest.raises(exceptions.RayActorError):
        ray.get(call, timeout=30)


# --- placement groups: bundle_label_selector ------------------------------------------
pg_mod = importlib.import_module(f"{ray.__name__}.util.placement_group")
PGStrategy = importlib.import_module(
    f"{ray.__name__}.util.scheduling_strategies"
).PlacementGroupSchedulingStrategy


def test_a_placement_group_whose_bundle_selectors_match_is_placed(ray_start):
    pg = pg_mod.placement_group(
        [{"CPU": 1}, {"CPU": 1}],
        bundle_label_selector=[{"zone": "a"}, {"tier": "in(gold,silver)"}],
    )
    try:
        assert pg.wait(60)
        strategy = PGStrategy(pg, placement_group_bundle_index=1)
        node = ray.get(where.options(scheduling_strategy=strategy).remote(), timeout=60)
        assert node == ray.get_runtime_context().get_node_id()
    finally:
        pg_mod.remove_placement_group(pg)


@pytest.mark.parametrize("selector", [{"zone": "b"}, {"zone": "!a"}, {"nokey": "x"}])
def test_a_placement_group_whose_bundle_selector_matches_no_node_stays_pending(ray_start, selector):
    pg = pg_mod.placement_group([{"CPU": 1}, {"CPU": 1}], bundle_label_selector=[{}, selector])
    try:
        assert pg.wait(2) is False  # an observation window: nothing can place it
        assert pg_mod.placement_group_table(pg)["state"] == "PENDING"
    finally:
        pg_mod.remove_placement_group(pg)
    # What it waited for was never held: a group on the same CPUs is placed.
    other = pg_mod.placement_group([{"CPU": 2}])
    assert other.wait(60)
    pg_mod.remove_placement_group(other)


@pytest.mark.parametrize(
    "selectors",
    [[{"zone": "a"}], [{"zone": 1}, {}], [{"-bad": "a"}, {}], [{"zone": "in()"}, {}]],
)
def test_a_bad_bundle_label_selector_is_refused(ray_start, selectors):
    with pytest.raises(ValueError):
        pg_mod.placement_group([{"CPU": 1}, {"CPU": 1}], bundle_label_selector=selectors)
