"""slurm_replay: submit → follow → gather, with a fake Slurm whose `submit` leaves the tasks'
folders — by running the real job script with bash and a fake `docker`, or by hand."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from reprobox import replay as replay_module
from reprobox.build import BuiltImage
from reprobox.bundle import Bundle
from reprobox.cluster import slurm_replay
from reprobox.cluster.slurm import Slurm, TaskState
from reprobox.cluster.slurm_replay import (
    SlurmReplays,
    SlurmRequest,
    image_tar_path,
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
GPU_DATA = Path(__file__).resolve().parents[1] / "data" / "gpu"
Tasks = Callable[[Path, int], None]  # (the job script, how many tasks) → task folders


PENDING = TaskState(0, "PENDING", "Resources")
RUNNING = TaskState(0, "RUNNING")
Answer = dict[int, TaskState] | BaseException


class FakeSlurm(Slurm):
    """Runs `write_tasks` on submit; squeue answers `answers` in turn, then `then` (by default,
    the job is gone). `calls` records squeue and scancel in order, and whether the job's
    folder was there at the time."""

    def __init__(self, write_tasks: Tasks, answers: Sequence[Answer] = ({0: RUNNING},),
                 ended: dict[int, TaskState] | None = None, then: Answer | None = None) -> None:
        super().__init__()
        self.write_tasks, self.answers, self.ended = write_tasks, list(answers), ended or {}
        self.then: Answer = {} if then is None else then
        self.scripts: list[Path] = []
        self.cancelled: list[str] = []
        self.calls: list[tuple[str, bool]] = []

    def submit(self, script: Path) -> str:
        self.scripts.append(script)
        array = re.search(r"^#SBATCH --array=0-(\d+)$", script.read_text(), re.MULTILINE)
        self.write_tasks(script, int(array.group(1)) + 1 if array else 1)
        return JOB_ID

    def queued(self, job_id: str) -> dict[int, TaskState]:
        assert job_id == JOB_ID
        self.calls.append(("squeue", self._work_exists()))
        answer = self.answers.pop(0) if self.answers else self.then
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def final_states(self, job_id: str) -> dict[int, TaskState]:
        return self.ended

    def cancel(self, job_id: str) -> None:
        self.calls.append(("scancel", self._work_exists()))
        self.cancelled.append(job_id)

    def _work_exists(self) -> bool:
        return bool(self.scripts) and self.scripts[-1].parent.is_dir()


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


def _submit(bundle: Bundle, slurm: FakeSlurm, request: SlurmRequest | None = None,
            engine: FakeEngine | None = None, events: list[str] | None = None,
            printed: list[bytes] | None = None, poll_s: float = 0) -> SlurmReplays:
    return replay_on_slurm(bundle, engine or SavingEngine(images={BUILT.tag}), slurm,
                           request or _request(), (events if events is not None else []).append,
                           (printed if printed is not None else []).append, poll_s=poll_s)


def _replay(bundle: Bundle, slurm: FakeSlurm, request: SlurmRequest | None = None,
            engine: FakeEngine | None = None,
            events: list[str] | None = None, printed: list[bytes] | None = None) -> list[Path]:
    """The replay folders of a submission in which every task left a result."""
    done = _submit(bundle, slurm, request, engine, events, printed)
    assert done.lost == {}
    return done.folders


def _job_folders(bundle: Bundle) -> list[Path]:
    return [p for p in bundle.jobs_dir.iterdir() if p.name != "images"]


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
            recorded = (_task_dir(script, task) / "exit_code").read_text()
            assert done.returncode == int(recorded), done.stderr  # the replay's, 3


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


class Clock:
    """Stands in for the `time` module in slurm_replay: sleeps are recorded and pass at once."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


def test_squeue_is_asked_again_with_growing_pauses_for_a_while(
        tmp_path: Path, sample_manifest: Manifest, monkeypatch: pytest.MonkeyPatch) -> None:
    # A slurmctld restart or fail-over takes minutes: reprobox keeps asking, less and less often.
    clock = Clock()
    monkeypatch.setattr(slurm_replay, "time", clock)
    monkeypatch.setattr(slurm_replay, "QUEUE_PATIENCE_S", 100.0)
    away = ClusterError("squeue could not follow the replay job: connect failure")
    slurm = FakeSlurm(_by_hand, answers=[], then=away)
    with pytest.raises(ClusterError):
        _submit(_bundle(tmp_path, sample_manifest), slurm, poll_s=1.0)
    assert clock.slept == [1, 2, 4, 8, 16, 30, 30, 30]
    assert sum(clock.slept[:-1]) < 100 <= sum(clock.slept)
    assert len(slurm.calls) == len(clock.slept) + 1


def test_a_slurmctld_that_stays_away_leaves_the_job_running_and_says_where(
        tmp_path: Path, sample_manifest: Manifest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm_replay, "QUEUE_PATIENCE_S", 0.05)
    bundle = _bundle(tmp_path, sample_manifest)
    away = ClusterError("squeue could not follow the replay job: connect failure")
    slurm = FakeSlurm(_by_hand, answers=[{0: RUNNING}], then=away)
    with pytest.raises(ClusterError) as err:
        _submit(bundle, slurm)
    assert str(err.value) == (f"lost track of Slurm job {JOB_ID}: squeue could not follow the "
                              "replay job: connect failure")
    assert err.value.exit_code == 6
    assert slurm.cancelled == [] and bundle.replays() == []  # the job may well finish
    (work,) = _job_folders(bundle)
    assert (work / "task-0" / "exit_code").is_file()  # the task's results are kept
    hint = err.value.hint or ""
    assert f"scancel {JOB_ID}" in hint and f"{work}/task-<n>/" in hint


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


def test_an_output_under_a_linked_folder_is_not_copied(tmp_path: Path,
                                                       sample_manifest: Manifest) -> None:
    # Under Apptainer the run writes straight onto the shared storage: `out -> /etc` would
    # have reprobox copy whatever lies there into the replay, as if the run had written it.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "w.npy").write_bytes(WEIGHTS)
    (elsewhere / "link.txt").write_text("original\n")

    def linked_folder(script: Path, count: int) -> None:
        out = _write_task(script, 0, outputs={})
        (out / "fetched" / "out").symlink_to(elsewhere, target_is_directory=True)

    (folder,) = _replay(_bundle(tmp_path, sample_manifest), FakeSlurm(linked_folder))
    assert not (folder / "outputs" / "out").exists()


def test_a_linked_log_is_not_copied(tmp_path: Path, sample_manifest: Manifest) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not the run's\n")

    def linked_log(script: Path, count: int) -> None:
        out = _write_task(script, 0)
        (out / "stdout.log").unlink()
        (out / "stdout.log").symlink_to(secret)

    (folder,) = _replay(_bundle(tmp_path, sample_manifest), FakeSlurm(linked_log))
    assert (folder / "logs" / "stdout.log").read_bytes() == b""
    assert (folder / "logs" / "stderr.log").read_bytes() == b""


def test_a_large_log_is_copied_without_being_held_in_memory(tmp_path: Path,
                                                            sample_manifest: Manifest) -> None:
    # A replay may print gigabytes; gathering it must not need that much memory.
    size = 48 << 20
    chunk = b"step 123456: loss 0.25\n" * 4096

    def chatty(script: Path, count: int) -> None:
        out = _write_task(script, 0)
        with (out / "stderr.log").open("wb") as log:
            for _ in range(size // len(chunk)):
                log.write(chunk)

    slurm = FakeSlurm(chatty)
    tracemalloc.start()
    try:
        (folder,) = _replay(_bundle(tmp_path, sample_manifest), slurm)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    copied = folder / "logs" / "stderr.log"
    assert copied.stat().st_size == (size // len(chunk)) * len(chunk)
    assert peak < 8 << 20


def test_a_task_that_could_not_start_is_lost_and_the_others_are_gathered(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle = _bundle(tmp_path, sample_manifest)

    def one_fails(script: Path, count: int) -> None:
        _write_task(script, 0)
        _write_task(script, 1, exit_code=None, error="docker is not on PATH on node2\n")
        _write_task(script, 2, exit_code="1")  # ran and failed: a replay all the same

    done = _submit(bundle, FakeSlurm(one_fails), _request(1, 2, 3))
    assert done.lost == {2: f"Slurm job {JOB_ID} task 1 could not replay: docker is not on "
                            "PATH on node2"}
    assert done.folders == bundle.replays()
    assert [(r["seed"], r["exit_code"]) for r in _records(done.folders)] == [(1, 0), (3, 1)]
    (work,) = _job_folders(bundle)  # kept: the lost task's logs are there
    assert (work / "task-1" / "error").is_file()


def test_no_task_with_a_result_is_an_error_and_keeps_the_jobs_folder(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle = _bundle(tmp_path, sample_manifest)

    def none_start(script: Path, count: int) -> None:
        for task in range(count):
            _write_task(script, task, exit_code=None, error=f"no docker on node{task}\n")

    with pytest.raises(ClusterError) as err:
        _submit(bundle, FakeSlurm(none_start), _request(1, 2))
    assert err.value.exit_code == 6
    assert str(err.value) == f"Slurm job {JOB_ID} task 0 could not replay: no docker on node0"
    (work,) = _job_folders(bundle)
    assert str(work) in (err.value.hint or "") and (work / "task-1" / "error").is_file()
    assert bundle.replays() == []


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
    slurm = FakeSlurm(_by_hand, answers=[{0: PENDING}, KeyboardInterrupt(), {0: RUNNING},
                                         {0: RUNNING}])
    with pytest.raises(KeyboardInterrupt):
        _submit(bundle, slurm, _request(1, 2))
    assert slurm.cancelled == [JOB_ID]
    # scancel returns at once; the tasks write on until they go, so the folder is kept until
    # squeue no longer lists the job
    assert slurm.calls == [("squeue", True), ("squeue", True), ("scancel", True),
                           ("squeue", True), ("squeue", True), ("squeue", True)]
    assert [p.name for p in bundle.jobs_dir.iterdir()] == ["images"]
    assert bundle.replays() == []


def test_ctrl_c_waits_for_a_cancelled_job_only_so_long(
        tmp_path: Path, sample_manifest: Manifest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm_replay, "CANCEL_WAIT_S", 0.3)
    bundle = _bundle(tmp_path, sample_manifest)
    slurm = FakeSlurm(_by_hand, answers=[KeyboardInterrupt()], then={0: RUNNING})
    begun = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        _submit(bundle, slurm)
    assert 0.3 <= time.monotonic() - begun < 5
    assert slurm.cancelled == [JOB_ID] and len(slurm.calls) > 3
    assert [p.name for p in bundle.jobs_dir.iterdir()] == ["images"]


def test_ctrl_c_with_slurm_not_answering_still_cleans_up_and_is_an_interruption(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle = _bundle(tmp_path, sample_manifest)
    away = ClusterError("squeue could not follow the replay job: connect failure")
    slurm = FakeSlurm(_by_hand, answers=[KeyboardInterrupt()], then=away)
    with pytest.raises(KeyboardInterrupt):
        _submit(bundle, slurm)
    assert slurm.cancelled == [JOB_ID]
    assert [p.name for p in bundle.jobs_dir.iterdir()] == ["images"]


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
    (tar,) = (bundle.jobs_dir / "images").iterdir()  # no partial file left beside it
    assert tar == (bundle.jobs_dir / "images" / "numpy-sgd_0123.tar").resolve()
    assert tar.read_bytes() == f"saved {BUILT.tag}".encode()
    assert all(f"IMAGE_TAR={tar}" in text for text in scripts)
    assert all(f"SIF={tar.with_suffix('.sif')}" in text for text in scripts)
    assert len(bundle.replays()) == 2


def test_a_rebuilt_image_is_saved_anew(tmp_path: Path, sample_manifest: Manifest) -> None:
    import dataclasses

    bundle = _bundle(tmp_path, sample_manifest)
    rebuilt = BuiltImage("reprobox/numpy-sgd:4567", "base:1", "3.11.7", "3.11.7")
    engine = SavingEngine(images={BUILT.tag, rebuilt.tag})
    _replay(bundle, FakeSlurm(_by_hand), engine=engine)
    bundle.build_record_path.write_text(json.dumps(dataclasses.asdict(rebuilt)))
    _replay(bundle, FakeSlurm(_by_hand), engine=engine)
    assert engine.saves == [[BUILT.tag], [rebuilt.tag]]
    assert sorted(p.name for p in (bundle.jobs_dir / "images").iterdir()) == [
        "numpy-sgd_0123.tar", "numpy-sgd_4567.tar"]


@pytest.mark.parametrize(("tag", "name"), [
    ("reprobox/numpy-sgd:0123", "numpy-sgd_0123.tar"),
    ("registry.example:5000/team/My Image:v1+x", "My_Image_v1_x.tar"),
    ("plain", "plain.tar"),
    ("a/b@sha256:ab12", "b_sha256_ab12.tar"),
    ("x/../..:$(id)", "..___id_.tar"),
])
def test_the_saved_image_is_named_by_its_tag(tmp_path: Path, sample_manifest: Manifest,
                                             tag: str, name: str) -> None:
    bundle = _bundle(tmp_path, sample_manifest)
    path = image_tar_path(bundle, BuiltImage(tag, "base:1", "3.11.7", "3.11.7"))
    assert path == (bundle.jobs_dir / "images").resolve() / name
    assert path.parent == (bundle.jobs_dir / "images").resolve()


class BrokenSaveEngine(SavingEngine):
    """`docker save` that dies halfway (the daemon went away, the disk filled)."""

    def save_images(self, refs: Sequence[str], out: BinaryIO,
                    on_bytes: Callable[[int], None]) -> None:
        out.write(b"half an image")
        raise OSError("No space left on device")


def test_a_save_that_fails_leaves_no_image_behind(tmp_path: Path,
                                                  sample_manifest: Manifest) -> None:
    bundle = _bundle(tmp_path, sample_manifest)
    slurm = FakeSlurm(_by_hand)
    with pytest.raises(OSError, match="No space left"):
        _replay(bundle, slurm, engine=BrokenSaveEngine(images={BUILT.tag}))
    assert list((bundle.jobs_dir / "images").iterdir()) == []
    assert slurm.scripts == [] and _job_folders(bundle) == []
    _replay(bundle, FakeSlurm(_by_hand))  # the next submission saves it whole
    (tar,) = (bundle.jobs_dir / "images").iterdir()
    assert tar.read_bytes() == f"saved {BUILT.tag}".encode()


def test_the_saved_image_and_the_job_script_are_the_users_own(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    modes: list[int] = []

    def look(script: Path, count: int) -> None:
        modes.extend([script.stat().st_mode & 0o777, script.parent.stat().st_mode & 0o777])
        _by_hand(script, count)

    bundle = _bundle(tmp_path, sample_manifest)
    _replay(bundle, FakeSlurm(look))
    assert modes == [0o700, 0o700]  # the script and its folder: the replay's environment
    (tar,) = (bundle.jobs_dir / "images").iterdir()
    assert tar.stat().st_mode & 0o077 == 0


def test_an_image_not_built_is_refused_before_anything_is_submitted(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    slurm = FakeSlurm(_by_hand)
    with pytest.raises(ReplayError, match="is not present"):
        _replay(_bundle(tmp_path, sample_manifest), slurm, engine=SavingEngine())
    assert slurm.scripts == []


def test_once_the_image_is_saved_this_host_needs_no_docker(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    """A cluster's login node often has no Docker: a saved image is all a submission needs."""
    bundle = _bundle(tmp_path, sample_manifest)
    _replay(bundle, FakeSlurm(_by_hand))  # saves the image
    without_docker = SavingEngine()  # has no image, and would say so if asked
    folders = _replay(bundle, FakeSlurm(_by_hand), engine=without_docker)
    assert len(folders) == 1 and without_docker.saves == []


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


def _probed_on(gpu_host: str) -> str:
    """The environment probe's report from a real H200 container, whose nvidia-smi answers are
    replaced by those recorded on `gpu_host` (a folder of tests/data/gpu)."""
    report = json.loads((GPU_DATA / "h200-driver580" / "container-probe.json").read_text())
    smi = report["nvidia_smi"]
    smi["query"]["stdout"] = (GPU_DATA / gpu_host / "nvidia-smi-query.csv").read_text()
    smi["header"]["stdout"] = (GPU_DATA / gpu_host / "nvidia-smi.txt").read_text()
    return json.dumps(report) + "\n"


def _gpu_replay(tmp_path: Path, sample_manifest: Manifest, probed: str,
                request: SlurmRequest | None = None) -> Path:
    from reprobox import manifest as manifest_io

    bundle = _bundle(tmp_path, sample_manifest)
    manifest_io.write(gpu_manifest(bundle.manifest()), bundle.manifest_path)

    def on_the_node(script: Path, count: int) -> None:
        (_write_task(script, 0) / "environment.out").write_text(probed)

    (folder,) = _replay(bundle, FakeSlurm(on_the_node), request)
    return folder


def test_a_node_with_another_gpu_model_is_weighed_as_a_local_preflight_would(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    # The H100 run's job landed on an H200: known only once the task's probe has run.
    folder = _gpu_replay(tmp_path, sample_manifest, _probed_on("h200-driver580"))
    record = replay_module.read_result(folder)
    assert record.expect_tolerance is True
    assert record.notes == ["GPU model differs: original NVIDIA H100 80GB HBM3, here NVIDIA H200"]
    environment = json.loads((folder / "environment.json").read_text())
    assert [gpu["name"] for gpu in environment["gpu"]["devices"]] == ["NVIDIA H200"]


def test_a_node_with_the_runs_gpu_model_expects_equality(tmp_path: Path,
                                                         sample_manifest: Manifest) -> None:
    folder = _gpu_replay(tmp_path, sample_manifest, _probed_on("h100-driver580"))
    record = replay_module.read_result(folder)
    assert (record.expect_tolerance, record.notes) == (False, [])


def test_a_node_whose_probe_failed_adds_no_gpu_concern(tmp_path: Path,
                                                       sample_manifest: Manifest) -> None:
    folder = _gpu_replay(tmp_path, sample_manifest, "not a report\n")
    record = replay_module.read_result(folder)
    assert (record.expect_tolerance, record.notes) == (False, [])


def test_a_cpu_replay_of_a_gpu_run_is_not_weighed_by_the_nodes_gpus(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    folder = _gpu_replay(tmp_path, sample_manifest, _probed_on("h200-driver580"),
                         SlurmRequest(SlurmOptions(), cpu=True))
    record = replay_module.read_result(folder)
    assert record.expect_tolerance is True and not record.gpus
    assert not any("GPU model differs" in note for note in record.notes)


def test_an_unpacked_archives_images_go_to_the_nodes_with_no_docker_here(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    """`unpack --no-load` on a login node keeps images/images.tar: the job loads it (Docker) or
    builds the SIF from the one image it names among the several there (Apptainer)."""
    made = _bundle(tmp_path / "made", sample_manifest)
    unpacked = tmp_path / "unpacked"
    shutil.copytree(made.path, unpacked / "bundle")
    (unpacked / "images").mkdir()
    (unpacked / "images" / "images.tar").write_bytes(b"the image and its base")
    scripts: list[str] = []

    def look(script: Path, count: int) -> None:
        scripts.append(script.read_text())
        _by_hand(script, count)

    no_docker = SavingEngine()  # has no image and saves none
    folders = _replay(Bundle(unpacked / "bundle"), FakeSlurm(look), engine=no_docker)
    tar = (unpacked / "images" / "images.tar").resolve()
    assert len(folders) == 1 and no_docker.saves == []
    assert f"IMAGE_TAR={tar}\n" in scripts[0]
    assert f"docker-archive:{tar}:{BUILT.tag}" in scripts[0]
