"""One rank's membership of a collective group: its connections to every peer and the
executor that runs a schedule (algorithms.py) over them.

Owns the sockets between the group's worker processes, the rendezvous that finds them,
and the group's broken/destroyed state; not the schedules (algorithms.py) nor the
API's argument checks (collective.py).

    rank r --register(rank, addresses)--> named actor raylite_collective_<group>
    rank r <--every rank's addresses------ (async; one "round" per (re-)creation)
    rank r --dial ranks < r (handshake, group key + r)-------> peers   (unix socket on
    rank r <--accepted from ranks > r-------------------------- peers    one node, TCP
                                                                          across nodes)
Then the listeners close: a group is a full mesh of sockets, one per pair, and its
data moves between the workers only, never through the driver or the object store.
Where every rank is on this node, the group also holds a ShmArea (shm.py): a large
allreduce then moves its bytes through shared memory, and the sockets order its steps.

Each message is a 16-byte header (op, dtype, byte count), checked by the receiver,
then the array's bytes. An error (a peer gone, no progress within the timeout,
mismatched arrays) breaks the group: its sockets close, so the peers fail at once
instead of waiting out their timeout, and every later call says the group is broken
until it is destroyed and made again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import selectors
import socket
import struct
import tempfile
import threading
import time
import uuid
import zlib
from typing import Any

import numpy as np

from ... import transport
from ...core import context
from ...exceptions import AuthenticationError, ConnectionLost
from ...transport import client_handshake, server_handshake
from .algorithms import Schedule
from .shm import ShmArea
from .types import CollectiveError, CollectiveTimeoutError, MismatchError, PeerGoneError

OPS = ("allreduce", "reduce", "broadcast", "allgather", "reducescatter", "barrier",
       "send/recv", "gather", "scatter", "alltoall")  # fmt: skip
_HEADER = struct.Struct("<BxxxIQ")  # op code, crc32 of dtype.str, payload bytes
_HELLO = struct.Struct("<16sI")  # group key, the dialler's rank
_ACK = b"\x01"
_BUFFER = 4 << 20  # socket buffers: a ring step's chunk moves in few system calls


def rendezvous_name(group_name: str) -> str:
    return f"raylite_collective_{group_name}"


class _Rendezvous:
    """Addresses of a group's ranks, by round: a round is one creation of the group;
    a rank that registers again (after destroy) joins the next round it is not in."""

    def __init__(self) -> None:
        import asyncio

        self.rounds: list[tuple[int, dict[int, Any]]] = []
        self.changed = asyncio.Condition()

    async def register(self, rank: int, world_size: int, info: dict[str, Any]) -> int:
        index = next(
            (i for i, (size, m) in enumerate(self.rounds) if rank not in m and len(m) < size),
            len(self.rounds),
        )
        if index == len(self.rounds):
            self.rounds.append((world_size, {}))
        size, members = self.rounds[index]
        if size != world_size:
            raise ValueError(
                f"rank {rank} says the group has world_size {world_size}, but ranks "
                f"{sorted(members)} said {size}: every rank must pass the same"
            )
        members[rank] = info
        async with self.changed:
            self.changed.notify_all()
        return index

    async def table(self, index: int, wait_s: float) -> tuple[list[Any] | None, list[int]]:
        """Every rank's info in rank order once all have registered; else after
        `wait_s` (None, the ranks that have)."""
        import asyncio

        size, members = self.rounds[index]
        async with self.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait_for(lambda: len(members) == size), wait_s)
        if len(members) < size:
            return None, sorted(members)
        return [members[r] for r in range(size)], []


_rendezvous_class: Any = None


def _rendezvous_actor(group_name: str) -> Any:
    global _rendezvous_class
    import raylite

    if _rendezvous_class is None:
        _rendezvous_class = raylite.remote(_Rendezvous)
    # Not detached: it goes with the rank that made it (or its job), as a group does.
    return _rendezvous_class.options(
        name=rendezvous_name(group_name), get_if_exists=True, num_cpus=0
    ).remote()


def _meet(
    group_name: str, rank: int, world_size: int, info: dict[str, Any], wait: float
) -> tuple[Any, int, list[Any] | None, list[int]]:
    """Register with the rendezvous actor and wait for the round's table: (the actor,
    kept alive by this handle if this rank made it; the round; the table or None; the
    ranks present)."""
    import raylite

    for attempt in range(3):
        rdv = _rendezvous_actor(group_name)
        try:
            index = raylite.get(rdv.register.remote(rank, world_size, info))
            table, present = raylite.get(rdv.table.remote(index, wait), timeout=wait + 30)
            return rdv, index, table, present
        except raylite.exceptions.RayActorError:
            # It was ending (the rank that made it is done with it) as we found it: the
            # ranks that met there meet again in a new one.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class Group:
    """This process's rank in one group: a socket to each peer (see the module doc)."""

    def __init__(
        self, world_size: int, rank: int, group_name: str, timeout_s: float, backend: str
    ) -> None:
        self.world_size = world_size
        self.rank = rank
        self.group_name = group_name
        self.backend = backend
        self.timeout_s = timeout_s
        self.peers: dict[int, socket.socket] = {}
        self.broken: str | None = None
        self._dtype = np.dtype(np.uint8)  # of the op running: its headers' check
        # Every rank on this node: large allreduces go through shared memory (shm.py).
        self.shm: ShmArea | None = None
        self._lock = threading.Lock()  # one op at a time (threaded actors)
        if world_size > 1:
            self._connect()

    # --- making the mesh -----------------------------------------------------------
    def _connect(self) -> None:
        import raylite

        from ..cluster_info import get_node_ip_address

        cw: Any = context.global_worker()
        token: bytes = cw.token
        node_id = raylite.get_runtime_context().get_node_id()
        # A --tls cluster: ranks on other nodes speak TLS (the cluster's certificates,
        # both ways), ranks on this node meet on unix sockets.
        listeners = [socket.create_server((get_node_ip_address(), 0), backlog=self.world_size)]
        base = os.path.dirname(cw.address[5:]) if cw.address.startswith("unix:") else None
        unix_path = os.path.join(base or tempfile.gettempdir(), f"c-{uuid.uuid4().hex[:12]}.sock")
        try:
            ux = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            ux.bind(unix_path)
            ux.listen(self.world_size)
            listeners.append(ux)
        except OSError:  # a path too long or a read-only dir: TCP serves the node too
            ux.close()
            unix_path = ""
        try:
            tcp = listeners[0].getsockname()[:2]
            info = {"node": node_id, "tcp": tcp, "unix": unix_path}
            wait = self.timeout_s
            keep_alive, index, table, present = _meet(
                self.group_name, self.rank, self.world_size, info, wait
            )
            if table is None:
                missing = sorted(set(range(self.world_size)) - set(present))
                raise CollectiveTimeoutError(
                    f"collective group '{self.group_name}': ranks {missing} did not join "
                    f"within {wait:g} s (ranks {present} did); start every rank, or pass a "
                    f"longer gloo_timeout"
                )
            if all(t["node"] == node_id for t in table):
                self.shm = ShmArea()
            key = hashlib.blake2b(f"{self.group_name}/{index}".encode(), digest_size=16).digest()
            deadline = time.monotonic() + wait
            for peer in range(self.rank):
                self.peers[peer] = self._dial(table[peer], node_id, token, key, deadline)
            self._accept(listeners, token, key, deadline)
            del keep_alive  # every rank has the table now (it reached us): the actor may go
        except BaseException:
            self.close()
            raise
        finally:
            for sock in listeners:
                sock.close()
            if unix_path:
                with contextlib.suppress(OSError):
                    os.unlink(unix_path)

    def _dial(
        self, info: dict[str, Any], node_id: str, token: bytes, key: bytes, deadline: float
    ) -> socket.socket:
        if info["node"] == node_id and info["unix"]:
            family, addr = socket.AF_UNIX, info["unix"]
        else:
            family, addr = socket.AF_INET, tuple(info["tcp"])
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.1))
            sock.connect(addr)
            sock = _tls(sock, server_side=False)
            # The cluster's challenge and response (transport.py), then the group's hello.
            client_handshake(sock, token, f"{addr}", cluster=False)
            sock.sendall(_HELLO.pack(key, self.rank))
            if sock.recv(1) != _ACK:
                raise PeerGoneError(
                    f"a peer of collective group '{self.group_name}' at {addr} refused us"
                )
        except (OSError, ConnectionLost, AuthenticationError) as exc:
            sock.close()
            raise PeerGoneError(
                f"cannot reach a peer of collective group '{self.group_name}' at {addr}: {exc}"
            ) from exc
        return self._tune(sock)

    def _accept(
        self, listeners: list[socket.socket], token: bytes, key: bytes, deadline: float
    ) -> None:
        want = set(range(self.rank + 1, self.world_size))
        with selectors.DefaultSelector() as sel:
            for sock in listeners:
                sel.register(sock, selectors.EVENT_READ)
            while want:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CollectiveTimeoutError(
                        f"collective group '{self.group_name}': ranks {sorted(want)} did not "
                        f"connect to rank {self.rank} in time"
                    )
                for k, _ in sel.select(remaining):
                    conn, _addr = k.fileobj.accept()  # type: ignore[union-attr]
                    try:
                        conn.settimeout(max(deadline - time.monotonic(), 0.1))
                        conn = _tls(conn, server_side=True)
                        # Nothing from a peer that has not proved the token; a stale
                        # dialler (another round of this group) is turned away too.
                        proved = server_handshake(conn, token)
                        hello = _recv_exact(conn, _HELLO.size) if proved else b""
                    except (OSError, PeerGoneError, ConnectionLost):
                        conn.close()
                        continue
                    if not proved:
                        conn.close()
                        continue
                    got_key, peer = _HELLO.unpack(hello)
                    if got_key != key or peer not in want:
                        conn.close()
                        continue
                    conn.sendall(_ACK)
                    self.peers[peer] = self._tune(conn)
                    want.discard(peer)

    @staticmethod
    def _tune(sock: socket.socket) -> socket.socket:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
        if sock.family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        return sock

    # --- running a schedule --------------------------------------------------------
    def run(self, op: str, schedule: Schedule, dtype: np.dtype) -> None:
        """Run this rank's part of a schedule; errors break the group (module doc)."""
        with self._lock:
            if self.broken is not None:
                raise CollectiveError(
                    f"collective group '{self.group_name}' is broken ({self.broken}); call "
                    f"destroy_collective_group('{self.group_name}') and make it again"
                )
            self._dtype = dtype
            tag = (OPS.index(op) + 1, zlib.crc32(dtype.str.encode()))
            try:
                for step in schedule:
                    self._exchange(op, tag, step.sends, step.recvs)
            except CollectiveError as exc:
                self._break(str(exc))
                raise
            except BaseException as exc:  # interrupted mid-step: the streams are out of step
                self._break(f"{op} was interrupted: {exc!r}")
                raise

    def _exchange(
        self,
        op: str,
        tag: tuple[int, int],
        sends: list[tuple[int, np.ndarray]],
        recvs: list[tuple[int, np.ndarray]],
    ) -> None:
        out: dict[int, list[memoryview]] = {}
        for peer, arr in sends:
            out[peer] = [memoryview(_HEADER.pack(*tag, arr.nbytes)), _bytes(arr)]
        inc: dict[int, list[Any]] = {}  # peer -> [header buffer, got, payload view, got]
        for peer, arr in recvs:
            inc[peer] = [bytearray(_HEADER.size), 0, _bytes(arr), 0]
        with selectors.DefaultSelector() as sel:
            for peer in out.keys() | inc.keys():
                events = (selectors.EVENT_WRITE if peer in out else 0) | (
                    selectors.EVENT_READ if peer in inc else 0
                )
                sel.register(self.peers[peer], events, peer)
            while out or inc:
                # Bytes a TLS socket has decrypted already wake no select: read them first.
                buffered = [p for p in inc if _buffered(self.peers[p])]
                for peer in buffered:
                    if self._read(op, peer, inc[peer]):
                        del inc[peer]
                        if peer not in out:
                            sel.unregister(self.peers[peer])
                        else:
                            sel.modify(self.peers[peer], selectors.EVENT_WRITE, peer)
                if buffered:
                    continue
                ready = sel.select(self.timeout_s)
                if not ready:
                    waiting = sorted(out.keys() | inc.keys())
                    raise CollectiveTimeoutError(
                        f"{op} in collective group '{self.group_name}': rank {self.rank} got "
                        f"no progress with ranks {waiting} in {self.timeout_s:g} s (a rank "
                        f"did not call {op}, or is stuck)"
                    )
                for key, events in ready:
                    peer = key.data
                    sock = self.peers[peer]
                    if (
                        events & selectors.EVENT_READ
                        and peer in inc
                        and self._read(op, peer, inc[peer])
                    ):
                        del inc[peer]
                    if (
                        events & selectors.EVENT_WRITE
                        and peer in out
                        and self._write(op, peer, out[peer])
                    ):
                        del out[peer]
                    if peer not in out and peer not in inc:
                        sel.unregister(sock)
                    else:
                        sel.modify(
                            sock,
                            (selectors.EVENT_WRITE if peer in out else 0)
                            | (selectors.EVENT_READ if peer in inc else 0),
                            peer,
                        )

    def _gone(self, op: str, peer: int, exc: BaseException | None = None) -> PeerGoneError:
        why = f": {exc}" if exc is not None else ""
        return PeerGoneError(
            f"{op} in collective group '{self.group_name}': rank {peer} closed its "
            f"connection (its process exited, or an error broke the group there){why}"
        )

    def _write(self, op: str, peer: int, views: list[memoryview]) -> bool:
        sock = self.peers[peer]
        try:
            while views:
                n = sock.send(views[0])
                views[0] = views[0][n:]
                if len(views[0]):
                    return False
                views.pop(0)
        except BlockingIOError:
            return False
        except OSError as exc:
            if _again(exc):
                return False
            raise self._gone(op, peer, exc) from exc
        return True

    def _read(self, op: str, peer: int, state: list[Any]) -> bool:
        sock = self.peers[peer]
        header, got, payload, done = state
        try:
            while got < len(header):
                n = sock.recv_into(memoryview(header)[got:])
                if n == 0:
                    raise self._gone(op, peer)
                got += n
                state[1] = got
                if got == len(header):
                    self._check_header(op, peer, bytes(header), payload.nbytes)
            while done < payload.nbytes:
                n = sock.recv_into(payload[done:])
                if n == 0:
                    raise self._gone(op, peer)
                done += n
                state[3] = done
        except BlockingIOError:
            return False
        except OSError as exc:
            if _again(exc):
                return False
            raise self._gone(op, peer, exc) from exc
        return True

    def _check_header(self, op: str, peer: int, header: bytes, nbytes: int) -> None:
        code, crc, size = _HEADER.unpack(header)
        mine = OPS.index(op) + 1
        if code != mine:
            their = OPS[code - 1] if 0 < code <= len(OPS) else f"op {code}"
            raise MismatchError(
                f"collective group '{self.group_name}': rank {self.rank} called {op} but "
                f"rank {peer} called {their}; every rank must make the same calls in the same order"
            )
        if size != nbytes:
            raise MismatchError(
                f"{op} in collective group '{self.group_name}': rank {peer} sent {size} bytes, "
                f"rank {self.rank} expected {nbytes}; every rank must pass arrays of the same "
                f"shape and dtype"
            )
        if crc != zlib.crc32(self._dtype.str.encode()):
            raise MismatchError(
                f"{op} in collective group '{self.group_name}': rank {peer} passed an array "
                f"of another dtype than rank {self.rank}'s {self._dtype}; every rank must pass "
                f"the same dtype"
            )

    # --- ending ----------------------------------------------------------------------
    def _break(self, reason: str) -> None:
        self.broken = reason
        self.close()

    def close(self) -> None:
        if self.shm is not None:
            self.shm.close()
        for sock in self.peers.values():
            with contextlib.suppress(OSError):
                sock.close()
        self.peers.clear()


def _bytes(arr: np.ndarray) -> memoryview:
    """The array's memory as bytes (any dtype, datetime included), without a copy."""
    return memoryview(arr.view(np.uint8))  # type: ignore[arg-type]


def _tls(sock: socket.socket, *, server_side: bool) -> socket.socket:
    """A TCP socket of a --tls cluster as an SSL socket (the cluster's CA and this
    process's certificate, both ends checked), handshake done within its timeout; any
    other socket as it is. One thread uses a group's sockets at a time (its lock), as
    an SSL socket needs."""
    if transport.TLS is None or sock.family != socket.AF_INET:
        return sock
    ctx = transport.TLS.server if server_side else transport.TLS.client
    return ctx.wrap_socket(sock, server_side=server_side)  # type: ignore[no-any-return]


def _buffered(sock: socket.socket) -> bool:
    """Decrypted bytes waiting in an SSL socket (a plain socket has none)."""
    pending = getattr(sock, "pending", None)
    return pending is not None and pending() > 0


def _again(exc: OSError) -> bool:
    """An SSL socket's "try again" (it needs the other direction first, or more of a
    record): by name, so a plain cluster never imports ssl."""
    return type(exc).__name__ in ("SSLWantReadError", "SSLWantWriteError")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise PeerGoneError("peer closed during the handshake")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)
