"""Objects a node manager's reply fills: the owner's side of `pg.ready()`.

Owns nothing of its own: answer_later makes an entry in the core worker's object
table (objects.py) and, when the reply to its request comes, completes it with a
value or an error, as a task's return would be. Not the request's meaning (the
caller's `value` turns the reply into the value).

    answer_later(msg) ──ObjectRef now──▶ caller
    node manager ──reply──▶ value(reply) ──▶ the entry completed ──▶ get() returns
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import protocol as P
from ..object_ref import ObjectRef, new_id
from ..serialization import dumps_inline, serialize
from .objects import ObjectEntry


class RepliesMixin:
    """CoreWorker's objects filled by a reply; the attributes are the CoreWorker's."""

    lock: Any
    objects: dict[bytes, ObjectEntry]
    address: str
    nm: Any
    _complete: Any
    store_serialized: Any

    def answer_later(self, msg: Any, value: Callable[[Any], Any]) -> ObjectRef:
        """A ref this process owns, whose value is `value(reply)` once the node manager
        answers `msg` (an exception it returns is the error): pg.ready()."""
        oid = new_id()
        with self.lock:
            self.objects[oid] = ObjectEntry()
        # The ref first: a reply that came before it would find no ref and free the value.
        ref = ObjectRef(oid, self.address)

        def answered(reply: Any) -> None:
            result = value(reply)
            if isinstance(result, BaseException):
                self._complete(oid, P.ERROR, dumps_inline(result))
            else:
                self._complete(oid, *self.store_serialized(oid, serialize(result)))

        self.nm.request_async(msg, answered)
        return ref
