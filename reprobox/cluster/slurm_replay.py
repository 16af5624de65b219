"""Replay a bundle through Slurm: write the job, submit it, follow it, gather it into `replays/`.

The job's folder (`<bundle>/jobs/<job>/`) must be on storage the nodes share with this host, as
a cluster's home or project file system is. The image is saved there once per image
(`jobs/images/<id>.tar`) for nodes that lack it and for Apptainer. Each finished task becomes a
replay folder like a local replay's, so `compare`, `--seeds` tables and archives treat them
alike. Ctrl-C cancels the job and removes its folder.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reprobox import envdiff, preflight, seeding
from reprobox.build import BuiltImage, read_built
from reprobox.bundle import Bundle
from reprobox.cluster.slurm import Slurm, TaskState
from reprobox.cluster.slurm_script import JobFiles, SlurmOptions, batch_script
from reprobox.engine import Engine
from reprobox.errors import ClusterError, ReplayError
from reprobox.fileio import atomic_write, staged_dir
from reprobox.manifest import Manifest
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

POLL_S = 2.0
QUEUE_ATTEMPTS = 5  # squeue failing this many times in a row ends the wait (and the job)


@dataclass(frozen=True, slots=True)
class SlurmRequest:
    """One submission: what to ask Slurm for and which seeds to replay (none: the captured)."""

    options: SlurmOptions
    seeds: tuple[int, ...] = ()
    timeout_s: float = 6 * 3600.0
    memory: str | None = None
    cpu: bool = False


Events = Callable[[str], None]  # "job 12: RUNNING on node1", as the job moves


def replay_on_slurm(bundle: Bundle, engine: Engine, slurm: Slurm, request: SlurmRequest,
                    on_event: Events, on_output: Callable[[bytes], None],
                    poll_s: float = POLL_S) -> list[Path]:
    """Submit, follow and gather; the replay folders, one per seed, in the seeds' order."""
    manifest = bundle.manifest()
    plan = preflight.for_scheduler(manifest, request.options.gpus, request.cpu)
    built = read_built(bundle)
    if not engine.has_image(built.tag):
        raise ReplayError(f"image {built.tag} is not present",
                          hint="run `reprobox build` to rebuild it from the bundle")
    seeds = request.seeds or (manifest.determinism.seed,)
    work = _new_work_dir(bundle)
    job_id: str | None = None
    try:
        script = _write_job(bundle, engine, built, plan, request, seeds, work)
        job_id = slurm.submit(script)
        on_event(f"submitted Slurm job {job_id} ({len(seeds)} task(s)); its folder: {work}")
        _follow(slurm, job_id, work, on_event, on_output if len(seeds) == 1 else None, poll_s)
    except BaseException:
        _abandon(slurm, job_id, work)
        raise
    return _gather_all(bundle, slurm, job_id, work, built, plan, seeds)


def _new_work_dir(bundle: Bundle) -> Path:
    work = bundle.jobs_dir / new_replay_id()
    work.mkdir(parents=True)
    return work


def _write_job(bundle: Bundle, engine: Engine, built: BuiltImage, plan: preflight.Preflight,
               request: SlurmRequest, seeds: Sequence[int], work: Path) -> Path:
    manifest = bundle.manifest()
    spec = container_spec(manifest, built, input_mounts(bundle, manifest), request.timeout_s,
                          request.memory, plan)
    image_tar = saved_image(bundle, engine, built)
    probe_dir = work / "probe"
    probe_dir.mkdir()
    for script in envdiff.PROBE_SCRIPTS:
        shutil.copyfile(script, probe_dir / script.name)
    files = JobFiles(str(work.resolve()), str(image_tar), str(image_tar.with_suffix(".sif")),
                     str(probe_dir.resolve()), f"{work.resolve()}/slurm-%A_%a.out")
    options = replace(request.options, gpus=plan.gpu_count)
    text = batch_script(manifest, bundle.run_id, spec, seeds, options, files,
                        fetched_paths(manifest))
    path = work / "job.sh"
    atomic_write(path, text)
    path.chmod(0o755)
    return path


def saved_image(bundle: Bundle, engine: Engine, built: BuiltImage) -> Path:
    """`docker save` of the bundle's image beside its jobs, once per image id."""
    image_id = engine.image_id(built.tag).removeprefix("sha256:")
    path = (bundle.jobs_dir / "images" / f"{image_id}.tar").resolve()
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("wb") as out:
            engine.save_images([built.tag], out, lambda _: None)
        partial.chmod(0o644)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _follow(slurm: Slurm, job_id: str, work: Path, on_event: Events,
            on_output: Callable[[bytes], None] | None, poll_s: float) -> None:
    """Wait for every task to leave the queue, saying when states change."""
    seen: dict[int, TaskState] = {}
    shown = 0
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
        time.sleep(poll_s)


def _queued(slurm: Slurm, job_id: str, poll_s: float) -> dict[int, TaskState]:
    """squeue's answer; a slurmctld that is briefly away (a restart) is asked again."""
    attempt = 1
    while True:
        try:
            return slurm.queued(job_id)
        except ClusterError:
            if attempt == QUEUE_ATTEMPTS:
                raise
        time.sleep(poll_s * attempt)
        attempt += 1


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


def _abandon(slurm: Slurm, job_id: str | None, work: Path) -> None:
    """Ctrl-C or an error before the results: cancel the job, leave nothing half-made."""
    if job_id is not None:
        with contextlib.suppress(ClusterError):  # the original error is the one to report
            slurm.cancel(job_id)
    shutil.rmtree(work, ignore_errors=True)


def _gather_all(bundle: Bundle, slurm: Slurm, job_id: str, work: Path, built: BuiltImage,
                plan: preflight.Preflight, seeds: Sequence[int]) -> list[Path]:
    ended = slurm.final_states(job_id)
    folders, failures = [], []
    for task, seed in enumerate(seeds):
        task_dir = work / f"task-{task}"
        result = _task_result(task_dir, ended.get(task), job_id, task)
        if isinstance(result, str):
            failures.append(result)
            continue
        result = replace(result, image=built.tag, gpus=plan.gpus, seed=seed,
                         expect_tolerance=plan.expect_tolerance, notes=list(plan.notes),
                         where=_where(job_id, task, task_dir))
        folders.append(_gather(bundle, task_dir, result))
    if failures:
        kept = f"; {len(folders)} of {len(seeds)} replays were gathered" if folders else ""
        raise ClusterError(f"{failures[0]}{kept}",
                           hint=f"the job's logs are kept in {work} (slurm-*.out)")
    shutil.rmtree(work, ignore_errors=True)
    return folders


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


def _gather(bundle: Bundle, task_dir: Path, result: ReplayResult) -> Path:
    """One task's results as a replay folder, staged and renamed into place when complete."""
    final = bundle.replays_dir / new_replay_id()
    result = replace(result, replay_id=final.name)
    with staged_dir(final) as staging:
        for stream in ("stdout.log", "stderr.log"):
            source = task_dir / stream
            atomic_write(staging / "logs" / stream, source.read_bytes() if source.is_file()
                         else b"")
        _collect_outputs(bundle.manifest(), task_dir / "fetched", staging / "outputs")
        probed = _probe(task_dir)
        atomic_write(staging / "replay.json", result.to_json())
        atomic_write(staging / ENVIRONMENT_FILE,
                     replay_environment(probed, result, NO_GPU).to_json())
    return final


def _probe(task_dir: Path) -> Mapping[str, Any] | str:
    """The environment probe's report the task left, or why there is none."""
    exit_code = _read(task_dir / "environment.rc")
    if exit_code is None or not exit_code.lstrip("-").isdigit():
        return "the job's environment probe did not run"
    out, err = task_dir / "environment.out", task_dir / "environment.err"
    return probe_report(int(exit_code), out.read_bytes() if out.is_file() else b"",
                        err.read_bytes() if err.is_file() else b"")


def _collect_outputs(manifest: Manifest, fetched: Path, outputs: Path) -> None:
    """The recorded outputs the task copied out: regular files only, never a link."""
    for output in manifest.outputs:
        source = fetched / output.path
        if source.is_file() and not source.is_symlink():
            target = outputs / output.path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


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
