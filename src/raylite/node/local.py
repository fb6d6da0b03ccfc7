"""The nodes `raylite start` runs on this machine, as files other local processes read.

One JSON file per node in /tmp/raylite/nodes/ (mode 0600, this user only): its pid,
addresses, session and store directories and token file. `raylite stop` stops the
ones whose address is on this host, `raylite status` and `init(address=...)` find
the local node of a cluster through them.

    raylite start ──spawn──▶ node manager ──READY──▶ raylite start ──write──▶ <pid>.json
    init("HOST:PORT") ──read──▶ <pid>.json ──▶ unix socket of the local node
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import socket
import tempfile
from typing import Any

import psutil


def nodes_dir() -> str:
    path = os.path.join(tempfile.gettempdir(), "raylite", "nodes")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def netns_id(pid: int | str = "self") -> str:
    """The network namespace of a process, this one by default ("" where it cannot be
    told): processes in other namespaces (containers, testnet hosts) share /tmp but not
    their addresses."""
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return ""
    return f"{st.st_dev}:{st.st_ino}"


def write_node(info: dict[str, Any]) -> str:
    info.setdefault("netns", netns_id())  # `raylite start` runs where its node runs
    path = os.path.join(nodes_dir(), f"{info['pid']}.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    return path


def local_ips() -> set[str]:
    """Addresses of this host (of this network namespace), loopback included."""
    ips = {"127.0.0.1"}
    with contextlib.suppress(Exception):
        for addrs in psutil.net_if_addrs().values():
            for a in addrs:
                if a.family == socket.AF_INET:
                    ips.add(a.address)
    return ips


def local_nodes() -> list[dict[str, Any]]:
    """Nodes started here whose process still runs, newest first. "Here" is this
    network namespace: a node on 127.0.0.1 in another one (a container, a testnet host
    sharing /tmp) has the same address but is another machine's."""
    ips = local_ips()
    netns = netns_id()
    found = []
    for path in glob.glob(os.path.join(nodes_dir(), "*.json")):
        try:
            with open(path) as f:
                info = json.load(f)
        except (OSError, ValueError):
            continue
        info["file"] = path
        if info.get("ip") not in ips:
            continue  # another host's (testnet hosts share this directory)
        # Its file says (nodes since this check), else /proc does (older files).
        theirs = info.get("netns") or netns_id(int(info.get("pid", 0)))
        if netns and theirs and theirs != netns:
            continue  # same address, another namespace: another host's
        if not psutil.pid_exists(int(info.get("pid", 0))):
            remove_dirs(info)  # it was killed: nobody else removes its files
            continue
        found.append(info)
    return sorted(found, key=lambda i: i.get("started", 0), reverse=True)


def remove_dirs(info: dict[str, Any]) -> None:
    """A stopped node's session and store directories, and its file here."""
    for key in ("session_dir", "store_dir"):
        if info.get(key):
            shutil.rmtree(info[key], ignore_errors=True)
    with contextlib.suppress(OSError):
        os.unlink(info["file"])


def normalize(address: str) -> str:
    """'HOST:PORT', 'tcp:HOST:PORT' or 'raylite://HOST:PORT' -> 'tcp:HOST:PORT'."""
    address = address.strip()
    for scheme in ("raylite://", "ray://", "tcp:"):
        if address.startswith(scheme):
            address = address[len(scheme) :]
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"bad cluster address {address!r}: want HOST:PORT, e.g. 10.0.0.1:6380")
    return f"tcp:{host}:{port}"


def is_remote_address(address: str) -> bool:
    """raylite://HOST:PORT or ray://HOST:PORT: a driver that may run on a machine with
    no node of the cluster (it then attaches to one over TCP: core/remote_driver.py)."""
    return address.strip().startswith(("raylite://", "ray://"))


def find_local_node(address: str) -> dict[str, Any]:
    """The node on this host that belongs to the cluster at `address` ("auto": any)."""
    nodes = [n for n in local_nodes() if not n.get("head_only")]  # the head runs no drivers
    if address != "auto":
        want = normalize(address)
        nodes = [n for n in nodes if want in (n.get("head_address"), n.get("tcp_address"))]
    if not nodes:
        where = "any cluster" if address == "auto" else f"the cluster at {address}"
        raise ConnectionError(
            f"No raylite node of {where} runs on this machine. Start one first: "
            "`raylite start --head` for a new cluster, or `raylite start --address=HOST:PORT` "
            "to join one; or call init() without an address for a local session. From a "
            "machine without a node: init(address='raylite://HOST:PORT') with RAYLITE_TOKEN."
        )
    return nodes[0]


def read_token(path: str) -> bytes:
    with open(path) as f:
        return bytes.fromhex(f.read().strip())


def token_from_env() -> bytes | None:
    """RAYLITE_TOKEN: 64 hex digits as they are, any other text hashed to 32 bytes."""
    raw = os.environ.get("RAYLITE_TOKEN")
    if not raw:
        return None
    return parse_token(raw)


def parse_token(raw: str | bytes) -> bytes:
    """A cluster token as given (RAYLITE_TOKEN, init(_token=...)): 32 bytes as they are,
    64 hex digits as the bytes they spell, any other text hashed to 32 bytes."""
    if isinstance(raw, bytes):
        if len(raw) == 32:
            return raw
        raw = raw.decode()
    raw = raw.strip()
    try:
        token = bytes.fromhex(raw)
        if len(token) == 32:
            return token
    except ValueError:
        pass
    return hashlib.sha256(raw.encode()).digest()
