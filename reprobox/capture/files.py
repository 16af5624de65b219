"""Choose and hash project files: declared inputs, the source snapshot, and files a run changed."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import stat
from collections.abc import Callable, Collection, Iterator
from pathlib import Path, PurePosixPath

from reprobox.capture.runner import Runner
from reprobox.errors import CaptureError, ProbeUnavailable
from reprobox.fileio import sha256_file
from reprobox.manifest import FileRecord

MAX_SOURCE_FILE_BYTES = 50 * 1000 * 1000
# Outside git the snapshot is a walk; past these it is a home or data folder, not a project.
MAX_WALK_BYTES = 500 * 1000 * 1000
MAX_WALK_FILES = 20_000
_COPY_CHUNK = 1 << 20
# Folders that are never the experiment's source, found anywhere in the tree.
SKIPPED_DIRS = frozenset({".reprobox", "__pycache__", "node_modules"})
# Never copied into a build context, whatever git or the user says: they hold credentials.
DENIED_DIRS = frozenset({".git", ".aws", ".ssh", ".kube", ".gnupg", "wandb", "mlruns"})
DENIED_NAMES = (".env*", ".netrc", ".npmrc", ".pypirc", ".pgpass", ".git-credentials",
                "*.pem", "*.key", "*.p12", "*.pfx", "id_rsa*", "id_dsa*", "id_ecdsa*",
                "id_ed25519*")
DENIED_PATHS = (".config/gcloud/", ".docker/config.json", ".dvc/config.local")

OnSkip = Callable[[str, int], None]


def hash_record(project: Path, rel: str) -> FileRecord:
    """Digest and size of `project/rel`; CaptureError naming the path when it is not a file."""
    path = project / rel
    hint = "--input/--output paths are relative to the project root and must name files"
    if not path.exists():
        raise CaptureError(f"{rel}: no such file in {project}", hint=hint)
    if not path.is_file():
        raise CaptureError(f"{rel}: not a regular file in {project}", hint=hint)
    try:
        return FileRecord(Path(rel).as_posix(), sha256_file(path), path.stat().st_size)
    except OSError as exc:
        raise CaptureError(f"{rel}: cannot read ({exc.strerror})", hint=hint) from None


def copy_and_hash(project: Path, rel: str, target: Path) -> FileRecord:
    """Copy `project/rel` to `target` (mode and times kept), hashing the bytes as they pass."""
    digest, size = hashlib.sha256(), 0
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with (project / rel).open("rb") as source, target.open("wb") as copy:
            while chunk := source.read(_COPY_CHUNK):
                digest.update(chunk)
                copy.write(chunk)
                size += len(chunk)
        shutil.copystat(project / rel, target)
    except OSError as exc:
        raise CaptureError(f"{rel}: cannot copy into the bundle ({exc.strerror or exc})",
                           hint="check the file's permissions and the free disk space") from None
    return FileRecord(PurePosixPath(rel).as_posix(), digest.hexdigest(), size)


def is_denied(rel: str) -> bool:
    """True for paths that may hold credentials and so never leave the machine."""
    parts = PurePosixPath(rel).parts
    if DENIED_DIRS.intersection(parts[:-1]) or parts[-1] == ".git":
        return True
    if any(fnmatch.fnmatchcase(parts[-1], pattern) for pattern in DENIED_NAMES):
        return True
    rooted = "/" + "/".join(parts)
    return any(f"/{denied}" in rooted if denied.endswith("/") else rooted.endswith(f"/{denied}")
               for denied in DENIED_PATHS)


def source_files(project: Path, runner: Runner, exclude: Collection[str],
                 max_bytes: int = MAX_SOURCE_FILE_BYTES,
                 on_skip: OnSkip | None = None) -> list[str]:
    """The project files for the build context, sorted: git's view when in git, else a walk.

    Always minus the deny list, `exclude` (files or folders) and files over `max_bytes`;
    `on_skip(path, size)` hears about each file left out for its size. Outside git, a tree
    over MAX_WALK_FILES files or MAX_WALK_BYTES bytes is a CaptureError.
    """
    candidates = _git_files(project, runner)
    walked = candidates is None
    if candidates is None:
        candidates = list(_walk(project, max_files=MAX_WALK_FILES))
    excluded = {PurePosixPath(p).as_posix() for p in exclude}
    chosen, total = [], 0
    for rel in sorted(set(candidates)):
        if is_denied(rel) or _under_any(rel, excluded) or not _inside_file(project, rel):
            continue
        size = (project / rel).stat().st_size
        if size > max_bytes:
            if on_skip is not None:
                on_skip(rel, size)
            continue
        total += size
        if walked and total > MAX_WALK_BYTES:
            raise _too_big(project, f"over {MAX_WALK_BYTES / 1e6:.0f} MB")
        chosen.append(rel)
    return chosen


def _too_big(project: Path, size: str) -> CaptureError:
    return CaptureError(
        f"{project}: {size} of files outside git; too large for a source snapshot",
        hint="capture from the project folder itself, or make the project a git repository "
             "(git-ignored data stays out of the image)")


def _git_files(project: Path, runner: Runner) -> list[str] | None:
    """Tracked (submodules' included) and untracked-not-ignored files, or None outside git."""
    if not _inside_git(project, runner):
        return None
    # Two listings: git refuses --recurse-submodules together with --others.
    tracked = _ls_files(project, runner, "--cached", "--recurse-submodules")
    untracked = _ls_files(project, runner, "--others", "--exclude-standard")
    venvs: dict[str, bool] = {}
    return [rel for rel in sorted(set(tracked) | set(untracked))
            if not _in_skipped_dir(project, rel, venvs)]


def _ls_files(project: Path, runner: Runner, *flags: str) -> list[str]:
    try:
        result = runner(["git", "ls-files", *flags, "-z"], cwd=project, timeout=120)
    except ProbeUnavailable as exc:
        # never fall back to walking: a slow repository is often a huge one
        raise CaptureError(f"{project}: cannot list the repository's files ({exc})",
                           hint="retry; `git status` in the project shows what git is doing"
                           ) from None
    if result.returncode != 0:
        raise CaptureError(f"{project}: git ls-files failed ({result.stderr.strip()[:200]})",
                           hint="`git status` in the project shows what is wrong")
    return [rel for rel in result.stdout.split("\0") if rel]


def _inside_git(project: Path, runner: Runner) -> bool:
    try:
        inside = runner(["git", "rev-parse", "--is-inside-work-tree"], cwd=project, timeout=60)
    except ProbeUnavailable:
        return False  # no git on this machine
    return inside.returncode == 0 and inside.stdout.strip() == "true"


def _in_skipped_dir(project: Path, rel: str, venvs: dict[str, bool]) -> bool:
    """True under a skipped folder name or a virtualenv (a folder holding pyvenv.cfg)."""
    parents = PurePosixPath(rel).parents
    for parent in parents:
        key = parent.as_posix()
        if parent.name in SKIPPED_DIRS:
            return True
        if key != "." and key not in venvs:
            venvs[key] = (project / key / "pyvenv.cfg").is_file()
        if venvs.get(key):
            return True
    return False


def _walk(project: Path, max_files: int | None = None) -> Iterator[str]:
    """Files under `project`, skipping hidden folders, bundles, caches and virtualenvs."""
    seen = 0
    for folder, dirs, names in os.walk(project):
        dirs[:] = sorted(d for d in dirs if not _skip_dir(Path(folder) / d))
        base = Path(folder).relative_to(project)
        seen += len(names)
        if max_files is not None and seen > max_files:
            raise _too_big(project, f"over {max_files} files")
        for name in names:
            yield (base / name).as_posix()


def _skip_dir(path: Path) -> bool:
    return (path.name.startswith(".") or path.name in SKIPPED_DIRS
            or (path / "pyvenv.cfg").is_file())


def _under_any(rel: str, folders_or_files: set[str]) -> bool:
    return rel in folders_or_files or any(
        parent.as_posix() in folders_or_files for parent in PurePosixPath(rel).parents)


def _inside_file(project: Path, rel: str) -> bool:
    """A regular file (deleted ones are skipped) that, through links, stays inside the project."""
    path = project / rel
    if not path.is_file():
        return False
    if not path.is_symlink():
        return True
    return path.resolve().is_relative_to(project.resolve())


def snapshot_mtimes(project: Path) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every regular file a walk sees, with the same skip and deny rules.

    Sockets, fifos and devices the run creates are not outputs: they cannot be copied or hashed.
    """
    snapshot: dict[str, tuple[int, int]] = {}
    for rel in _walk(project):
        if is_denied(rel):
            continue
        try:
            info = (project / rel).stat()
        except OSError:
            continue  # vanished or a dangling link: not an output
        if stat.S_ISREG(info.st_mode):
            snapshot[rel] = (info.st_mtime_ns, info.st_size)
    return snapshot


def changed_files(before: dict[str, tuple[int, int]],
                  after: dict[str, tuple[int, int]]) -> list[str]:
    """Files new in `after` or whose mtime or size changed, sorted."""
    return sorted(rel for rel, stamp in after.items() if before.get(rel) != stamp)
