"""Run a command under the seeding shim and record it, with its environment, as a bundle.

The bundle is written into a hidden staging folder and renamed into place only when
everything is recorded, so a failed or interrupted capture leaves nothing half-written.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from reprobox import __version__, lock, seeding
from reprobox import manifest as manifest_io
from reprobox.bundle import RUNS_DIR, Bundle
from reprobox.capture import environ, files, git, process, python_env, system
from reprobox.capture.runner import Runner, subprocess_runner
from reprobox.errors import CaptureError, ProbeUnavailable, UsageError
from reprobox.fileio import atomic_write, staged_dir
from reprobox.manifest import (
    SCHEMA_VERSION,
    Determinism,
    FileRecord,
    Git,
    Manifest,
    Output,
    Python,
    Run,
    System,
)

OUTPUT_COPY_LIMIT = 1 << 30  # outputs larger than this are recorded by digest only


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    """What the user asked for on the command line."""

    argv: tuple[str, ...]
    seed: int | None = None
    threads: int = 1
    deterministic: bool = True
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    env_names: tuple[str, ...] = ()  # extra environment variables to record
    rtol: float = 1e-7
    atol: float = 0.0
    cwd: Path = field(default_factory=Path.cwd)


@dataclass(frozen=True, slots=True)
class _Finished:
    started: str
    duration_s: float
    exit_code: int


def capture(
    options: CaptureOptions,
    runner: Runner = subprocess_runner,
    terminal: tuple[BinaryIO, BinaryIO] | None = None,
) -> Bundle:
    """Run the command and write its bundle under `<project>/.reprobox/runs/<run-id>/`."""
    if not options.argv:
        raise UsageError("no command given", hint="usage: reprobox capture -- python train.py")
    project = git.project_root(options.cwd.resolve(), runner)
    workdir = os.path.relpath(options.cwd.resolve(), project)
    inputs = tuple(
        files.hash_record(project, _rel(project, options.cwd, p)) for p in options.inputs
    )
    determinism = seeding.determinism(options.seed, options.threads, options.deterministic)
    final = project / RUNS_DIR / _run_id()
    _ignore_bundles(project)
    with staged_dir(final) as staging:
        notes: list[str] = []
        git_record = _git(project, staging, runner, notes)  # the code as it was before the run
        before = None if options.outputs else files.snapshot_mtimes(project)
        finished, state = _execute(options, determinism, staging, terminal)
        outputs = _outputs(project, options, before, staging)
        manifest = _record(
            options,
            project,
            workdir,
            replace(determinism, state=state),
            finished,
            inputs,
            outputs,
            git_record,
            staging,
            runner,
            notes,
        )
        manifest_io.write(manifest, staging / "manifest.yaml")
        atomic_write(staging / "requirements.lock", lock.dumps(manifest))
    return Bundle(final)


def _ignore_bundles(project: Path) -> None:
    """Keep bundles out of git, so capturing never makes the tree dirty."""
    marker = project / ".reprobox" / ".gitignore"
    if not marker.exists():
        atomic_write(marker, "# written by reprobox: bundles are not source\n*\n")


def _run_id() -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{secrets.token_hex(3)}"


def _rel(project: Path, cwd: Path, path: str) -> str:
    absolute = (cwd / path).resolve()
    try:
        return absolute.relative_to(project).as_posix()
    except ValueError:
        raise CaptureError(
            f"{path}: outside the project folder {project}",
            hint="declare files inside the project (the git repository)",
        ) from None


def _execute(
    options: CaptureOptions,
    determinism: Determinism,
    staging: Path,
    terminal: tuple[BinaryIO, BinaryIO] | None,
) -> tuple[_Finished, dict[str, manifest_io.Scalar]]:
    """Run the command under the shim, teeing its output to the terminal and the logs."""
    state_dir = staging / ".state"
    state_dir.mkdir()
    env = seeding.process_env(determinism, str(seeding.SHIM_DIR), str(state_dir), os.environ)
    (staging / "logs").mkdir()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    clock = time.monotonic()
    exit_code = process.run_teed(
        options.argv, options.cwd, env, staging / "logs", terminal or process.terminal_streams()
    )
    finished = _Finished(started, round(time.monotonic() - clock, 3), exit_code)
    state = seeding.read_state(state_dir)
    shutil.rmtree(state_dir)
    return finished, state


def _outputs(
    project: Path, options: CaptureOptions, before: dict[str, tuple[int, int]] | None, staging: Path
) -> tuple[Output, ...]:
    """Hash the outputs (declared, or else every file the run created or changed) and copy them."""
    if before is None:
        paths = [_rel(project, options.cwd, p) for p in options.outputs]
    else:
        paths = files.changed_files(before, files.snapshot_mtimes(project))
    records = []
    for rel in sorted(paths):
        record = files.hash_record(project, rel)
        stored = record.size <= OUTPUT_COPY_LIMIT
        if stored:
            target = staging / "outputs" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(project / rel, target)
        records.append(Output(rel, record.sha256, record.size, stored, options.rtol, options.atol))
    return tuple(records)


def _record(
    options: CaptureOptions,
    project: Path,
    workdir: str,
    determinism: Determinism,
    finished: _Finished,
    inputs: tuple[FileRecord, ...],
    outputs: tuple[Output, ...],
    git_record: Git | None,
    staging: Path,
    runner: Runner,
    notes: list[str],
) -> Manifest:
    python, blas = _python(options, runner, notes)
    excluded = {r.path for r in inputs} | {o.path for o in outputs}
    source = _snapshot(project, excluded, staging, runner, notes)
    env, redacted, not_captured = environ.capture_env(os.environ, options.env_names)
    run = Run(
        argv=environ.mask_argv(options.argv),
        project=project.name,
        workdir=workdir,
        started=finished.started,
        duration_s=finished.duration_s,
        exit_code=finished.exit_code,
        env=env,
        env_redacted=redacted,
        env_not_captured=not_captured,
    )
    return Manifest(
        schema_version=SCHEMA_VERSION,
        created_by=f"reprobox {__version__}",
        run=run,
        determinism=determinism,
        python=python,
        system=replace(_system(runner, notes), blas=blas),
        git=git_record,
        inputs=inputs,
        outputs=outputs,
        source_files=source,
        notes=tuple(notes),
    )


def _python(
    options: CaptureOptions, runner: Runner, notes: list[str]
) -> tuple[Python, tuple[manifest_io.Blas, ...]]:
    executable = python_env.resolve_interpreter(options.argv, os.environ.get("PATH"))
    if executable is None:
        executable = sys.executable
        notes.append(
            f"python: {options.argv[0]} is not a Python interpreter or script; "
            f"recorded reprobox's own interpreter {executable}"
        )
    try:
        return python_env.probe(executable, runner)
    except ProbeUnavailable as exc:
        raise CaptureError(
            f"cannot list the packages of {executable}: {exc}",
            hint="is the interpreter still there?",
        ) from None


def _git(project: Path, staging: Path, runner: Runner, notes: list[str]) -> Git | None:
    try:
        record, diff = git.probe(project, runner)
    except ProbeUnavailable as exc:
        notes.append(f"git: {exc}")
        return None
    if diff:
        atomic_write(staging / "git.diff", diff)
    return record


def _system(runner: Runner, notes: list[str]) -> System:
    try:
        return system.probe(runner)
    except ProbeUnavailable as exc:
        notes.append(f"system: {exc}")
        return System(
            "unknown",
            "unknown",
            "unknown",
            "unknown",
            "unknown",
            "unknown",
            "unknown",
            os.cpu_count() or 1,
        )


def _snapshot(
    project: Path, excluded: set[str], staging: Path, runner: Runner, notes: list[str]
) -> tuple[FileRecord, ...]:
    """Copy the project's allowlisted files into the bundle: the image is built from these."""

    def skipped(path: str, size: int) -> None:
        notes.append(
            f"source: {path} ({size / 1e6:.0f} MB) left out of the image: too large; "
            "declare it with --input if the run reads it"
        )

    records = []
    for rel in files.source_files(project, runner, excluded, on_skip=skipped):
        target = staging / "source" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / rel, target)
        records.append(files.hash_record(project, rel))
    (staging / "source").mkdir(exist_ok=True)
    return tuple(records)
