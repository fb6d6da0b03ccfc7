"""Placement groups, Ray's API (`ray.util.placement_group`): reserve resources as a gang.

Owns the driver's side: PlacementGroup (a handle: its id and bundles), the checks of
placement_group()'s arguments (Ray's errors), and the requests to the head through
this process's node manager. Not the reservation (head/pg_service.py and
head/placement_groups.py decide, node/bundle_book.py reserves), not how a task is
placed in a bundle (remote_function.py renames its resources, bundles.py).

    placement_group() ──CreatePlacementGroup──▶ head ──(prepare, commit on nodes)
    pg.ready() ──WaitPlacementGroup──▶ head ──PlacementGroupReady──▶ the ref's value
    remove_placement_group() ──RemovePlacementGroup──▶ head ──▶ every node frees it

Only light modules load at import: util/__init__ imports this eagerly (so
`raylite.util.placement_group` is the function, as in Ray); the driver's API loads
on first use.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

from .. import protocol as P
from ..config import CONFIG, to_units
from ..exceptions import RaySystemError
from ..labels import check_selector
from ..object_ref import PlacementGroupID, new_id

VALID_PLACEMENT_GROUP_STRATEGIES = {"PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"}


def _worker() -> Any:
    from ..core import context

    return context.global_worker()


def _ask(msg: Any, timeout: float | None = None) -> Any:
    reply = _worker().ask_node(msg, CONFIG.request_timeout_s if timeout is None else timeout)
    return reply


class PlacementGroup:
    """A handle to a placement group."""

    @staticmethod
    def empty() -> PlacementGroup:
        return PlacementGroup(PlacementGroupID.nil())

    def __init__(self, id: PlacementGroupID, bundle_cache: list[dict[str, float]] | None = None):
        self.id = id
        self.bundle_cache = bundle_cache

    @property
    def is_empty(self) -> bool:
        return self.id.is_nil()

    def ready(self) -> Any:
        """An ObjectRef that resolves (to this group) once every bundle is reserved."""
        if self.is_empty:
            from ..api import put

            return put(self)
        me = self

        def value(reply: Any) -> Any:
            if isinstance(reply, P.PlacementGroupReady) and reply.ready:
                return me
            reason = reply.reason if isinstance(reply, P.Failed) else repr(reply)
            return RaySystemError(reason)

        return _worker().answer_later(P.WaitPlacementGroup(self.id.binary(), -1.0), value)

    def wait(self, timeout_seconds: float | int = 30) -> bool:
        """Wait up to `timeout_seconds` for the group to be created: True if it is."""
        reply = _ask(
            P.WaitPlacementGroup(self.id.binary(), float(timeout_seconds)),
            float(timeout_seconds) + CONFIG.request_timeout_s,
        )
        if isinstance(reply, P.Failed):
            raise Exception(reply.reason)
        return bool(reply.ready)

    @property
    def bundle_specs(self) -> list[dict[str, float]]:
        """The bundles of this group (resource -> amount each)."""
        self._fill_bundle_cache_if_needed()
        return self.bundle_cache  # type: ignore[return-value]

    @property
    def bundle_count(self) -> int:
        self._fill_bundle_cache_if_needed()
        return len(self.bundle_cache or [])

    def _fill_bundle_cache_if_needed(self) -> None:
        if not self.bundle_cache:
            row = _row(self.id.binary())
            self.bundle_cache = _display_bundles(row["bundles"]) if row else []

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroup) and self.id == other.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"PlacementGroup(id={self.id.hex()})"


def _display_bundles(bundles: list[dict[str, int]]) -> list[dict[str, float]]:
    return [{k: v / 10_000 for k, v in b.items()} for b in bundles]


def _row(pg_id: bytes) -> dict[str, Any] | None:
    reply = _ask(P.GetPlacementGroups(pg_id, "", ""))
    rows = reply.rows if isinstance(reply, P.PlacementGroupRows) else []
    return rows[0] if rows else None


def _runtime() -> Any:
    from ..api import get_runtime_context

    return get_runtime_context()


def _namespace() -> str:
    return str(_runtime().namespace)


def validate_placement_group(
    bundles: Any,
    strategy: str | None = None,
    lifetime: str | None = None,
    _soft_target_node_id: str | None = None,
    bundle_label_selector: Any = None,
    topology_strategy: Any = None,
) -> None:
    """Ray's checks of placement_group()'s arguments (ValueError each)."""
    if topology_strategy is not None and strategy is not None:
        raise ValueError(
            "`strategy` and `topology_strategy` cannot both be specified. Pass node-level "
            "packing via `topology_strategy['ray.io/node-id']`."
        )
    if strategy is not None and strategy not in VALID_PLACEMENT_GROUP_STRATEGIES:
        raise ValueError(
            f"Invalid placement group strategy {strategy}. "
            f"Supported strategies are: {VALID_PLACEMENT_GROUP_STRATEGIES}."
        )
    if _soft_target_node_id and (strategy or "PACK") != "STRICT_PACK":
        raise ValueError(
            "_soft_target_node_id currently only works with STRICT_PACK but got "
            f"{strategy or 'PACK'}"
        )
    if not isinstance(bundles, list):
        raise ValueError(f"Placement group bundles must be a list, got {type(bundles)}.")
    if len(bundles) == 0:
        raise ValueError(
            "Bundles must be a non-empty list of resource dictionaries. For example: "
            '`[{"CPU": 1.0}, {"GPU": 1.0}]`. Got empty list instead.'
        )
    for bundle in bundles:
        if (
            not isinstance(bundle, dict)
            or not all(isinstance(k, str) for k in bundle)
            or not all(isinstance(v, (int, float)) for v in bundle.values())
        ):
            raise ValueError(
                "Bundles must be a non-empty list of resource dictionaries. For example: "
                '`[{"CPU": 1.0}, {"GPU": 1.0}]`.'
            )
        if len(bundle) == 0 or all(v == 0 for v in bundle.values()):
            raise ValueError(
                "Bundles cannot be an empty dictionary or resources with only 0 values. "
                f"Bundles: {bundles}"
            )
        if "object_store_memory" in bundle:
            warnings.warn(
                "Setting 'object_store_memory' for bundles is deprecated since it doesn't "
                "actually reserve the required object store memory.",
                DeprecationWarning,
                stacklevel=3,
            )
    if bundle_label_selector is not None and len(bundles) != len(bundle_label_selector):
        raise ValueError(
            f"Invalid bundle label selector {bundle_label_selector}. The length of "
            "`bundle_label_selector` should equal the length of `bundles`."
        )
    if bundle_label_selector is not None:
        _validate_bundle_label_selector(bundle_label_selector)
    if lifetime not in (None, "detached"):
        raise ValueError(
            "Placement group `lifetime` argument must be either `None` or "
            f"'detached'. Got {lifetime}."
        )


def _validate_bundle_label_selector(selectors: Any) -> None:
    """Ray's checks of bundle_label_selector (ValueError each, Ray's messages)."""
    if not isinstance(selectors, list):
        raise ValueError(
            f"Placement group bundle_label_selector must be a list, got {type(selectors)}."
        )
    for selector in selectors:
        if not isinstance(selector, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in selector.items()
        ):
            raise ValueError(
                "Bundle label selector must be a list of string dictionary label selectors. "
                'For example: `[{ray.io/market_type": "spot"}, {"ray.io/accelerator-type": '
                '"A100"}]`.'
            )
        try:
            check_selector(selector, "bundle_label_selector")
        except (TypeError, ValueError) as exc:
            raise ValueError(
                "Invalid label selector provided in bundle_label_selector list. "
                f"Detailed error: '{exc}'"
            ) from None


def placement_group(
    bundles: list[dict[str, float]],
    strategy: str | None = None,
    name: str = "",
    lifetime: str | None = None,
    _soft_target_node_id: str | None = None,
    bundle_label_selector: list[dict[str, str]] | None = None,
    topology_strategy: dict[str, str] | None = None,
) -> PlacementGroup:
    """Reserve `bundles` as a gang, placed by `strategy` (PACK by default); returns at
    once (the group may still be pending: `pg.ready()`, `pg.wait()`)."""
    validate_placement_group(
        bundles, strategy, lifetime, _soft_target_node_id, bundle_label_selector,
        topology_strategy,
    )  # fmt: skip
    for what, value in (
        ("_soft_target_node_id", _soft_target_node_id),
        ("topology_strategy", topology_strategy),
    ):
        if value:
            raise NotImplementedError(
                f"placement_group({what}=...) is not supported by raylite yet (a soft "
                "target node and topology are not placement inputs here; "
                "bundle_label_selector is)."
            )
    cw = _worker()
    pg_id = new_id()
    units = [{k: to_units(v) for k, v in b.items() if v} for b in bundles]
    reply = cw.ask_node(
        P.CreatePlacementGroup(
            pg_id,
            units,
            strategy or "PACK",
            name or "",
            _namespace(),
            lifetime == "detached",
            "",  # the creator: its node manager says who (it knows the connection)
            bytes.fromhex(_runtime().get_job_id()),
            [dict(s) for s in bundle_label_selector or []],
        ),
        CONFIG.request_timeout_s,
    )
    if isinstance(reply, P.Failed):
        raise RaySystemError(f"System error: {reply.reason}")
    if not reply.feasible:
        print(
            f"Warning: the placement group {pg_id.hex()} ({strategy or 'PACK'}, bundles "
            f"{bundles}) cannot be placed on the cluster's nodes as they are: no set of "
            "nodes has the resources. It stays pending until nodes that can hold it join.",
            file=sys.stderr,
            flush=True,
        )
    return PlacementGroup(
        PlacementGroupID(pg_id), [{k: float(v) for k, v in b.items()} for b in bundles]
    )


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Remove the group: its actors and tasks are killed, what waits for it fails, and
    its resources are free when this returns."""
    assert placement_group is not None
    reply = _ask(P.RemovePlacementGroup(placement_group.id.binary()))
    if isinstance(reply, P.Failed):
        raise RaySystemError(reply.reason)


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The group of that name in this job's namespace (ValueError if there is none)."""
    if not placement_group_name:
        raise ValueError("Please supply a non-empty value to get_placement_group")
    reply = _ask(P.GetPlacementGroups(None, placement_group_name, _namespace()))
    rows = reply.rows if isinstance(reply, P.PlacementGroupRows) else []
    if not rows:
        raise ValueError(f"Failed to look up placement group with name: {placement_group_name}")
    return PlacementGroup(PlacementGroupID(rows[0]["pg_id"]))


def _table_row(row: dict[str, Any]) -> dict[str, Any]:
    bundles = _display_bundles(row["bundles"])
    return {
        "placement_group_id": row["pg_id"].hex(),
        "name": row["name"],
        "bundles": dict(enumerate(bundles)),
        "bundles_to_node_id": {int(i): n.hex() for i, n in row["nodes"].items()},
        "strategy": row["strategy"],
        "state": row["state"],
        "stats": {"scheduling_attempt": row["attempts"]},
    }


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict[str, Any]:
    """One group's state (or every group's, by hex id), as Ray's table shows it."""
    if placement_group is not None:
        row = _row(placement_group.id.binary())
        return _table_row(row) if row else {}
    reply = _ask(P.GetPlacementGroups(None, "", ""))
    return {r["pg_id"].hex(): _table_row(r) for r in reply.rows}


def get_current_placement_group() -> PlacementGroup | None:
    """The group the current task or actor runs in; None in a driver or outside one."""
    from ..api import get_runtime_context

    pg_hex = get_runtime_context().get_placement_group_id()
    if pg_hex is None:
        return None
    return PlacementGroup(PlacementGroupID(bytes.fromhex(pg_hex)))


def check_placement_group_index(placement_group: PlacementGroup, bundle_index: int) -> None:
    if placement_group.id.is_nil():
        if bundle_index != -1:
            raise ValueError("If placement group is not set, the value of bundle index must be -1.")
    elif bundle_index >= placement_group.bundle_count or bundle_index < -1:
        raise ValueError(
            f"placement group bundle index {bundle_index} is invalid. Valid placement "
            f"group indexes: 0-{placement_group.bundle_count}"
        )


__all__ = [
    "PlacementGroup",
    "check_placement_group_index",
    "get_current_placement_group",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
]
