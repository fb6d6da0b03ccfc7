"""Where the head keeps its metadata: in memory, in a SQLite file or in Redis.

Owns the rows and their durability, nothing of their meaning: the head encodes its
records (msgpack) and decides what to write when; this module stores opaque bytes
under (table, key). Not the live state (head), not the wire (protocol).

    head ──put/get/delete/scan(table, key)──▶ HeadStorage
                                                ├── MemoryStorage   dicts; gone with the head
                                                ├── SqliteStorage   one file ──▶ disk
                                                └── RedisStorage    ──TCP──▶ redis-server

    head killed, started again ──open_storage(url)──▶ scan(table) ──▶ rebuilt tables

`open_storage(url)` picks the backend: None, "" or "memory"; "sqlite:///abs/path.db"
or "sqlite://relative.db"; "redis://host:port[/db]".

The API is synchronous. The head calls it from its event loop: a SQLite write in WAL
mode is well under a millisecond and a Redis round trip on a LAN about 0.1 ms, less
than handing each write to a thread would cost, and keeping the calls in order on
one thread means no write can overtake another. The price is that a slow or dead
Redis stalls the loop, so every socket operation has a timeout and the stall is
bounded (see RedisStorage). redis-py is chosen over a hand-written RESP client: it
is well kept and handles reconnects, timeouts and retries that we would otherwise
get subtly wrong.

When a call returns, the write is as durable as its backend makes it: SQLite has
committed it (it survives the head being killed; synchronous=NORMAL may lose the
last commits on power loss, not on a crash); Redis has applied it, and whether it
survives a Redis restart is the server's setting (`--appendonly yes`).
"""

from __future__ import annotations

import abc
import os
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..config import CONFIG

if TYPE_CHECKING:  # imported where used: the default, in-memory storage needs neither
    import sqlite3

# The tables the head uses. A name not in this set is a bug (a typo would write rows
# that recovery never reads), so every backend rejects it.
TABLES = frozenset(
    {"nodes", "actors", "named_actors", "jobs", "meta", "placement_groups", "job_submissions",
     "job_logs"}
)  # fmt: skip

URL_FORMS = (
    "memory (the default: None, '' or 'memory'), "
    "sqlite:///absolute/path.db, sqlite://relative/path.db, "
    "redis://host:port[/db]"
)

Key = bytes | str


def _key(key: Key) -> bytes:
    """Keys are stored as bytes; a str key is its UTF-8 encoding (so "a" == b"a")."""
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    raise TypeError(f"a storage key must be bytes or str, not {type(key).__name__}")


def _value(value: bytes) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"a storage value must be bytes, not {type(value).__name__}")


def _table(table: str) -> str:
    if table not in TABLES:
        raise ValueError(f"unknown head storage table {table!r}; the tables are {sorted(TABLES)}")
    return table


class HeadStorage(abc.ABC):
    """A set of named key-value tables; keys are bytes (str accepted), values bytes.

    Not thread-safe beyond what each backend says: the head calls it from one thread.
    """

    url: str  # how to open it again; for `raylite status` (a Redis password left out)

    @abc.abstractmethod
    def put(self, table: str, key: Key, value: bytes) -> None:
        """Insert or replace one row; durable (per the backend) when this returns."""

    @abc.abstractmethod
    def get(self, table: str, key: Key) -> bytes | None:
        """The row's value, or None if there is none."""

    @abc.abstractmethod
    def delete(self, table: str, key: Key) -> None:
        """Remove one row; deleting a missing row is not an error."""

    @abc.abstractmethod
    def scan(self, table: str) -> dict[bytes, bytes]:
        """Every row of one table, as a new dict (the head reads it once at start)."""

    def close(self) -> None:  # noqa: B027 -- memory has nothing to close
        """Release the file or connection; idempotent."""

    def __enter__(self) -> HeadStorage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class MemoryStorage(HeadStorage):
    """Plain dicts: the default; the metadata dies with the head process."""

    def __init__(self) -> None:
        self.url = "memory"
        self._tables: dict[str, dict[bytes, bytes]] = {t: {} for t in TABLES}

    def put(self, table: str, key: Key, value: bytes) -> None:
        self._tables[_table(table)][_key(key)] = _value(value)

    def get(self, table: str, key: Key) -> bytes | None:
        return self._tables[_table(table)].get(_key(key))

    def delete(self, table: str, key: Key) -> None:
        self._tables[_table(table)].pop(_key(key), None)

    def scan(self, table: str) -> dict[bytes, bytes]:
        return dict(self._tables[_table(table)])


class SqliteStorage(HeadStorage):
    """One SQLite file, one row per (table, key); every write its own transaction.

    WAL with synchronous=NORMAL: a commit is a write to the WAL file without an
    fsync, so it survives the head process being killed (the OS has the bytes) and
    costs microseconds; only a power loss can drop the last commits. The
    connection may be used from any thread, one call at a time (a lock serialises
    them), so the head can open it before its loop thread starts.
    """

    def __init__(self, path: str) -> None:
        if not path:
            raise ValueError(f"an empty SQLite path; the accepted forms are: {URL_FORMS}")
        self.path = os.path.abspath(path)
        self.url = f"sqlite://{self.path}"
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._lock = threading.Lock()
        import sqlite3

        # isolation_level=None: autocommit, each statement is committed when it returns.
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=CONFIG.sqlite_timeout_s,
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS kv ("
            " tbl TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,"
            " PRIMARY KEY (tbl, key)) WITHOUT ROWID"
        )

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise ValueError(f"{self!r} is closed")
        return self._db

    def put(self, table: str, key: Key, value: bytes) -> None:
        row = (_table(table), _key(key), _value(value))
        with self._lock:
            self._conn().execute(
                "INSERT OR REPLACE INTO kv (tbl, key, value) VALUES (?, ?, ?)", row
            )

    def get(self, table: str, key: Key) -> bytes | None:
        with self._lock:
            found = (
                self._conn()
                .execute(
                    "SELECT value FROM kv WHERE tbl = ? AND key = ?", (_table(table), _key(key))
                )
                .fetchone()
            )
        return None if found is None else bytes(found[0])

    def delete(self, table: str, key: Key) -> None:
        with self._lock:
            self._conn().execute(
                "DELETE FROM kv WHERE tbl = ? AND key = ?", (_table(table), _key(key))
            )

    def scan(self, table: str) -> dict[bytes, bytes]:
        with self._lock:
            rows = self._conn().execute("SELECT key, value FROM kv WHERE tbl = ?", (_table(table),))
            return {bytes(k): bytes(v) for k, v in rows}

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


class RedisStorage(HeadStorage):
    """One Redis hash per table, named `prefix + table`; rows are its fields.

    Two heads sharing one Redis need different prefixes (or dbs). A dropped
    connection is reopened on the next call (redis-py's pool); a call that still
    cannot reach the server raises ConnectionError after at most about
    (1 + redis_retries) * redis_timeout_s seconds (config.py): those bound how long one
    call can block the head's loop. Every command is idempotent
    (HSET, HDEL, HGET, HGETALL), so retrying one that may have been applied is safe.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        db: int = 0,
        prefix: str = "raylite:",
        *,
        password: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        if timeout_s is None:
            timeout_s = CONFIG.redis_timeout_s
        # Imported here: the default (memory) head and every worker never need redis-py.
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        self._redis_errors: tuple[type[Exception], ...] = (redis.RedisError,)
        self.host, self.port, self.db, self.prefix = host, port, db, prefix
        self.url = f"redis://{host}:{port}/{db}"
        self._client: Any = redis.Redis(
            host=host,
            port=port,
            db=db,
            password=password,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), CONFIG.redis_retries),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        self._call("ping")  # fail now, with the address in the message, not at the first write

    def _call(self, command: str, *args: Any) -> Any:
        if self._client is None:
            raise ValueError(f"{self!r} is closed")
        try:
            return getattr(self._client, command)(*args)
        except self._redis_errors as exc:
            raise ConnectionError(
                f"head storage {self.url}: Redis {command} failed: {exc}. Check that "
                "redis-server runs there and accepts this client (password, db number), "
                "or start the head with another --storage."
            ) from exc

    def _hash(self, table: str) -> str:
        return self.prefix + _table(table)

    def put(self, table: str, key: Key, value: bytes) -> None:
        self._call("hset", self._hash(table), _key(key), _value(value))

    def get(self, table: str, key: Key) -> bytes | None:
        found: bytes | None = self._call("hget", self._hash(table), _key(key))
        return found

    def delete(self, table: str, key: Key) -> None:
        self._call("hdel", self._hash(table), _key(key))

    def scan(self, table: str) -> dict[bytes, bytes]:
        return dict(self._call("hgetall", self._hash(table)))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def open_storage(url: str | None) -> HeadStorage:
    """The backend a `--storage` URL names; ValueError shows the accepted forms."""
    if url is None or url.strip() in ("", "memory", "memory://"):
        return MemoryStorage()
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"bad head storage URL {url!r}; the accepted forms are: {URL_FORMS}")
    if scheme == "sqlite":
        # "sqlite:///abs/x.db" leaves "/abs/x.db"; "sqlite://x.db" leaves "x.db".
        if not rest or rest.endswith("/"):
            raise ValueError(
                f"head storage URL {url!r} names no SQLite file; the accepted forms are: {URL_FORMS}"
            )
        return SqliteStorage(rest)
    if scheme == "redis":
        import urllib.parse

        parts = urllib.parse.urlsplit(url)
        try:
            port = parts.port or 6379
            db = int(parts.path.strip("/") or 0)
        except ValueError:
            port = db = -1
        if not parts.hostname or port < 0 or db < 0 or parts.query or parts.fragment:
            raise ValueError(f"bad Redis URL {url!r}; the accepted forms are: {URL_FORMS}")
        return RedisStorage(parts.hostname, port, db, password=parts.password)
    raise ValueError(
        f"unknown head storage {scheme!r} in {url!r}; the accepted forms are: {URL_FORMS}"
    )


__all__ = [
    "TABLES",
    "HeadStorage",
    "MemoryStorage",
    "RedisStorage",
    "SqliteStorage",
    "open_storage",
]
