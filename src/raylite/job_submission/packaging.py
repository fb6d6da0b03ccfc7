"""A job's working_dir as a content-addressed zip: its name, its bytes, its upload.

Owns what the client does before submitting: walk a local directory (leaving out the
runtime_env's `excludes` and what .gitignore files ignore, gitwildmatch patterns, as
Ray does), name it by the hash of its paths and contents (`_ray_pkg_<hash>.zip`),
zip it, and turn runtime_env["working_dir"] into `gcs://<name>`. Not the upload's
HTTP (sdk.py) nor the unpacking (node/job_supervisor.py).

    ./project ──walk, hash──▶ _ray_pkg_<h>.zip ──GET exists? / PUT──▶ head ──unzip once──▶ cwd
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Callable

import pathspec

MAX_PACKAGE_BYTES = 512 << 20  # the head's limit too (job_supervisor.py)


def _ignored(root: str, excludes: list[str]) -> Callable[[str, bool], bool]:
    specs = [pathspec.PathSpec.from_lines("gitwildmatch", excludes)] if excludes else []
    gitignore = os.path.join(root, ".gitignore")
    if os.path.isfile(gitignore) and os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE") != "1":
        with open(gitignore) as f:
            specs.append(pathspec.PathSpec.from_lines("gitwildmatch", f))

    def ignored(rel: str, is_dir: bool) -> bool:
        probe = rel + "/" if is_dir else rel
        return any(s.match_file(probe) or s.match_file(rel) for s in specs)

    return ignored


def files_of(root: str, excludes: list[str] | None = None) -> list[tuple[str, str]]:
    """(relative path, absolute path) of every file kept, sorted."""
    ignored = _ignored(root, list(excludes or []))
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir
        dirnames[:] = sorted(
            d for d in dirnames if not ignored(os.path.join(rel_dir, d).replace(os.sep, "/"), True)
        )
        for name in filenames:
            rel = os.path.join(rel_dir, name).replace(os.sep, "/")
            if not ignored(rel, False):
                found.append((rel, os.path.join(dirpath, name)))
    return sorted(found)


def zip_directory(root: str, excludes: list[str] | None = None) -> tuple[str, bytes]:
    """(package name, zip bytes) of a directory; ValueError past the size limit."""
    digest = hashlib.sha256()
    buf = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for rel, path in files_of(root, excludes):
            with open(path, "rb") as f:
                data = f.read()
            total += len(data)
            if total > MAX_PACKAGE_BYTES:
                raise ValueError(
                    f"working_dir {root} is over {MAX_PACKAGE_BYTES >> 20} MiB: leave large "
                    "files out with runtime_env={'excludes': [...]} or a .gitignore"
                )
            digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (os.stat(path).st_mode & 0o777) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return f"_ray_pkg_{digest.hexdigest()[:32]}.zip", buf.getvalue()


def zip_file(path: str) -> tuple[str, bytes]:
    """(package name, bytes) of a .zip the user gave as working_dir."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) > MAX_PACKAGE_BYTES:
        raise ValueError(f"working_dir {path} is over {MAX_PACKAGE_BYTES >> 20} MiB")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ValueError(f"working_dir {path} is not a zip file")
    return f"_ray_pkg_{hashlib.sha256(data).hexdigest()[:32]}.zip", data


def local_package(working_dir: str, excludes: list[str] | None) -> tuple[str, bytes] | None:
    """The package of a local working_dir; None if it is a URI already."""
    if "://" in working_dir:
        if working_dir.startswith("gcs://"):
            return None
        raise NotImplementedError(
            f"working_dir {working_dir!r}: remote URIs (s3://, gs://, https://) are not "
            "implemented in raylite; give a local directory or .zip file"
        )
    path = os.path.abspath(os.path.expanduser(working_dir))
    if os.path.isdir(path):
        return zip_directory(path, excludes)
    if os.path.isfile(path) and path.endswith(".zip"):
        return zip_file(path)
    raise ValueError(f"working_dir {working_dir!r} is not a directory or a .zip file")


__all__ = ["files_of", "local_package", "zip_directory", "zip_file"]
