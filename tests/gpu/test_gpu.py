"""On a real NVIDIA GPU: the probes, the shim's determinism and a whole capture.

Run by `scripts/gpu_check.py` on a GPU machine; skipped elsewhere (see conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reprobox import manifest as manifest_io
from reprobox import preflight, seeding, sweep
from reprobox.capture import gpu
from reprobox.capture.runner import subprocess_runner

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parents[2]
# index_add_/scatter_add_ in float32 add with atomics: the order, and so the last bits, vary.
ATOMIC_SUMS = """
import hashlib, torch
torch.manual_seed(0)
n, bins = 1 << 22, 1 << 10
src = torch.randn(n, device="cuda")
index = torch.randint(0, bins, (n,), device="cuda")
a = torch.zeros(bins, device="cuda").index_add_(0, index, src)
b = torch.zeros(bins, device="cuda").scatter_add_(0, index, src)
print(hashlib.sha256(a.cpu().numpy().tobytes() + b.cpu().numpy().tobytes()).hexdigest())
"""


def _digest(python: str, env: dict[str, str]) -> str:
    result = subprocess.run([python, "-c", ATOMIC_SUMS], env=env, capture_output=True, text=True,
                            timeout=300, check=True)
    return result.stdout.strip()


def _plain_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith("REPROBOX_") and k != "CUBLAS_WORKSPACE_CONFIG"}


class _NoNvml:
    """An NVML whose library is not there, so that the probe asks nvidia-smi."""

    class NVMLError(Exception):
        pass

    class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801 - pynvml's own name
        pass

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's own name
        raise self.NVMLError_LibraryNotFound()


def test_nvml_and_nvidia_smi_agree_on_the_real_gpus(gpu_python: str) -> None:
    through_nvml, _ = gpu.probe(subprocess_runner, os.environ)
    through_smi, _ = gpu.probe(subprocess_runner, os.environ, nvml=_NoNvml())
    assert through_smi.source == "nvidia-smi" and through_smi.devices
    if through_nvml.source == "nvml":  # nvidia-ml-py is optional
        assert through_nvml.devices == through_smi.devices
        assert through_nvml.driver_version == through_smi.driver_version
        assert through_nvml.cuda_driver_version == through_smi.cuda_driver_version


def test_the_shim_makes_atomic_float_sums_bit_identical(gpu_python: str) -> None:
    plain = {_digest(gpu_python, _plain_env()) for _ in range(3)}
    shim_env = seeding.process_env(seeding.determinism(42), str(seeding.SHIM_DIR), None,
                                   _plain_env())
    shimmed = {_digest(gpu_python, shim_env) for _ in range(3)}
    assert len(shimmed) == 1
    assert len(plain) > 1, "three plain runs agreed: this GPU added in the same order each time"


def _capture(python: str, project: Path, *args: str) -> manifest_io.Manifest:
    subprocess.run(["git", "init", "-q"], cwd=project, check=False)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-m", "reprobox", "capture", "--seed", "7", *args, "--",
                    python, "train.py"], cwd=project, env=env, check=True, timeout=600)
    (manifest,) = project.glob(".reprobox/runs/*/manifest.yaml")
    return manifest_io.read(manifest)


def test_capture_records_the_gpu_the_cuda_stack_and_the_numerics(
        gpu_python: str, tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text((REPO / "examples/torch-gpu/train.py").read_text())
    manifest = _capture(gpu_python, tmp_path)
    assert manifest.gpu is not None and manifest.gpu.devices
    assert manifest.cuda is not None and manifest.cuda.torch_cuda
    state = manifest.determinism.state
    assert state["torch.cuda.initialized"] is True
    assert manifest.gpu.devices[0].name in str(state["torch.cuda.devices_used"])
    assert state["torch.deterministic_algorithms"] is True
    assert state["torch.cudnn.deterministic"] is True and state["torch.cudnn.benchmark"] is False
    assert isinstance(state["torch.cudnn.version"], int)
    assert preflight.used_gpu(manifest)
    host, _ = gpu.probe(subprocess_runner, os.environ)
    plan = preflight.check(manifest, host, ("nvidia",), cpu=False)
    assert plan.gpus and not plan.expect_tolerance


def test_warn_only_records_the_ops_without_a_deterministic_kernel(
        gpu_python: str, tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(
        "import torch\nx = torch.rand(4096, device='cuda')\nprint(torch.histc(x, bins=8))\n")
    manifest = _capture(gpu_python, tmp_path, "--warn-only")
    assert "_histc_cuda" in str(manifest.determinism.state["torch.nondeterministic_ops"])


def test_tf32_is_turned_off_quietly_on_real_torch(gpu_python: str) -> None:
    env = seeding.process_env(seeding.determinism(3), str(seeding.SHIM_DIR), None, _plain_env())
    env["REPROBOX_TF32_OFF"] = "matmul,cudnn"
    show = ("import torch; print(torch.backends.cuda.matmul.allow_tf32, "
            "torch.backends.cudnn.allow_tf32)")
    result = subprocess.run([gpu_python, "-W", "error", "-c", show], env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
    assert "reprobox shim" not in result.stderr and "Warning" not in result.stderr


def test_gpu_use_in_a_child_process_is_the_runs(gpu_python: str, tmp_path: Path) -> None:
    # as under torchrun: the launcher imports torch and never touches CUDA, a worker does
    (tmp_path / "worker.py").write_text(
        "import torch\nprint(torch.ones(4, device='cuda').sum().item())\n")
    (tmp_path / "train.py").write_text(
        "import subprocess, sys, torch\n"
        "subprocess.run([sys.executable, 'worker.py'], check=True)\n")
    state = _capture(gpu_python, tmp_path).determinism.state
    assert state["processes"] == 2
    assert state["torch.cuda.initialized"] is True and state["torch.cuda.devices_used"]


def test_a_run_stopped_by_strict_determinism_is_told_about_warn_only(
        gpu_python: str, tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(
        "import torch\ntorch.histc(torch.rand(64, device='cuda'), bins=4)\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=False)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "reprobox", "capture", "--", gpu_python,
                             "train.py"], cwd=tmp_path, env=env, timeout=600, check=False)
    assert result.returncode == 1
    (manifest,) = tmp_path.glob(".reprobox/runs/*/manifest.yaml")
    notes = manifest_io.read(manifest).notes
    assert any("--warn-only" in note for note in notes)


def test_a_seed_sweep_on_the_gpu_repeats_each_seed_and_varies_across_them(
        gpu_python: str, tmp_path: Path) -> None:
    """What `--seeds` relies on, on a real GPU: a seed gives the same bits every time (the
    captured one the original's), other seeds other numbers, and the table a real spread."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text((REPO / "examples/torch-gpu/train.py").read_text())
    manifest = _capture(gpu_python, project, "--output", "out")
    (bundle,) = project.glob(".reprobox/runs/*")
    original = (bundle / "outputs/out/weights.npy").read_bytes()
    runs = {(seed, attempt): _seeded_run(gpu_python, project, manifest, seed, tmp_path)
            for seed, attempt in ((7, 0), (11, 0), (11, 1), (12, 0))}
    assert runs[7, 0] == original  # the captured seed (7) replays the original bit for bit
    assert runs[11, 0] == runs[11, 1]
    assert len({runs[7, 0], runs[11, 0], runs[12, 0]}) == 3
    per_seed = {seed: sweep.metrics_of(tmp_path / f"seed-{seed}-{attempt}", manifest.outputs)
                for seed, attempt in runs if attempt == 0}
    measured = sweep.summarize(sweep.metrics_of(bundle / "outputs", manifest.outputs), per_seed)
    (loss,) = [m for m in measured.metrics if m.name == "out/metrics.json:final_loss"]
    assert not measured.seed_independent and loss.n == 3 and loss.std and loss.std > 0
    assert loss.judgement.startswith("in range")  # the original is one of the seeds


def _seeded_run(python: str, project: Path, manifest: manifest_io.Manifest, seed: int,
                tmp_path: Path) -> bytes:
    """train.py run from `seed` as a replay would start it, in a fresh copy of the project."""
    attempt = len(list(tmp_path.glob(f"seed-{seed}-*")))
    copy = tmp_path / f"seed-{seed}-{attempt}"
    copy.mkdir()
    (copy / "train.py").write_text((project / "train.py").read_text())
    env = seeding.process_env(manifest.determinism, str(seeding.SHIM_DIR), None, _plain_env())
    env.update(seeding.seed_env(seed))
    subprocess.run([python, "train.py"], cwd=copy, env=env, check=True, timeout=600,
                   capture_output=True)
    return (copy / "out/weights.npy").read_bytes()
