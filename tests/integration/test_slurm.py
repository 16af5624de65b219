"""Replays through a real Slurm: one replay, a three-seed sweep as a job array, refusals, Ctrl-C.

The cluster is this machine: munge, slurmctld and slurmd from Debian's packages, started by
scripts/slurm-single-node.sh (CI runs it). Jobs run the image with Docker on the node, as a
cluster without Apptainer does; the bundle's folder is the shared storage.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from reprobox.baseimage import BaseImage
from reprobox.bundle import Bundle
from reprobox.engine import DockerEngine

from .helpers import (
    EXAMPLES,
    ImageTracker,
    as_if_on_an_h100,
    assert_one_line_error,
    interrupt,
    make_project,
    numpy_venv,
    only_bundle,
    reprobox,
    reprobox_process,
    venv_env,
    wait_for_line,
)

pytestmark = [pytest.mark.docker, pytest.mark.slurm]
CAPTURED_SEED = 3


@dataclass(frozen=True)
class Built:
    """numpy-sgd captured with seed 3 and built."""

    project: Path
    bundle: Bundle


@pytest.fixture(scope="module")
def built(base_image: BaseImage, images: ImageTracker, slurm_cluster: str,
          tmp_path_factory: pytest.TempPathFactory) -> Built:
    env = venv_env(numpy_venv(tmp_path_factory))
    project = images.track(make_project(tmp_path_factory.mktemp("slurm"), "slurm",
                                        copy_from=EXAMPLES / "numpy-sgd"))
    captured = reprobox(["capture", "--seed", str(CAPTURED_SEED), "--", "python", "train.py"],
                        project, env)
    assert captured.code == 0, captured
    bundle = only_bundle(project)
    assert reprobox(["build", str(bundle.path)], project).code == 0
    return Built(project, bundle)


def _queue_is_empty() -> bool:
    done = subprocess.run(["squeue", "--noheader"], capture_output=True, text=True, check=True)
    return not done.stdout.strip()


def test_a_replay_through_slurm_reproduces_and_is_a_replay_like_any_other(built: Built) -> None:
    before = set(built.bundle.replays())
    result = reprobox(["run", "--on", "slurm", str(built.bundle.path)], built.project)
    assert result.code == 0, result
    assert "REPRODUCED" in result.out
    (folder,) = set(built.bundle.replays()) - before
    record = json.loads((folder / "replay.json").read_text())
    assert record["exit_code"] == 0 and not record["timed_out"]
    assert record["where"].startswith("Slurm job") and record["where"].endswith("with docker")
    assert record["state"]["numpy.version"]  # the shim's state came back from the node
    environment = json.loads((folder / "environment.json").read_text())
    assert environment["python"]["version"].startswith("3.")  # probed inside the job
    comparison = json.loads((folder / "comparison.json").read_text())
    assert comparison["verdict"] == "identical"
    assert "submitted Slurm job" in result.err
    # the job's folder is gone; the saved image stays for the next submission
    jobs = built.bundle.path / "jobs"
    assert [p.name for p in jobs.iterdir()] == ["images"]
    assert len(list((jobs / "images").glob("*.tar"))) == 1


def test_a_three_seed_sweep_is_a_job_array_with_a_table(built: Built) -> None:
    """Three new seeds, and the original's own, which must reproduce it and stay out of the
    spread."""
    before = set(built.bundle.replays())
    seeds = [CAPTURED_SEED, 11, 12, 13]
    result = reprobox(["run", "--on", "slurm", "--seeds", ",".join(map(str, seeds)), "--json",
                       str(built.bundle.path)], built.project)
    assert result.code == 0, result
    folders = sorted(set(built.bundle.replays()) - before)
    records = [json.loads((f / "replay.json").read_text()) for f in folders]
    assert sorted(r["seed"] for r in records) == sorted(seeds)
    assert len({r["where"].split(" task ")[0] for r in records}) == 1  # one array job
    sweep = json.loads(result.out)["sweep"]
    (final_loss,) = [m for m in sweep["metrics"] if m["name"] == "out/metrics.json:final_loss"]
    losses = []
    for folder, record in zip(folders, records, strict=True):
        metrics = json.loads((folder / "outputs" / "out" / "metrics.json").read_text())
        losses.append(metrics["final_loss"])
        weights = np.load(folder / "outputs" / "out" / "weights.npy")
        original = np.load(built.bundle.outputs_dir / "out" / "weights.npy")
        assert np.array_equal(weights, original) == (record["seed"] == CAPTURED_SEED)
        if record["seed"] == CAPTURED_SEED:
            losses.pop()
    assert sweep["own_seed"] == {"seed": CAPTURED_SEED, "verdict": "identical"}
    assert final_loss["n"] == 3
    assert final_loss["mean"] == pytest.approx(float(np.mean(losses)))
    assert final_loss["std"] == pytest.approx(float(np.std(losses, ddof=1)))
    assert final_loss["min"] == min(losses) and final_loss["max"] == max(losses)
    table = reprobox(["replay", "--seeds", "3", str(built.bundle.path)], built.project)
    assert table.code == 0, table


def test_a_partition_slurm_does_not_have_is_refused_in_one_line(built: Built) -> None:
    before = set(built.bundle.replays())
    result = reprobox(["replay", "--on", "slurm", "--partition", "nosuchpartition",
                       str(built.bundle.path)], built.project)
    assert_one_line_error(result, "sbatch could not submit", "partition", code=6)
    assert set(built.bundle.replays()) == before
    assert [p.name for p in (built.bundle.path / "jobs").iterdir()] == ["images"]


def test_slurm_options_without_on_slurm_are_a_usage_error(built: Built) -> None:
    result = reprobox(["replay", "--partition", "debug", str(built.bundle.path)], built.project)
    assert_one_line_error(result, "--partition is for Slurm replays", code=2)


def test_ctrl_c_while_following_cancels_the_job_and_leaves_nothing(built: Built,
                                                                   tmp_path: Path) -> None:
    before = set(built.bundle.replays())
    # two tasks on a two-core node: the interrupt comes while they start (a container takes
    # seconds), and a job already gone would make the queue and folder checks pass anyway
    process = reprobox_process(["replay", "--on", "slurm", "--seeds", "1-2",
                                str(built.bundle.path)], built.project, {})
    assert process.stderr is not None
    wait_for_line(process, process.stderr, "submitted Slurm job", timeout_s=120)
    code, _, err = interrupt(process)
    assert code == 130, err
    deadline = time.monotonic() + 30
    while not _queue_is_empty() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _queue_is_empty()
    assert set(built.bundle.replays()) == before
    assert [p.name for p in (built.bundle.path / "jobs").iterdir()] == ["images"]


def test_an_exported_batch_script_runs_under_sbatch_as_it_is(built: Built, tmp_path: Path) -> None:
    script = tmp_path / "replay.sh"
    result = reprobox(["export", "slurm", "--seeds", f"{CAPTURED_SEED},7", "-o", str(script),
                       str(built.bundle.path)], built.project)
    assert result.code == 0, result
    assert "#SBATCH --array=0-1" in script.read_text()
    done = subprocess.run(["sbatch", "--wait", "--parsable", str(script)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (work,) = (built.bundle.path / "jobs").glob("export-*")  # one folder per submission
    original = np.load(built.bundle.outputs_dir / "out" / "weights.npy")
    for task, same in ((0, True), (1, False)):
        assert (work / f"task-{task}" / "exit_code").read_text().strip() == "0"
        weights = np.load(work / f"task-{task}" / "fetched" / "out" / "weights.npy")
        assert np.array_equal(weights, original) == same
    assert not (work / "task-0" / "environment.out").exists()  # an export runs no probe
    assert len(list(tmp_path.glob(f"reprobox-{built.bundle.run_id}-*.out"))) == 2


def test_a_kubernetes_export_needs_the_pushed_image_by_digest(built: Built) -> None:
    result = reprobox(["export", "kubernetes", str(built.bundle.path)], built.project)
    assert_one_line_error(result, "--image", code=2)
    digest = "registry.example/exp@sha256:" + "ab" * 32
    result = reprobox(["export", "kubernetes", "--seeds", "1,2", "--image", digest,
                       str(built.bundle.path)], built.project)
    assert result.code == 0, result
    assert result.out.count("kind: Job") == 2 and digest in result.out


def test_a_gpu_run_asks_slurm_for_a_gpu_and_replays_with_cpu_where_there_is_none(
        built: Built, images: ImageTracker, tmp_path: Path) -> None:
    """This cluster has no GPUs: Slurm itself refuses the job's `--gpus=1`, in one line with a
    hint; `--cpu` replays it on the node's CPUs, judged by tolerance."""
    project = images.track(tmp_path / "gpu-sgd")
    shutil.copytree(built.project, project, symlinks=True)
    bundle = only_bundle(project)
    shutil.rmtree(bundle.replays_dir, ignore_errors=True)
    shutil.rmtree(bundle.jobs_dir, ignore_errors=True)
    as_if_on_an_h100(bundle)
    refused = reprobox(["replay", "--on", "slurm", str(bundle.path)], project)
    assert_one_line_error(refused, "sbatch could not submit", code=6)
    assert "GPUs the partition has" in refused.err and not bundle.replays()
    on_cpu = reprobox(["run", "--on", "slurm", "--cpu", "--json", str(bundle.path)], project)
    assert on_cpu.code == 0, on_cpu
    record = json.loads((bundle.replays()[-1] / "replay.json").read_text())
    assert record["expect_tolerance"] is True and record["gpus"] is False
    assert record["state"]["env.CUDA_VISIBLE_DEVICES"] == ""
    assert json.loads(on_cpu.out)["verdict"] == "identical"  # numpy on the CPU either way


def test_an_archive_unpacked_without_loading_replays_through_slurm(
        built: Built, docker_engine: DockerEngine, tmp_path: Path) -> None:
    """A reviewer's cluster: the archive is unpacked on a login node without Docker (`--no-load`)
    and the job's node loads the image from the archive's own images.tar."""
    packed = reprobox(["pack", str(built.bundle.path), "-o", str(tmp_path / "exp.rbx")],
                      built.project)
    assert packed.code == 0, packed
    tag = json.loads(built.bundle.build_record_path.read_text())["tag"]
    docker_engine.remove_image(tag)  # gone here, as from a node that never saw it
    unpacked = reprobox(["unpack", "--no-load", str(tmp_path / "exp.rbx"),
                         str(tmp_path / "exp")], tmp_path)
    assert unpacked.code == 0, unpacked
    assert "loaded image" not in unpacked.err and not docker_engine.has_image(tag)
    bundle = str(tmp_path / "exp" / "bundle")
    replayed = reprobox(["replay", "--on", "slurm", bundle], tmp_path)  # `run` would build
    assert replayed.code == 0, replayed
    assert docker_engine.has_image(tag)  # loaded by the job, from exp/images/images.tar
    compared = reprobox(["compare", "--json", bundle], tmp_path)
    assert compared.code == 0 and json.loads(compared.out)["verdict"] == "identical", compared
    assert not list((tmp_path / "exp" / "bundle" / "jobs" / "images").glob("*.tar"))
