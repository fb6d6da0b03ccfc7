"""The challenge-and-response handshake (transport.py): both sides prove the token, the
token never crosses the wire, and a captured exchange cannot be replayed."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from typing import Any

import pytest

from raylite.exceptions import AuthenticationError, ConnectionLost
from raylite.transport import (
    CLIENT_ANSWER_SIZE,
    MAGIC,
    PROOF_SIZE,
    SERVER_HELLO_SIZE,
    Connection,
    Listener,
    client_answer,
    client_handshake,
    server_check,
    server_handshake,
    server_hello,
)
from raylite.transport_async import async_connect, async_handshake

TOKEN = os.urandom(32)


class Tap:
    """A socket whose sent bytes are kept: what an eavesdropper on the wire sees."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent = bytearray()

    def sendall(self, data: bytes) -> None:
        self.sent += data
        self.sock.sendall(data)

    def recv(self, n: int) -> bytes:
        return self.sock.recv(n)


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    return a, b


def _serve(sock: Any, token: bytes, result: list[Any]) -> threading.Thread:
    def run() -> None:
        try:
            ok = server_handshake(sock, token)
        except Exception as exc:
            result.append(exc)
            return
        result.append(ok)
        if not ok:  # what Listener does: close without another word
            sock.sock.close() if isinstance(sock, Tap) else sock.close()

    t = threading.Thread(target=run)
    t.start()
    return t


def test_the_right_token_passes_both_ways_and_never_crosses_the_wire():
    server_sock, client_sock = _pair()
    server, client = Tap(server_sock), Tap(client_sock)
    result: list[Any] = []
    t = _serve(server, TOKEN, result)
    client_handshake(client, TOKEN, "unix:test", cluster=True)  # type: ignore[arg-type]
    t.join(5)
    assert result == [True]
    # Exactly the three messages of the module doc, and no trace of the token.
    assert len(server.sent) == SERVER_HELLO_SIZE + PROOF_SIZE
    assert len(client.sent) == CLIENT_ANSWER_SIZE
    wire = bytes(server.sent + client.sent)
    assert TOKEN not in wire
    assert TOKEN.hex().encode() not in wire
    for k in range(0, len(TOKEN) - 7):  # not even a piece of it
        assert TOKEN[k : k + 8] not in wire
    server_sock.close()
    client_sock.close()


def test_a_wrong_token_is_refused_with_the_friendly_message():
    server_sock, client_sock = _pair()
    result: list[Any] = []
    t = _serve(server_sock, TOKEN, result)
    with pytest.raises(AuthenticationError, match="refused the token; check RAYLITE_TOKEN"):
        client_handshake(client_sock, os.urandom(32), "tcp:10.0.0.1:6379", cluster=True)
    t.join(5)
    assert result == [False]
    client_sock.close()


def test_a_wrong_token_to_a_peer_process_reads_as_it_being_gone():
    server_sock, client_sock = _pair()
    result: list[Any] = []
    t = _serve(server_sock, TOKEN, result)
    with pytest.raises(ConnectionLost, match="closed during the handshake"):
        client_handshake(client_sock, os.urandom(32), "unix:w.sock", cluster=False)
    t.join(5)
    assert result == [False]
    client_sock.close()


def test_a_server_that_does_not_know_the_token_is_caught_by_the_client():
    # An impostor that accepts any answer: its proof (made with another token, or
    # random) does not verify, so the client never sends a frame to it.
    for fake in (lambda sn, ans: os.urandom(PROOF_SIZE), None):
        server_sock, client_sock = _pair()

        def impostor(fake=fake, sock=server_sock) -> None:
            nonce, hello = server_hello()
            sock.sendall(hello)
            answer = sock.recv(CLIENT_ANSWER_SIZE)
            if fake is not None:
                sock.sendall(fake(nonce, answer))
            else:  # one that knows another token
                sock.sendall(server_check(b"y" * 32, nonce, answer) or os.urandom(32))

        t = threading.Thread(target=impostor)
        t.start()
        with pytest.raises(AuthenticationError, match="failed to prove the cluster token"):
            client_handshake(client_sock, TOKEN, "tcp:10.0.0.1:6379", cluster=True)
        t.join(5)
        server_sock.close()
        client_sock.close()


def test_a_replayed_client_answer_is_refused():
    # An eavesdropper records a good exchange ...
    server_sock, client_sock = _pair()
    client = Tap(client_sock)
    result: list[Any] = []
    t = _serve(server_sock, TOKEN, result)
    client_handshake(client, TOKEN, "unix:test", cluster=True)  # type: ignore[arg-type]
    t.join(5)
    assert result == [True]
    recorded = bytes(client.sent)
    server_sock.close()
    client_sock.close()
    # ... and plays the client's answer back to the server: a new nonce, refused.
    server_sock, attacker = _pair()
    result = []
    t = _serve(server_sock, TOKEN, result)
    assert attacker.recv(SERVER_HELLO_SIZE)[: len(MAGIC)] == MAGIC
    attacker.sendall(recorded)
    t.join(5)
    assert result == [False]
    assert attacker.recv(100) == b""  # closed, nothing said
    attacker.close()


def test_a_replayed_server_proof_is_refused_by_the_client():
    # Pure: the proof of one exchange does not verify in the next (fresh client nonce).
    nonce, hello = server_hello()
    answer, expected = client_answer(TOKEN, hello)
    assert server_check(TOKEN, nonce, answer) == expected
    _answer2, expected2 = client_answer(TOKEN, hello)  # the same server nonce replayed
    assert expected2 != expected
    # The client's proof is bound to the server's nonce, and roles do not mix.
    assert server_check(TOKEN, os.urandom(32), answer) is None
    assert server_check(TOKEN, nonce, MAGIC + answer[4:36] + expected) is None
    assert server_check(TOKEN, nonce, answer[:-1]) is None
    assert server_check(TOKEN, nonce, b"RLT\x01" + answer[4:]) is None


def test_a_non_raylite_server_is_named_as_such():
    server_sock, client_sock = _pair()
    server_sock.sendall(b"SSH-2.0-OpenSSH_9.6\r\n" + b"x" * 20)
    with pytest.raises(ConnectionLost, match="does not speak raylite's handshake"):
        client_handshake(client_sock, TOKEN, "tcp:h:22", cluster=True)
    server_sock.close()
    client_sock.close()


def test_listener_and_connection_over_tcp(tmp_path):
    got: list[Any] = []
    done = threading.Event()

    def handler(conn: Connection, msg: Any, rid: int) -> None:
        got.append(msg)
        conn.reply(rid, msg)
        done.set()

    from raylite import protocol as P

    lis = Listener("tcp:127.0.0.1:0", TOKEN, handler)
    try:
        conn = Connection.connect(lis.address, TOKEN, lambda *a: None)
        assert conn.request(P.Ok(), timeout=5) == P.Ok()
        conn.close()
        with pytest.raises(AuthenticationError, match="refused the token"):
            Connection.connect(lis.address, os.urandom(32), lambda *a: None, cluster=True)
    finally:
        lis.close()
    assert got == [P.Ok()]


def test_async_ends_against_each_other_and_the_blocking_ends(tmp_path):
    path = str(tmp_path / "s.sock")

    async def main() -> list[Any]:
        outcomes: list[Any] = []

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            outcomes.append(await async_handshake(reader, writer, TOKEN))

        server = await asyncio.start_unix_server(on_client, path=path)
        conn = await async_connect(f"unix:{path}", TOKEN)
        conn.close()
        with pytest.raises(AuthenticationError, match="refused the token"):
            await async_connect(f"unix:{path}", os.urandom(32), cluster=True)
        # A blocking client against the async server.
        loop = asyncio.get_running_loop()
        c = await loop.run_in_executor(None, Connection.connect, f"unix:{path}", TOKEN, None)
        c.close(join=False)
        server.close()
        return outcomes

    assert asyncio.run(main()) == [True, False, True]
