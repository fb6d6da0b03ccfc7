"""Wire messages of the cluster-wide services: runtime environments (packages, eager
builds; runtime_env/) and placement groups (head/pg_service.py, node/bundle_book.py).
Registered with the codec like every message (protocol._msg) and re-exported by
protocol.py, so `P.CreatePlacementGroup` works as for the core messages; apart because
protocol.py holds the core's (leases, tasks, objects, the head's tables).
"""

from __future__ import annotations

from typing import Any

from .codec import _msg


# --- runtime environments (runtime_env/): packages and eager builds -------------------
# Tags 140-149.
@_msg(140)
class UploadPackage:
    """Driver -> its node manager (request, Ok), and a node manager -> the head: keep
    this package (working_dir, py_modules) under its content-addressed `uri`, so any
    node can unpack it; sent once per URI per driver."""

    uri: str
    data: bytes


@_msg(141)
class FetchPackage:
    """Node manager -> the head (request): the bytes of a package (PackageData), or
    Failed NOT_FOUND."""

    uri: str


@_msg(142)
class PackageData:
    data: bytes


@_msg(143)
class PrepareRuntimeEnv:
    """Driver -> its node manager, one-way: build this env now (the job's env with
    config.eager_install), so its first task does not wait for it."""

    runtime_env: dict[str, Any]


# --- placement groups (head/pg_service.py; node/bundle_book.py reserves) ---------------
# Tags 130-139. Bundles are in resource units; a group's id is 16 bytes.
@_msg(130)
class CreatePlacementGroup:
    """Driver or worker -> head (through its node): a new group; answered
    PlacementGroupCreated, or Failed(BAD_REQUEST) when its name is taken."""

    pg_id: bytes
    bundles: list[dict[str, int]]
    strategy: str  # PACK | SPREAD | STRICT_PACK | STRICT_SPREAD
    name: str
    namespace: str
    detached: bool
    # The creator's address, set by its node for a driver or a detached actor's worker:
    # the group goes with that process (unless detached); else ("") with its job.
    owner: str
    job_id: bytes = b""
    # Ray's bundle_label_selector: one selector per bundle ([]: none), labels.py's syntax.
    bundle_label_selector: list[dict[str, str]] = []


@_msg(131)
class RemovePlacementGroup:
    """-> head: remove the group; its bundles are freed on every node before the Ok."""

    pg_id: bytes


@_msg(132)
class WaitPlacementGroup:
    """-> head: answered PlacementGroupReady once the group is created, or at the
    timeout (ready False); Failed(NOT_FOUND) if it is removed or unknown."""

    pg_id: bytes
    timeout_s: float


@_msg(133)
class PlacementGroupReady:
    ready: bool


@_msg(134)
class GetPlacementGroups:
    """-> head: the rows of one group (pg_id), of a name in a namespace, or all."""

    pg_id: bytes | None
    name: str
    namespace: str


@_msg(135)
class PlacementGroupRows:
    rows: list[dict[str, Any]]  # PGRec.row() each


@_msg(136)
class PrepareBundles:
    """Head -> node: reserve these bundles (index -> shape), all or none; Ok or Failed."""

    pg_id: bytes
    attempt: int
    bundles: dict[int, dict[str, int]]


@_msg(137)
class CommitBundles:
    """Head -> node: the prepared bundles become the group's resources there."""

    pg_id: bytes
    indices: list[int]


@_msg(138)
class CancelBundles:
    """Head -> node: give back the bundles of prepare `attempt`, or (attempt 0) the
    committed `indices`; `removed`: the whole group is gone (every node: fail what
    waits for it, kill what runs in it)."""

    pg_id: bytes
    indices: list[int]
    attempt: int
    removed: bool


@_msg(139)
class PlacementGroupCreated:
    """The head's answer to CreatePlacementGroup: `feasible` False when no set of the
    cluster's nodes can ever hold it (the creator warns; it stays pending)."""

    feasible: bool


# --- the node's memory monitor (node/memory_monitor.py) ---------------------------------
# Tags 150-151.
@_msg(150)
class GetWorkerFailureCause:
    """Owner -> the node manager of a worker that died while running its task (request,
    answered WorkerFailureCause): was it killed by the memory monitor? Ray's
    GetWorkerFailureCause: asked only when a worker is lost, never on the way of a task."""

    worker_id: bytes


@_msg(151)
class WorkerFailureCause:
    """`oom_message`: the node's OutOfMemoryError text if its memory monitor killed the
    worker (memory_policy.oom_message), else ""."""

    oom_message: str = ""


__all__ = [
    "CancelBundles",
    "CommitBundles",
    "CreatePlacementGroup",
    "FetchPackage",
    "GetPlacementGroups",
    "GetWorkerFailureCause",
    "PackageData",
    "PlacementGroupCreated",
    "PlacementGroupReady",
    "PlacementGroupRows",
    "PrepareBundles",
    "PrepareRuntimeEnv",
    "RemovePlacementGroup",
    "UploadPackage",
    "WaitPlacementGroup",
    "WorkerFailureCause",
]
