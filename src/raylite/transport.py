"""Unix/TCP connections, the token handshake, and request/reply over frames.

Two flavours share one codec (protocol.py):
- `Connection` (here): blocking sockets with one reader thread each. Drivers and
  workers use it: a user thread sends straight from its own thread (no hop to an
  event loop), which keeps a task round trip to two thread wake-ups.
- `AsyncConnection` (transport_async.py): asyncio streams, for the node manager's
  single event loop. Apart, so that drivers and workers never load asyncio (about 8
  MB of each process's memory).

Handshake, before anything else is read: a challenge and response in which both
sides prove the cluster token and the token itself never crosses the wire.

    server --MAGIC + server nonce (32 random bytes)---------------------------> client
    client --MAGIC + client nonce + MAC(token, "client" | MAGIC | sn | cn)--> server
    server --MAC(token, "server" | MAGIC | sn | cn)--------------------------> client
             (or it closes: the client's proof was wrong)

MAC: keyed BLAKE2b-256 (a MAC by design, no HMAC construction needed), compared
in constant time. Fresh nonces both ways: a captured exchange
replayed to a server meets a new server nonce, and one replayed to a client a new
client nonce, so neither proof verifies. The server proves the token only to a client
that proved it first: an unauthenticated dialler learns nothing it could test guesses
of a weak (hashed text) token against. The server's nonce goes out the moment it
accepts, so the exchange costs the client one and a half round trips after connect
(the old "send the token, read one byte" cost one), paid once per connection: nonces
and HMACs take 11 us per handshake, both ends together, and connect + close on
loopback stayed within this machine's noise (unix 170-210 us, TCP 190-350 us, before
and after). Nothing is decoded, let alone unpickled, from a peer that has not
proved the token. The proofs are made and checked by pure functions (server_hello,
client_answer, server_check) shared with transport_async.py and util/collective.

With `raylite start --tls` (tls.py), a TCP socket is wrapped in TLS where it is made
(_dial, Listener._admit) and the handshake runs inside; `TLS` below is None otherwise,
and no message pays for the check.

Addresses are strings: "unix:/path/to/sock" or "tcp:HOST:PORT".
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import socket
import struct
import threading
from _blake2 import blake2b  # hashlib's, without hashlib: its import maps OpenSSL's
from _operator import _compare_digest as compare_digest  # libcrypto (~3.4 MB a process)
from collections.abc import Callable
from typing import Any, NoReturn

from .config import CONFIG
from .exceptions import AuthenticationError, ConnectionLost, ProtocolError
from .protocol import PROTOCOL_VERSION, FrameReader, ObjectStream, decode, encode

log = logging.getLogger("raylite.transport")

# RLT\x01 was "MAGIC + token in clear"; \x02 the challenge and response (module doc).
MAGIC = b"RLT\x02"
TOKEN_SIZE = 32
NONCE_SIZE = 32
PROOF_SIZE = 32  # keyed BLAKE2b-256
SERVER_HELLO_SIZE = len(MAGIC) + NONCE_SIZE
CLIENT_ANSWER_SIZE = len(MAGIC) + NONCE_SIZE + PROOF_SIZE
_CLIENT = b"raylite handshake: client proof"
_SERVER = b"raylite handshake: server proof"

Handler = Callable[["Connection", Any, int], None]

# The cluster's TLS (a tls.ClusterTLS) once tls.activate ran in this process, else
# None: then TCP sockets are wrapped where they are made (_dial, Listener._admit,
# receive_stream), never per message. Unix sockets stay plain (tls.py's doc).
TLS: Any = None


def parse_address(address: str) -> tuple[int, Any]:
    if address.startswith("unix:"):
        return socket.AF_UNIX, address[5:]
    if address.startswith("tcp:"):
        host, _, port = address[4:].rpartition(":")
        return socket.AF_INET, (host, int(port))
    raise ValueError(f"bad address {address!r}: want 'unix:PATH' or 'tcp:HOST:PORT'")


# --- the handshake's bytes (pure: no I/O, shared by every socket flavour) -----------
def _proof(
    token: bytes, role: bytes, server_nonce: bytes, client_nonce: bytes, context: bytes
) -> bytes:
    """MAC(token, role | MAGIC | server nonce | client nonce | context): the role label
    keeps a server's proof from ever passing as a client's and the other way round;
    `context` binds what else the exchange is about (tls.py's certificate request)."""
    msg = role + MAGIC + server_nonce + client_nonce + context
    return blake2b(msg, key=_mac_key(token), digest_size=32).digest()


def _mac_key(token: bytes) -> bytes:
    """The MAC's key: keyed BLAKE2b takes up to 64 bytes, so a longer token is hashed."""
    return token if len(token) <= 64 else blake2b(token).digest()


def server_hello() -> tuple[bytes, bytes]:
    """(the server's nonce, the bytes it sends first)."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce, MAGIC + nonce


def client_answer(token: bytes, hello: bytes, context: bytes = b"") -> tuple[bytes, bytes]:
    """(the answer the client sends, the server proof it then expects).

    Raises ProtocolError if `hello` is not a raylite server's (another program on the
    port, or a raylite older than this handshake)."""
    if len(hello) != SERVER_HELLO_SIZE or hello[: len(MAGIC)] != MAGIC:
        raise ProtocolError(
            "the peer does not speak raylite's handshake (another program, or "
            "a raylite of another version)"
        )
    server_nonce = hello[len(MAGIC) :]
    client_nonce = os.urandom(NONCE_SIZE)
    mine = _proof(token, _CLIENT, server_nonce, client_nonce, context)
    return MAGIC + client_nonce + mine, _proof(token, _SERVER, server_nonce, client_nonce, context)


def server_check(
    token: bytes, server_nonce: bytes, answer: bytes, context: bytes = b""
) -> bytes | None:
    """The server's proof to send if the client's answer proves the token, else None."""
    if len(answer) != CLIENT_ANSWER_SIZE or answer[: len(MAGIC)] != MAGIC:
        return None
    client_nonce = answer[len(MAGIC) : len(MAGIC) + NONCE_SIZE]
    theirs = answer[len(MAGIC) + NONCE_SIZE :]
    if not compare_digest(theirs, _proof(token, _CLIENT, server_nonce, client_nonce, context)):
        return None
    return _proof(token, _SERVER, server_nonce, client_nonce, context)


def client_handshake(sock: socket.socket, token: bytes, address: str, cluster: bool) -> None:
    """Client side on a blocking socket (its timeout bounds each read).

    Raises AuthenticationError if the server refuses our proof or fails to prove the
    token, ConnectionLost if it goes away first (see _dial for `cluster`)."""
    try:
        answer, expected = client_answer(token, _recv_exact(sock, SERVER_HELLO_SIZE))
    except ProtocolError as exc:
        raise ConnectionLost(f"{address}: {exc}") from None
    sock.sendall(answer)
    try:
        proof = _recv_exact(sock, PROOF_SIZE)
    except (ConnectionLost, ConnectionResetError):
        if not cluster:
            raise ConnectionLost(f"{address} closed during the handshake") from None
        raise AuthenticationError(refused(address)) from None  # it read our proof, hung up
    if not compare_digest(proof, expected):
        raise AuthenticationError(impostor(address))


def server_handshake(sock: socket.socket, token: bytes) -> bool:
    """Server side on a blocking socket: True if the client proved the token (and got
    our proof); False if not, and the caller closes without another word."""
    nonce, hello = server_hello()
    sock.sendall(hello)
    proof = server_check(token, nonce, _recv_exact(sock, CLIENT_ANSWER_SIZE))
    if proof is None:
        return False
    sock.sendall(proof)
    return True


def impostor(address: str) -> str:
    """What a client is told when the server's proof is wrong: something that is not
    the cluster answers there (it accepted our proof without knowing the token)."""
    return (
        f"the peer at {address} failed to prove the cluster token: it is not this "
        "cluster's node (check the address), or someone is in the way"
    )


def speaks_tls(family: int) -> bool:
    """Whether this process's sockets of `family` are wrapped in TLS (TCP, once
    tls.activate ran); such a connection is never leadable (transport_lead)."""
    return TLS is not None and family == socket.AF_INET


def _dial(address: str, token: bytes, timeout: float, cluster: bool = False) -> socket.socket:
    """A connected socket that passed the token handshake (client side).

    Raises ConnectionLost if the peer cannot be reached, AuthenticationError if it
    refuses the token. A server closes on a wrong token without a word, as a process
    that is exiting does: `cluster` (a node or a head, dialled to join it) reads that
    close as the refusal; a peer process (an owner, a worker) is taken to be gone.
    """
    family, addr = parse_address(address)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(addr)
        if speaks_tls(family):
            sock = TLS.wrap(sock, server_side=False)  # the TLS handshake happens here
        client_handshake(sock, token, address, cluster)
    except OSError as exc:
        sock.close()
        hint = ""
        if isinstance(exc, TimeoutError) and TLS is None and family == socket.AF_INET:
            # A --tls cluster waits for a TLS hello and never sends raylite's first bytes.
            hint = (
                " (no handshake came: a cluster started with --tls, which wants TLS "
                "first, or a raylite older than this one?)"
            )
        raise ConnectionLost(f"cannot connect to {address}: {exc}{hint}") from exc
    except BaseException:
        sock.close()
        raise
    return sock


def refused(address: str) -> str:
    """What a client is told when a peer closes on its proof: the server says nothing
    after its nonce before the token is proven, so a close right then is the refusal."""
    where = address[4:] if address.startswith("tcp:") else address
    return f"the cluster at {where} refused the token; check RAYLITE_TOKEN"


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionLost("peer closed during handshake")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def describe_peer(sock: Any, label: str) -> str:
    """`label` (what the connection is to us) and the process at the other end: a Unix
    socket's peer pid (SO_PEERCRED, Linux), a TCP peer's address. For log lines."""
    where = ""
    with contextlib.suppress(OSError, AttributeError, struct.error):
        if sock.family == socket.AF_UNIX and hasattr(socket, "SO_PEERCRED"):
            cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            where = f"pid {struct.unpack('3i', cred)[0]}"
        elif sock.family in (socket.AF_INET, socket.AF_INET6):
            host, port = sock.getpeername()[:2]
            where = f"{host}:{port}"
    label = label or "an unregistered peer"
    return f"{label} ({where})" if where else label


class HandlerFailed(Exception):
    """A handler raised on a message a peer sent: the connection is dropped."""

    def __init__(self, msg: Any, error: Exception) -> None:
        super().__init__(f"handler failed on {type(msg).__name__}: {error!r}")
        self.msg = msg
        self.error = error


class _Reply:
    __slots__ = ("callback", "event", "value")

    def __init__(self, callback: Callable[[Any], None] | None = None) -> None:
        self.event = threading.Event() if callback is None else None
        self.callback = callback
        self.value: Any = None


class _HeldNotSent(Exception):
    """A send that carried held frames failed: the on_lost callbacks of those it did not
    hand to the kernel whole (to run once the send lock is let go), and the error."""

    def __init__(self, callbacks: list[Callable[[], None]], error: OSError) -> None:
        super().__init__(error)
        self.callbacks = callbacks
        self.error = error


def _send_held(sock: Any, data: bytes, held: list[tuple[int, Callable[[], None]]]) -> None:
    """sock.sendall(data), `data` starting with held frames (`held`: where each that has
    an on_lost ends in it), counting what the kernel takes: should it fail, the frames
    it took whole may have reached the peer and are left; the others raise in
    _HeldNotSent. A TLS stream has no send of its own to count with: should its
    sendall fail, every frame is taken as sent (left: a leak, not a free under a
    reader that may have the reply)."""
    send = getattr(sock, "send", None)
    if send is None:
        sock.sendall(data)
        return
    taken = 0
    try:
        view = memoryview(data)
        while taken < len(data):
            taken += send(view[taken:])
    except OSError as exc:
        raise _HeldNotSent([cb for end, cb in held if end > taken], exc) from exc


def _run_lost(callbacks: list[Callable[[], None]]) -> None:
    """Run what hold() was told to run for held frames that were never sent."""
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("a held frame's on_lost failed")


class Connection:
    """A framed, authenticated connection with a reader thread."""

    def __init__(
        self,
        sock: socket.socket,
        handler: Handler,
        *,
        name: str = "",
        on_close: Callable[[Connection], None] | None = None,
    ) -> None:
        self.sock = sock
        self.name = name
        self.handler = handler
        self.on_close = on_close
        self.closed = False
        self._broken = False  # a send failed: closed here, but reported as a peer's close
        self.peer: Any = None  # set by the owner of the connection (e.g. a worker id)
        self._send_lock = threading.Lock()
        # Frames written but not yet sent (hold(), or the reader thread's writes while
        # it handles one read's frames): the next send, or flush(), sends them first.
        self._held: list[bytes] = []
        # What hold() was told to run should its frame never be sent (on_lost), with
        # where the frame ends in the held bytes (_held_bytes: their length): taken
        # with the frames, dropped once a send of them succeeds.
        self._held_lost: list[tuple[int, Callable[[], None]]] = []
        self._held_bytes = 0
        self._batching = 0  # the reader thread's ident while it handles a read's frames
        self._pending: dict[int, _Reply] = {}
        self._rids = itertools.count(1)
        self.sent_functions: set[bytes] = set()
        self._thread = threading.Thread(
            target=self._read_loop, name=f"raylite-conn-{name}", daemon=True
        )

    def start(self) -> Connection:
        self._thread.start()
        return self

    @classmethod
    def connect(
        cls,
        address: str,
        token: bytes,
        handler: Handler,
        *,
        name: str = "",
        on_close: Callable[[Connection], None] | None = None,
        timeout: float | None = None,
        cluster: bool = False,
    ) -> Connection:
        """`cluster`: the peer is a node manager or head (see _dial)."""
        wait = CONFIG.connect_timeout_s if timeout is None else timeout
        sock = _dial(address, token, wait, cluster)
        try:
            sock.settimeout(None)
            if sock.family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            sock.close()
            raise ConnectionLost(f"cannot connect to {address}: {exc}") from exc
        # _dial wrapped it in TLS, or not: an SSL socket has a buffer of its own.
        conn_cls = Connection if speaks_tls(sock.family) else cls
        return conn_cls(sock, handler, name=name, on_close=on_close).start()

    # --- sending ------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionLost(f"connection {self.name} is closed")
        if self._batching and self._batching == threading.get_ident():
            # The reader thread, amid one read's frames (replies to several of them go
            # out in one send at its end: _read_loop).
            with self._send_lock:
                self._held.append(data)
                self._held_bytes += len(data)
            return
        self._send(data)

    def _send(self, data: bytes) -> None:
        """Send what was held, then `data` (b"": only what was held, if anything)."""
        try:
            with self._send_lock:
                if self._held:  # what was held goes first: frames keep their order
                    data = b"".join([*self._held, data])
                    lost = self._take_held()
                    if lost:
                        _send_held(self.sock, data, lost)
                        return
                if data:
                    self.sock.sendall(data)
        except _HeldNotSent as failed:
            _run_lost(failed.callbacks)
            self._lost(failed.error)
        except OSError as exc:
            self._lost(exc)

    def _take_held(self) -> list[tuple[int, Callable[[], None]]]:
        """The held frames go (the caller sends them): their on_lost callbacks (_send_lock
        held)."""
        lost = self._held_lost
        self._held, self._held_lost, self._held_bytes = [], [], 0
        return lost

    def hold(
        self, msg: Any, request_id: int = 0, on_lost: Callable[[], None] | None = None
    ) -> None:
        """Write `msg` (a reply if `request_id`), sent with the next send or flush(): a
        worker holds a task's reply while the next pushed task runs at once. `on_lost`
        runs (once, on whichever thread finds it) if the frame is never sent: a send
        that carried it failed, or the connection closed first."""
        data = encode(msg, -request_id)
        with self._send_lock:
            # Looked at under the lock: _closed_by_peer sets it before it takes the held
            # frames, so none is left behind it.
            if self.closed:
                raise ConnectionLost(f"connection {self.name} is closed")
            self._held.append(data)
            self._held_bytes += len(data)
            if on_lost is not None:
                self._held_lost.append((self._held_bytes, on_lost))

    def flush(self) -> None:
        """Send what was held."""
        self._send(b"")

    def _lost(self, exc: OSError) -> NoReturn:
        # Closed at once, so a caller that sends again sees it (and dials anew)
        # instead of failing on the same socket until the reader thread notices;
        # the reader thread still reports the close (pending replies, on_close).
        if not self.closed:
            self._broken = True
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        raise ConnectionLost(f"connection {self.name} lost: {exc}") from exc

    def send(self, msg: Any) -> None:
        self._write(encode(msg))

    def reply(self, request_id: int, msg: Any) -> None:
        if request_id > 0:
            self._write(encode(msg, -request_id))

    def request(self, msg: Any, timeout: float | None = None) -> Any:
        """Send and block for the reply (raises ConnectionLost if the peer goes)."""
        rid = next(self._rids)
        slot = _Reply()
        self._pending[rid] = slot
        try:
            self._write(encode(msg, rid))
            assert slot.event is not None
            if not slot.event.wait(timeout):
                raise TimeoutError(f"no reply to {type(msg).__name__} from {self.name}")
        finally:
            self._pending.pop(rid, None)
        if isinstance(slot.value, ConnectionLost):
            raise slot.value
        return slot.value

    def request_async(self, msg: Any, callback: Callable[[Any], None]) -> int:
        """Send; `callback(reply)` runs on the reader thread (or ConnectionLost). Returns
        the request's id (forget() it to stop waiting)."""
        rid = next(self._rids)
        self._pending[rid] = _Reply(callback)
        try:
            self._write(encode(msg, rid))
        except BaseException:  # not sent (or interrupted): no reply is awaited
            self._pending.pop(rid, None)
            raise
        return rid

    def forget(self, request_id: int) -> None:
        """No longer wait for a request_async's reply: its callback will not run."""
        self._pending.pop(request_id, None)

    # --- receiving ----------------------------------------------------------------
    def _read_loop(self) -> None:
        reader = FrameReader()
        sock = self.sock
        try:
            while True:
                data = sock.recv(1 << 18)
                if not data:
                    break
                self._dispatch(reader, data)
        except Exception as exc:
            self._read_failed(exc)
        finally:
            self._closed_by_peer()

    def _dispatch(self, reader: FrameReader, data: bytes) -> None:
        """Handle the frames one read brought (on the reader thread, or on a thread that
        leads the connection: transport_lead); what the handlers write on this connection
        meanwhile goes out in one send at the end. A handler's failure comes out as
        HandlerFailed."""
        self._batching = threading.get_ident()
        msg: Any = None
        try:
            for body in reader.feed(data):
                msg, rid = decode(body)
                if rid < 0:
                    slot = self._pending.pop(-rid, None)
                    if slot is None:
                        continue
                    if slot.callback is not None:
                        slot.callback(msg)
                    else:
                        slot.value = msg
                        slot.event.set()  # type: ignore[union-attr]
                else:
                    self.handler(self, msg, rid)
        except (OSError, ProtocolError):
            raise
        except Exception as exc:
            raise HandlerFailed(msg, exc) from exc
        finally:
            self._batching = 0
        if self._held:
            with contextlib.suppress(ConnectionLost):  # the reads that follow see it
                self.flush()

    def _read_failed(self, exc: Exception) -> None:
        """Why reading ended, logged as it deserves (the connection is dropped)."""
        if isinstance(exc, OSError):
            if not self.closed:
                log.debug("connection %s: %s", self.name, exc)
        elif isinstance(exc, ProtocolError):  # what it sent is not our protocol: say so
            if not self.closed:
                log.warning("protocol error from %s: %s", self.describe(), exc)
        elif isinstance(exc, HandlerFailed):  # a handler failed on what it sent
            log_handler_failure(self.describe(), exc.msg, exc.error)
        else:
            log_handler_failure(self.describe(), None, exc)

    def describe(self) -> str:
        """Who is at the other end, for a log line (only ever on an error path)."""
        return describe_peer(self.sock, f"{self.name} {self.peer or ''}".strip())

    def _closed_by_peer(self) -> None:
        was_closed = self.closed
        self.closed = True
        with self._send_lock:  # frames held now are never sent
            lost = self._take_held()
        _run_lost([callback for _, callback in lost])
        lost = ConnectionLost(f"connection {self.name} closed")
        for rid in list(self._pending):
            slot = self._pending.pop(rid, None)
            if slot is None:
                continue
            if slot.callback is not None:
                try:
                    slot.callback(lost)
                except Exception:
                    log.exception("reply callback failed")
            else:
                slot.value = lost
                slot.event.set()  # type: ignore[union-attr]
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.on_close is not None and (not was_closed or self._broken):
            try:
                self.on_close(self)
            except Exception:
                log.exception("on_close failed for %s", self.name)

    def close(self, join: bool = True) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                self.sock.close()
        if join and self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=CONFIG.thread_join_timeout_s)


class Listener:
    """Accepts authenticated connections on a thread; each gets a reader thread."""

    def __init__(
        self,
        address: str,
        token: bytes,
        handler: Handler,
        on_close: Callable[[Connection], None] | None = None,
        connection_class: type[Connection] | None = None,
    ) -> None:
        """`connection_class`: what its plain (not TLS) connections are, e.g. a worker's
        transport_lead.LeadableConnection."""
        family, addr = parse_address(address)
        self.token = token
        self.handler = handler
        self.on_close = on_close
        self.connection_class = connection_class or Connection
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(addr)
        self.sock.listen(128)
        if family == socket.AF_INET:
            host, port = self.sock.getsockname()[:2]
            self.address = f"tcp:{host}:{port}"
        else:
            self.address = address
        self.connections: set[Connection] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(
            target=self._accept_loop, name="raylite-accept", daemon=True
        )
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                sock, _ = self.sock.accept()
            except OSError:
                break
            threading.Thread(target=self._admit, args=(sock,), daemon=True).start()

    def _admit(self, sock: socket.socket) -> None:
        tls = speaks_tls(sock.family)
        try:
            sock.settimeout(CONFIG.handshake_timeout_s)
            if tls:
                sock = TLS.wrap(sock, server_side=True)
            if not server_handshake(sock, self.token):
                sock.close()
                return
            sock.settimeout(None)
        except (OSError, ConnectionLost):
            sock.close()
            return
        cls = Connection if tls else self.connection_class  # an SSL socket has its own buffer
        conn = cls(sock, self.handler, name="inbound", on_close=self._forget)
        with self._lock:
            if self._closed:
                conn.close(join=False)  # never started: closes its socket (and epoll)
                return
            self.connections.add(conn)
        conn.start()

    def _forget(self, conn: Connection) -> None:
        with self._lock:
            self.connections.discard(conn)
        if self.on_close is not None:
            self.on_close(conn)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        with self._lock:
            conns = list(self.connections)
        for conn in conns:
            conn.close(join=True)
        self._thread.join(timeout=CONFIG.thread_join_timeout_s)


STREAM_CHUNK = 1 << 20  # the receive buffer of a raw stream: 1 MiB (stays in cache), reused


def log_handler_failure(peer: str, msg: Any, exc: Exception) -> None:
    """The one line (with its traceback) when a handler raised on what a peer sent;
    both transports then drop that connection, and nothing else."""
    log.error(
        "protocol error from %s: handling %s raised %r",
        peer,
        type(msg).__name__,
        exc,
        exc_info=True,
    )


def receive_stream(address: str, token: bytes, request: Any, fd: int, timeout: float) -> Any:
    """Ask for a raw stream on a connection of its own and write it into the file `fd`.

    The data plane between node managers: `request` goes out as a frame; the answer is
    a frame (ObjectStream with the size, or Failed), then `size` raw bytes, spliced
    from the socket into the file on Linux (one kernel copy), else received into one
    reused 1 MiB buffer and written with pwrite. Either is 2.5-7x faster than receiving
    into a mapping of the new file, which pays a page fault and a page of zeroes for
    every 4 KiB. Returns the answer frame. Blocking: run it in a thread.
    """
    sock = _dial(address, token, timeout)
    try:
        sock.sendall(encode(request, 1))
        length, version = struct.unpack("<IB", _recv_exact(sock, 5))
        if version != PROTOCOL_VERSION or length > 1 << 20:
            raise ProtocolError(f"bad stream header from {address}")
        answer, _ = decode(_recv_exact(sock, length))
        if not isinstance(answer, ObjectStream):
            return answer
        size = answer.size
        os.ftruncate(fd, size)
        if hasattr(os, "splice") and type(sock) is socket.socket:  # TLS: decrypted here
            _splice_into(sock, fd, size, timeout, address)
        else:
            _copy_into(sock, fd, size, address)
        return answer
    except OSError as exc:
        raise ConnectionLost(f"stream from {address} failed: {exc}") from exc
    finally:
        sock.close()


def _splice_into(sock: socket.socket, fd: int, size: int, timeout: float, address: str) -> None:
    """Linux: socket to pipe to file with splice. The kernel moves the received pages
    into the pipe and copies them once, into the file; no pass through user memory."""
    sock.settimeout(None)  # splice blocks; SO_RCVTIMEO bounds each wait instead
    seconds = max(int(timeout), 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", seconds, 0))
    r, w = os.pipe()
    try:
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, STREAM_CHUNK)
        got = 0
        while got < size:
            try:
                n = os.splice(sock.fileno(), w, min(size - got, STREAM_CHUNK))
            except BlockingIOError as exc:
                raise ConnectionLost(f"{address} sent nothing for {seconds} s") from exc
            if n == 0:
                raise ConnectionLost(f"{address} closed the stream at {got} of {size} bytes")
            moved = 0
            while moved < n:
                moved += os.splice(r, fd, n - moved, offset_dst=got + moved)
            got += n
    finally:
        os.close(r)
        os.close(w)


def _copy_into(sock: socket.socket, fd: int, size: int, address: str) -> None:
    """Elsewhere: through one reused buffer (1 MiB, so it stays in cache), with pwrite."""
    buf = memoryview(bytearray(min(size, STREAM_CHUNK)))
    got = 0
    while got < size:
        want = min(size - got, len(buf))
        filled = 0
        while filled < want:  # fill the buffer: fewer, larger writes
            n = sock.recv_into(buf[filled:want])
            if n == 0:
                raise ConnectionLost(
                    f"{address} closed the stream at {got + filled} of {size} bytes"
                )
            filled += n
        written = 0
        while written < filled:
            written += os.pwrite(fd, buf[written:filled], got + written)
        got += filled
