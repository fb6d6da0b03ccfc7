"""The job client's working_dir package (job_submission/sdk.local_package): the rules
of a driver's runtime_env packages (runtime_env/packaging.py), and the name the head's
job supervisor takes."""

from __future__ import annotations

import io
import zipfile

import pytest

from raylite.job_submission.sdk import local_package
from raylite.node.job_supervisor import PACKAGE_NAME
from tests.unit.test_runtime_env import _names, _tree


def test_a_jobs_working_dir_is_packaged_by_the_runtime_env_rules(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", raising=False)
    monkeypatch.delenv("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", raising=False)
    _tree(
        tmp_path,
        {
            "run.py": "r",
            "data/big.bin": "b",
            "sub/.gitignore": "out/\n",  # below the top: applies to sub/ only
            "sub/out/x.txt": "x",
            "out/kept.txt": "k",
            ".rayignore": "*.tmp\n",
            "scratch.tmp": "t",
            ".venv/lib/site.py": "v",
            "__pycache__/run.pyc": "c",
        },
    )
    got = local_package(str(tmp_path), ["data/"])
    assert got is not None
    name, data = got
    assert PACKAGE_NAME.match(name), name
    assert _names(data) == [".rayignore", "out/kept.txt", "run.py", "sub/.gitignore"]
    # The same content, the same name: the head keeps one copy.
    assert local_package(str(tmp_path), ["data/"]) == got


def test_a_zip_goes_as_it_is(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app/run.py", "r")
    path = tmp_path / "app.zip"
    path.write_bytes(buf.getvalue())
    got = local_package(str(path), None)
    assert got is not None
    assert PACKAGE_NAME.match(got[0])
    assert got[1] == buf.getvalue()
    (tmp_path / "bad.zip").write_text("not a zip")
    with pytest.raises(ValueError, match="is not a zip file"):
        local_package(str(tmp_path / "bad.zip"), None)


def test_what_is_not_a_local_package(tmp_path):
    assert local_package("gcs://_ray_pkg_" + "ab" * 20 + ".zip", None) is None  # uploaded
    with pytest.raises(NotImplementedError, match="remote URIs"):
        local_package("s3://bucket/app.zip", None)
    with pytest.raises(ValueError, match=r"is not a directory or a \.zip file"):
        local_package(str(tmp_path / "missing"), None)
    (tmp_path / "run.py").write_text("r")
    with pytest.raises(ValueError, match=r"is not a directory or a \.zip file"):
        local_package(str(tmp_path / "run.py"), None)
