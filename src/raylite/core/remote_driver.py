"""A driver on a machine with no raylite node: `init(address="raylite://HOST:PORT")`.

Owns how such a driver attaches to a cluster (asks the head at HOST:PORT for its
nodes, registers with the one on the head's machine over TCP), its objects' bytes
(streamed to that node's store in PushChunk frames, pulled from the holding node into
this process's memory) and the shipping of its code (its local modules are pickled by
value). Not ownership, leases or actors: a RemoteCoreWorker is a CoreWorker, whose
listener is TCP on the address the cluster reaches this machine at, so workers call
it back as they call any owner.

    driver ──GetClusterInfo──▶ head (HOST:PORT)  ──nodes──▶ driver
    driver ──RegisterClient, leases, PushObject + PushChunk...──▶ node (TCP)
    driver ──PullObject, own connection──▶ node holding an object ──raw bytes──▶ memfd
    workers ──GetObject, AddBorrower, ...──▶ driver's TCP listener

Only drivers that connect this way load this module: a local driver's paths are
CoreWorker's, unchanged.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import socket
import sys
import sysconfig
from typing import Any

from .. import protocol as P
from .. import serialization
from ..config import CONFIG
from ..exceptions import ConnectionLost, ObjectLostError, ObjectStoreFullError, RaySystemError
from ..object_store import Mappings, load_segment, segment_pieces
from ..transport import Connection, receive_stream
from .core_worker import CoreWorker

PUSH_CHUNK = 4 << 20  # bytes per PushChunk frame: the node writes each as it comes


class _NoStore:
    """Stands for the ObjectStore a local process maps: a remote driver has none (its
    objects' bytes go through RemoteCoreWorker's store_serialized and _value)."""

    on_spilled_read: Any = None
    on_mapped: Any = None
    on_unmapped: Any = None

    def contains(self, object_id: bytes) -> bool:
        return False

    def mapped(self, object_id: bytes) -> bool:
        return False

    def map_here(self, object_id: bytes) -> None:
        return None  # nothing is here: a borrowed ref's value comes from its owner

    def get(self, object_id: bytes) -> Any:
        raise RaySystemError("a remote driver has no object store on its machine")

    def tidy(self) -> None:
        pass

    def close(self) -> None:
        pass


class RemoteCoreWorker(CoreWorker):
    """A driver's core worker whose node runs on another machine."""

    def __init__(
        self,
        *,
        node_address: str,
        token: bytes,
        listen_ip: str,
        log_to_driver: bool = True,
        namespace: str | None = None,
    ) -> None:
        super().__init__(
            mode="driver",
            node_address=node_address,
            token=token,
            session_dir="",
            log_to_driver=log_to_driver,
            namespace=namespace,
            listen_ip=listen_ip,
        )
        self.store.close()
        self.store = _NoStore()  # type: ignore[assignment]
        # Pulled objects, one private copy each while any view of it lives.
        self.pulled = Mappings()
        ship_local_modules()
        serialization.before_dumps_function = ship_local_modules

    def serialize_collecting(self, fn: Any, value: Any) -> Any:
        """Arguments and put values: a class of a module imported since the last look
        travels by value too (a count of sys.modules tells when to look again)."""
        if len(sys.modules) != _seen[0]:
            ship_local_modules()
        return super().serialize_collecting(fn, value)

    def store_serialized(
        self, oid: bytes, sv: Any, own: bool = False, owner: str = ""
    ) -> tuple[int, Any]:
        """Small values inline, as anywhere; a large one is streamed to the node's store
        in PUSH_CHUNK frames (never one message, never through the head). `own`: no
        matter here (no store of this process's own to read it from). `owner`: whose it
        is, if not this process's."""
        if sv.size <= CONFIG.inline_threshold:
            return P.INLINE, sv.inline()
        total, pieces = segment_pieces(sv)
        reply = self.nm.request(P.PushObject(oid, total, owner or self.address), timeout=None)
        if isinstance(reply, P.Failed):
            if reply.code == P.FailCode.STORE_FULL:
                raise ObjectStoreFullError(reply.reason)
            raise RaySystemError(f"the node could not take the object: {reply.reason}")
        chunks = [
            (offset + start, view[start : start + PUSH_CHUNK])
            for offset, view in pieces
            for start in range(0, view.nbytes, PUSH_CHUNK)
        ]
        for offset, data in chunks[:-1]:
            self.nm.send(P.PushChunk(oid, offset, data, False))  # type: ignore[arg-type]
        offset, data = chunks[-1]
        reply = self.nm.request(P.PushChunk(oid, offset, data, True), timeout=None)  # type: ignore[arg-type]
        if isinstance(reply, P.Failed):
            raise RaySystemError(f"the node could not store the object: {reply.reason}")
        return P.IN_STORE, P.StoredAt(total, self.node_tcp)

    def _value(self, oid: bytes, kind: int, data: Any) -> Any:
        if kind == P.IN_STORE:
            return self._pull(oid, data)
        return super()._value(oid, kind, data)

    def _pull(self, oid: bytes, data: P.StoredAt) -> Any:
        """An object's bytes from the node that holds it, into memory of this process
        (a memfd, mapped read-only as a node's segments are: zero-copy views on it).
        Pulled once while any view of it lives: a second get reads the same copy."""
        mm = self.pulled.lookup(oid)
        if mm is None:
            mm = self.pulled.add(oid, self._pull_copy(oid, data))
        return load_segment(oid, mm)

    def _pull_copy(self, oid: bytes, data: P.StoredAt) -> mmap.mmap:
        holder = data.node or self.node_tcp
        fd = _anonymous_file()
        try:
            try:
                answer = receive_stream(
                    holder, self.token, P.PullObject(oid, ""), fd, CONFIG.node_timeout_s
                )
            except (OSError, RaySystemError) as exc:
                raise ObjectLostError(
                    oid.hex(),
                    f"Object {oid.hex()} is lost: it could not be read from {holder}: {exc}",
                ) from exc
            if not isinstance(answer, P.ObjectStream):
                reason = getattr(answer, "reason", type(answer).__name__)
                raise ObjectLostError(
                    oid.hex(),
                    f"Object {oid.hex()} is lost: it could not be read from {holder} ({reason}).",
                )
            return mmap.mmap(fd, max(answer.size, 1), access=mmap.ACCESS_READ)
        finally:
            os.close(fd)

    def shutdown(self) -> None:
        if serialization.before_dumps_function is ship_local_modules:
            serialization.before_dumps_function = None
        super().shutdown()


def _anonymous_file() -> int:
    """A file in memory with no name: a memfd on Linux, else an unlinked temp file."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("raylite-object", os.MFD_CLOEXEC)
    import tempfile

    fd, path = tempfile.mkstemp(prefix="raylite-object-")
    os.unlink(path)
    return fd


# --- attaching -----------------------------------------------------------------------
def connect_remote(
    head: str, token: bytes, log_to_driver: bool, namespace: str | None
) -> RemoteCoreWorker:
    """A driver of the cluster whose head is at `head` (tcp:HOST:PORT), attached to the
    node on the head's machine (else any live node) over TCP. A --tls cluster: first a
    certificate for a key made here (tls.py)."""
    _enrol_if_tls(head, token)
    node = attach_address(head, token)
    host = node[4:].rpartition(":")[0]
    return RemoteCoreWorker(
        node_address=node,
        token=token,
        listen_ip=route_ip(host),
        log_to_driver=log_to_driver,
        namespace=namespace,
    )


def _enrol_if_tls(head: str, token: bytes) -> None:
    """TLS from now on if the head speaks it (RAYLITE_TLS=1: it must). The key and the
    certificate live in a private temp dir until the SSL contexts have read them."""
    import shutil

    from .. import tls

    tls_dir = tls.remote_dir()
    try:
        tls.join(head, token, tls_dir, require=os.environ.get("RAYLITE_TLS") == "1")
    except ConnectionLost as exc:
        raise ConnectionError(f"Could not connect to the cluster at {head[4:]}: {exc}") from exc
    finally:
        shutil.rmtree(tls_dir, ignore_errors=True)


def attach_address(head: str, token: bytes) -> str:
    """The TCP address of the node a remote driver attaches to. A wrong token is
    refused here: "the cluster at HOST:PORT refused the token; check RAYLITE_TOKEN"."""
    try:
        conn = Connection.connect(head, token, _ignore, name="head", cluster=True)
    except ConnectionLost as exc:  # as Ray says it: a ConnectionError
        raise ConnectionError(
            f"Could not connect to the cluster at {head[4:]}: {exc}. Is its head running "
            "(`raylite start --head`), and is the address its head's HOST:PORT?"
        ) from exc
    try:
        info = conn.request(P.GetClusterInfo(), timeout=CONFIG.request_timeout_s)
    finally:
        conn.close()
    if isinstance(info, P.Failed):
        raise ConnectionError(f"the cluster at {head[4:]} did not answer: {info.reason}")
    nodes = [
        n
        for n in info.nodes
        if n.get("Alive") and str(n.get("RayletSocketName", "")).startswith("tcp:")
    ]
    if not nodes:
        raise ConnectionError(
            f"the cluster at {head[4:]} has no live node to run a driver's work: start "
            "one (`raylite start --address=HOST:PORT`) and connect again."
        )
    host = head[4:].rpartition(":")[0]
    with contextlib.suppress(OSError):
        host = socket.gethostbyname(host)
    same = [n for n in nodes if n.get("NodeManagerAddress") == host]
    return str((same or nodes)[0]["RayletSocketName"])


def _ignore(conn: Connection, msg: Any, rid: int) -> None:
    pass


def route_ip(host: str) -> str:
    """This machine's address on the route to `host`: where the cluster reaches it."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, 9))  # UDP: nothing is sent, the kernel only picks the route
        return str(s.getsockname()[0])
    return "127.0.0.1"


# --- the driver's code ---------------------------------------------------------------
# cloudpickle pickles functions and classes of __main__ by value, and those of any other
# module by reference: a worker imports the module. The driver's own modules (files
# beside its script or under its working directory, not installed packages) are not on
# the cluster's machines, so they are registered to travel by value too. Installed
# packages must be installed on the cluster (or given with a runtime_env).
_checked: set[str] = set()
_seen = [0]  # len(sys.modules) at the last look


def _install_dirs() -> list[str]:
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        with contextlib.suppress(KeyError):
            dirs.add(sysconfig.get_paths()[key])
    dirs.add(os.path.dirname(os.path.dirname(serialization.__file__)))  # raylite's own
    return [os.path.realpath(d) + os.sep for d in dirs if d]


def _driver_roots() -> list[str]:
    roots = {os.getcwd()}
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file:
        roots.add(os.path.dirname(os.path.abspath(main_file)))
    return [os.path.realpath(r) + os.sep for r in roots if os.path.realpath(r) != os.sep]


def local_module_names() -> list[str]:
    """The top-level names of the driver's own modules imported so far (not seen
    before): files under its script's directory or working directory, outside any
    installation (the interpreter's, site-packages, raylite)."""
    _seen[0] = len(sys.modules)
    roots = _driver_roots()
    installed = _install_dirs()
    found = []
    for name, module in list(sys.modules.items()):
        if name in _checked:
            continue
        _checked.add(name)
        top = name.partition(".")[0]
        if top in ("__main__", "__mp_main__", "raylite") or module is None:
            continue
        path = getattr(module, "__file__", None)
        if not path:
            continue
        path = os.path.realpath(path)
        if any(path.startswith(d) for d in installed):
            continue
        if any(path.startswith(r) for r in roots):
            found.append(top if top in sys.modules else name)
    return sorted(set(found))


def ship_local_modules() -> None:
    """Register the driver's own modules for pickling by value (cloudpickle); at once
    when no module was imported since the last look."""
    if len(sys.modules) == _seen[0]:
        return
    import cloudpickle

    for name in local_module_names():
        module = sys.modules.get(name)
        if module is not None:
            with contextlib.suppress(ValueError):
                cloudpickle.register_pickle_by_value(module)
