"""The raw object stream between node managers (transport.receive_stream).

A small server thread plays the holder: it runs the handshake, reads the request frame,
answers ObjectStream and sends the bytes (all of them, half then closes, or half then
stalls). Both receive paths run: splice (Linux) and the reused buffer with pwrite.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from raylite import protocol as P
from raylite import transport
from raylite.exceptions import ConnectionLost

TOKEN = b"t" * transport.TOKEN_SIZE
DATA = os.urandom(3 * (1 << 20) + 12345)  # several chunks and a ragged tail


def _holder(behaviour: str) -> tuple[str, threading.Thread, threading.Event]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    release = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn, srv:
            if not transport.server_handshake(conn, TOKEN):
                return
            length, _ = P.HEADER.unpack(transport._recv_exact(conn, P.HEADER.size))
            _request, rid = P.decode(transport._recv_exact(conn, length))
            conn.sendall(P.encode(P.ObjectStream(len(DATA)), rid))
            if behaviour == "all":
                conn.sendall(DATA)
                return
            conn.sendall(DATA[: len(DATA) // 2])
            if behaviour == "stall":
                release.wait(30)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    host, port = srv.getsockname()
    return f"tcp:{host}:{port}", thread, release


@pytest.fixture(params=["splice", "buffer"])
def path(request, monkeypatch):
    if request.param == "splice" and not hasattr(os, "splice"):
        pytest.skip("os.splice is Linux only")
    if request.param == "buffer" and hasattr(os, "splice"):
        monkeypatch.delattr(os, "splice")
    return request.param


def _receive(address: str, tmp_path, token: bytes = TOKEN, timeout: float = 10.0):
    fd = os.open(tmp_path / "segment", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        answer = transport.receive_stream(address, token, P.PullObject(b"o" * 16, ""), fd, timeout)
    finally:
        os.close(fd)
    return answer, (tmp_path / "segment").read_bytes()


def test_the_whole_stream_lands_in_the_file(path, tmp_path):
    address, thread, _ = _holder("all")
    answer, data = _receive(address, tmp_path)
    thread.join(5)
    assert isinstance(answer, P.ObjectStream)
    assert answer.size == len(DATA)
    assert data == DATA


def test_a_recycled_larger_file_is_cut_to_the_stream_size(path, tmp_path):
    (tmp_path / "segment").write_bytes(b"\xff" * (2 * len(DATA)))
    address, thread, _ = _holder("all")
    _, data = _receive(address, tmp_path)
    thread.join(5)
    assert data == DATA


def test_a_stream_cut_short_raises_connection_lost(path, tmp_path):
    address, thread, _ = _holder("half")
    with pytest.raises(ConnectionLost, match="closed the stream"):
        _receive(address, tmp_path)
    thread.join(5)


def test_a_stalled_stream_raises_within_the_timeout(path, tmp_path):
    address, thread, release = _holder("stall")
    start = time.monotonic()
    with pytest.raises(ConnectionLost):
        _receive(address, tmp_path, timeout=1.0)
    assert time.monotonic() - start < 5
    release.set()
    thread.join(5)


def test_a_wrong_token_is_refused_before_any_data(path, tmp_path):
    address, thread, _ = _holder("all")
    # The holder closes on the wrong proof without a word: to a node pulling an
    # object, that reads as the holder gone (transport._dial, cluster=False).
    with pytest.raises(ConnectionLost, match="closed during the handshake"):
        _receive(address, tmp_path, token=b"x" * transport.TOKEN_SIZE)
    thread.join(5)
    assert (tmp_path / "segment").read_bytes() == b""
