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
from typing import Any, BinaryIO

from reprobox import __version__, lock, seeding
from reprobox import manifest as manifest_io
from reprobox.bundle import RUNS_DIR, Bundle
from reprobox.capture import environ, files, git, gpu, process, python_env, system
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
)

OUTPUT_COPY_LIMIT = 1 << 30  # outputs larger than this are recorded by digest only
LOG_NAMES = ("stdout.log", "stderr.log")
_STRICT_NOTE = (
    "torch: an op without a deterministic kernel stopped the run; capture again with "
    "--warn-only to let it run (the ops that fire are recorded), or --no-deterministic"
)
_TORCH_STRICT_ERROR = b"does not have a deterministic implementation, but you set"
_STDERR_TAIL = 1 << 16  # the traceback that ended the run is at the end of its stderr
_UNSEEDED_NOTE = (
    "seeds: the command runs Python but no process reported the shim's state, so seeds were "
    "probably not injected (python -I, -E or -S skips the shim; os._exit skips the report); "
    "a replay may differ"
)


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    """What the user asked for on the command line."""

    argv: tuple[str, ...]
    seed: int | None = None
    threads: int = 1
    deterministic: bool = True
    warn_only: bool = False  # ops with no deterministic kernel warn instead of failing
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    env_names: tuple[str, ...] = ()  # extra environment variables to record
    rtol: float = 1e-7
    atol: float = 0.0
    ulps: int | None = None  # float values this many units in the last place apart also agree
    cwd: Path = field(default_factory=Path.cwd)


@dataclass(frozen=True, slots=True)
class _Finished:
    started: str
    duration_s: float
    exit_code: int


@dataclass(frozen=True, slots=True)
class _Session:
    """One capture in progress: what was asked, where it writes, what it noted on the way."""

    options: CaptureOptions
    project: Path
    staging: Path
    runner: Runner
    notes: list[str] = field(default_factory=list)

    def rel(self, path: str) -> str:
        """A user-given path as a path relative to the project."""
        absolute = (self.options.cwd / path).resolve()
        try:
            return absolute.relative_to(self.project).as_posix()
        except ValueError:
            raise CaptureError(
                f"{path}: outside the project folder {self.project}",
                hint="declare files inside the project (the git repository)",
            ) from None


def capture(
    options: CaptureOptions,
    runner: Runner = subprocess_runner,
    terminal: tuple[BinaryIO, BinaryIO] | None = None,
) -> Bundle:
    """Run the command and write its bundle under `<project>/.reprobox/runs/<run-id>/`."""
    if not options.argv:
        raise UsageError("no command given", hint="usage: reprobox capture -- python train.py")
    project = git.project_root(options.cwd.resolve(), runner)
    determinism = seeding.determinism(options.seed, options.threads, options.deterministic,
                                      options.warn_only)
    final = project / RUNS_DIR / _run_id()
    _ignore_bundles(project)
    with staged_dir(final) as staging:
        session = _Session(options, project, staging, runner)
        inputs = tuple(files.hash_record(project, session.rel(p)) for p in options.inputs)
        # Everything describing the starting state is taken before the run can change it.
        git_record = _git(session)
        source = _snapshot(session, {record.path for record in inputs})
        interpreter = python_env.resolve_interpreter(options.argv, os.environ.get("PATH"))
        environment = _environment(session, interpreter, determinism.threads)
        determinism = _with_frameworks(determinism, environment["python"])
        before = None if options.outputs else files.snapshot_mtimes(project)
        finished, state = _execute(session, determinism, terminal)
        if interpreter is not None and state.get("processes") == 0:
            session.notes.append(_UNSEEDED_NOTE)
        if finished.exit_code != 0 and _failed_for_determinism(staging):
            session.notes.append(_STRICT_NOTE)
        manifest = Manifest(
            schema_version=SCHEMA_VERSION,
            created_by=f"reprobox {__version__}",
            run=_run_record(session, finished),
            determinism=replace(determinism, state=state),
            **environment,
            git=git_record,
            inputs=inputs,
            outputs=_outputs(session, before),
            source_files=source,
            notes=tuple(session.notes),
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


def _execute(
    session: _Session, determinism: Determinism, terminal: tuple[BinaryIO, BinaryIO] | None
) -> tuple[_Finished, dict[str, manifest_io.Scalar]]:
    """Run the command under the shim, teeing its output to the terminal and the logs."""
    state_dir = session.staging / ".state"
    state_dir.mkdir()
    env = seeding.process_env(determinism, str(seeding.SHIM_DIR), str(state_dir), os.environ)
    logs = session.staging / "logs"
    logs.mkdir()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    clock = time.monotonic()
    streams = terminal or process.terminal_streams()
    exit_code = process.run_teed(session.options.argv, session.options.cwd, env, logs, streams)
    _redact_logs(logs)
    finished = _Finished(started, round(time.monotonic() - clock, 3), exit_code)
    state = seeding.read_state(state_dir)
    shutil.rmtree(state_dir)
    return finished, state


def _redact_logs(logs: Path) -> None:
    """Mask secrets the run printed; the terminal saw them, the bundle must not keep them."""
    for name in LOG_NAMES:
        raw = (logs / name).read_bytes()
        redacted = environ.redact_bytes(raw)
        if redacted != raw:
            atomic_write(logs / name, redacted)


def _outputs(session: _Session, before: dict[str, tuple[int, int]] | None) -> tuple[Output, ...]:
    """Hash the outputs (declared, or else every file the run created or changed) and copy them."""
    options, project = session.options, session.project
    if before is None:
        paths = [f for p in options.outputs for f in _declared_files(session, session.rel(p))]
    else:
        paths = files.changed_files(before, files.snapshot_mtimes(project))
    records = []
    for rel in sorted(paths):
        record, stored = _output_record(session, rel)
        records.append(Output(rel, record.sha256, record.size, stored, options.rtol, options.atol,
                              options.ulps))
    return tuple(records)


def _declared_files(session: _Session, rel: str) -> list[str]:
    """A declared output; a folder stands for every regular file in it (`--output out/`)."""
    folder = session.project / rel
    if not folder.is_dir():
        return [rel]
    found = sorted(p.relative_to(session.project).as_posix() for p in folder.rglob("*")
                   if p.is_file() and not p.is_symlink())
    if not found:
        raise CaptureError(f"{rel}: the declared output folder is empty after the run",
                           hint="did the run write where you said? check --output")
    return found


def _output_record(session: _Session, rel: str) -> tuple[FileRecord, bool]:
    """The output's digest, and whether a copy is kept in the bundle (not when over the cap)."""
    path = session.project / rel
    if path.is_file() and path.stat().st_size <= OUTPUT_COPY_LIMIT:
        return files.copy_and_hash(session.project, rel, session.staging / "outputs" / rel), True
    return files.hash_record(session.project, rel), False  # also the error for a missing one


def _run_record(session: _Session, finished: _Finished) -> Run:
    options = session.options
    env, redacted, not_captured = environ.capture_env(os.environ, options.env_names)
    return Run(
        argv=environ.mask_argv(options.argv),
        project=session.project.name,
        workdir=os.path.relpath(options.cwd.resolve(), session.project),
        started=finished.started,
        duration_s=finished.duration_s,
        exit_code=finished.exit_code,
        env=env,
        env_redacted=redacted,
        env_not_captured=not_captured,
    )


def _with_frameworks(determinism: Determinism, python: Python) -> Determinism:
    """The same determinism, plus the switches TensorFlow and JAX read before import."""
    return seeding.determinism(determinism.seed, determinism.threads, determinism.deterministic,
                               determinism.warn_only, [package.name for package in python.packages])


def _failed_for_determinism(staging: Path) -> bool:
    """Whether torch's strict deterministic mode is what stopped the run (its stderr says so)."""
    with open(staging / "logs" / "stderr.log", "rb") as log:
        log.seek(max(0, log.seek(0, os.SEEK_END) - _STDERR_TAIL))
        return _TORCH_STRICT_ERROR in log.read()


def _environment(session: _Session, interpreter: str | None, threads: int) -> dict[str, Any]:
    """The `python`, `system`, `cuda` and `gpu` parts of the manifest."""
    found = _python(session, interpreter)
    # The probe ran outside the shim; the run itself had every BLAS pinned to this many threads.
    blas = tuple(replace(b, num_threads=threads) for b in found.blas)
    gpus, gpu_notes = gpu.probe(session.runner, os.environ)
    session.notes.extend(gpu_notes)
    return {"python": found.python, "system": replace(system.probe(session.runner), blas=blas),
            "cuda": found.cuda, "gpu": gpus}


def _python(session: _Session, interpreter: str | None) -> python_env.Environment:
    executable = interpreter
    if executable is None:
        executable = sys.executable
        session.notes.append(
            f"python: {session.options.argv[0]} is not a Python interpreter or script; "
            f"recorded reprobox's own interpreter {executable}"
        )
    try:
        return python_env.probe_environment(executable, session.runner)
    except ProbeUnavailable as exc:
        raise CaptureError(
            f"cannot list the packages of {executable}: {exc}",
            hint="is the interpreter still there?",
        ) from None


def _git(session: _Session) -> Git | None:
    try:
        record, diff = git.probe(session.project, session.runner)
    except ProbeUnavailable as exc:
        session.notes.append(f"git: {exc}")
        return None
    if diff:
        atomic_write(session.staging / git.DIFF_FILE, diff)
    return record


def _snapshot(session: _Session, excluded: set[str]) -> tuple[FileRecord, ...]:
    """Copy the project's allowlisted files into the bundle: the image is built from these."""
    project, source_dir = session.project, session.staging / "source"

    def skipped(path: str, size: int) -> None:
        session.notes.append(
            f"source: {path} ({size / 1e6:.0f} MB) left out of the image: too large; "
            "declare it with --input if the run reads it"
        )

    source_dir.mkdir()
    return tuple(files.copy_and_hash(project, rel, source_dir / rel)
                 for rel in files.source_files(project, session.runner, excluded, on_skip=skipped))
