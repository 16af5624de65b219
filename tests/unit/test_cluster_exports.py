"""exports: a built bundle → the files Slurm, Kubernetes and Apptainer read; nothing submitted."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from reprobox import manifest as manifest_io
from reprobox.bundle import Bundle
from reprobox.cluster.exports import ExportRequest, export
from reprobox.cluster.slurm_script import SlurmOptions
from reprobox.errors import BundleError, UsageError
from reprobox.manifest import CudaStack, Gpu, Gpus, Manifest
from tests.unit.scripted import BUILT, bundle_with_outputs, npy

DIGEST_REF = "registry.example:5000/team/numpy-sgd@sha256:" + "ab12" * 16
H100 = Gpu(0, "NVIDIA H100 80GB HBM3", "GPU-ff35ffd0-a8cf-06e7-f065-0d19afd675e6", 81559, "9.0")


@pytest.fixture
def bundle(tmp_path: Path, sample_manifest: Manifest) -> Bundle:
    return bundle_with_outputs(tmp_path, sample_manifest, {"out/w.npy": npy([1.0, 2.0])})


def _bash_n(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "checked.sh"
    path.write_text(text)
    return subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)


def _jobs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc and doc["kind"] == "Job"]


def _env(job: dict[str, Any]) -> dict[str, str]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item["value"] for item in container["env"]}


def test_export_slurm_writes_a_script_with_no_probe(bundle: Bundle, tmp_path: Path) -> None:
    request = ExportRequest("slurm", seeds=(1, 2, 3),
                            slurm=SlurmOptions(partition="debug", time="30"))
    files = export(bundle, request)
    assert list(files) == ["r1.slurm.sh"]
    text = files["r1.slurm.sh"]
    checked = _bash_n(tmp_path, text)
    assert checked.returncode == 0, checked.stderr
    for line in ("#SBATCH --array=0-2", "#SBATCH --partition=debug", "#SBATCH --time=30",
                 "SEEDS=(1 2 3)", f"IMAGE={BUILT.tag}"):
        assert line in text
    assert "#SBATCH --gpus" not in text and "environment.out" not in text
    images = bundle.jobs_dir.resolve() / "images"
    assert f"IMAGE_TAR={images / 'numpy-sgd_0123.tar'}\n" in text  # named by the image's tag
    assert f"SIF={images / 'numpy-sgd_0123.sif'}\n" in text
    assert not bundle.jobs_dir.exists()  # only written, never submitted or saved
    assert export(bundle, request) == files  # the same bundle, the same bytes


def test_export_slurm_looks_for_the_image_where_a_slurm_replay_saves_it(
        bundle: Bundle, tmp_path: Path) -> None:
    # The header tells the user to save the image there; `replay --on slurm` saves it there
    # too, so either one's file serves the other.
    from reprobox.cluster.slurm_replay import saved_image
    from tests.unit.fakes import FakeEngine

    (text,) = export(bundle, ExportRequest("slurm")).values()
    saved = saved_image(bundle, FakeEngine(images={BUILT.tag}), BUILT)
    assert f"IMAGE_TAR={saved}\n" in text and saved.is_file()
    rebuilt = replace(BUILT, tag="reprobox/numpy-sgd:4567")
    bundle.build_record_path.write_text(json.dumps(asdict(rebuilt)))
    (again,) = export(bundle, ExportRequest("slurm")).values()
    assert f"IMAGE_TAR={saved.with_name('numpy-sgd_4567.tar')}\n" in again


def test_export_slurm_without_seeds_replays_the_captured_one(bundle: Bundle) -> None:
    (text,) = export(bundle, ExportRequest("slurm")).values()
    assert f"SEEDS=({bundle.manifest().determinism.seed})" in text
    assert "#SBATCH --array" not in text


def test_export_slurm_of_a_gpu_run_asks_for_its_gpu(bundle: Bundle) -> None:
    manifest = bundle.manifest()
    state = {**manifest.determinism.state, "torch.cuda.devices_used": "0:NVIDIA H100 80GB HBM3"}
    manifest_io.write(replace(manifest, gpu=Gpus("nvml", "580.159.04", "13.0", (H100,)),
                              cuda=CudaStack("2.11.0+cu130", "13.0", {}, {"torch": "13.0"}),
                              determinism=replace(manifest.determinism, state=state)),
                      bundle.manifest_path)
    (text,) = export(bundle, ExportRequest("slurm")).values()
    assert "#SBATCH --gpus=1" in text
    (cpu_text,) = export(bundle, ExportRequest("slurm", cpu=True)).values()
    assert "#SBATCH --gpus" not in cpu_text and "CUDA_VISIBLE_DEVICES=" in cpu_text


def test_export_slurm_of_a_cpu_run_refuses_gpus(bundle: Bundle) -> None:
    with pytest.raises(UsageError, match="--gpus: the captured run used no GPU"):
        export(bundle, ExportRequest("slurm", slurm=SlurmOptions(gpus=1)))


def test_export_kubernetes_needs_the_pushed_image(bundle: Bundle) -> None:
    with pytest.raises(UsageError, match="export kubernetes needs --image") as err:
        export(bundle, ExportRequest("kubernetes"))
    assert err.value.exit_code == 2 and BUILT.tag in (err.value.hint or "")
    with pytest.raises(UsageError, match="is not pinned by digest"):
        export(bundle, ExportRequest("kubernetes", image_ref="registry.example/x:latest"))


def test_export_kubernetes_writes_one_job_per_seed(bundle: Bundle) -> None:
    files = export(bundle, ExportRequest("kubernetes", seeds=(7, 8), image_ref=DIGEST_REF))
    assert list(files) == ["r1.k8s.yaml"]
    jobs = _jobs(files["r1.k8s.yaml"])
    assert len(jobs) == 2
    assert [_env(job)["REPROBOX_SEED"] for job in jobs] == ["7", "8"]
    for job in jobs:
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["image"] == DIGEST_REF
        assert container["command"][-3:] == ["train.py", "--epochs", "3"]


def test_export_apptainer_writes_a_script_and_a_definition(bundle: Bundle,
                                                           tmp_path: Path) -> None:
    files = export(bundle, ExportRequest("apptainer", seeds=(4, 5)))
    assert sorted(files) == ["reprobox-r1.def", "run-apptainer.sh"]
    checked = _bash_n(tmp_path, files["run-apptainer.sh"])
    assert checked.returncode == 0, checked.stderr
    assert "replay-seed-4" in files["run-apptainer.sh"]
    assert "replay-seed-5" in files["run-apptainer.sh"]
    assert files["reprobox-r1.def"].startswith("Bootstrap: docker-archive\nFrom: image.tar\n")


def test_an_unknown_target_is_a_usage_error(tmp_path: Path) -> None:
    nowhere = Bundle(tmp_path / "no-bundle")  # refused before the bundle is read
    with pytest.raises(UsageError, match="export target 'nomad' is not one of slurm, "
                       "kubernetes, apptainer") as err:
        export(nowhere, ExportRequest("nomad"))
    assert err.value.exit_code == 2


def test_a_bundle_never_built_cannot_be_exported(bundle: Bundle) -> None:
    bundle.build_record_path.unlink()
    with pytest.raises(BundleError, match="no image built yet"):
        export(bundle, ExportRequest("slurm"))
