"""Replay a bundle through Slurm: write the job, submit it, follow it, gather it into `replays/`.

The job's folder (`<bundle>/jobs/<job>/`) must be on storage the nodes share with this host, as
a cluster's home or project file system is. The image is saved there once per image
(`jobs/images/<image>.tar`) for nodes that lack it and for Apptainer. Each finished task becomes a
replay folder like a local replay's, so `compare`, `--seeds` tables and archives treat them
alike. Ctrl-C cancels the job and removes its folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reprobox import envdiff, preflight, seeding
from reprobox.archive import BUNDLE_FOLDER, IMAGE_MEMBER
from reprobox.build import BuiltImage, read_built
from reprobox.bundle import Bundle
from reprobox.cluster.slurm import Slurm, TaskState
from reprobox.cluster.slurm_script import JobFiles, SlurmOptions, batch_script
from reprobox.engine import Engine
from reprobox.errors import ClusterError, ReplayError
from reprobox.fileio import atomic_write, staged_dir
from reprobox.manifest import Gpus, Manifest
from reprobox.replay import (
    ENVIRONMENT_FILE,
    NO_GPU,
    STATE_DIR,
    ReplayResult,
    container_spec,
    fetched_paths,
    input_mounts,
    new_replay_id,
    probe_report,
    replay_environment,
)

POLL_S = 2.0  # the longest pause between two looks at the queue
FIRST_POLL_S = 0.25
CANCEL_WAIT_S = 30.0  # a cancelled task is given this long to go before its folder is removed
QUEUE_PATIENCE_S = 600.0  # how long squeue may fail before reprobox stops following a job


@dataclass(frozen=True, slots=True)
class SlurmRequest:
    """One submission: what to ask Slurm for and which seeds to replay (none: the captured)."""

    options: SlurmOptions
    seeds: tuple[int, ...] = ()
    timeout_s: float = 6 * 3600.0
    memory: str | None = None
    cpu: bool = False


Events = Callable[[str], None]  # "job 12: RUNNING on node1", as the job moves


@dataclass(frozen=True, slots=True)
class SlurmReplays:
    """What a submission gave: replay folders in the seeds' order, and the seeds whose task
    left no result, with why (its logs stay in the job's folder)."""

    folders: list[Path]
    lost: dict[int, str]


def replay_on_slurm(bundle: Bundle, engine: Engine, slurm: Slurm, request: SlurmRequest,
                    on_event: Events, on_output: Callable[[bytes], None],
                    poll_s: float = POLL_S) -> SlurmReplays:
    """Submit, follow and gather. Raises ClusterError when no task left a result."""
    manifest = bundle.manifest()
    plan = preflight.for_scheduler(manifest, request.options.gpus, request.cpu)
    built = read_built(bundle)
    seeds = request.seeds or (manifest.determinism.seed,)
    work = _new_work_dir(bundle)
    try:
        job_id = slurm.submit(_write_job(bundle, engine, built, plan, request, seeds, work))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _follow_or_cancel(slurm, job_id, work, on_event, on_output if len(seeds) == 1 else None,
                      poll_s, len(seeds))
    return _gather_all(bundle, slurm, job_id, work, built, plan, seeds)


def _follow_or_cancel(slurm: Slurm, job_id: str, work: Path, on_event: Events,
                      on_output: Callable[[bytes], None] | None, poll_s: float,
                      tasks: int) -> None:
    """Follow the job; Ctrl-C, from the moment it is submitted, cancels it. A Slurm that stops
    answering leaves the job be."""
    try:
        on_event(f"submitted Slurm job {job_id} ({tasks} task(s)); its folder: {work}")
        _follow(slurm, job_id, work, on_event, on_output, poll_s)
    except KeyboardInterrupt:
        _cancel(slurm, job_id, work, poll_s)
        raise
    except ClusterError as exc:
        raise ClusterError(
            f"lost track of Slurm job {job_id}: {exc}",
            hint=f"the job goes on without reprobox (`scancel {job_id}` stops it); each task "
            f"leaves its outputs and logs in {work}/task-<n>/") from None


def _new_work_dir(bundle: Bundle) -> Path:
    work = bundle.jobs_dir / new_replay_id()
    work.parent.mkdir(parents=True, exist_ok=True)
    work.mkdir(mode=0o700)  # the job's environment and outputs are the user's alone
    return work


def _write_job(bundle: Bundle, engine: Engine, built: BuiltImage, plan: preflight.Preflight,
               request: SlurmRequest, seeds: Sequence[int], work: Path) -> Path:
    manifest = bundle.manifest()
    spec = container_spec(manifest, built, input_mounts(bundle, manifest), request.timeout_s,
                          request.memory, plan)
    image_tar, several = _images_for_nodes(bundle, engine, built)
    probe_dir = work / "probe"
    probe_dir.mkdir()
    for script in envdiff.PROBE_SCRIPTS:
        shutil.copyfile(script, probe_dir / script.name)
    files = JobFiles(str(work.resolve()), str(image_tar),
                     str(image_tar_path(bundle, built).with_suffix(".sif")),
                     str(probe_dir.resolve()), f"{work.resolve()}/slurm-%A_%a.out",
                     several_images=several)
    options = replace(request.options, gpus=plan.gpu_count)
    text = batch_script(manifest, bundle.run_id, spec, seeds, options, files,
                        fetched_paths(manifest))
    path = work / "job.sh"
    atomic_write(path, text)
    path.chmod(0o700)
    return path


def _images_for_nodes(bundle: Bundle, engine: Engine, built: BuiltImage) -> tuple[Path, bool]:
    """The tar the nodes load the image from, and whether it holds other images too: the one
    saved beside the jobs, else an unpacked archive's (`unpack --no-load` on a host without
    Docker), else one saved now."""
    if not image_tar_path(bundle, built).is_file():
        unpacked = bundle.path.parent / IMAGE_MEMBER
        if unpacked.is_file() and bundle.path.name == BUNDLE_FOLDER:
            image_tar_path(bundle, built).parent.mkdir(parents=True, exist_ok=True)  # the SIF's
            return unpacked.resolve(), True
    return saved_image(bundle, engine, built), False


def saved_image(bundle: Bundle, engine: Engine, built: BuiltImage) -> Path:
    """`docker save` of the bundle's image beside its jobs, once per image (its tag is a hash
    of everything it is made from, so a rebuilt image gets another file). Once saved, this
    host needs no Docker: a cluster's login node often has none."""
    path = image_tar_path(bundle, built)
    if path.is_file():
        return path
    if not engine.has_image(built.tag):
        raise ReplayError(f"image {built.tag} is not present",
                          hint="run `reprobox build` to rebuild it from the bundle")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    partial = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            engine.save_images([built.tag], out, lambda _: None)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def image_tar_path(bundle: Bundle, built: BuiltImage) -> Path:
    """Where jobs find the saved image; the SIF built from it has the same name, `.sif`."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", built.tag.rpartition("/")[2])
    return (bundle.jobs_dir / "images" / f"{name}.tar").resolve()


def _follow(slurm: Slurm, job_id: str, work: Path, on_event: Events,
            on_output: Callable[[bytes], None] | None, poll_s: float) -> None:
    """Wait for every task to leave the queue, saying when states change.

    The pause between two looks at the queue grows from FIRST_POLL_S to `poll_s`: a short job
    is gathered soon after it ends, a long one does not keep slurmctld busy.
    """
    seen: dict[int, TaskState] = {}
    shown = 0
    pause = min(FIRST_POLL_S, poll_s)
    while True:
        queued = _queued(slurm, job_id, poll_s)
        for task, state in sorted(queued.items()):
            if seen.get(task) != state:
                reason = f" ({state.reason})" if state.reason else ""
                on_event(f"job {job_id} task {task}: {state.state}{reason}")
        seen = queued
        if on_output is not None:
            shown = _tail(work / "task-0" / "stdout.log", shown, on_output)
        if not queued:
            return
        time.sleep(pause)
        pause = min(pause * 2, poll_s)


def _queued(slurm: Slurm, job_id: str, poll_s: float) -> dict[int, TaskState]:
    """squeue's answer; a slurmctld that is away (a restart, a fail-over) is asked again with
    growing pauses for up to QUEUE_PATIENCE_S."""
    waited, pause = 0.0, max(poll_s, 0.01)
    while True:
        try:
            return slurm.queued(job_id)
        except ClusterError:
            if waited >= QUEUE_PATIENCE_S:
                raise
        time.sleep(pause if poll_s else 0)
        waited += pause
        pause = min(pause * 2, 30.0)


def _tail(path: Path, offset: int, on_output: Callable[[bytes], None]) -> int:
    """Hand on what `path` gained since `offset`; the new offset."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return offset
    if data:
        on_output(data)
    return offset + len(data)


def _cancel(slurm: Slurm, job_id: str, work: Path, poll_s: float) -> None:
    """Ctrl-C: cancel the job and, once it has left the queue, remove its folder."""
    with contextlib.suppress(ClusterError):  # the interruption is what to report
        slurm.cancel(job_id)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while slurm.queued(job_id) and time.monotonic() < deadline:
            time.sleep(min(poll_s, 1.0))  # scancel does not wait; a task still writes
    shutil.rmtree(work, ignore_errors=True)


def _gather_all(bundle: Bundle, slurm: Slurm, job_id: str, work: Path, built: BuiltImage,
                plan: preflight.Preflight, seeds: Sequence[int]) -> SlurmReplays:
    """Every task that left a result becomes a replay; the job's folder goes when all did."""
    ended = slurm.final_states(job_id)
    folders, lost = [], {}
    for task, seed in enumerate(seeds):
        task_dir = work / f"task-{task}"
        result = _task_result(task_dir, ended.get(task), job_id, task)
        if isinstance(result, str):
            lost[seed] = result
            continue
        result = replace(result, image=built.tag, gpus=plan.gpus, seed=seed,
                         expect_tolerance=plan.expect_tolerance, notes=list(plan.notes),
                         where=_where(job_id, task, task_dir))
        folders.append(_gather(bundle, task_dir, result, plan))
    if not folders:
        raise ClusterError(next(iter(lost.values())),
                           hint=f"the job's logs are kept in {work} (slurm-*.out, task-*/)")
    if not lost:
        shutil.rmtree(work, ignore_errors=True)
    return SlurmReplays(folders, lost)


def _task_result(task_dir: Path, ended: TaskState | None, job_id: str,
                 task: int) -> ReplayResult | str:
    """How a task ended, or why it left no result (a line for the error)."""
    exit_code = _read(task_dir / "exit_code")
    name = f"Slurm job {job_id} task {task}"
    if exit_code is None or not exit_code.lstrip("-").isdigit():
        if ended is not None and ended.state == "TIMEOUT":
            return _result(task_dir, -1, timed_out=True)
        error = _read(task_dir / "error")
        if error:
            return f"{name} could not replay: {error}"
        state = f"ended {ended.state}" if ended is not None else "ended"
        return f"{name} {state} without a result"
    return _result(task_dir, int(exit_code), timed_out=(task_dir / "timed_out").exists())


def _result(task_dir: Path, exit_code: int, timed_out: bool) -> ReplayResult:
    """The task's record; its id, image and plan are filled in by the caller."""
    duration = _read(task_dir / "duration_s") or ""
    return ReplayResult(
        replay_id="", image="", exit_code=exit_code, timed_out=timed_out,
        duration_s=float(duration) if _is_number(duration) else 0.0,
        started=_read(task_dir / "started") or "",
        state=seeding.read_state(task_dir / "fetched" / STATE_DIR),
    )


def _gather(bundle: Bundle, task_dir: Path, result: ReplayResult,
            plan: preflight.Preflight) -> Path:
    """One task's results as a replay folder, staged and renamed into place when complete."""
    final = bundle.replays_dir / new_replay_id()
    with staged_dir(final) as staging:
        for stream in ("stdout.log", "stderr.log"):
            _copy_regular(task_dir, task_dir / stream, staging / "logs" / stream, empty=True)
        for output in bundle.manifest().outputs:
            _copy_regular(task_dir / "fetched", task_dir / "fetched" / output.path,
                          staging / "outputs" / output.path)
        environment = replay_environment(_probe(task_dir), result, NO_GPU)
        result = _weighed_on_node(bundle.manifest(), replace(result, replay_id=final.name),
                                  environment.gpu, plan)
        atomic_write(staging / "replay.json", result.to_json())
        atomic_write(staging / ENVIRONMENT_FILE, environment.to_json())
    return final


def _weighed_on_node(manifest: Manifest, result: ReplayResult, node: Gpus | None,
                     plan: preflight.Preflight) -> ReplayResult:
    """What the node turned out to have (its probe's GPUs), weighed as a local preflight would:
    another GPU model, fewer GPUs, and the comparison expects tolerance, not equality."""
    if not plan.gpus or node is None or not node.devices:
        return result
    concerns = preflight.on_node(manifest, node, plan.gpu_count)
    return replace(result, notes=[*result.notes, *(c.message for c in concerns)],
                   expect_tolerance=result.expect_tolerance or any(c.tolerance
                                                                   for c in concerns))


def _copy_regular(root: Path, source: Path, target: Path, empty: bool = False) -> None:
    """Copy `source` if it is a regular file inside `root` (never through a link: under
    Apptainer the run wrote straight onto this storage); else write nothing, or `empty`."""
    inside = source.resolve().is_relative_to(root.resolve()) and not source.is_symlink()
    if inside and source.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    elif empty:
        atomic_write(target, b"")


def _probe(task_dir: Path) -> Mapping[str, Any] | str:
    """The environment probe's report the task left, or why there is none."""
    exit_code = _read(task_dir / "environment.rc")
    if exit_code is None or not exit_code.lstrip("-").isdigit():
        return "the job's environment probe did not run"
    out, err = task_dir / "environment.out", task_dir / "environment.err"
    return probe_report(int(exit_code), out.read_bytes() if out.is_file() else b"",
                        err.read_bytes() if err.is_file() else b"")


def _where(job_id: str, task: int, task_dir: Path) -> str:
    engine = _read(task_dir / "engine") or "?"
    node = _read(task_dir / "node") or "?"
    return f"Slurm job {job_id} task {task} on {node} with {engine}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
