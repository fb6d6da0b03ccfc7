"""The bundles of placement groups one node holds, as data: its half of the two phases.

Owns the bundles reserved here (`prepared`: by the head's prepare, not yet committed;
`committed`: the group's resources, bundles.py's names, added to the node's) and
fills the book's `removed_groups` (a request for one fails at once, not waits). Works on the
node's LeaseBook: a prepare takes the bundle's resources from `available` (all the
bundles of the request or none), a commit adds the group's names to `total` and
`available`, a cancel or removal takes them back (killing the workers whose leases
hold them, failing the requests that wait for them) and returns the resources.
Pure: events in, lease actions out. Not the group's lifecycle or the choice of nodes
(head/placement_groups.py), not the messages (leases.py runs the actions).

    PrepareBundles ──prepare──▶ available -= bundles          (or no, nothing taken)
    CommitBundles ──commit──▶ total, available += group names ──▶ waiting leases granted
    CancelBundles ──cancel──▶ group names gone (KillWorker, Reject PG_REMOVED),
                              available += bundles
"""

from __future__ import annotations

from .. import bundles as B
from ..config import RESOURCE_UNIT
from ..protocol import FailCode
from ..transitions import transition
from .lease_book import (
    FAILED,
    LEASE_TRANSITIONS,
    REVOKED,
    KillWorker,
    LeaseAction,
    LeaseBook,
    Reject,
)


class BundleBook:
    """The bundles of one node; see the module docstring."""

    def __init__(self, book: LeaseBook) -> None:
        self.book = book
        self.prepared: dict[tuple[bytes, int], tuple[int, dict[str, int], list[int]]] = {}
        self.committed: dict[tuple[bytes, int], tuple[dict[str, int], list[int]]] = {}

    def prepare(self, pg_id: bytes, attempt: int, bundles: dict[int, dict[str, int]]) -> bool:
        """Reserve every bundle, or none (False: the room is gone since the head looked)."""
        book = self.book
        done: list[tuple[int, dict[str, int], list[int]]] = []
        for index, shape in bundles.items():
            if (pg_id, index) in self.committed or not book.fits_now(shape):
                for i, s, gpus in done:
                    book.give_back(s, gpus)
                    del self.prepared[(pg_id, i)]
                return False
            gpus = book._acquire(shape)
            self.prepared[(pg_id, index)] = (attempt, shape, gpus)
            done.append((index, shape, gpus))
        return True

    def commit(self, pg_id: bytes, indices: list[int]) -> list[LeaseAction]:
        """The group's bundles here become its resources: waiting leases may run."""
        book = self.book
        adds: dict[int, dict[str, int]] = {}
        for index in indices:
            entry = self.prepared.pop((pg_id, index), None)
            if entry is None:
                continue
            _, shape, gpus = entry
            self.committed[(pg_id, index)] = (shape, gpus)
            adds[index] = shape
        pg_hex = pg_id.hex()
        names = B.node_resources(adds, pg_hex)
        for k, v in names.items():
            book.total[k] = book.total.get(k, 0) + v
            book.available[k] = book.available.get(k, 0) + v
        for index, shape in adds.items():  # its GPU ids, for the tasks placed in it
            gpus = self.committed[(pg_id, index)][1]
            if gpus:
                units = shape.get("GPU", 0)
                share = units if units < RESOURCE_UNIT else RESOURCE_UNIT
                book.group_gpus[f"{B.GPU_GROUP}{index}_{pg_hex}"] = dict.fromkeys(gpus, share)
        return book.schedule()

    def cancel(
        self, pg_id: bytes, indices: list[int], attempt: int, removed: bool
    ) -> list[LeaseAction]:
        """Give back bundles: a prepare's (attempt), committed ones (indices), or all
        of a removed group's, whose leases and requests end here too."""
        book = self.book
        actions: list[LeaseAction] = []
        for (pg, index), (att, shape, gpus) in list(self.prepared.items()):
            if pg == pg_id and (removed or (attempt and att == attempt)):
                del self.prepared[(pg, index)]
                book.give_back(shape, gpus)
        drop = {
            index
            for (pg, index) in self.committed
            if pg == pg_id and (removed or (not attempt and index in indices))
        }
        pg_hex = pg_id.hex()
        if removed:
            book.removed_groups[pg_hex] = None
            if len(book.removed_groups) > KEEP_REMOVED:
                del book.removed_groups[next(iter(book.removed_groups))]
        if drop:
            gone = B.node_resources({i: self.committed[(pg_id, i)][0] for i in drop}, pg_hex)
            actions.extend(self._end_users(gone, removed))
            for k, v in gone.items():
                left = book.total.get(k, 0) - v
                book.available[k] = book.available.get(k, 0) - v
                if left <= 0:
                    book.total.pop(k, None)
                    book.available.pop(k, None)
                else:
                    book.total[k] = left
            for i in drop:
                shape, gpus = self.committed.pop((pg_id, i))
                book.group_gpus.pop(f"{B.GPU_GROUP}{i}_{pg_hex}", None)
                book.give_back(shape, gpus)
        if removed:
            actions.extend(self._fail_waiting(pg_hex))
        actions.extend(book.schedule())
        return actions

    def _end_users(self, gone: dict[str, int], removed: bool) -> list[LeaseAction]:
        """The leases that hold resources that go end now (REVOKED) and their workers
        are killed, as Ray kills a group's actors and tasks when it is removed: what
        they held goes with the group's names, so their deaths give nothing back."""
        book = self.book
        actions: list[LeaseAction] = []
        for lease in list(book.leases.values()):
            worker = lease.worker
            if worker is None or not any(k in gone for k in lease.shape):
                continue
            del book.leases[lease.lease_id]
            transition(lease, REVOKED, LEASE_TRANSITIONS, cause="its bundle is gone",
                       who=lease.lease_id)  # fmt: skip
            worker.lease_id = None
            rest = {k: v for k, v in book.held_now(lease).items() if k not in gone}
            if rest:
                book.give_back(rest, lease.gpu_ids)
            actions.append(KillWorker(worker))
        return actions

    def _fail_waiting(self, pg_hex: str) -> list[LeaseAction]:
        book = self.book
        actions: list[LeaseAction] = []
        still = []
        for lease in book.pending:
            if B.group_of(lease.shape) == pg_hex:
                transition(lease, FAILED, LEASE_TRANSITIONS, cause="group removed",
                           who=lease.lease_id)  # fmt: skip
                actions.append(Reject(lease, FailCode.PG_REMOVED, _REMOVED))
            else:
                still.append(lease)
        book.pending = still
        return actions


KEEP_REMOVED = 10_000  # removed groups a request for fails at once (older ones: it waits)
_REMOVED = "The placement group corresponding to this task has been removed."
