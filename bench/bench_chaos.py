"""Chaos soak, the long run: tests/multinode/chaos.py's soak for `--duration` seconds.

    sudo .venv/bin/python bench/bench_chaos.py [--duration 600] [--seed N]

Three testnet hosts (tests/netns.py, root needed): a head with SQLite storage and a
node in h1, a node each in h2 and h3. A workload driver in h1 runs rounds of tasks,
at-most-once tasks, actor calls (max_task_retries -1 and 0), objects made on one node
and used on another, and calls to a named detached actor looked up by name, while
faults are injected one at a time: a worker, an actor or a node manager killed by
pid (the node started again), h2 or h3 partitioned then healed (some past the node
timeout, so the node is declared dead and rejoins), the head killed and restarted.
Then the cluster must recover, everything must work on every node, and once stopped
it must leave no process, directory or shared-memory segment.

Prints one JSON line per count: each fault injected, each outcome (per phase, kind and
error), rounds, and one line per problem found (a result lost or wrong, work applied
twice or run twice where it may not be, a failure outside Ray's documented errors, a
leak). Exits 1 if there was any problem, 77 where the testnet cannot run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tests.multinode import chaos  # noqa: E402 - the soak itself
from tests.netns import Testnet  # noqa: E402 - the repository's testnet helper

NET = Testnet("rlchaos", "10.80.0", grace=1.0)
ENV = {**os.environ, **NET.env(), "RAYLITE_TOKEN": "raylite chaos bench"}


def emit(metric: str, value: object, unit: str = "count") -> None:
    print(json.dumps({"metric": metric, "raylite": value, "unit": unit}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--duration", type=float, default=600, help="seconds of chaos")
    parser.add_argument("--seed", type=int, default=None, help="the faults' sequence")
    args = parser.parse_args()
    why = NET.unusable()
    if why:
        print(f"testnet is not usable here: {why}", file=sys.stderr)
        return 77
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    src = os.path.join(ROOT, "src")
    env = {**ENV, "PYTHONPATH": os.pathsep.join(filter(None, [src, ENV.get("PYTHONPATH")]))}
    NET.up(3)
    try:
        with tempfile.TemporaryDirectory(prefix="raylite-chaos-") as workdir:
            report = chaos.soak(
                NET,
                env,
                workdir,
                args.duration,
                seed,
                log=lambda line: print(f"# {line}", file=sys.stderr, flush=True),
            )
    finally:
        NET.down()
    emit("seed", report["seed"], "-")
    emit("soak_seconds", report["seconds"], "s")
    emit("chaos_seconds", report["chaos_seconds"], "s")
    emit("workload_rounds", report["rounds"])
    for fault, n in report["faults"].items():
        emit(f"fault {fault}", n)
    for outcome, n in report["outcomes"].items():
        emit(f"outcome {outcome}", n)
    emit("problems", len(report["problems"]))
    for problem in report["problems"]:
        print(json.dumps({"problem": problem}), flush=True)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
