"""`raylite run` and `python -m raylite`: an unmodified Ray program, with a module of
its own that says `import ray` (imported by the workers too), runs on raylite."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests._engine import AGAINST_RAY

pytestmark = pytest.mark.skipif(AGAINST_RAY, reason="raylite's own command line")

PROGRAM = """
import sys
import ray
import ray.exceptions
from ray.util.queue import Queue
import helper

ray.init(num_cpus=2)


@ray.remote
def work(x):
    return helper.double(x)


q = Queue()
q.put(1)
print("results", ray.get([work.remote(i) for i in range(3)]), q.get())
try:
    ray.get(work.remote(None))
except ray.exceptions.RayTaskError as exc:
    print("caught", isinstance(exc.cause, TypeError))
print("argv", sys.argv[1:])
ray.shutdown()
sys.exit(7)
"""

HELPER = """
import ray


def double(x):
    assert ray.__name__ == "raylite"
    return 2 * x
"""


@pytest.fixture
def program(tmp_path, no_engine):
    (tmp_path / "prog.py").write_text(textwrap.dedent(PROGRAM))
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "main.py").write_text(textwrap.dedent(PROGRAM))
    (tmp_path / "helper.py").write_text(textwrap.dedent(HELPER))
    return tmp_path


def _check(done: subprocess.CompletedProcess[str], argv: list[str]) -> None:
    assert done.returncode == 7, done.stderr  # the program's own exit code
    lines = done.stdout.splitlines()
    assert "results [0, 2, 4] 1" in lines, done.stdout + done.stderr
    assert "caught True" in lines
    assert f"argv {argv}" in lines


@pytest.mark.parametrize(
    "how",
    [
        ["-m", "raylite.cli", "run", "prog.py"],
        ["-m", "raylite", "prog.py"],
        ["-m", "raylite", "-m", "pkg.main"],
        ["-m", "raylite.cli", "run", "-m", "pkg.main"],
    ],
    ids=["run", "python-m", "python-m-module", "run-module"],
)
def test_an_unmodified_ray_program_runs(program, how):
    done = subprocess.run(
        [sys.executable, *how, "x", "--flag"],
        cwd=program,
        capture_output=True,
        text=True,
        timeout=120,
    )
    _check(done, ["x", "--flag"])


def test_a_ray_part_raylite_lacks_says_so(program):
    (program / "data.py").write_text("import ray.data\n")
    done = subprocess.run(
        [sys.executable, "-m", "raylite", "data.py"],
        cwd=program,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "ModuleNotFoundError: No module named 'ray.data'" in done.stderr
    assert "has no 'raylite.data'" in done.stderr
