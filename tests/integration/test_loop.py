"""The whole loop through the real CLI: capture on the host, build, replay in Docker, compare."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reprobox.baseimage import BaseImage
from reprobox.bundle import Bundle
from reprobox.engine import DockerEngine

from .helpers import (
    EXAMPLES,
    CliResult,
    ImageTracker,
    as_if_on_an_h100,
    assert_one_line_error,
    make_project,
    numpy_venv,
    only_bundle,
    reprobox,
    venv_env,
)

pytestmark = pytest.mark.docker

# Runs from pkg/, reads a declared input and writes outside its working directory. Each output
# tests one thing; the sandbox facts go to stdout (the replay's log), since they differ by design.
MIXED_JOB = '''\
import hashlib, json, os, pathlib, random, socket
import numpy as np

results = pathlib.Path("../results")
results.mkdir(exist_ok=True)
pure = {
    "random": [random.random() for _ in range(3)],
    "sample": random.sample(range(1000), 10),
    "str_hash": hash("reprobox"),
    "set_order": list({"alpha", "beta", "gamma", "delta", "epsilon", "zeta"}),
}
(results / "pure.json").write_text(json.dumps(pure))
np.save(results / "seeded.npy", np.random.default_rng(1234).normal(size=64))
data = pathlib.Path("../data/table.csv")
(results / "input_digest.txt").write_text(hashlib.sha256(data.read_bytes()).hexdigest())

def errno_name(action):
    try:
        action()
        return "ok"
    except OSError as exc:
        return os.strerror(exc.errno).replace(" ", "_")

input_write = errno_name(lambda: os.close(os.open(data, os.O_WRONLY | os.O_APPEND)))
network = errno_name(lambda: socket.create_connection(("1.1.1.1", 53), timeout=2).close())
print(f"sandbox uid={os.getuid()} input_write={input_write} network={network}", flush=True)
'''


@dataclass(frozen=True)
class Played:
    """A project captured and taken through `reprobox run` once."""

    project: Path
    bundle: Bundle
    run: CliResult

    def comparison(self) -> dict[str, Any]:
        result = reprobox(["compare", "--json", str(self.bundle.path)], self.project)
        assert result.code in (0, 3), result
        return dict(json.loads(result.out))

    def verdicts(self) -> dict[str, str]:
        return {o["path"]: o["verdict"] for o in self.comparison()["outputs"]}

    def replay_log(self) -> str:
        logs = self.bundle.replays()[-1] / "logs"
        return (logs / "stdout.log").read_text() + (logs / "stderr.log").read_text()


@pytest.fixture(scope="module")
def python_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    return venv_env(numpy_venv(tmp_path_factory))


def capture_and_run(
    project: Path, capture_args: list[str], env: dict[str, str | None], workdir: str = "."
) -> Played:
    captured = reprobox(["capture", *capture_args], project / workdir, env)
    assert captured.code == 0, captured
    bundle = only_bundle(project)
    return Played(project, bundle, reprobox(["run", str(bundle.path)], project))


@pytest.fixture(scope="module")
def sgd(
    base_image: BaseImage, images: ImageTracker, python_env: dict[str, str | None],
    tmp_path_factory: pytest.TempPathFactory,
) -> Played:
    project = make_project(tmp_path_factory.mktemp("loop"), "sgd",
                           copy_from=EXAMPLES / "numpy-sgd")
    return capture_and_run(images.track(project), ["--seed", "3", "--", "python", "train.py"],
                           python_env)


@pytest.fixture(scope="module")
def clock_noise(
    base_image: BaseImage, images: ImageTracker, python_env: dict[str, str | None],
    tmp_path_factory: pytest.TempPathFactory,
) -> Played:
    project = make_project(tmp_path_factory.mktemp("loop"), "clock",
                           copy_from=EXAMPLES / "clock-noise")
    return capture_and_run(images.track(project), ["--", "python", "train.py"], python_env)


@pytest.fixture(scope="module")
def mixed(
    base_image: BaseImage, images: ImageTracker, python_env: dict[str, str | None],
    tmp_path_factory: pytest.TempPathFactory,
) -> Played:
    """One build for several properties (builds cost a minute): see MIXED_JOB."""
    files = {"pkg/job.py": MIXED_JOB, "data/table.csv": "x,y\n1,2\n3,4\n"}
    project = make_project(tmp_path_factory.mktemp("loop"), "mixed", files)
    # Writable by anyone on the host, so only a read-only mount can stop the replay writing it.
    (project / "data" / "table.csv").chmod(0o666)
    args = ["--input", "../data/table.csv", "--", "python", "job.py"]
    return capture_and_run(images.track(project), args, python_env, workdir="pkg")


# --- examples/numpy-sgd ------------------------------------------------------------------------


def test_numpy_sgd_reproduces_identically(sgd: Played) -> None:
    assert sgd.run.code == 0, sgd.run
    assert "REPRODUCED (identical)" in sgd.run.out and "NOT REPRODUCED" not in sgd.run.out
    comparison = sgd.comparison()
    assert comparison["verdict"] == "identical" and comparison["reproduced"] is True
    assert {o["path"]: o["verdict"] for o in comparison["outputs"]} == {
        "out/loss.csv": "identical", "out/metrics.json": "identical",
        "out/weights.npy": "identical",
    }
    assert (sgd.bundle.replays()[-1] / "comparison.json").is_file()


def test_unchanged_second_build_reuses_the_image(
    sgd: Played, images: ImageTracker, docker_engine: DockerEngine
) -> None:
    assert sgd.run.code == 0, sgd.run
    [tag] = images.tagged(sgd.project)
    image_id = docker_engine.client.images.get(tag).id
    again = reprobox(["build", str(sgd.bundle.path)], sgd.project)
    assert again.code == 0, again
    assert again.out.strip() == tag
    assert f"image {tag} is up to date" in again.err
    assert "Step " not in again.err
    assert images.tagged(sgd.project) == [tag]
    assert docker_engine.client.images.get(tag).id == image_id
    assert json.loads((sgd.bundle.path / "build.json").read_text())["reused"] is True


# --- examples/clock-noise ----------------------------------------------------------------------


def test_clock_noise_is_reported_different(clock_noise: Played) -> None:
    assert clock_noise.run.code == 3, clock_noise.run
    assert "REPRODUCED" not in clock_noise.run.out.replace("NOT REPRODUCED", "")
    comparison = clock_noise.comparison()
    assert comparison["verdict"] == "different" and comparison["reproduced"] is False
    assert clock_noise.verdicts()["out/weights.npy"] == "different"


# --- one project, several properties -----------------------------------------------------------


def test_mixed_project_reproduces_all_its_outputs(mixed: Played) -> None:
    assert mixed.run.code == 0, mixed.run
    assert mixed.verdicts() == {
        "results/input_digest.txt": "identical",
        "results/pure.json": "identical",
        "results/seeded.npy": "identical",
    }


def test_unseeded_pure_python_is_seeded_the_same_way(mixed: Played) -> None:
    assert mixed.verdicts()["results/pure.json"] == "identical"
    replayed = json.loads((mixed.bundle.replays()[-1] / "outputs/results/pure.json").read_text())
    assert replayed == json.loads((mixed.bundle.outputs_dir / "results/pure.json").read_text())
    assert mixed.bundle.manifest().determinism.python_hash_seed not in (None, "0", "random")


def test_explicitly_seeded_numpy_is_identical(mixed: Played) -> None:
    assert mixed.verdicts()["results/seeded.npy"] == "identical"


def test_subfolder_workdir_and_outputs_outside_it(mixed: Played) -> None:
    manifest = mixed.bundle.manifest()
    assert manifest.run.workdir == "pkg"
    assert {o.path for o in manifest.outputs} == {
        "results/input_digest.txt", "results/pure.json", "results/seeded.npy",
    }
    replay_outputs = mixed.bundle.replays()[-1] / "outputs"
    assert sorted(p.relative_to(replay_outputs).as_posix()
                  for p in replay_outputs.rglob("*") if p.is_file()) == [
        "results/input_digest.txt", "results/pure.json", "results/seeded.npy",
    ]


def test_replay_is_non_root_offline_and_inputs_are_read_only(mixed: Played) -> None:
    assert mixed.run.code == 0, mixed.run
    log = mixed.replay_log()
    assert "sandbox uid=1000 " in log, log
    assert "input_write=Read-only_file_system" in log, log
    assert "network=ok" not in log and "network=" in log, log
    # The source snapshot must not carry the input: only the read-only mount provides it.
    assert not (mixed.bundle.source_dir / "data" / "table.csv").exists()


def test_replay_refuses_a_modified_input(mixed: Played) -> None:
    data = mixed.project / "data" / "table.csv"
    original = data.read_bytes()
    replays_before = mixed.bundle.replays()
    data.write_bytes(original + b"5,6\n")
    try:
        result = reprobox(["replay", str(mixed.bundle.path)], mixed.project)
    finally:
        data.write_bytes(original)
    assert_one_line_error(result, str(data), "changed since capture")
    assert mixed.bundle.replays() == replays_before
    assert not [p for p in os.listdir(mixed.bundle.replays_dir) if p.endswith(".partial")]


# --- a GPU run on this host, which has no GPU ---------------------------------------------------

def test_a_gpu_run_is_refused_without_a_gpu_and_replays_with_cpu(
    sgd: Played, images: ImageTracker, tmp_path: Path
) -> None:
    project = images.track(tmp_path / "gpu-sgd")
    shutil.copytree(sgd.project, project, symlinks=True)
    bundle = only_bundle(project)
    shutil.rmtree(bundle.replays_dir)
    as_if_on_an_h100(bundle)

    refused = reprobox(["replay", str(bundle.path)], project)
    assert_one_line_error(refused, "1× NVIDIA H100 80GB HBM3", "this host has no NVIDIA GPU",
                          code=4)
    assert "--cpu" in refused.err and not bundle.replays_dir.exists()
    built_before = bundle.build_record_path.read_bytes()
    assert reprobox(["run", str(bundle.path)], project).code == 4
    assert bundle.build_record_path.read_bytes() == built_before  # refused before building

    on_cpu = reprobox(["run", "--cpu", "--json", str(bundle.path)], project)
    assert on_cpu.code == 0, on_cpu
    assert "warning: replayed on the CPU (--cpu)" in on_cpu.err
    comparison = json.loads(on_cpu.out)
    assert comparison["verdict"] == "identical"  # numpy on the CPU either way
    assert any("not bitwise" in note for note in comparison["notes"])
    state = json.loads((bundle.replays()[-1] / "replay.json").read_text())
    assert state["expect_tolerance"] is True and state["gpus"] is False
    assert state["state"]["env.CUDA_VISIBLE_DEVICES"] == ""
