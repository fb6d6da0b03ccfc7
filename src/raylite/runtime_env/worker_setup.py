"""In a worker's process, before it serves: its runtime environment applied.

Owns what a worker of an environment does at start, from the setup the node built
(agent.WorkerSetup, sent to the fork server with the start request): the env_vars set
in os.environ, the working_dir made the cwd, working_dir and py_modules put first on
sys.path, the resolved env recorded (RUNTIME_ENV_VAR: the tasks it submits inherit
it, and get_runtime_context().runtime_env reads it), and, for a pip env, the exec of
the virtualenv's interpreter (`python -m raylite.runtime_env.worker_setup`, which
then runs worker_main). Not building anything (agent.py).

    fork server ──fork──▶ child: apply(setup) ──▶ worker_main        (no pip)
                                           └──exec venv python ──▶ main() ──▶ worker_main
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from .spec import RUNTIME_ENV_VAR

_EXEC_VAR = "RAYLITE_WORKER_EXEC"  # the exec'ed worker's arguments (JSON)


def apply(setup: dict[str, Any]) -> None:
    """Set this process up for its env (in the forked child, before worker_main)."""
    os.environ.update(setup["env_vars"])
    os.environ[RUNTIME_ENV_VAR] = setup["runtime_env"]
    if setup["cwd"]:
        os.chdir(setup["cwd"])
    for path in reversed(setup["sys_path"]):
        sys.path.insert(0, path)


def exec_worker(setup: dict[str, Any], args: list[Any], out_w: int, err_w: int) -> None:
    """Replace this child by the virtualenv's interpreter running the worker; never
    returns (raises OSError if the exec fails)."""
    os.set_inheritable(out_w, True)
    os.set_inheritable(err_w, True)
    worker_id, node_address, token, session_dir, listen_ip = args
    os.environ[_EXEC_VAR] = json.dumps(
        [
            worker_id.hex(),
            node_address,
            token.hex(),
            session_dir,
            out_w,
            err_w,
            listen_ip,
            setup["sys_path"],
        ]
    )
    python = setup["python"]
    os.execv(python, [python, "-m", "raylite.runtime_env.worker_setup"])


def main() -> None:
    """The exec'ed worker: its arguments from the environment, then worker_main."""
    raw = os.environ.pop(_EXEC_VAR)  # holds the token: gone before any task runs
    worker_id, node_address, token, session_dir, out_w, err_w, listen_ip, paths = json.loads(raw)
    for path in reversed(paths):
        sys.path.insert(0, path)
    from ..worker import worker_main

    worker_main(
        bytes.fromhex(worker_id),
        node_address,
        bytes.fromhex(token),
        session_dir,
        out_w,
        err_w,
        listen_ip,
    )


if __name__ == "__main__":
    main()
