"""Head storage backends: memory, SQLite on a tmp dir, and a real redis-server.

The Redis tests start their own `redis-server` (Debian's package, installed here with
apt-get when missing and we are root; skipped otherwise) on a free port of 127.0.0.1,
and stop it by pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from raylite.head.storage import (
    TABLES,
    HeadStorage,
    MemoryStorage,
    RedisStorage,
    SqliteStorage,
    open_storage,
)

APT_TIMEOUT_S = 240  # one apt-get step (update or install); at most three run
# A Redis test may be the first to need the server, and so wait for apt-get.
REDIS_TEST_TIMEOUT_S = 3 * APT_TIMEOUT_S + 60
SERVER_START_S = 15.0

pytestmark = pytest.mark.timeout(30)


# --- a redis-server of our own -------------------------------------------------------


def _apt_install_redis() -> str:
    """Install Debian's redis-server; returns what went wrong, or "" on success."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "redis-server"]
    why = ""
    for step in (install, ["apt-get", "update"], install):
        try:
            done = subprocess.run(
                step, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            return f"`{' '.join(step)}` ran past {APT_TIMEOUT_S} s"
        if step is install and done.returncode == 0:
            return ""
        if done.returncode != 0:
            why = f"`{' '.join(step)}` exited {done.returncode}: {done.stderr.strip()[-300:]}"
    return why


@pytest.fixture(scope="module")
def redis_server_bin() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(
            "redis-server is not on PATH, and without root and apt-get it cannot be installed"
        )
    why = _apt_install_redis()
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )
    if not found:
        pytest.skip(f"redis-server could not be installed: {why or 'not on PATH afterwards'}")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process on 127.0.0.1; `restart` keeps its port and dir."""

    def __init__(self, binary: str, data_dir: Path, *, persistent: bool) -> None:
        self.binary, self.data_dir, self.persistent = binary, data_dir, persistent
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """On the port it had (a restart), else on a fresh one: free when picked, but
        another process could take it before redis binds it, hence three tries."""
        fixed = self.port
        for _ in range(1 if fixed else 3):
            self.port = fixed or _free_port()
            if self._start_once():
                return
        log = self.data_dir.joinpath("log").read_text()[-2000:]
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")

    def _start_once(self) -> bool:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.data_dir), "--save", ""]
        args += ["--appendonly", "yes" if self.persistent else "no"]
        with open(self.data_dir / "log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False
            if _ping(self.port):
                return True
            time.sleep(0.05)
        self.stop()
        return False

    def stop(self) -> None:
        """SIGTERM (redis writes its append-only file and exits), SIGKILL if it hangs."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="module")
def redis_server(
    redis_server_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_bin, tmp_path_factory.mktemp("redis"), persistent=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def persistent_redis(redis_server_bin: str, tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_bin, tmp_path, persistent=True)
    server.start()
    yield server
    server.stop()


def _prefix() -> str:
    """Each test its own key space on the shared server."""
    return f"raylite-test-{uuid.uuid4().hex[:8]}:"


# --- every backend -------------------------------------------------------------------


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("redis", marks=pytest.mark.timeout(REDIS_TEST_TIMEOUT_S)),
    ]
)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HeadStorage]:
    if request.param == "memory":
        store: HeadStorage = MemoryStorage()
    elif request.param == "sqlite":
        store = SqliteStorage(str(tmp_path / "head.db"))
    else:
        server = request.getfixturevalue("redis_server")
        store = RedisStorage("127.0.0.1", server.port, prefix=_prefix())
    yield store
    store.close()


def test_put_get_delete_scan_round_trip(storage: HeadStorage) -> None:
    assert storage.get("actors", b"a1") is None
    assert storage.scan("actors") == {}
    storage.put("actors", b"a1", b"\x00\x01 alive")
    storage.put("actors", b"a2", b"pending")
    storage.put("actors", b"a1", b"dead")  # replaces
    storage.put("jobs", b"a1", b"a job")  # same key, another table
    assert storage.get("actors", b"a1") == b"dead"
    assert storage.scan("actors") == {b"a1": b"dead", b"a2": b"pending"}
    assert storage.scan("jobs") == {b"a1": b"a job"}
    storage.delete("actors", b"a1")
    storage.delete("actors", b"never-there")  # not an error
    assert storage.get("actors", b"a1") is None
    assert storage.scan("actors") == {b"a2": b"pending"}
    assert storage.scan("jobs") == {b"a1": b"a job"}


def test_str_keys_are_their_utf8_bytes_and_values_are_opaque(storage: HeadStorage) -> None:
    storage.put("named_actors", "ns\x00counter-é", b"id")
    assert storage.get("named_actors", "ns\x00counter-é".encode()) == b"id"
    assert storage.scan("named_actors") == {"ns\x00counter-é".encode(): b"id"}
    blob = bytes(range(256)) * 64
    storage.put("meta", "blob", bytearray(blob))
    assert storage.get("meta", b"blob") == blob
    storage.put("meta", "empty", b"")
    assert storage.get("meta", "empty") == b""


def test_scan_returns_a_copy(storage: HeadStorage) -> None:
    storage.put("nodes", b"n1", b"x")
    rows = storage.scan("nodes")
    rows[b"n2"] = b"y"
    assert storage.scan("nodes") == {b"n1": b"x"}


def test_unknown_table_and_bad_types_are_rejected(storage: HeadStorage) -> None:
    with pytest.raises(ValueError, match="unknown head storage table 'actor'"):
        storage.put("actor", b"k", b"v")
    with pytest.raises(ValueError, match="unknown head storage table"):
        storage.scan("nope")
    with pytest.raises(TypeError, match="bytes or str"):
        storage.put("actors", 42, b"v")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be bytes"):
        storage.put("actors", b"k", "text")  # type: ignore[arg-type]


def test_every_table_is_usable(storage: HeadStorage) -> None:
    for table in TABLES:
        storage.put(table, b"k", table.encode())
    assert {t: storage.get(t, b"k") for t in TABLES} == {t: t.encode() for t in TABLES}


def test_closed_storage_refuses_calls_and_close_is_idempotent(storage: HeadStorage) -> None:
    storage.close()
    storage.close()
    if isinstance(storage, MemoryStorage):
        return  # nothing to close
    with pytest.raises(ValueError, match="closed"):
        storage.get("meta", b"k")


# --- persistence ---------------------------------------------------------------------


def test_sqlite_rows_survive_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "state" / "head.db")  # the directory is created
    with SqliteStorage(path) as first:
        first.put("nodes", b"n1", b"node one")
        first.put("jobs", b"j1", b"job one")
        first.put("jobs", b"j2", b"job two")
        first.delete("jobs", b"j2")
    with open_storage(f"sqlite://{path}") as again:
        assert again.scan("nodes") == {b"n1": b"node one"}
        assert again.scan("jobs") == {b"j1": b"job one"}


def test_sqlite_write_is_durable_when_put_returns(tmp_path: Path) -> None:
    """A head killed right after a write (no close, no atexit) loses nothing."""
    path = tmp_path / "head.db"
    code = (
        "import os, signal, sys\n"
        "from raylite.head.storage import SqliteStorage\n"
        "s = SqliteStorage(sys.argv[1])\n"
        "s.put('actors', b'a1', b'ALIVE')\n"
        "s.put('named_actors', 'ns/counter', b'a1')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], timeout=20, check=False)
    assert done.returncode == -signal.SIGKILL
    with SqliteStorage(str(path)) as again:
        assert again.get("actors", b"a1") == b"ALIVE"
        assert again.scan("named_actors") == {b"ns/counter": b"a1"}


@pytest.mark.timeout(REDIS_TEST_TIMEOUT_S)
def test_redis_rows_survive_a_new_client(redis_server: RedisServer) -> None:
    prefix = _prefix()
    with RedisStorage("127.0.0.1", redis_server.port, prefix=prefix) as first:
        first.put("actors", b"a1", b"detached")
        first.put("meta", b"cluster", b"c1")
    with RedisStorage("127.0.0.1", redis_server.port, prefix=prefix) as again:
        assert again.scan("actors") == {b"a1": b"detached"}
        assert again.get("meta", b"cluster") == b"c1"
    # Another prefix is another key space on the same server.
    with RedisStorage("127.0.0.1", redis_server.port, prefix=_prefix()) as other:
        assert other.scan("actors") == {}


@pytest.mark.timeout(REDIS_TEST_TIMEOUT_S)
def test_redis_rows_survive_a_redis_restart(persistent_redis: RedisServer) -> None:
    url = f"redis://127.0.0.1:{persistent_redis.port}/0"
    client = open_storage(url)
    try:
        client.put("nodes", b"n1", b"node one")
        client.put("named_actors", b"ns/counter", b"a1")
        persistent_redis.restart()  # same port, same --dir: the append-only file reloads
        with open_storage(url) as again:
            assert again.scan("nodes") == {b"n1": b"node one"}
            assert again.get("named_actors", b"ns/counter") == b"a1"
        # The client that was open across the restart reconnects by itself.
        assert client.get("nodes", b"n1") == b"node one"
        client.put("nodes", b"n2", b"node two")
        assert set(client.scan("nodes")) == {b"n1", b"n2"}
    finally:
        client.close()


# --- URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", [None, "", "memory", " memory ", "memory://"])
def test_memory_urls(url: str | None) -> None:
    assert isinstance(open_storage(url), MemoryStorage)


def test_sqlite_urls_absolute_and_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert str(tmp_path).startswith("/")
    with open_storage(f"sqlite://{tmp_path}/abs.db") as s:  # sqlite:///tmp/...
        assert isinstance(s, SqliteStorage)
        assert s.path == str(tmp_path / "abs.db")
    monkeypatch.chdir(tmp_path)
    with open_storage("sqlite://sub/rel.db") as s:
        assert isinstance(s, SqliteStorage)
        assert s.path == str(tmp_path / "sub" / "rel.db")
        assert s.url == f"sqlite://{tmp_path}/sub/rel.db"  # absolute: cwd-independent
    assert (tmp_path / "sub" / "rel.db").exists()


@pytest.mark.timeout(REDIS_TEST_TIMEOUT_S)
def test_redis_url_with_db_number(redis_server: RedisServer) -> None:
    with open_storage(f"redis://127.0.0.1:{redis_server.port}/3") as s:
        assert isinstance(s, RedisStorage)
        assert (s.host, s.port, s.db) == ("127.0.0.1", redis_server.port, 3)
        assert s.url == f"redis://127.0.0.1:{redis_server.port}/3"


@pytest.mark.parametrize(
    "url",
    [
        "memroy",
        "/var/lib/head.db",
        "postgres://localhost/head",
        "sqlite://",
        "sqlite:///",
        "sqlite:///tmp/dir/",
        "redis://",
        "redis://:6379",
        "redis://localhost:port",
        "redis://localhost:99999",
        "redis://localhost:6379/zero",
        "redis://localhost:6379/0?prefix=x",
    ],
)
def test_bad_urls_show_the_accepted_forms(url: str) -> None:
    with pytest.raises(ValueError, match=r"sqlite:///absolute/path\.db.*redis://host:port\[/db\]"):
        open_storage(url)


def test_unreachable_redis_is_a_clear_connection_error() -> None:
    port = _free_port()  # nothing listens there: refused at once, no timeout to wait
    with pytest.raises(ConnectionError, match=rf"redis://127\.0\.0\.1:{port}/0.*redis-server"):
        open_storage(f"redis://127.0.0.1:{port}")
