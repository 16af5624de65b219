"""Helpers the benchmarks share: timing, throwaway git projects, venvs, tables, Docker clean-up."""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker

from reprobox.build import BuiltImage, build
from reprobox.bundle import RUNS_DIR, Bundle
from reprobox.engine import DockerEngine

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_HOME = Path(os.environ.get("REPROBOX_BENCH_HOME", "/tmp/reprobox-bench"))
REPROBOX_CLI = (sys.executable, "-m", "reprobox")
NUMPY_SGD = REPO_ROOT / "examples" / "numpy-sgd"
NUMPY_PIN = "numpy==2.1.3"  # the version the numpy-sgd example is written against


def run(
    argv: Sequence[str], cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command, raising with its output when it fails: a failed step is no measurement."""
    result = subprocess.run(
        list(argv), cwd=cwd, env=dict(env) if env else None, capture_output=True, text=True
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-2000:]
        raise SystemExit(f"failed ({result.returncode}): {' '.join(argv)}\n{output}")
    return result


def seconds(action: Callable[[], object]) -> float:
    """Wall-clock seconds one call of `action` takes."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def git_project(folder: Path, files: Mapping[str, str] | None = None) -> Path:
    """A fresh git repository at `folder` with `files` committed (a capture needs a project)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, text in (files or {"README": "benchmark project\n"}).items():
        (folder / name).write_text(text)
    identity = ("-c", "user.email=bench@example.invalid", "-c", "user.name=bench")
    run(["git", "init", "-q"], cwd=folder)
    run(["git", "add", "."], cwd=folder)
    run(["git", *identity, "commit", "-qm", "benchmark project"], cwd=folder)
    return folder


def copied_project(source: Path, folder: Path) -> Path:
    """A git project at `folder` holding a copy of the files of `source`."""
    files = {p.name: p.read_text() for p in sorted(source.iterdir()) if p.is_file()}
    return git_project(folder, files)


def venv(folder: Path, requirements: Sequence[str], pip_options: Sequence[str] = ()) -> Path:
    """A venv at `folder` with `requirements` installed, reused when it already holds them.

    A marker file records the digest of what was asked for, so a changed list rebuilds it.
    Returns the venv's python.
    """
    wanted = hashlib.sha256("\n".join([*requirements, *pip_options]).encode()).hexdigest()
    marker = folder / ".reprobox-bench"
    python = folder / "bin" / "python"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    if folder.exists():
        shutil.rmtree(folder)
    print(f"creating {folder} with {len(requirements)} packages (once; reused afterwards)")
    run([sys.executable, "-m", "venv", str(folder)])
    listing = folder / "requirements.txt"
    listing.write_text("\n".join(requirements) + "\n")
    run([str(python), "-m", "pip", "install", "-q", *pip_options, "-r", str(listing)])
    marker.write_text(wanted)
    return python


def numpy_venv() -> Path:
    """The python of a venv holding what the numpy-sgd example imports."""
    return venv(BENCH_HOME / "numpy-venv", [NUMPY_PIN])


def site_packages(python: Path) -> Path:
    """The site-packages folder of the venv whose interpreter is `python`."""
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(run([str(python), "-c", code]).stdout.strip())


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table, columns padded to their widest cell."""
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def captured_numpy_sgd(folder: Path) -> Bundle:
    """Capture the numpy-sgd example in a fresh git project at `folder`; its bundle.

    The folder's name becomes the image name: `reprobox/<folder name>:<hash>`.
    """
    python = numpy_venv()
    project = copied_project(NUMPY_SGD, folder)
    run([*REPROBOX_CLI, "capture", "--seed", "3", "--", str(python), "train.py"], cwd=project)
    return Bundle(next((project / RUNS_DIR).iterdir()))


# The classic builder prints each step's resulting image as " ---> 0123456789ab".
_LAYER_ID = re.compile(r"^\s*---> ([0-9a-f]{12})\s*$")


class Builds:
    """Builds of one bundle, Docker's layer cache bypassed, and every image they made.

    With nocache no layer comes from an earlier build (another engineer's included), so each
    build is cold and every layer it logs is its own and safe to remove afterwards.
    """

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.client: Any = docker.from_env()
        uncached: Any = docker.from_env()
        uncached.api.build = functools.partial(uncached.api.build, nocache=True)
        self.cold_engine = DockerEngine(uncached)
        self.layer_ids: list[str] = []
        self.tags: set[str] = set()
        self.removed = 0

    def build(self, expect_reused: bool, cache: Path | None = None) -> BuiltImage:
        built = build(self.bundle, self.cold_engine, self._log, cache=cache)
        self.tags.add(built.tag)
        if built.reused != expect_reused:
            raise SystemExit(f"expected reused={expect_reused}, got {built}: not a fair timing")
        return built

    def _log(self, line: str) -> None:
        match = _LAYER_ID.match(line)
        if match:
            self.layer_ids.append(match.group(1))

    def remove_all(self) -> None:
        """Remove the tags, then every untagged layer these builds made, newest first."""
        for tag in sorted(self.tags):
            with contextlib.suppress(docker.errors.ImageNotFound):
                self.client.images.remove(tag)
                self.removed += 1
        for layer in reversed(self.layer_ids):
            with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                if not self.client.images.get(layer).tags:  # never the base image
                    self.client.images.remove(layer)
                    self.removed += 1
        self.layer_ids.clear()


def arguments(
    description: str, repeats: int, quick_repeats: int, quick_help: str
) -> argparse.Namespace:
    """`--quick` (the CI size) and `--repeats N`, the options every benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--repeats", type=int, default=repeats, help="timed runs (median)")
    args = parser.parse_args()
    if args.quick:
        args.repeats = quick_repeats
    return args
