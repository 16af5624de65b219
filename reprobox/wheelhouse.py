"""Fetch a wheel for every pinned package on the host, so the image builds with no network.

Index packages are downloaded for the image's interpreter and platform (one batched
`pip download`, cached, with the extra indexes their pins need, such as PyTorch's cu121);
local, editable, VCS and URL packages, and index packages that ship no wheel, are built with
`pip wheel` from their recorded source.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from reprobox import cuda
from reprobox.errors import WheelError
from reprobox.fileio import sha256_file
from reprobox.manifest import Package

Log = Callable[[str], None]
# pip's words when the index cannot be reached at all (as opposed to "no such wheel").
_UNREACHABLE = re.compile(
    r"Failed to establish a new connection|Temporary failure in name resolution|"
    r"Name or service not known|No route to host|Connection refused|Read timed out|"
    r"Network is unreachable|ProxyError|SSLError"
)
_RETRY_PATH = re.compile(r"': (/\S*)$")  # the URL path at the end of pip's retry warning
_LOOKING_IN = re.compile(r"^Looking in indexes: (.+)$", re.MULTILINE)
_PIP_DEFAULT_INDEX = "https://pypi.org/simple"
# Folders of a source tree that a wheel build writes or that hold no source.
_NOT_SOURCE = frozenset({"__pycache__", "build", "dist", "node_modules"})


@dataclass(frozen=True, slots=True)
class Target:
    """The interpreter and platform the wheels must install on."""

    python_xy: str  # "3.11"
    abi: str  # "cp311"
    arch: str = "x86_64"
    glibc: str = "2.36"  # the image's: manylinux_2_N wheels need glibc >= 2.N

    @property
    def platforms(self) -> tuple[str, ...]:
        newest = int(self.glibc.split(".")[1])
        many = [f"manylinux_2_{m}_{self.arch}" for m in range(5, newest + 1)]
        legacy = [f"manylinux{v}_{self.arch}" for v in ("1", "2010", "2014")]
        return (*many, *legacy, f"linux_{self.arch}")


@dataclass(frozen=True, slots=True)
class Wheel:
    """A wheel file for one pinned package."""

    name: str
    version: str
    path: Path
    sha256: str


def default_cache() -> Path:
    """Where downloaded wheels are kept between builds."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reprobox" / "wheels"


def fetch(packages: Sequence[Package], target: Target, cache: Path, log: Log) -> dict[str, Wheel]:
    """Return a wheel for every package, downloading or building the ones not yet cached."""
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache):
        return _fetch(packages, target, cache, log)


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One reprobox at a time in a cache: pip renames files into place as another one reads."""
    with (cache / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _fetch(packages: Sequence[Package], target: Target, cache: Path, log: Log) -> dict[str, Wheel]:
    wheels: dict[str, Wheel] = {}
    index = [p for p in packages if p.source == "index"]
    missing = [p for p in index if _cached(cache, p, target) is None]
    if missing:
        _download(missing, target, cache, log)
    for package in packages:
        # Built wheels are cached too: rebuilding would change their bytes and break the lock.
        path = _cached(cache, package, target)
        if path is None:
            path = _build(package, target, cache, log)
        wheels[package.name] = Wheel(package.name, package.version, path, sha256_file(path))
    return wheels


def normalise(name: str) -> str:
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _download(packages: Sequence[Package], target: Target, cache: Path, log: Log) -> None:
    log(f"downloading wheels for {len(packages)} packages (Python {target.python_xy})")
    batch = _pip_download(packages, target, cache)
    if batch.returncode == 0:
        return
    if _UNREACHABLE.search(batch.stderr):
        raise WheelError(
            f"cannot reach the package index {_unreachable(batch, _indexes(packages))} to fetch "
            f"{len(packages)} wheels: {_last_line(batch.stderr)}",
            hint="check the network and pip's index settings (`pip config list`); "
            "wheels already in the cache are reused",
        )
    for package in packages:  # the batch failed: find which ones have no wheel; they get built
        if _pip_download([package], target, cache).returncode != 0:
            log(f"{package.name}=={package.version}: no wheel on the index, will build it")


def _pip_download(
    packages: Sequence[Package], target: Target, cache: Path
) -> subprocess.CompletedProcess[str]:
    platforms = [arg for plat in target.platforms for arg in ("--platform", plat)]
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(cache),
        "--python-version",
        target.python_xy,
        "--implementation",
        "cp",
        "--abi",
        target.abi,
        "--abi",
        "abi3",
        "--abi",
        "none",
        *platforms,
        *[arg for url in _indexes(packages) for arg in ("--extra-index-url", url)],
        *[f"{p.name}=={p.version}" for p in packages],
    ]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _indexes(packages: Sequence[Package]) -> list[str]:
    """Where to fetch the extra indexes the pins need (PyTorch's cu121 index, or its mirror)."""
    return [cuda.fetch_url(url) for url in cuda.package_indexes(packages)]


def _unreachable(batch: subprocess.CompletedProcess[str], extra: Sequence[str]) -> str:
    """The index(es) pip could not connect to, from the URL paths its retry warnings name."""
    looked_in = _LOOKING_IN.search(batch.stdout + batch.stderr)
    indexes = looked_in[1].split(", ") if looked_in else [_PIP_DEFAULT_INDEX, *extra]
    paths = [
        match[1]
        for line in batch.stderr.splitlines()
        if _UNREACHABLE.search(line) and (match := _RETRY_PATH.search(line.strip()))
    ]
    # A failed path belongs to the index whose own path is its longest prefix.
    owners = {max(indexes, key=lambda url: _prefix_length(url, path)) for path in paths}
    failed = [url for url in indexes if url in owners and any(
        _prefix_length(url, path) for path in paths)]
    named = [cuda.without_credentials(url) for url in failed or indexes]
    return ", ".join(named) if failed else "(one of " + ", ".join(named) + ")"


def _prefix_length(url: str, path: str) -> int:
    """How much of `path` the index at `url` accounts for; 0 when it is not under it."""
    prefix = urllib.parse.urlsplit(url).path.rstrip("/") + "/"
    return len(prefix) if path.startswith(prefix) else 0


def _build(package: Package, target: Target, cache: Path, log: Log) -> Path:
    """Build a wheel from the package's recorded source (or its sdist on the index)."""
    spec = _source_spec(package)
    log(f"building a wheel for {package.name}=={package.version} from {spec}")
    with tempfile.TemporaryDirectory(prefix="reprobox-wheel-") as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", tmp, spec],
            capture_output=True,
            text=True,
            check=False,
        )
        built = sorted(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not built:
            raise WheelError(
                f"{package.name}=={package.version}: no wheel for Python {target.python_xy} "
                f"and building one from {spec} failed: {_last_line(result.stderr)}",
                hint="install a wheel-providing version, or make the source reachable",
            )
        if not _compatible(built[0].name[:-4].split("-")[-3:], target):
            raise WheelError(
                f"{package.name}: the wheel built here ({built[0].name}) does not install on "
                f"Python {target.python_xy} in the image",
                hint=f"run reprobox with Python {target.python_xy}, the run's own version",
            )
        destination = _built_dir(cache, package) / built[0].name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built[0], destination)
    return destination


def _source_spec(package: Package) -> str:
    if package.source == "index":
        return f"{package.name}=={package.version}"
    if not package.url:
        raise WheelError(
            f"{package.name}: recorded as {package.source} but with no source URL",
            hint="reinstall it from a path or URL pip can record, and capture again",
        )
    if package.source in ("local", "editable"):
        path = package.url.removeprefix("file://")
        if not Path(path).exists():
            raise WheelError(
                f"{package.name}: source folder {path} no longer exists",
                hint="restore it, or install the package from an index and capture again",
            )
        return path
    if package.source == "vcs":
        commit = f"@{package.commit}" if package.commit else ""
        sub = f"#subdirectory={package.subdirectory}" if package.subdirectory else ""
        return f"{package.url}{commit}{sub}"
    return package.url


def _cached(cache: Path, package: Package, target: Target) -> Path | None:
    if package.source == "index":
        return _find(cache, package, target) or _find(_built_dir(cache, package), package, target)
    return _find(_built_dir(cache, package), package, target)


def _built_dir(cache: Path, package: Package) -> Path:
    """Built wheels are kept per source state: an edited local package is rebuilt, not reused."""
    if package.source == "index":
        return cache / "built" / "index"
    if package.source in ("local", "editable"):
        return cache / "built" / f"local-{_tree_state(Path(_source_spec(package)))}"
    origin = f"{package.url}@{package.commit}#{package.subdirectory}"
    return cache / "built" / f"{package.source}-{hashlib.sha256(origin.encode()).hexdigest()[:16]}"


def _tree_state(root: Path) -> str:
    """A digest of a source tree's file names, sizes and times: cheap, and changes on any edit."""
    digest = hashlib.sha256(str(root).encode())
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _NOT_SOURCE)
        for name in sorted(files):
            info = (Path(folder) / name).stat()
            digest.update(f"{folder}/{name}:{info.st_size}:{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _find(cache: Path, package: Package, target: Target) -> Path | None:
    for path in sorted(cache.glob("*.whl")):
        parts = path.name[:-4].split("-")
        if len(parts) < 5 or normalise(parts[0]) != package.name:
            continue
        if _same_version(parts[1], package.version) and _compatible(parts[-3:], target):
            return path
    return None


def _same_version(in_filename: str, pinned: str) -> bool:
    return in_filename.replace("_", "-").lower() == pinned.replace("_", "-").lower()


def _compatible(tags: list[str], target: Target) -> bool:
    python_tags, abi_tags, platform_tags = (set(t.split(".")) for t in tags)
    xy = target.python_xy.replace(".", "")
    py_ok = bool(python_tags & {f"cp{xy}", f"py{xy}", "py3", f"py{xy[0]}"}) or (
        "abi3" in abi_tags and any(t.startswith("cp3") for t in python_tags)
    )
    abi_ok = bool(abi_tags & {target.abi, "abi3", "none"})
    plat_ok = "any" in platform_tags or bool(platform_tags & set(target.platforms))
    return py_ok and abi_ok and plat_ok


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"
