"""The asyncio flavour of transport.py: framed connections on the node manager's loop.

Owns AsyncConnection and the two ends of the challenge-and-response handshake for
asyncio streams (the same bytes as transport.py's, which owns the handshake's proofs,
address parsing and the blocking flavour that drivers and workers use). Not the codec
(protocol.py). Only the node manager and the head import it: a driver or a worker
never loads asyncio for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections.abc import Callable
from typing import Any

from . import transport
from .config import CONFIG
from .exceptions import AuthenticationError, ConnectionLost, ProtocolError
from .protocol import FrameReader, decode, encode
from .transport import (
    CLIENT_ANSWER_SIZE,
    PROOF_SIZE,
    SERVER_HELLO_SIZE,
    client_answer,
    compare_digest,
    describe_peer,
    impostor,
    log_handler_failure,
    parse_address,
    refused,
    server_check,
    server_hello,
)

log = logging.getLogger("raylite.transport")


_SERIALS = itertools.count(1)


class AsyncConnection:
    """A framed connection served by the node manager's event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.serial = next(_SERIALS)  # this one's among the process's, never reused
        self.closed = False
        self.peer: Any = None
        self._rids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}

    def send(self, msg: Any) -> None:
        if not self.closed and not self.writer.is_closing():
            self.writer.write(encode(msg))

    def reply(self, request_id: int, msg: Any) -> None:
        if request_id > 0 and not self.closed and not self.writer.is_closing():
            self.writer.write(encode(msg, -request_id))

    async def request(self, msg: Any) -> Any:
        rid = next(self._rids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        if self.closed:
            raise ConnectionLost("connection closed")
        self.writer.write(encode(msg, rid))
        try:
            return await fut
        finally:
            self._pending.pop(rid, None)

    async def read_loop(self, handler: Callable[[AsyncConnection, Any, int], None]) -> None:
        """Read and dispatch frames until the peer closes or breaks the protocol: a
        frame that does not decode (or that its handler rejects with ProtocolError), or
        a handler that raises on it, closes this connection with one log line naming
        the peer; the loop and every other connection go on."""
        frames = FrameReader()
        msg: Any = None
        try:
            while True:
                data = await self.reader.read(1 << 18)
                if not data:
                    break
                for body in frames.feed(data):
                    msg, rid = decode(body)
                    if rid < 0:
                        fut = self._pending.pop(-rid, None)
                        if fut is not None and not fut.done():
                            fut.set_result(msg)
                    else:
                        handler(self, msg, rid)
        except (OSError, asyncio.IncompleteReadError) as exc:
            log.debug("async connection: %s", exc)
        except ProtocolError as exc:
            if not self.closed:
                log.warning("protocol error from %s: %s", self.describe(), exc)
        except Exception as exc:  # a handler failed on what the peer sent
            log_handler_failure(self.describe(), msg, exc)
        finally:
            self.close()

    def describe(self) -> str:
        """Who is at the other end, for a log line (only ever on an error path)."""
        peer = self.peer
        label = peer if isinstance(peer, str) else type(peer).__name__ if peer else ""
        return describe_peer(self.writer.get_extra_info("socket"), label)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionLost("connection closed"))
        self._pending.clear()
        with contextlib.suppress(Exception):
            self.writer.close()


async def async_handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: bytes
) -> bool:
    """Server side of the handshake (transport.py's module doc); False (and closed)
    unless the client proves the token."""
    nonce, hello = server_hello()
    try:
        writer.write(hello)
        answer = await asyncio.wait_for(
            reader.readexactly(CLIENT_ANSWER_SIZE), CONFIG.handshake_timeout_s
        )
    except (asyncio.IncompleteReadError, TimeoutError, OSError):
        writer.close()
        return False
    proof = server_check(token, nonce, answer)
    if proof is None:
        writer.close()
        return False
    writer.write(proof)
    return True


async def async_connect(
    address: str, token: bytes, wait_s: float | None = None, cluster: bool = False
) -> AsyncConnection:
    """Client side of the handshake, for the node manager's loop (node to node, to the head).

    The caller runs `read_loop` on the result. Raises ConnectionLost if the peer cannot
    be reached, AuthenticationError if it refuses our proof (`cluster`: a close right
    after it counts as that, transport._dial) or fails to prove the token itself.
    """
    if wait_s is None:
        wait_s = CONFIG.connect_timeout_s
    family, addr = parse_address(address)
    try:
        if family == socket.AF_UNIX:
            opening = asyncio.open_unix_connection(addr)
        else:
            tls = transport.TLS  # a cluster started with --tls (tls.py)
            if tls is None:
                opening = asyncio.open_connection(addr[0], addr[1])
            else:
                opening = asyncio.open_connection(addr[0], addr[1], ssl=tls.client)
        reader, writer = await asyncio.wait_for(opening, wait_s)
    except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
        raise ConnectionLost(f"cannot reach {address}: {exc}") from exc
    try:
        hello = await asyncio.wait_for(reader.readexactly(SERVER_HELLO_SIZE), wait_s)
        answer, expected = client_answer(token, hello)
        writer.write(answer)
    except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
        writer.close()
        raise ConnectionLost(f"{address} closed during the handshake") from exc
    except ProtocolError as exc:
        writer.close()
        raise ConnectionLost(f"{address}: {exc}") from None
    except (OSError, TimeoutError) as exc:
        writer.close()
        raise ConnectionLost(f"cannot reach {address}: {exc}") from exc
    try:
        proof = await asyncio.wait_for(reader.readexactly(PROOF_SIZE), wait_s)
    except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
        writer.close()
        if not cluster:
            raise ConnectionLost(f"{address} closed during the handshake") from exc
        raise AuthenticationError(refused(address)) from None  # it read our proof, hung up
    except (OSError, TimeoutError) as exc:
        writer.close()
        raise ConnectionLost(f"cannot reach {address}: {exc}") from exc
    if not compare_digest(proof, expected):
        writer.close()
        raise AuthenticationError(impostor(address))
    sock = writer.get_extra_info("socket")
    if sock is not None and family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return AsyncConnection(reader, writer)
