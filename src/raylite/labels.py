"""Node labels and label selectors (Ray 2.60's `labels=` and `label_selector=`).

Owns the label syntax (Ray's checks and messages: Kubernetes label syntax), the
selector language and its matching, and where a request with a selector may go.
Not where the labels come from (init, `raylite start --labels`, the node's default
`ray.io/node-id`), nor the unlabelled placement policy (scheduling.py), which a
request without a selector keeps using untouched: the book calls `place_labeled`
only for a lease that carries a selector.

A selector maps a label key to one condition, all of which must hold:

    "v"         the node's label is v            "!v"         it is not v (or unset)
    "in(a,b)"   it is one of a, b                "!in(a,b)"   it is none of them (or unset)

    owner ──RequestLease(label_selector={...})──▶ node: Condition list ──▶ place_labeled
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from .scheduling import HERE, NodeView, Placement, fits, place

NODE_ID_LABEL = "ray.io/node-id"
RESERVED_PREFIX = "ray.io/"

# Ray's regexes (ray._private.label_utils), so that what Ray refuses is refused here.
_NAME = r"([a-zA-Z0-9]([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?)"
_LABEL = re.compile(_NAME)
_PREFIX = re.compile(rf"^({_NAME}?(\.{_NAME}?)*)$")
_SELECTOR_VALUE = re.compile(rf"^!?(?:in)?\({_NAME}(?:, ?{_NAME})*\)$|^!?{_NAME}$")
_TAIL = (
    "must be 63 chars or less beginning and ending with an alphanumeric character "
    "([a-z0-9A-Z]) with dashes (-), underscores (_),dots (.), and alphanumerics between."
)


class Selected(NamedTuple):
    """The core's form of a strategy with a label_selector (strategy_of): its
    SchedulingClass sends `selector` beside `strategy` in each RequestLease."""

    strategy: Any  # the wire strategy (None, "SPREAD", NodeAffinity)
    selector: tuple[tuple[str, str], ...]


class Condition(NamedTuple):
    key: str
    negate: bool  # "!v", "!in(...)": the label must not be one of `values`
    values: frozenset[str]


def key_error(key: Any) -> str | None:
    """Why `key` is not a label key (Ray's message), or None."""
    if not isinstance(key, str):
        return f"Label keys must be strings, got {key!r}."
    name = key
    if "/" in key:
        prefix, name = key.rsplit("/", 1)
        if len(prefix) > 253 or not _PREFIX.fullmatch(prefix):
            return (
                f"Invalid label key prefix `{prefix}`. Prefix must be a series of DNS labels "
                "separated by dots (.), not longer than 253 characters in total."
            )
    if len(name) > 63 or not _LABEL.fullmatch(name):
        return f"Invalid label key name `{name}`. Name {_TAIL}"
    return None


def check_node_labels(labels: Any) -> dict[str, str]:
    """Labels a user gives a node (init(labels=...), raylite start --labels): a dict of
    str to str in label syntax, no key in Ray's reserved `ray.io/` prefix."""
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise TypeError(f"labels must be a dict of str to str, got {type(labels).__name__}.")
    for key, value in labels.items():
        if isinstance(key, str) and key.startswith(RESERVED_PREFIX):
            raise ValueError(
                f"Custom label keys `{key}` cannot start with the prefix `{RESERVED_PREFIX}`. "
                "This is reserved for Ray defined labels."
            )
        error = key_error(key)
        if error:
            raise ValueError(error)
        if not isinstance(value, str):
            raise ValueError(f'The value of the "{key}" is not string type')
        if value and (len(value) > 63 or not _LABEL.fullmatch(value)):
            raise ValueError(f"Invalid label key value `{value}`. Value {_TAIL}")
    return dict(labels)


def parse_labels_flag(text: str) -> dict[str, str]:
    """`raylite start --labels`: Ray's "k1=v1,k2=v2" form (a JSON object is taken too)."""
    import json

    text = text.strip()
    if len(text) > 1 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if text.startswith("{"):
        return check_node_labels(json.loads(text))
    labels: dict[str, str] = {}
    for pair in filter(None, text.split(",")):
        parts = pair.split("=")
        if len(parts) != 2:
            raise ValueError("Label string is not a key-value pair.")
        labels[parts[0].strip()] = parts[1].strip()
    return check_node_labels(labels)


def _not_dict(option: str, value: Any) -> TypeError:
    return TypeError(
        f"The type of keyword '{option}' must be (<class 'dict'>, <class 'NoneType'>), "
        f"but received type {type(value)}"
    )


def check_selector(selector: Any, option: str = "label_selector") -> dict[str, str]:
    """A task's or actor's label_selector, checked as Ray checks it (its messages)."""
    if not isinstance(selector, dict):
        raise _not_dict(option, selector)
    for key, value in selector.items():
        error = key_error(key)
        if error:
            raise ValueError(error)
        if not isinstance(value, str):
            raise TypeError(
                f"The value of label selector key {key!r} must be a string, got {value!r}."
            )
        if value and not _SELECTOR_VALUE.fullmatch(value):
            raise ValueError(
                f"Invalid label selector value `{value}`. The label selector value should "
                "contain optional operators and a label value. Supported operators are: ! "
                f"and {{'in'}}. Value {_TAIL}"
            )
    return dict(selector)


def check_task_labels(labels: Any) -> None:
    """A task's or actor's `_labels` (key-value labels of the task itself, kept with its
    spec in Ray 2.60, which schedules by none of them): a dict, as Ray checks."""
    if not isinstance(labels, dict):
        raise _not_dict("_labels", labels)
    for key, value in labels.items():
        if not isinstance(key, str):
            raise ValueError(f"Label key must be string, but got {type(key)}")
        if not isinstance(value, str):
            raise ValueError(f"Label value must be string, but got {type(value)}")


def parse_selector(selector: dict[str, str]) -> tuple[Condition, ...]:
    """The conditions of a checked selector (on the node, once per lease request)."""
    out = []
    for key, text in selector.items():
        negate = text.startswith("!")
        body = text[1:] if negate else text
        if body.startswith("in(") or body.startswith("("):
            inner = body[body.index("(") + 1 : -1]
            values = frozenset(v.strip() for v in inner.split(","))
        else:
            values = frozenset((body,))
        out.append(Condition(key, negate, values))
    return tuple(out)


def matches(conditions: tuple[Condition, ...], labels: dict[str, str]) -> bool:
    for key, negate, values in conditions:
        value = labels.get(key)
        if (value is not None and value in values) == negate:
            return False
    return True


def place_labeled(
    shape: dict[str, int],
    strategy: Any,
    conditions: tuple[Condition, ...],
    local: NodeView,
    others: list[NodeView],
    spread_seq: int = 0,
) -> Placement:
    """Where a request with a label selector goes: the usual policy over the nodes whose
    labels match. None matching: "infeasible" (it waits, as in Ray, until one joins)."""
    alive = [n for n in others if n.alive and n.node_id != local.node_id]
    able = [n for n in alive if matches(conditions, n.labels)]
    if matches(conditions, local.labels):
        return place(shape, strategy, local, able, spread_seq)
    if not able:
        return Placement(None, "infeasible", "no node has labels that match")
    # This node does not match: one of the others, the usual way (room now, the most
    # CPU free first; else one that has the resources at all).
    free = [n for n in able if fits(shape, n.available)]
    if free:
        return Placement(max(free, key=lambda n: (n.available.get("CPU", 0), n.node_id)), "spill")
    total = [n for n in able if fits(shape, n.total)]
    if total:
        return Placement(max(total, key=lambda n: (n.available.get("CPU", 0), n.node_id)), "spill")
    return Placement(None, "infeasible")


__all__ = [
    "HERE",
    "NODE_ID_LABEL",
    "Condition",
    "Selected",
    "check_node_labels",
    "check_selector",
    "check_task_labels",
    "matches",
    "parse_labels_flag",
    "parse_selector",
    "place_labeled",
]
