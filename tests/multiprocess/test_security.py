"""Every socket wants the token first: wrong or missing tokens get nothing done, junk crashes nothing."""

from __future__ import annotations

import os
import random
import socket

import pytest

from tests._engine import AGAINST_RAY, ray

pytestmark = pytest.mark.skipif(AGAINST_RAY, reason="raylite's own sockets")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2)
    yield ray.api._runtime.cw
    ray.shutdown()


@ray.remote
def add(a, b):
    return a + b


def _addresses(cw) -> list[str]:
    worker_socks = [
        os.path.join(os.path.dirname(cw.address[5:]), f)
        for f in os.listdir(os.path.dirname(cw.address[5:]))
        if f.startswith("w-")
    ]
    return [cw.node_address[5:], cw.address[5:], *worker_socks]


def _raw(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s


def _closed_without_reply(s: socket.socket) -> bool:
    """True if the peer closed (FIN or RST) having sent nothing but its challenge (the
    handshake's first message: MAGIC and a nonce, transport.py)."""
    from raylite.transport import MAGIC, SERVER_HELLO_SIZE

    got = b""
    try:
        while chunk := s.recv(1024):
            got += chunk
    except ConnectionResetError:
        pass
    return len(got) <= SERVER_HELLO_SIZE and MAGIC.startswith(got[:4])


def test_wrong_token_is_closed_without_a_reply(cluster):
    assert ray.get(add.remote(1, 2)) == 3  # workers are up
    from raylite import protocol as P
    from raylite.transport import MAGIC

    for path in _addresses(cluster):
        s = _raw(path)
        # A well-formed request behind a wrong proof must not be answered.
        s.sendall(MAGIC + b"x" * 64 + P.encode(P.GetClusterInfo(), 1))
        assert _closed_without_reply(s), path
        s.close()


def test_no_token_at_all_gets_nothing(cluster):
    from raylite import protocol as P

    for path in _addresses(cluster):
        s = _raw(path)
        s.sendall(P.encode(P.GetClusterInfo(), 1) * 10)
        assert _closed_without_reply(s), path
        s.close()


def test_random_bytes_crash_nothing(cluster):
    rng = random.Random(1234)
    for path in _addresses(cluster):
        for _ in range(20):
            s = _raw(path)
            try:
                s.sendall(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))))
                s.shutdown(socket.SHUT_WR)
                assert _closed_without_reply(s)
            except (ConnectionResetError, BrokenPipeError):
                pass
            finally:
                s.close()
    # Everything still works afterwards.
    assert ray.get([add.remote(i, 1) for i in range(20)]) == list(range(1, 21))
    assert ray.cluster_resources()["CPU"] == 2.0


def test_a_wrong_token_is_named_as_such_to_the_client(cluster):
    # The server still says nothing after its challenge before the token is proven: the
    # client reads the close right after its proof as the refusal, and says which knob
    # to check.
    from raylite.exceptions import AuthenticationError
    from raylite.transport import Connection

    with pytest.raises(AuthenticationError, match=r"refused the token; check RAYLITE_TOKEN"):
        Connection.connect(cluster.node_address, b"x" * 32, lambda *a: None, cluster=True)
    # Dialling a peer process (an owner, a worker), the same close reads as "it is gone":
    # one that is exiting closes so too, and its callers handle ConnectionLost.
    from raylite.exceptions import ConnectionLost

    with pytest.raises(ConnectionLost, match="closed during the handshake"):
        Connection.connect(cluster.node_address, b"x" * 32, lambda *a: None)


def test_a_node_joining_with_a_wrong_token_is_told_so(no_engine, tmp_path):
    import re
    import subprocess
    import sys

    env = {**os.environ, "TMPDIR": str(tmp_path), "RAYLITE_TOKEN": "a" * 64}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = [sys.executable, "-m", "raylite.cli", "start"]
    head = subprocess.Popen(
        [*start, "--head", "--port", str(port), "--include-dashboard", "false", "--block"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert head.stdout is not None
        assert re.search(r"started at", head.stdout.readline())
        joiner = subprocess.run(
            [*start, "--address", f"127.0.0.1:{port}"],
            env={**env, "RAYLITE_TOKEN": "b" * 64},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert joiner.returncode != 0
        said = joiner.stdout + joiner.stderr
        assert f"the cluster at 127.0.0.1:{port} refused the token; check RAYLITE_TOKEN" in said
    finally:
        head.terminate()
        assert head.wait(30) == 0
