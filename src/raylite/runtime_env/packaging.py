"""Packages of local code for a runtime_env: zipping, excludes, naming, the size limit.

Owns turning a working_dir or a py_modules entry (a local directory, a .py file or a
.zip) into package bytes and the content-addressed URI that names them, as Ray does
(`gcs://_ray_pkg_<hash>.zip`: the same content gives the same URI, so a package is
uploaded and unpacked once however many tasks use it), and unpacking such bytes into a
directory. Excludes are gitignore-style patterns (pathspec's GitIgnoreSpec, git's own
rules; Ray matches with pathspec's gitwildmatch), relative to the packaged directory,
plus the patterns of every `.gitignore` and `.rayignore` in it (each for the files
below its own directory; `.gitignore` files not with RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1
set), plus, for a working_dir, Ray's default excludes (`.git`, `.venv`, `venv`,
`__pycache__`; RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES replaces them). The job
client (job_submission/sdk.py) packages a job's working_dir by the same rules. Not
where packages are kept (runtime_env/agent.py, on each node and the head) nor when
they are uploaded (core/runtime_envs.py).

    local dir ──walk, excludes──▶ files ──zip (sorted, fixed timestamps)──▶ bytes
                                          bytes ──sha1──▶ URI ──UploadPackage──▶ node, head
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import zipfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where packages are made: a node only unpacks them
    import pathspec

from ..config import CONFIG

PKG_PREFIX = "_ray_pkg_"
URI_SCHEME = "gcs://"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # zip timestamps: equal content, equal bytes
_IGNORE_FILES = (".gitignore", ".rayignore")
# Ray's: left out of a working_dir unless RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES
# (comma-separated; "" for none) says otherwise. `.git` is in no .gitignore.
DEFAULT_EXCLUDES = ".git,.venv,venv,__pycache__"
_warned: set[str] = set()  # the default excludes already warned of (once a process, as Ray)

log = logging.getLogger("raylite")


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.2f}MiB"


def check_size(size: int, limit: int | None = None) -> None:
    """Ray's error for a package over the limit (its GCS message size)."""
    limit = CONFIG.runtime_env_max_package_bytes if limit is None else limit
    if size >= limit:
        raise ValueError(
            f"Package size ({_mib(size)}) exceeds the maximum size of {_mib(limit)}. To "
            "exclude large files, add them to '.gitignore' or '.rayignore' files, or use the "
            "'excludes' option in the runtime_env, or provide a URI of a remote zip file. For "
            "more information, refer to "
            "https://docs.ray.io/en/latest/ray-core/handling-dependencies.html#api-reference."
        )


def default_excludes() -> list[str]:
    """The patterns a working_dir leaves out whatever its excludes say (Ray's)."""
    value = os.environ.get("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", DEFAULT_EXCLUDES)
    return [x.strip() for x in value.split(",") if x.strip()]


def _working_dir_excludes(path: str, excludes: list[str]) -> list[str]:
    """A working_dir's excludes with the defaults first; a warning (once) for each
    default that leaves out a directory there, as Ray gives."""
    defaults = default_excludes()
    for name in defaults:
        if name not in _warned and os.path.exists(os.path.join(path, name)):
            _warned.add(name)
            log.warning(
                "Directory %r is now ignored by default when packaging the working "
                "directory. To disable this behavior, set the "
                "`RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES=''` environment variable.",
                name,
            )
    return defaults + list(excludes)


def _ignore_spec(directory: str) -> pathspec.GitIgnoreSpec | None:
    """The patterns of a directory's own .gitignore and .rayignore (None: neither;
    no .gitignore with RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1, as Ray)."""
    lines: list[str] = []
    names: tuple[str, ...] = _IGNORE_FILES
    if os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") == "1":
        names = (".rayignore",)
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path) as f:
                lines += f.read().splitlines()
    if not lines:
        return None
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(lines)


def files_of(root: str, excludes: list[str], prefix: str = "") -> list[tuple[str, str]]:
    """(path in the package, path on disk) of every file under `root` not excluded,
    sorted; `prefix` is put before each package path (a py_modules package's name).
    `excludes` match relative to `root`; each directory's .gitignore and .rayignore
    relative to that directory, for everything below it (as git and Ray read them)."""
    import pathspec

    user = pathspec.GitIgnoreSpec.from_lines(excludes)
    # Directories (relative, "" for root, "a/b/" below) with ignore files: their specs.
    specs: dict[str, pathspec.GitIgnoreSpec] = {}

    def excluded(rel: str) -> bool:
        if user.match_file(rel):
            return True
        return any(rel.startswith(d) and sp.match_file(rel[len(d) :]) for d, sp in specs.items())

    out: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        own = _ignore_spec(dirpath)
        if own is not None:
            specs[rel_dir] = own
        # An excluded directory is not walked (its files are excluded with it).
        dirnames[:] = sorted(d for d in dirnames if not excluded(f"{rel_dir}{d}/"))
        for name in sorted(filenames):
            rel = rel_dir + name
            if not excluded(rel):
                out.append((prefix + rel, os.path.join(dirpath, name)))
    return sorted(out)


def _zip(files: list[tuple[str, str]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for arc, path in files:
            info = zipfile.ZipInfo(arc, _EPOCH)
            info.external_attr = (os.stat(path).st_mode & 0o777) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as f:
                zf.writestr(info, f.read())
    return buf.getvalue()


def uri_of(data: bytes) -> str:
    return f"{URI_SCHEME}{PKG_PREFIX}{hashlib.sha1(data).hexdigest()}.zip"


def package(path: str, excludes: list[str], *, module: bool) -> tuple[str, bytes]:
    """(URI, zip bytes) of a local path: a directory (a working_dir's contents; a
    py_modules package with its own directory at the top), a .py file, or a .zip."""
    path = os.path.abspath(path)
    if os.path.isfile(path):
        if path.endswith(".zip"):
            with open(path, "rb") as f:
                data = f.read()
        elif path.endswith(".whl"):
            raise NotImplementedError("py_modules: .whl files are not supported by raylite yet.")
        else:
            data = _zip([(os.path.basename(path), path)])
    elif os.path.isdir(path):
        prefix = os.path.basename(path.rstrip("/")) + "/" if module else ""
        if not module:
            excludes = _working_dir_excludes(path, excludes)
        data = _zip(files_of(path, excludes, prefix))
    else:
        raise ValueError(f"{path} is not a valid path.")
    check_size(len(data))
    return uri_of(data), data


def unpack(data: bytes, dest: str) -> str:
    """Unzip into `dest` (made atomically: a temporary directory renamed); the
    directory to use: the one top-level directory of a zip holding only that, else
    `dest` itself (Ray's rule for zipped working dirs)."""
    if not os.path.isdir(dest):
        tmp = f"{dest}.tmp{os.getpid()}"
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            zf.extractall(tmp)
            for info in zf.infolist():  # keep the files' modes (scripts stay executable)
                mode = info.external_attr >> 16
                if mode and not info.is_dir():
                    os.chmod(os.path.join(tmp, info.filename), mode & 0o777)
        try:
            os.rename(tmp, dest)
        except OSError:  # another process unpacked it first
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def top_dir(dest: str) -> str:
    entries = os.listdir(dest)
    if len(entries) == 1 and os.path.isdir(os.path.join(dest, entries[0])):
        return os.path.join(dest, entries[0])
    return dest


def is_uri(value: Any) -> bool:
    return isinstance(value, str) and "://" in value
