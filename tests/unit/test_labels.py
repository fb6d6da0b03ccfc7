"""Node labels and label selectors (labels.py), and the lease book's use of them."""

from __future__ import annotations

import pytest

from raylite import labels
from raylite.node.lease_book import Grant, Infeasible, LeaseState, Reject, Spillback
from raylite.scheduling import NodeView
from tests.unit.test_lease_book import Owner, U, View, book, kinds, lease, with_idle

NODE = {"zone": "a", "tier": "gold"}


@pytest.mark.parametrize(
    ("selector", "matched"),
    [
        ({"zone": "a"}, True),
        ({"zone": "b"}, False),
        ({"zone": "!b"}, True),
        ({"zone": "!a"}, False),
        ({"zone": "in(b, a)"}, True),
        ({"zone": "in(b,c)"}, False),
        ({"zone": "!in(b,c)"}, True),
        ({"zone": "!in(a,c)"}, False),
        ({"nokey": "x"}, False),
        ({"nokey": "!x"}, True),
        ({"nokey": "!in(x)"}, True),
        ({"zone": "a", "tier": "silver"}, False),
        ({}, True),
    ],
)
def test_selector_operators(selector, matched):
    conditions = labels.parse_selector(labels.check_selector(selector))
    assert labels.matches(conditions, NODE) is matched


@pytest.mark.parametrize(
    ("selector", "error"),
    [("zone=a", TypeError), ({"zone": 1}, TypeError), ({"zone": "in()"}, ValueError),
     ({"-zone": "a"}, ValueError), ({"zone": "a b"}, ValueError), ({"a/b/": "x"}, ValueError)],
)  # fmt: skip
def test_bad_selectors(selector, error):
    with pytest.raises(error):
        labels.check_selector(selector)


def test_node_labels_checks_and_the_flag_form():
    assert labels.parse_labels_flag("zone=a, tier=gold") == NODE
    assert labels.parse_labels_flag('{"zone": "a"}') == {"zone": "a"}
    assert labels.check_node_labels({"example.com/zone": "a", "empty": ""})
    for bad in ({"ray.io/x": "a"}, {"-x": "a"}, {"x": "a b"}, {"x": 1}):
        with pytest.raises(ValueError):
            labels.check_node_labels(bad)
    with pytest.raises(ValueError, match="key-value"):
        labels.parse_labels_flag("zone")


def labelled_book(view: View | None = None):
    b = book(2, view=view)
    b.labels = {"ray.io/node-id": "here", **NODE}
    return b


def test_a_matching_selector_is_granted_here():
    b = labelled_book()
    (w,) = with_idle(b)
    req = lease({"CPU": U}, label_selector={"zone": "in(a,b)"})
    assert b.request(req) == [Grant(req, w)]


def test_a_selector_no_node_matches_waits_apart_and_is_never_granted_here():
    b = labelled_book()
    with_idle(b)
    req = lease({"CPU": U}, label_selector={"zone": "b"})
    assert b.request(req) == [Infeasible(req, {})]
    assert b.pending == []
    assert b.unmatched == [req]
    assert b.schedule() == []
    assert b.cancel(req.lease_id)
    assert b.unmatched == []
    assert req.state is LeaseState.CANCELLED


def test_a_waiting_selector_goes_to_a_matching_node_once_it_joins():
    view = View()
    b = labelled_book(view)
    req = lease({"CPU": U}, label_selector={"zone": "b"})
    assert kinds(b.request(req)) == [Infeasible]
    other = NodeView(b"there", "tcp:there:1", {"CPU": 2 * U}, {"CPU": 2 * U}, True, {"zone": "b"})
    view.others = [other]
    actions = b.view_refreshed()
    assert [type(a) for a in actions if isinstance(a, Spillback)] == [Spillback]
    assert next(a for a in actions if isinstance(a, Spillback)).node.node_id == b"there"
    assert b.unmatched == []


def test_a_selector_skips_a_local_node_with_room_for_a_matching_one():
    other = NodeView(b"there", "tcp:there:1", {"CPU": 2 * U}, {"CPU": U}, True, {"zone": "b"})
    b = labelled_book(View(others=[other]))
    with_idle(b)
    req = lease({"CPU": U}, label_selector={"zone": "!a"})
    (spill,) = [a for a in b.request(req) if isinstance(a, Spillback)]
    assert spill.node.node_id == b"there"


def test_an_owner_gone_drops_its_unmatched_requests():
    b = labelled_book()
    owner = Owner()
    req = lease({"CPU": U}, owner, label_selector={"zone": "b"})
    b.request(req)
    owner.closed = True
    b.owner_gone(owner)
    assert b.unmatched == []
    assert not any(isinstance(a, Reject) for a in b.schedule())
