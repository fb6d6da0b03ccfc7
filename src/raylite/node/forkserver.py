"""The fork server: the one process that forks this node's workers.

Owns the node's worker processes as their parent: it forks them, kills them by pid
when the node manager asks, reaps them and reports each exit. Not what a worker is
for (pool.py), not when one starts or stops (the node manager decides).

    node manager ──start (args; fds: stdout, stderr pipes)──▶ fork server ──fork──▶ worker
                 ◀──started pid ──────────────────────────────
                 ──kill pid signal──▶ os.kill (only its own, unreaped children)
                 ◀──exited pid status── SIGCHLD ──▶ waitpid

Why a separate process. The node manager runs threads beside its event loop (the
default executor's: spills and pulls, aiohttp's file reads). A fork copies only the
forking thread, so a child forked while another thread held a lock (malloc's,
logging's, an import lock, one inside a C library) could hang on it for ever. The
fork server is forked by the node's __main__.py before the node manager loads or
starts any thread or event loop (start() checks this), and stays single-threaded for
its whole life, so every fork it makes happens with no other thread about. It
imports the worker module and the public API once at its start (while the node
manager loads its own modules), so a fork costs what it did when the node manager
forked: the child has every module it needs already, and gc.freeze() lets it share
those pages.

Kills go through it because only it knows whether a pid is still one of its
children: it reaps in the same thread that kills, so a pid it has not reaped cannot
have been reused by another process.

Lifetime. Its end of the socketpair is its only tie to the node manager: when that
closes (the node manager exited, however it died), it stops its workers (SIGTERM,
then SIGKILL after kill_grace_s), reaps them, removes the node's store and session
directories (a node manager killed by SIGKILL cannot) and exits. It ignores SIGINT and
inherits the node manager's environment as it was at start (the node manager never
changes os.environ), which is the environment of every worker.

The messages are msgpack lists, one per datagram (SOCK_SEQPACKET keeps their edges):
["start", worker_id, node_address, token, session_dir, listen_ip, setup, threads]
(setup: None, or a runtime env's, runtime_env/worker_setup.py applies it in the child;
threads: its OMP_NUM_THREADS unless set) with the worker's stdout and stderr write ends
passed as SCM_RIGHTS; ["kill", pid, signum];
["remove_at_exit", [path, ...]] (the node's directories, sent once it knows them); answers
["started", pid] or ["failed", why] to each start, in order, and ["exited", pid,
status] (os.waitstatus_to_exitcode) whenever a worker ends.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import threading
import time
import traceback
from typing import Any

import msgpack

from ..config import CONFIG
from ..exceptions import ConnectionLost

_MAX_MESSAGE = 1 << 16  # a start request is a few hundred bytes


def _pack(*fields: Any) -> bytes:
    return msgpack.packb(list(fields), use_bin_type=True)


class ForkServer:
    """The node manager's end of the fork server: start and kill workers, read exits.

    Used from the node manager's event-loop thread only. start() blocks for the one
    fork (a few ms, as forking in the node manager did); the exits it reads meanwhile
    wait in `exits` for the next take_exits().
    """

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.exits: list[tuple[int, int]] = []
        self.closed = False  # its end closed: it exited, or close() ran
        # pid is 0 once reaped (pool.fork_server_gone): the number may be reused then.

    def fileno(self) -> int:
        return self.sock.fileno()

    def start(
        self,
        worker_id: bytes,
        node_address: str,
        token: bytes,
        session_dir: str,
        out_w: int,
        err_w: int,
        listen_ip: str | None,
        setup: dict[str, Any] | None = None,
        threads: int = 1,
    ) -> int:
        """Fork a worker (worker.worker_main with these arguments); its pid. `setup`:
        its runtime environment's (runtime_env/agent.py's WorkerSetup.to_wire());
        `threads`: its OMP_NUM_THREADS unless the environment sets one (as Ray: the
        CPUs of the lease it starts for, at least 1)."""
        request = _pack(
            "start", worker_id, node_address, token, session_dir, listen_ip, setup, threads
        )
        try:
            socket.send_fds(self.sock, [request], [out_w, err_w])
        except OSError as exc:
            raise ConnectionLost(f"the fork server is gone: {exc}") from exc
        while True:
            msg = self._recv(block=True)
            if msg is None:
                raise ConnectionLost("the fork server exited")
            if msg[0] == "started":
                return int(msg[1])
            if msg[0] == "failed":
                raise OSError(f"the fork server could not fork a worker: {msg[1]}")
            self.exits.append((msg[1], msg[2]))

    def kill(self, pid: int, signum: int) -> None:
        """Signal the worker `pid` if it has not exited yet (else nothing happens)."""
        with contextlib.suppress(OSError):  # gone: so are its workers, killed on its exit
            self.sock.send(_pack("kill", pid, int(signum)))

    def remove_at_exit(self, *paths: str) -> None:
        """Directories it removes when it exits: the node's, gone with the node manager
        however that died (a normal stop has removed them already)."""
        with contextlib.suppress(OSError):
            self.sock.send(_pack("remove_at_exit", list(paths)))

    def take_exits(self) -> list[tuple[int, int]]:
        """(pid, exit status) of the workers that ended since the last call."""
        while (msg := self._recv(block=False)) is not None:
            self.exits.append((msg[1], msg[2]))
        exits, self.exits = self.exits, []
        return exits

    def _recv(self, *, block: bool) -> list[Any] | None:
        """The next message; None when there is none now (block=False) or none ever."""
        if self.closed:
            return None
        try:
            data = self.sock.recv(_MAX_MESSAGE, 0 if block else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return None
        return msgpack.unpackb(data, raw=False)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close our end and wait for it: it stops what workers it still has, exits."""
        self.closed = True
        self.sock.close()
        if self.pid:  # 0: the pool reaped it already
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)


def start() -> ForkServer:
    """Fork the fork server from this process, which must have no other thread yet."""
    if threading.active_count() != 1:
        raise RuntimeError(
            "the fork server must start before any thread: call it first in main() "
            f"(threads now: {[t.name for t in threading.enumerate()]})"
        )
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # child: the fork server, never returns
        code = 1
        try:
            ours.close()
            _serve(theirs)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    theirs.close()
    return ForkServer(pid, ours)


def _serve(sock: socket.socket) -> None:
    """The fork server's loop: requests in, forks, kills and exits out, until EOF."""
    import gc

    import raylite

    from ..worker import worker_main  # once here, so each fork has it imported

    raylite.load_all()  # and what the tasks it runs use (`ray.get` in a task)
    # and what a worker runs at its start (worker_main), so no fork imports them itself
    from .. import codec, init_options, ray_alias  # noqa: F401
    from ..core.refs import trim_heap
    from ..runtime_env import worker_setup

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # it ends with its node manager only
    # Its stdin is the driver's pipe and its stdout the one `raylite start` reads
    # READY from: holding neither, it cannot delay an EOF either of them waits for.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    # SIGCHLD wakes select() through this pipe (the handler itself does nothing).
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    gc.freeze()  # workers share these pages instead of copying them
    trim_heap()  # and inherit no free heap pages (1 MB RSS each, idle)
    children: set[int] = set()
    remove_at_exit: list[str] = []

    def tell(*fields: Any) -> bool:
        try:
            sock.send(_pack(*fields))
            return True
        except OSError:  # the node manager is gone
            return False

    def reap() -> None:
        with contextlib.suppress(OSError):
            while os.read(wake_r, 4096):
                pass
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            tell("exited", pid, os.waitstatus_to_exitcode(status))

    # The wire's decoders, made while no request waits (~90 of them, ~0.2 ms each: 20
    # ms in all), so every later fork shares them; not before the first request, which
    # a new session's first task waits for (a worker makes what it lacks as it needs it).
    to_prepare = codec.unprepared()
    sock_fd = sock.fileno()
    while True:
        ready, _, _ = select.select([sock_fd, wake_r], [], [], 0 if to_prepare else None)
        if not ready:  # (only while decoders are left to make)
            codec.prepare(to_prepare.pop())
            if not to_prepare:
                gc.collect()  # (what building them left for the collector is not kept)
                gc.freeze()
                trim_heap()
            continue
        if wake_r in ready:
            reap()
        if sock_fd not in ready:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, 2)
        except OSError:
            data, fds = b"", []
        if not data:
            break  # the node manager is gone
        msg = msgpack.unpackb(data, raw=False)
        if msg[0] == "kill":
            if msg[1] in children:  # not reaped yet: the pid is still that worker's
                with contextlib.suppress(ProcessLookupError):
                    os.kill(msg[1], msg[2])
            continue
        if msg[0] == "remove_at_exit":
            remove_at_exit = msg[1]
            continue
        _, worker_id, node_address, token, session_dir, listen_ip, setup, threads = msg
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            if not tell("failed", str(exc)):
                break
            continue
        if pid == 0:  # a worker: worker_main never returns
            try:
                out_w, err_w = fds
                if setup is not None:  # a runtime env's worker (pip: exec its interpreter)
                    from ..runtime_env import worker_setup

                    worker_setup.apply(setup)
                # Math libraries size their thread pools by it at import: one pool per
                # CPU the lease holds, not per core of the machine (Ray's rule).
                os.environ.setdefault("OMP_NUM_THREADS", str(threads))
                if setup is not None and setup["python"]:
                    args = [worker_id, node_address, token, session_dir, listen_ip]
                    worker_setup.exec_worker(setup, args, out_w, err_w)
                worker_main(worker_id, node_address, token, session_dir, out_w, err_w, listen_ip)
            finally:
                os._exit(1)
        children.add(pid)
        for fd in fds:
            os.close(fd)
        if not tell("started", pid):
            break

    # The node manager exited: its workers lose their node and exit by themselves;
    # give them kill_grace_s, as the node manager's own shutdown does, then SIGKILL.
    sock.close()
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + CONFIG.kill_grace_s
    while children and (left := deadline - time.monotonic()) > 0:
        select.select([wake_r], [], [], left)
        reap()
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    for path in remove_at_exit:  # its workers are gone: nothing maps a segment now
        shutil.rmtree(path, ignore_errors=True)
