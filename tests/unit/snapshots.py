"""Node and head statistics made by hand, for tests of what is rendered from them."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from raylite.core.lifecycle import ActorState
from raylite.head.statistics import ActorEntry, HeadStatistics, NodeEntry
from raylite.node.statistics import NodeStatistics, SegmentStat, StoreStat, WorkerStat

NODE = b"n" * 16
OTHER = b"o" * 16
CPU = 10_000  # RESOURCE_UNIT: one CPU


def worker(pid: int, state: str = "idle", actor: bytes | None = None, lines: int = 0) -> WorkerStat:
    return WorkerStat(pid.to_bytes(16, "little"), pid, state, f"unix:/w-{pid}", None, actor, lines)


def segment(i: int, size: int, owner: str = "unix:/d-1.sock", spilled: bool = False) -> SegmentStat:
    return SegmentStat(i.to_bytes(16, "little"), size, owner, spilled, 0, 0)


def node_stats(
    workers: tuple[WorkerStat, ...] = (),
    objects: tuple[SegmentStat, ...] | None = None,
    clients: dict[str, int] | None = None,
    **kw: Any,
) -> NodeStatistics:
    fields: dict[str, Any] = {
        "node_id": NODE,
        "address": "unix:/tmp/s/node.sock",
        "tcp_address": "",
        "ip": "127.0.0.1",
        "started_at": 1.0,
        "runs_head": True,
        "total": MappingProxyType({"CPU": 4 * CPU}),
        "available": MappingProxyType({"CPU": 3 * CPU}),
        "pending": (),
        "leases": 1,
        "workers": workers,
        "clients": MappingProxyType(clients or {}),
        "drivers": (),
        "store": StoreStat(100, 1000, 10, len(objects or ()), 1, 0, 0, "/store", "/spill"),
        "objects": objects,
        "task_states": MappingProxyType({"FINISHED": 3}),
        "tasks_recorded": 3,
        "tasks_evicted": 0,
    }
    fields.update(kw)
    return NodeStatistics(**fields)


def node_entry(node_id: bytes = NODE, alive: bool = True, **kw: Any) -> NodeEntry:
    fields: dict[str, Any] = {
        "node_id": node_id,
        "address": "" if node_id == NODE else "tcp:10.0.0.2:6380",
        "ip": "127.0.0.1" if node_id == NODE else "10.0.0.2",
        "total": MappingProxyType({"CPU": 4 * CPU}),
        "available": MappingProxyType({"CPU": 3 * CPU}),
        "alive": alive,
        "is_head": node_id == NODE,
        "cause": "" if alive else "no heartbeat for 3 s",
        "info": MappingProxyType({"hostname": "here" if node_id == NODE else "there"}),
        "pending": (),
    }
    fields.update(kw)
    return NodeEntry(**fields)


def actor(i: int, state: ActorState, class_name: str = "Counter", **kw: Any) -> ActorEntry:
    fields: dict[str, Any] = {
        "actor_id": bytes([i]) * 16,
        "state": state,
        "class_name": class_name,
        "name": None,
        "namespace": None,
        "address": f"unix:/w-{i}",
        "pid": 100 + i,
        "node_id": NODE,
        "restarts": 0,
        "restarts_left": 0,
        "cause": "",
        "detached": False,
    }
    fields.update(kw)
    return ActorEntry(**fields)


def head_stats(
    nodes: tuple[NodeEntry, ...] = (), actors: tuple[ActorEntry, ...] = ()
) -> HeadStatistics:
    nodes = nodes or (node_entry(),)
    return HeadStatistics(
        node_id=NODE,
        address="",
        storage="memory",
        started=1.0,
        jobs=2,
        nodes=nodes,
        actors=actors,
        named_actors=MappingProxyType({}),
        total=MappingProxyType({"CPU": 4 * CPU}),
        available=MappingProxyType({"CPU": 3 * CPU}),
    )
