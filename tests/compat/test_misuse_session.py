"""Misuse of a session's life (issue 18): refs kept across shutdown, a forked driver,
shutdown with work queued, SIGINT in get, sys.exit with tasks running, a lost node
manager. Each ends with the engine (or a fresh one) running a task, and raylite's
processes gone (conftest's teardown; scripts run here check their own children).

The API before init, after shutdown, init twice and shutdown twice are in
test_lifecycle.py; only the calls that test does not make are here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from tests._engine import AGAINST_RAY, ENGINE_NAME, exceptions, ray, raylite_only, wait_for

RAY_INIT = {"num_cpus": 2}

pytestmark = pytest.mark.timeout(300)


@ray.remote
def identity(x=1):
    return x


def still_works(value=7):
    assert ray.get(identity.remote(value), timeout=60) == value


def run_script(body: str, **kwargs) -> subprocess.Popen[str]:
    """A driver script of its own (its signals and exit are the test's subject)."""
    script = f"import {ENGINE_NAME} as ray\n" + textwrap.dedent(body)
    return subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 150) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"script still running after {timeout} s:\n{out}\n{err[-3000:]}")
    return proc.returncode, out, err


def assert_gone(pids: list[int], timeout: float = 30.0) -> None:
    def left() -> list[int]:
        return [p for p in pids if psutil.pid_exists(p) and _not_zombie(p)]

    wait_for(lambda: not left(), timeout, lambda: f"processes left: {left()}")


def _not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# --- API calls outside a session ----------------------------------------------------------


def test_kill_and_get_actor_before_init_and_after_shutdown(no_engine):
    with pytest.raises(ValueError):
        ray.kill(3)
    with pytest.raises(ValueError):
        ray.get_actor("no-such-actor")
    ray.shutdown()
    with pytest.raises(ValueError):
        ray.kill("an actor's name")
    with pytest.raises(ValueError):
        ray.get_actor("no-such-actor")
    ray.shutdown()
    ray.init(num_cpus=1)
    still_works()


# --- a ref from an earlier session --------------------------------------------------------


def test_a_ref_from_an_earlier_session_is_not_part_of_this_one(no_engine):
    """Ray raises ValueError ("... part of the current Ray session"); raylite raised
    OwnerDiedError naming a socket path, which did not say what happened."""
    ray.init(num_cpus=1)
    put_ref = ray.put("old")
    task_ref = identity.remote("old")
    assert ray.get(task_ref, timeout=60) == "old"
    ray.shutdown()
    ray.init(num_cpus=1)
    for ref in (put_ref, task_ref):
        with pytest.raises(ValueError, match=r"current .*session"):
            ray.get(ref, timeout=30)
        with pytest.raises(ValueError, match=r"current .*session"):
            ray.get([ref], timeout=30)
        with pytest.raises(ValueError, match=r"current .*session"):
            ray.wait([ref], timeout=5)
        with pytest.raises(ValueError, match=r"current .*session"):
            identity.remote(ref)
        with pytest.raises(ValueError, match=r"current .*session"):
            identity.remote([ref])
    still_works()


# --- fork ---------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_child_forked_after_init_fails_at_once_and_the_parent_goes_on(ray_fresh):
    """Both engines left the child hanging until its timeout (the session's sockets and
    threads are the parent's). raylite raises at once in the child, saying why; Ray's
    child is not judged here (it hangs, or reads a value it happened to hold), but on
    both the parent's session must survive the child."""
    ref = identity.remote(5)
    assert ray.get(ref, timeout=60) == 5
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's exit paths
        try:
            os.close(read)
            outcome = "returned"
            start = time.monotonic()
            try:
                ray.get(identity.remote(6), timeout=10)
            except BaseException as exc:  # the child reports whatever it got
                outcome = f"{type(exc).__name__}: {exc}"
            os.write(write, f"{time.monotonic() - start:.2f} {outcome}".encode()[:4000])
        finally:
            os._exit(0)
    os.close(write)
    chunks = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        while chunk := os.read(read, 4096):
            chunks.append(chunk)
    finally:
        os.close(read)
    report = b"".join(chunks).decode()
    if not AGAINST_RAY:
        seconds, _, outcome = report.partition(" ")
        assert outcome.startswith("RuntimeError"), report
        assert "forked" in outcome, outcome
        assert "spawn" in outcome, outcome
        assert float(seconds) < 5, report
    still_works()
    assert ray.get(ref, timeout=60) == 5


@raylite_only  # Ray's forked child hangs here (and at its exit), so there is nothing to compare
def test_a_forked_child_exiting_normally_leaves_the_parents_session_up(no_engine):
    """The child runs the exit hooks it inherited; raylite's would stop the parent's node
    manager over the parent's socket, so a fork drops them in the child."""
    proc = run_script(
        """
        import os, sys
        ray.init(num_cpus=1)

        @ray.remote
        def f(x):
            return x

        assert ray.get(f.remote(1)) == 1
        pid = os.fork()
        if pid == 0:
            try:
                f.remote(2)
            except RuntimeError as exc:
                print("child:", type(exc).__name__, flush=True)
            sys.exit(0)  # atexit hooks run in the child
        os.waitpid(pid, 0)
        print("parent:", ray.get(f.remote(3), timeout=60), flush=True)
        ray.shutdown()
        """
    )
    rc, out, err = finish(proc)
    assert rc == 0, err[-3000:]
    assert "child: RuntimeError" in out, out + err[-3000:]
    assert "parent: 3" in out, out + err[-3000:]


# --- shutdown with work queued ------------------------------------------------------------


def test_shutdown_with_a_task_no_node_can_run_queued(no_engine):
    """Seen: the lease request's answer to a closed connection asked again, which was
    answered at once, ... about 4,700 lines ending in RecursionError."""
    proc = run_script(
        """
        ray.init(num_cpus=1)

        @ray.remote(num_cpus=4)
        def too_big():
            return 1

        @ray.remote
        def small():
            return 2

        refs = [too_big.remote() for _ in range(3)]
        assert ray.get(small.remote(), timeout=60) == 2
        ray.shutdown()
        print("shut down", flush=True)
        ray.init(num_cpus=1)
        print("again:", ray.get(small.remote(), timeout=60), flush=True)
        ray.shutdown()
        """
    )
    rc, out, err = finish(proc)
    assert rc == 0, err[-3000:]
    assert "shut down" in out, out + err[-3000:]
    assert "again: 2" in out, out + err[-3000:]
    assert "RecursionError" not in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]


# --- signals and exits --------------------------------------------------------------------


def test_sigint_while_blocked_in_get_raises_keyboard_interrupt_and_the_engine_goes_on(
    no_engine, tmp_path
):
    started = tmp_path / "started"
    proc = run_script(
        f"""
        import time
        ray.init(num_cpus=2)

        @ray.remote
        def slow():
            open({str(started)!r}, "w").close()
            time.sleep(120)

        @ray.remote
        def quick():
            return 5

        ref = slow.remote()
        try:
            print("blocking", flush=True)
            ray.get(ref)
            print("get returned", flush=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        print("after:", ray.get(quick.remote(), timeout=60), flush=True)
        ray.cancel(ref, force=True)
        ray.shutdown()
        """,
        cwd=os.getcwd(),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "blocking"
    # The task runs, so the driver is in get (or about to be): interrupt it there.
    wait_for(started.exists, 120, "the slow task to start")
    proc.send_signal(signal.SIGINT)
    rc, out, err = finish(proc)
    assert "interrupted" in out, out + err[-3000:]
    assert "after: 5" in out, out + err[-3000:]
    assert rc == 0, err[-3000:]


def test_sys_exit_with_tasks_running_exits_with_its_code(no_engine, tmp_path):
    started = tmp_path / "started"
    proc = run_script(
        f"""
        import sys, time
        from tests._engine import wait_for_path
        ray.init(num_cpus=2)

        @ray.remote
        def slow(i):
            open({str(started)!r}, "w").close()
            time.sleep(120)

        refs = [slow.remote(i) for i in range(4)]
        wait_for_path({str(started)!r}, 120)
        if ray.__name__ == "raylite":
            import psutil
            kids = psutil.Process().children(recursive=True)
            print("children:", " ".join(str(p.pid) for p in kids), flush=True)
        sys.exit(3)
        """,
        cwd=os.getcwd(),
    )
    start = time.monotonic()
    rc, out, err = finish(proc)
    assert rc == 3, out + err[-3000:]
    assert time.monotonic() - start < 100  # not after the tasks' 120 s
    if not AGAINST_RAY:  # the node manager, its workers and the running tasks' are gone
        pids = [
            int(p)
            for line in out.splitlines()
            if line.startswith("children:")
            for p in line.split()[1:]
        ]
        assert pids, out
        assert_gone(pids)


# --- the node manager lost ----------------------------------------------------------------


@raylite_only  # kills raylite's node manager process (Ray's driver dies with its raylet)
def test_a_lost_node_manager_fails_queued_tasks_once_then_init_again(no_engine):
    """Queued tasks waited forever once the connection to the node manager was gone
    (nothing reconnects); they fail with NodeDiedError, and so does a new one, at once."""
    from raylite import api

    ray.init(num_cpus=1)

    @ray.remote(num_cpus=4)
    def too_big():
        return 1

    still_works()
    queued = [too_big.remote() for _ in range(3)]
    node = api._runtime.proc
    node.kill()
    node.wait(timeout=30)
    for ref in queued:
        with pytest.raises(exceptions.NodeDiedError, match="node manager"):
            ray.get(ref, timeout=60)
    with pytest.raises(exceptions.NodeDiedError):
        ray.get(identity.remote(1), timeout=60)
    ray.shutdown()
    ray.init(num_cpus=1)
    still_works()
