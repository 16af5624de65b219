"""The on-disk bundle of one captured run: where each part lives, and finding the newest one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reprobox import manifest as manifest_io
from reprobox.errors import BundleError
from reprobox.manifest import Manifest

RUNS_DIR = Path(".reprobox") / "runs"


@dataclass(frozen=True, slots=True)
class Bundle:
    """A folder `.reprobox/runs/<run-id>/` holding one run's manifest and everything derived."""

    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.yaml"

    @property
    def lock_path(self) -> Path:
        return self.path / "requirements.lock"

    @property
    def dockerfile_path(self) -> Path:
        return self.path / "Dockerfile"

    @property
    def diff_path(self) -> Path:
        return self.path / "git.diff"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def outputs_dir(self) -> Path:
        """Copies of the original run's outputs, at their paths relative to the project."""
        return self.path / "outputs"

    @property
    def source_dir(self) -> Path:
        """The project files the image is built from, snapshotted at capture time."""
        return self.path / "source"

    @property
    def replays_dir(self) -> Path:
        return self.path / "replays"

    @property
    def jobs_dir(self) -> Path:
        """Cluster jobs in flight and the images saved for them; never archived."""
        return self.path / "jobs"

    @property
    def build_record_path(self) -> Path:
        """`build.json`: the image last built from this bundle."""
        return self.path / "build.json"

    def manifest(self) -> Manifest:
        return manifest_io.read(self.manifest_path)

    def replays(self) -> list[Path]:
        """Replay folders, oldest first (replay ids sort by time)."""
        if not self.replays_dir.is_dir():
            return []
        return sorted(p for p in self.replays_dir.iterdir() if p.is_dir() and p.name[0] != ".")


def find(arg: str | None, cwd: Path | None = None) -> Bundle:
    """Resolve a BUNDLE argument: a bundle folder, a run id, or None for the newest run.

    Runs are looked for in the nearest `.reprobox/runs/` at or above `cwd`, as git finds its
    repository: capture keeps them at the project root, wherever in the project it ran.
    """
    root = runs_dir(cwd or Path.cwd())
    if arg is None:
        return newest(root)
    for candidate in (Path(arg), root / arg):
        if (candidate / "manifest.yaml").is_file():
            return Bundle(candidate.resolve())
    raise BundleError(
        f"{arg}: not a reprobox bundle (no manifest.yaml)",
        hint=f"pass a folder under {RUNS_DIR}/ or a run id; `ls {RUNS_DIR}` lists them",
    )


def runs_dir(start: Path) -> Path:
    """The nearest `.reprobox/runs/` at or above `start` (or the one `start` would have)."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / RUNS_DIR).is_dir():
            return folder / RUNS_DIR
    return start / RUNS_DIR


def newest(root: Path) -> Bundle:
    """The most recent complete bundle under `root` (run ids sort by capture time)."""
    runs = sorted(p for p in root.glob("*/manifest.yaml") if not p.parent.name.startswith("."))
    if not runs:
        raise BundleError(
            f"no captured runs under {root}", hint="run `reprobox capture -- python train.py` first"
        )
    return Bundle(runs[-1].parent.resolve())
