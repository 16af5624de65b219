"""slurm_replay: submit → follow → gather, with a fake Slurm whose `submit` leaves the tasks'
folders — by running the real job script with bash and a fake `docker`, or by hand."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from reprobox import replay as replay_module
from reprobox.bundle import Bundle
from reprobox.cluster.slurm import Slurm, TaskState
from reprobox.cluster.slurm_replay import (
    QUEUE_ATTEMPTS,
    SlurmRequest,
    replay_on_slurm,
)
from reprobox.cluster.slurm_script import SlurmOptions
from reprobox.errors import ClusterError, ReplayError
from reprobox.manifest import Manifest
from tests.unit.fakes import FakeEngine
from tests.unit.scripted import BUILT, STATE, bundle_with_outputs, npy

from .test_cluster_slurm_script import docker_calls, fake_path, run_script
from .test_preflight import gpu_manifest

JOB_ID = "77"
WEIGHTS = npy([1.0, 2.0])
Tasks = Callable[[Path, int], None]  # (the job script, how many tasks) → task folders


PENDING = TaskState(0, "PENDING", "Resources")
RUNNING = TaskState(0, "RUNNING")
Answer = dict[int, TaskState] | BaseException


class FakeSlurm(Slurm):
    """Runs `write_tasks` on submit; squeue answers `answers` in turn, then the job is gone."""

    def __init__(self, write_tasks: Tasks, answers: Sequence[Answer] = ({0: RUNNING},),
                 ended: dict[int, TaskState] | None = None) -> None:
        super().__init__()
        self.write_tasks, self.answers, self.ended = write_tasks, list(answers), ended or {}
        self.scripts: list[Path] = []
        self.cancelled: list[str] = []

    def submit(self, script: Path) -> str:
        self.scripts.append(script)
        array = re.search(r"^#SBATCH --array=0-(\d+)$", script.read_text(), re.MULTILINE)
        self.write_tasks(script, int(array.group(1)) + 1 if array else 1)
        return JOB_ID

    def queued(self, job_id: str) -> dict[int, TaskState]:
        assert job_id == JOB_ID
        answer = self.answers.pop(0) if self.answers else {}
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def final_states(self, job_id: str) -> dict[int, TaskState]:
        return self.ended

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)


@dataclass
class SavingEngine(FakeEngine):
    """A FakeEngine that counts `docker save`s."""

    saves: list[list[str]] = field(default_factory=list)

    def image_id(self, ref: str) -> str:
        return "sha256:" + "ab" * 32

    def save_images(self, refs: Sequence[str], out: BinaryIO,
                    on_bytes: Callable[[int], None]) -> None:
        self.saves.append(list(refs))
        super().save_images(refs, out, on_bytes)


def _bundle(tmp_path: Path, sample_manifest: Manifest) -> Bundle:
    return bundle_with_outputs(tmp_path, sample_manifest,
                               {"out/w.npy": WEIGHTS, "out/link.txt": b"original\n"})


def _request(*seeds: int, **options: object) -> SlurmRequest:
    return SlurmRequest(SlurmOptions(**options), seeds=seeds)  # type: ignore[arg-type]


def _replay(bundle: Bundle, slurm: FakeSlurm, request: SlurmRequest | None = None,
            engine: FakeEngine | None = None,
            events: list[str] | None = None, printed: list[bytes] | None = None) -> list[Path]:
    return replay_on_slurm(bundle, engine or SavingEngine(images={BUILT.tag}), slurm,
                           request or _request(), (events if events is not None else []).append,
                           (printed if printed is not None else []).append, poll_s=0)


def _task_dir(script: Path, task: int) -> Path:
    return script.parent / f"task-{task}"


def _write_task(script: Path, task: int, exit_code: str | None = "0",
                outputs: dict[str, bytes] | None = None, **files: str) -> Path:
    """A task folder as the job script leaves it."""
    out = _task_dir(script, task)
    state = out / "fetched" / replay_module.STATE_DIR
    state.mkdir(parents=True)
    (state / "state-7.json").write_text(json.dumps({**STATE, "seed": 100 + task}))
    for path, data in (outputs if outputs is not None else {"out/w.npy": WEIGHTS}).items():
        (out / "fetched" / path).parent.mkdir(parents=True, exist_ok=True)
        (out / "fetched" / path).write_bytes(data)
    written = {"stdout.log": f"task {task} says hi\n", "stderr.log": "", "engine": "docker\n",
               "node": "node1\n", "started": "2026-11-27T20:00:00+00:00\n",
               "duration_s": "1.250\n", "environment.rc": "0\n", "environment.out": "{}\n",
               **({"exit_code": f"{exit_code}\n"} if exit_code is not None else {}), **files}
    for name, text in written.items():
        (out / name).write_text(text)
    return out


def _by_hand(script: Path, count: int) -> None:
    for task in range(count):
        _write_task(script, task)


def _records(folders: list[Path]) -> list[dict[str, Any]]:
    return [json.loads((folder / "replay.json").read_text()) for folder in folders]


# --- the plan ------------------------------------------------------------------------------------


# --- submit, follow, gather ----------------------------------------------------------------------


@dataclass
class Node:
    """Runs every task of the job with bash, as a node would, with the fake docker."""

    root: Path  # where the fake docker and its log live, outside the bundle
    scripts: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def __call__(self, script: Path, count: int) -> None:
        self.scripts.append(script.read_text())
        self.env = self.env or fake_path(self.root)
        for task in range(count):
            done = run_script(script, {**self.env, "SLURM_ARRAY_TASK_ID": str(task),
                                       "SLURM_JOB_ID": JOB_ID,
                                       "FAKE_STDOUT": f"seed task {task}\n"})
            assert done.returncode == 0, done.stderr


def test_the_job_script_runs_and_its_tasks_become_replays(tmp_path: Path,
                                                          sample_manifest: Manifest) -> None:
    bundle = _bundle(tmp_path / "project", sample_manifest)
    node = Node(tmp_path)
    events: list[str] = []
    folders = _replay(bundle, FakeSlurm(node), _request(11, 12), events=events)
    hostname = subprocess.run(["hostname"], capture_output=True, text=True,
                              check=True).stdout.strip()
    records = _records(folders)
    assert [record["seed"] for record in records] == [11, 12]
    for task, (folder, record) in enumerate(zip(folders, records, strict=True)):
        assert record["exit_code"] == 3 and record["timed_out"] is False
        assert record["where"] == f"Slurm job {JOB_ID} task {task} on {hostname} with docker"
        assert record["image"] == BUILT.tag and float(str(record["duration_s"])) >= 0
        assert record["state"] == {"seed": 11 + task, "processes": 1}  # the shim's, fetched
        assert (folder / "logs" / "stdout.log").read_text() == f"seed task {task}\n"
        assert (folder / "outputs" / "out" / "w.npy").read_text() == "copied /app/out/w.npy"
        assert json.loads((folder / "environment.json").read_text())
    assert any(event.startswith(f"submitted Slurm job {JOB_ID} (2 task(s))") for event in events)
    assert f"job {JOB_ID} task 0: RUNNING" in events
    assert [p.name for p in bundle.jobs_dir.iterdir()] == ["images"]  # the job's folder is gone
    assert "#SBATCH --array=0-1" in node.scripts[0]
    probe = next(argv for argv in docker_calls(node.env) if argv[1] == "run")
    sources = [word for word in probe if word.startswith("source=")]
    assert sources and all("/probe/" in source for source in sources)


def test_a_gathered_replay_compares_like_a_local_one(tmp_path: Path,
                                                     sample_manifest: Manifest) -> None:
    bundle = _bundle(tmp_path, sample_manifest)
    (folder,) = _replay(bundle, FakeSlurm(_by_hand))
    record = replay_module.read_result(folder)
    assert record.seed == sample_manifest.determinism.seed  # none asked: the captured one
    assert record.where == f"Slurm job {JOB_ID} task 0 on node1 with docker"
    assert (record.exit_code, record.duration_s, record.started) == (
        0, 1.25, "2026-11-27T20:00:00+00:00")
    assert record.state["seed"] == 100 and record.state["processes"] == 1
    assert (folder / "outputs" / "out" / "w.npy").read_bytes() == WEIGHTS
    assert (folder / "logs" / "stdout.log").read_text() == "task 0 says hi\n"
    assert (folder / "logs" / "stderr.log").read_text() == ""
    _, comparison = replay_module.compare_replay(bundle, folder)
    outputs = {output.path: output.verdict for output in comparison.outputs}
    assert outputs["out/w.npy"] == "identical"


def test_one_seed_streams_its_output_and_changes_of_state_are_told(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    printed: list[bytes] = []
    events: list[str] = []
    slurm = FakeSlurm(_by_hand, answers=[{0: PENDING}, {0: RUNNING}, {0: RUNNING}])
    _replay(_bundle(tmp_path, sample_manifest), slurm, events=events, printed=printed)
    assert b"".join(printed) == b"task 0 says hi\n"  # once, however many polls
    assert events[1:] == [f"job {JOB_ID} task 0: PENDING (Resources)",
                          f"job {JOB_ID} task 0: RUNNING"]


def test_a_slurmctld_briefly_away_is_asked_again(tmp_path: Path,
                                                 sample_manifest: Manifest) -> None:
    away = ClusterError("squeue could not follow the replay job: connect failure")
    slurm = FakeSlurm(_by_hand, answers=[{0: RUNNING}, away, away, {}])
    (folder,) = _replay(_bundle(tmp_path, sample_manifest), slurm)
    assert replay_module.read_result(folder).exit_code == 0 and slurm.cancelled == []


def test_a_slurmctld_that_stays_away_ends_the_wait_and_the_job(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle = _bundle(tmp_path, sample_manifest)
    away = ClusterError("squeue could not follow the replay job: connect failure")
    slurm = FakeSlurm(_by_hand, answers=[away] * QUEUE_ATTEMPTS)
    with pytest.raises(ClusterError, match="connect failure"):
        _replay(bundle, slurm)
    assert slurm.cancelled == [JOB_ID] and bundle.replays() == []
    assert [p.name for p in bundle.jobs_dir.iterdir()] == ["images"]


def test_the_slurm_log_lands_in_the_jobs_folder(tmp_path: Path,
                                                sample_manifest: Manifest) -> None:
    # The error for a task without a result says the job's logs (slurm-*.out) are kept in
    # its folder; Slurm writes them where --output says.
    seen: list[str] = []

    def read_script(script: Path, count: int) -> None:
        seen.append(script.read_text())
        _by_hand(script, count)

    _replay(_bundle(tmp_path, sample_manifest), FakeSlurm(read_script))
    (output,) = [line for line in seen[0].splitlines() if line.startswith("#SBATCH --output=")]
    jobs = (tmp_path / ".reprobox" / "runs" / "r1" / "jobs").resolve()
    assert output.startswith(f"#SBATCH --output={jobs}/") and output.endswith("/slurm-%A_%a.out")
    work = Path(output.removeprefix("#SBATCH --output=")).parent
    assert work.parent == jobs and work.name != "images"


def test_a_linked_output_is_not_copied(tmp_path: Path, sample_manifest: Manifest) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not the run's\n")

    def with_link(script: Path, count: int) -> None:
        out = _write_task(script, 0)
        (out / "fetched" / "out" / "link.txt").symlink_to(secret)

    (folder,) = _replay(_bundle(tmp_path, sample_manifest), FakeSlurm(with_link))
    assert (folder / "outputs" / "out" / "w.npy").is_file()
    assert not (folder / "outputs" / "out" / "link.txt").exists()


def test_a_task_that_could_not_start_is_an_error_and_the_others_are_kept(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle = _bundle(tmp_path, sample_manifest)

    def one_fails(script: Path, count: int) -> None:
        _write_task(script, 0)
        _write_task(script, 1, exit_code=None, error="docker is not on PATH on node2\n")

    with pytest.raises(ClusterError) as err:
        _replay(bundle, FakeSlurm(one_fails), _request(1, 2))
    assert err.value.exit_code == 6
    assert str(err.value) == (f"Slurm job {JOB_ID} task 1 could not replay: docker is not on "
                              "PATH on node2; 1 of 2 replays were gathered")
    (work,) = [p for p in bundle.jobs_dir.iterdir() if p.name != "images"]
    assert str(work) in (err.value.hint or "") and (work / "task-1" / "error").is_file()
    (kept,) = bundle.replays()
    assert replay_module.read_result(kept).seed == 1


def test_a_task_with_neither_result_nor_error_says_how_slurm_ended_it(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    def nothing(script: Path, count: int) -> None:
        _task_dir(script, 0).mkdir()

    slurm = FakeSlurm(nothing, ended={0: TaskState(0, "OUT_OF_MEMORY", "OutOfMemory")})
    with pytest.raises(ClusterError, match=f"Slurm job {JOB_ID} task 0 ended OUT_OF_MEMORY "
                       "without a result$"):
        _replay(_bundle(tmp_path, sample_manifest), slurm)


def test_a_task_slurm_stopped_at_its_time_limit_is_a_timed_out_replay(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    def cut_short(script: Path, count: int) -> None:
        _write_task(script, 0, exit_code=None, outputs={})

    slurm = FakeSlurm(cut_short, ended={0: TaskState(0, "TIMEOUT", "TimeLimit")})
    bundle = _bundle(tmp_path, sample_manifest)
    (folder,) = _replay(bundle, slurm)
    record = replay_module.read_result(folder)
    assert record.timed_out and record.exit_code == -1
    assert not (folder / "outputs" / "out" / "w.npy").exists()
    assert replay_module.compare_replay(bundle, folder)[1].verdict == "different"


def test_ctrl_c_while_following_cancels_the_job_and_leaves_nothing(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle = _bundle(tmp_path, sample_manifest)
    slurm = FakeSlurm(_by_hand, answers=[{0: PENDING}, KeyboardInterrupt()])
    with pytest.raises(KeyboardInterrupt):
        _replay(bundle, slurm, _request(1, 2))
    assert slurm.cancelled == [JOB_ID]
    assert [p.name for p in bundle.jobs_dir.iterdir()] == ["images"]
    assert bundle.replays() == []


def test_a_refused_submission_leaves_nothing_and_cancels_nothing(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle = _bundle(tmp_path, sample_manifest)

    def refused(script: Path, count: int) -> None:
        raise ClusterError("sbatch could not submit the replay job: Invalid partition name")

    slurm = FakeSlurm(refused)
    with pytest.raises(ClusterError, match="Invalid partition"):
        _replay(bundle, slurm)
    assert slurm.cancelled == [] and bundle.replays() == []
    assert [p.name for p in bundle.jobs_dir.iterdir()] == ["images"]


def test_the_saved_image_serves_every_submission(tmp_path: Path,
                                                 sample_manifest: Manifest) -> None:
    bundle = _bundle(tmp_path, sample_manifest)
    engine = SavingEngine(images={BUILT.tag})
    scripts: list[str] = []

    def keep(script: Path, count: int) -> None:
        scripts.append(script.read_text())
        _by_hand(script, count)

    _replay(bundle, FakeSlurm(keep), engine=engine)
    _replay(bundle, FakeSlurm(keep), engine=engine)
    assert engine.saves == [[BUILT.tag]]
    (tar,) = (bundle.jobs_dir / "images").iterdir()
    assert tar.read_bytes() == f"saved {BUILT.tag}".encode()
    assert all(f"IMAGE_TAR={tar}" in text for text in scripts)
    assert len(bundle.replays()) == 2


def test_an_image_not_built_is_refused_before_anything_is_submitted(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    slurm = FakeSlurm(_by_hand)
    with pytest.raises(ReplayError, match="is not present"):
        _replay(_bundle(tmp_path, sample_manifest), slurm, engine=SavingEngine())
    assert slurm.scripts == []


def test_the_job_asks_for_the_runs_gpus(tmp_path: Path, sample_manifest: Manifest) -> None:
    from reprobox import manifest as manifest_io

    bundle = _bundle(tmp_path, sample_manifest)
    manifest_io.write(gpu_manifest(bundle.manifest()), bundle.manifest_path)
    seen: list[str] = []

    def read_script(script: Path, count: int) -> None:
        seen.append(script.read_text())
        _by_hand(script, count)

    (folder,) = _replay(bundle, FakeSlurm(read_script), _request(partition="gpu"))
    assert "#SBATCH --gpus=1" in seen[0] and "#SBATCH --partition=gpu" in seen[0]
    assert replay_module.read_result(folder).gpus is True
