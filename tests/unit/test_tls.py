"""Enrolment and the cluster's certificates (tls.py), in one process: a head's CA, an
enrolment server on a loop thread, and someone in the path who relays the exchange.

None of these turns TLS on for this process (transport.TLS stays None): they build
tls.ClusterTLS objects and use their contexts directly.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from raylite import tls, transport
from raylite.exceptions import AuthenticationError

TOKEN = os.urandom(32)
BLOB = struct.Struct("<I")


@pytest.fixture(autouse=True)
def _tls_stays_off() -> Iterator[None]:
    yield
    assert transport.TLS is None  # nothing here may leak TLS into other tests


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(the head's tls dir, tcp address of its enrolment port), served on a loop thread."""
    tls_dir = str(tmp_path_factory.mktemp("head") / "tls")
    tls.make_cluster_ca(tls_dir)
    contexts = tls.ClusterTLS(tls_dir, enrols=True)
    loop = asyncio.new_event_loop()
    ready: list[Any] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await tls.serve_enrolment(reader, writer, TOKEN, tls_dir)

    async def start() -> None:
        server = await asyncio.start_server(on_client, "127.0.0.1", 0, ssl=contexts.node_server)
        ready.append(server)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    port = ready[0].sockets[0].getsockname()[1]
    yield tls_dir, f"tcp:127.0.0.1:{port}"
    loop.call_soon_threadsafe(ready[0].close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_files_of_a_new_cluster_are_private(head):
    tls_dir, _ = head
    assert os.stat(tls_dir).st_mode & 0o777 == 0o700
    for name in ("ca.key", "ca.crt", "node.key", "node.crt"):
        assert os.stat(os.path.join(tls_dir, name)).st_mode & 0o777 == 0o600


def test_a_member_enrols_with_the_token_and_its_contexts_work(head, tmp_path):
    tls_dir, address = head
    member = str(tmp_path / "tls")
    assert tls.probe(address)
    tls.enrol(address, TOKEN, member)
    assert sorted(os.listdir(member)) == ["ca.crt", "node.crt", "node.key"]
    for name in os.listdir(member):
        assert os.stat(os.path.join(member, name)).st_mode & 0o777 == 0o600
    with (
        open(os.path.join(member, "ca.crt"), "rb") as a,
        open(os.path.join(tls_dir, "ca.crt"), "rb") as b,
    ):
        assert a.read() == b.read()
    # The member's certificate and the head's authenticate each other both ways.
    ours, theirs = tls.ClusterTLS(member), tls.ClusterTLS(tls_dir)
    _mutual(ours.client, theirs.server)
    _mutual(theirs.client, ours.server)


def _mutual(client: ssl.SSLContext, server: ssl.SSLContext) -> None:
    a, b = socket.socketpair()
    done: list[Any] = []

    def serve() -> None:
        with server.wrap_socket(b, server_side=True) as s:
            done.append(s.getpeercert(binary_form=True) is not None)
            s.sendall(b"ok")

    t = threading.Thread(target=serve)
    t.start()
    with client.wrap_socket(a) as s:
        assert s.recv(2) == b"ok"
        assert s.version() == "TLSv1.3"
    t.join(10)
    assert done == [True]


def test_a_wrong_token_is_refused(head, tmp_path):
    _, address = head
    with pytest.raises(AuthenticationError, match="refused the token"):
        tls.enrol(address, os.urandom(32), str(tmp_path / "tls"))
    assert not (tmp_path / "tls").exists()


def test_the_private_key_never_leaves_the_member(head, tmp_path, monkeypatch):
    _, address = head
    sent = bytearray()
    real = ssl.SSLSocket.sendall

    def tap(self: ssl.SSLSocket, data: Any, flags: int = 0) -> None:
        sent.extend(bytes(data))
        real(self, data, flags)

    monkeypatch.setattr(ssl.SSLSocket, "sendall", tap)
    member = str(tmp_path / "tls")
    tls.enrol(address, TOKEN, member)
    from cryptography.hazmat.primitives import serialization as ser

    with open(os.path.join(member, "node.key"), "rb") as f:
        key = ser.load_pem_private_key(f.read(), None)
    secret = key.private_numbers().private_value.to_bytes(32, "big")  # type: ignore[union-attr]
    assert sent  # what went out, before encryption: the CSR and the handshake
    assert secret not in bytes(sent)
    assert TOKEN not in bytes(sent)


# --- someone in the path: a relay between the member and the head ----------------------
def _relay(
    address: str, edit_up: Callable[[bytes], bytes], edit_down: Callable[[bytes], bytes]
) -> tuple[str, threading.Thread]:
    """A TLS server of its own (the member cannot check it: no CA yet) that relays the
    enrolment to the head, editing the member's request (answer + CSR) and the head's
    answer (proof, CA, certificate, MAC)."""
    import tempfile

    own = tempfile.mkdtemp()
    tls.make_cluster_ca(own)
    server_ctx = tls.ClusterTLS(own).https  # no client certificate needed
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    head_addr = transport.parse_address(address)[1]

    def run() -> None:
        conn, _ = lsock.accept()
        lsock.close()
        with server_ctx.wrap_socket(conn, server_side=True) as member:
            member.settimeout(10)
            up = tls._bootstrap_context().wrap_socket(socket.create_connection(head_addr, 10))
            with up:
                member.sendall(transport._recv_exact(up, transport.SERVER_HELLO_SIZE))
                answer = transport._recv_exact(member, transport.CLIENT_ANSWER_SIZE)
                csr = tls._recv_blob(member)
                up.sendall(edit_up(answer + BLOB.pack(len(csr)) + csr))
                try:
                    proof = transport._recv_exact(up, transport.PROOF_SIZE)
                except Exception:
                    return  # the head refused: so do we, by closing
                ca, cert = tls._recv_blob(up), tls._recv_blob(up)
                mac = transport._recv_exact(up, transport.PROOF_SIZE)
                down = BLOB.pack(len(ca)) + ca + BLOB.pack(len(cert)) + cert + mac
                member.sendall(proof + edit_down(down))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return f"tcp:127.0.0.1:{port}", t


def test_a_relay_that_passes_everything_on_changes_nothing(head, tmp_path):
    _, address = head
    via, t = _relay(address, lambda b: b, lambda b: b)
    tls.enrol(via, TOKEN, str(tmp_path / "tls"))  # it learns only public things
    t.join(10)


def test_a_relay_cannot_swap_in_its_own_ca(head, tmp_path):
    _, address = head
    import tempfile

    other = tempfile.mkdtemp()
    tls.make_cluster_ca(other)
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization as ser

    with open(os.path.join(other, "ca.crt"), "rb") as f:
        evil_ca = x509.load_pem_x509_certificate(f.read()).public_bytes(ser.Encoding.DER)

    def swap_ca(down: bytes) -> bytes:
        (n,) = BLOB.unpack(down[:4])
        return BLOB.pack(len(evil_ca)) + evil_ca + down[4 + n :]

    via, t = _relay(address, lambda b: b, swap_ca)
    with pytest.raises(AuthenticationError, match="failed to prove the cluster token"):
        tls.enrol(via, TOKEN, str(tmp_path / "tls"))
    t.join(10)
    assert not (tmp_path / "tls").exists()


def test_a_relay_cannot_get_its_own_key_signed(head, tmp_path):
    _, address = head
    _, evil_csr = tls._key_and_csr()

    def swap_csr(up: bytes) -> bytes:
        return up[: transport.CLIENT_ANSWER_SIZE] + BLOB.pack(len(evil_csr)) + evil_csr

    via, t = _relay(address, swap_csr, lambda b: b)
    # The head checks the member's proof against the CSR it received: refused.
    with pytest.raises(AuthenticationError, match="refused the token"):
        tls.enrol(via, TOKEN, str(tmp_path / "tls"))
    t.join(10)


def test_a_plain_raylite_server_is_not_taken_for_tls(tmp_path):
    lis = transport.Listener("tcp:127.0.0.1:0", TOKEN, lambda *a: None)
    try:
        assert not tls.probe(lis.address)
    finally:
        lis.close()


def test_has_tls_is_one_stat(tmp_path):
    assert not tls.has_tls(str(tmp_path))
    assert not tls.has_tls("")
    assert not tls.activate_for(str(tmp_path))


def test_a_stream_takes_one_reader_and_many_writers_both_ways(head):
    # transport.Connection's use: a reader thread and several writer threads on each
    # end at once. Every frame arrives whole and intact (an SSLSocket used so breaks).
    import random

    tls_dir, _ = head
    contexts = tls.ClusterTLS(tls_dir)
    a, b = socket.socketpair()
    a.settimeout(30)
    b.settimeout(30)
    ends: dict[str, Any] = {}
    t = threading.Thread(target=lambda: ends.setdefault("s", contexts.wrap(b, server_side=True)))
    t.start()
    ends["c"] = contexts.wrap(a, server_side=False)
    t.join(10)
    writers, per_writer = 4, 30
    header = struct.Struct("<IHH")  # size, writer, sequence number

    def payload(size: int, w: int, n: int) -> bytes:
        return bytes([(w * 31 + n) % 251]) * size

    def write(end: Any, w: int) -> None:
        rng = random.Random(w)
        for n in range(per_writer):
            size = 2_500_000 if n == 7 else rng.randrange(0, 70_000)
            end.sendall(header.pack(size, w, n) + payload(size, w, n))

    def read(end: Any, out: list[tuple[int, int]]) -> None:
        buf = b""
        while len(out) < writers * per_writer:
            while len(buf) < header.size:
                buf += end.recv(1 << 18)
            size, w, n = header.unpack(buf[: header.size])
            while len(buf) < header.size + size:
                buf += end.recv(1 << 18)
            body, buf = buf[header.size : header.size + size], buf[header.size + size :]
            assert body == payload(size, w, n)
            out.append((w, n))

    got: dict[str, list[tuple[int, int]]] = {"c": [], "s": []}
    threads = [threading.Thread(target=read, args=(ends[k], got[k])) for k in ("c", "s")]
    threads += [
        threading.Thread(target=write, args=(ends[k], w))
        for k in ("c", "s")
        for w in range(writers)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    for k in ("c", "s"):  # each writer's frames in its order, none lost
        assert len(got[k]) == writers * per_writer
        for w in range(writers):
            assert [n for ww, n in got[k] if ww == w] == list(range(per_writer))
    ends["c"].close()
    ends["s"].close()


def test_start_tls_without_cryptography_says_what_to_install(monkeypatch):
    import sys

    from raylite import cli_cluster

    monkeypatch.setitem(sys.modules, "cryptography", None)  # import fails
    with pytest.raises(SystemExit, match="pip install cryptography"):
        cli_cluster._check_tls_support()
