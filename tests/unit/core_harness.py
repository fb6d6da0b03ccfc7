"""A core worker built from its tables alone, with stand-ins for its peers.

The in-process harness of the core's state-machine tests (test_core_lifecycles,
test_object_table, test_fail_codes): a CoreWorker made by `_init_tables`, a
recording node manager and workers that the test answers for (grants a lease,
replies to a push). No process, socket or store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from raylite import protocol as P
from raylite.core.core_worker import CoreWorker
from raylite.exceptions import ConnectionLost
from raylite.object_ref import ObjectRef, new_id, set_hooks
from raylite.serialization import dumps_inline

CPU = {"CPU": 10000}
LINGER_S = 3600.0  # the harness's lease linger time


class StandIn:
    """A connection that records what is sent and lets the test answer requests."""

    closed = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[Any] = []
        self.requests: list[tuple[Any, Callable[[Any], None]]] = []
        self.sent_functions: set[bytes] = set()

    def send(self, msg: Any) -> None:
        self.sent.append(msg)

    def request_async(self, msg: Any, callback: Callable[[Any], None]) -> None:
        self.requests.append((msg, callback))

    def take(self, kind: type) -> tuple[Any, Callable[[Any], None]]:
        """The oldest unanswered request of this type."""
        for i, (msg, cb) in enumerate(self.requests):
            if isinstance(msg, kind):
                del self.requests[i]
                return msg, cb
        raise AssertionError(f"no {kind.__name__} was sent; sent: {self.requests}")

    def of_requests(self, kind: type) -> list[Any]:
        """The unanswered requests of this type."""
        return [m for m, _ in self.requests if isinstance(m, kind)]

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.sent if isinstance(m, kind)]


class Harness:
    def __init__(self) -> None:
        cw = CoreWorker.__new__(CoreWorker)
        cw._init_tables(
            mode="driver",
            token=b"t",
            worker_id=None,
            namespace=None,
            log_to_driver=False,
            task_handler=None,
            nm_handler=None,
        )
        cw.address = "unix:/owner.sock"
        cw.node_address = "unix:/node.sock"
        cw.nm = StandIn("node-manager")  # type: ignore[assignment]
        cw.node_tcp, cw.node_id, cw.job_id, cw.node_info = "", b"n" * 16, b"j" * 4, {}
        # A lease stays warm until a test says otherwise (test_lease_linger moves its
        # idle time stamp back): the real timer thread must not give one back because
        # a step of the test took longer than the default 50 ms linger on a slow machine.
        cw.queues.linger_s = LINGER_S
        self.cw = cw
        self.workers = 0

    def grant(self, *, for_actor: bool = False) -> StandIn:
        """Answer the oldest lease request with a new worker; returns that worker."""
        msg, answer = self.cw.nm.take(P.RequestLease)  # type: ignore[attr-defined]
        assert (msg.actor_id is not None) == for_actor
        self.workers += 1
        address = f"unix:/worker-{self.workers}.sock"
        worker = StandIn(address)
        self.cw.peers[address] = worker  # type: ignore[assignment]
        answer(P.LeaseGranted(msg.lease_id, new_id(), address, 1000 + self.workers, []))
        return worker

    def worker_died(self, reply: Callable[[Any], None], oom: str = "") -> None:
        """The pushed task's worker died: its connection is lost, and its node answers
        the owner's question why (`oom`: the memory monitor's message, "" not it)."""
        reply(ConnectionLost("the worker died"))
        _, answer = self.cw.nm.take(P.GetWorkerFailureCause)  # type: ignore[attr-defined]
        answer(P.WorkerFailureCause(oom))

    def answer_causes(self, oom: str = "") -> None:
        """Answer every question the owner asked its node about a dead worker."""
        nm = self.cw.nm
        while nm.of_requests(P.GetWorkerFailureCause):  # type: ignore[attr-defined]
            _, answer = nm.take(P.GetWorkerFailureCause)  # type: ignore[attr-defined]
            answer(P.WorkerFailureCause(oom))

    def submit(
        self, *args: Any, max_retries: int = 1, retry_exceptions: Any = False, strategy: Any = None
    ) -> Any:
        (ref,) = self.cw.submit_task(
            name="f",
            function_id=b"f" * 16,
            function_blob=lambda: b"blob",
            args=args,
            kwargs={},
            num_returns=1,
            shape=CPU,
            max_retries=max_retries,
            retry_exceptions=retry_exceptions,
            strategy=strategy,
        )
        return ref, self.cw.running[ref.id]

    def value(self, ref: ObjectRef) -> tuple[int, Any]:
        entry = self.cw.objects[ref.id]
        return entry.kind, entry.data


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    set_hooks(harness.cw)
    yield harness
    harness.cw.closed = True
    set_hooks(None)
    harness.cw.timers.stop()


def done(push: P.PushTask, value: Any = 42, kind: int = P.INLINE) -> P.TaskDone:
    data = dumps_inline(value) if kind != P.IN_STORE else value
    return P.TaskDone([P.TaskReturn(push.return_ids[0], kind, data, {})], 1001)
