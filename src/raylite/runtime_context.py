"""What `get_runtime_context()` returns (Ray's `ray.runtime_context`): the ids of the
current job, task, actor, node and worker, the actor's name and handle, the assigned
resources and accelerators, the placement group, the namespace. Owns RuntimeContext, a
view of the live core worker it is given; not the worker, not `get_runtime_context`
(api.py, which finds the worker).
"""

from __future__ import annotations

import json
from typing import Any

from .actors import ActorHandle
from .config import CONFIG, from_units
from .core.core_worker import CoreWorker
from .object_ref import ActorID, JobID, NodeID, TaskID, WorkerID

# Ray 2.60's accelerator kinds besides GPU (get_accelerator_ids() keys).
_OTHER_ACCELERATORS = ("TPU", "neuron_cores", "HPU", "NPU", "RBLN", "FURIOSA", "MBLT", "TTNPU")


class RuntimeContext:
    """What `get_runtime_context()` returns: ids of the current job, task, actor, node."""

    def __init__(self, cw: CoreWorker) -> None:
        self._cw = cw

    def get_job_id(self) -> str:
        return self._cw.job_id.hex()

    @property
    def job_id(self) -> JobID:
        return JobID(self._cw.job_id)

    def get_task_id(self) -> str | None:
        t = self._cw.current_task_id
        return t.hex() if t is not None else None

    @property
    def task_id(self) -> TaskID | None:
        t = self._cw.current_task_id
        return TaskID(t) if t is not None else None

    def get_task_name(self) -> str | None:
        """The running task's name (its .options(name=...) if given); None in a driver."""
        if self._cw.current_task_id is None:
            return None
        return self._cw.current_task_name

    def get_actor_id(self) -> str | None:
        a = self._cw.current_actor_id
        return a.hex() if a is not None else None

    @property
    def actor_id(self) -> ActorID | None:
        a = self._cw.current_actor_id
        return ActorID(a) if a is not None else None

    def get_node_id(self) -> str:
        return self._cw.node_id.hex()

    def get_runtime_env_string(self) -> str:
        """The runtime env this process's tasks run in (JSON; packages as URIs)."""
        return json.dumps(self._cw.parent_runtime_env or {})

    @property
    def runtime_env(self) -> dict[str, Any]:
        return dict(self._cw.parent_runtime_env or {})

    def get_node_labels(self) -> dict[str, str]:
        """The labels of the node this process runs on (ray.io/node-id and the user's)."""
        node = self._cw.node_id.hex()
        for n in self._cw.cluster_info().nodes:
            if n["NodeID"] == node:
                return dict(n.get("Labels") or {})
        return {}

    @property
    def node_id(self) -> NodeID:
        return NodeID(self._cw.node_id)

    def get_worker_id(self) -> str:
        return self._cw.worker_id.hex()

    @property
    def worker_id(self) -> WorkerID:
        return WorkerID(self._cw.worker_id)

    @property
    def namespace(self) -> str:
        """The job's namespace; without one given to init(), its anonymous one (as Ray)."""
        return self._cw.default_namespace()

    def get_placement_group_id(self) -> str | None:
        """The placement group (hex id) the current task or actor runs in, or None."""
        pg = self._cw.placement_group
        return pg[0].hex() if pg is not None else None

    def get_actor_name(self) -> str | None:
        """The actor's name ("" if it has none); None outside an actor."""
        if self._cw.current_actor_id is None:
            return None
        return self._cw.actor_options.get("name") or ""

    @property
    def current_actor(self) -> Any:
        """A handle to the actor this runs in."""
        cw = self._cw
        if cw.current_actor_id is None:
            raise RuntimeError("This method is only available in an actor.")
        from .actors import _method_table

        cls = type(cw.actor_instance)
        return ActorHandle(
            cw.current_actor_id,
            cls.__name__,
            _method_table(cls),
            cw.address,
            cw.actor_options.get("max_task_retries") or 0,
        )

    @property
    def was_current_actor_reconstructed(self) -> bool:
        """Whether this actor has been restarted (this is not its first life)."""
        if self._cw.current_actor_id is None:
            raise AssertionError("This method should't be called inside Ray tasks.")
        return bool(self._cw.actor_options.get("reconstructed"))

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        """The visible accelerator ids by kind, as Ray 2.60 lists them: raylite assigns
        GPUs only; the other kinds are listed, empty."""
        ids: dict[str, list[str]] = {kind: [] for kind in _OTHER_ACCELERATORS}
        ids["GPU"] = [str(g) for g in self._cw.current_gpu_ids]
        return ids

    def get_assigned_resources(self) -> dict[str, float]:
        """The resources reserved for this worker: its task's or actor's (an actor's
        default is {}, a task's {"CPU": 1.0}). Asks the node manager."""
        from . import protocol as P

        cw = self._cw
        if cw.mode != "worker":
            raise RuntimeError("This method is only available when the process is a worker.")
        reply = cw.nm.request(
            P.GetAssignedResources(cw.worker_id), timeout=CONFIG.request_timeout_s
        )
        return {k: from_units(v) for k, v in reply.shape.items()}

    def is_canceled(self) -> bool:
        """Whether raylite.cancel() was called on the running task or actor call."""
        cw = self._cw
        if cw.mode != "worker":
            raise RuntimeError("This method is only available when the process is a worker.")
        if cw.actor_is_async:
            raise RuntimeError("This method is not supported in an async actor.")
        return cw.current_task_id in cw.cancelled_tasks

    def get(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "node_id": self.node_id,
            "task_id": self.task_id,
            "actor_id": self.actor_id,
            "namespace": self.namespace,
        }
