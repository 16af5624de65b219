"""render: the Dockerfile is pure, deterministic, and equal to the checked-in goldens."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from reprobox import cuda, render
from reprobox import manifest as manifest_io
from reprobox.baseimage import official_ref
from reprobox.manifest import Gpu, Gpus, Manifest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "tests" / "data" / "manifests").glob("*.yaml"))


def _golden_base(manifest: Manifest) -> str:
    """The base `reprobox build` picks when a registry answers: CUDA image, else official."""
    needed = cuda.base_image(manifest)
    return needed.image if needed else official_ref(manifest.python.version)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_dockerfiles_folder_matches_what_the_code_renders(path: Path) -> None:
    """dockerfiles/<example>.Dockerfile is what reprobox writes for that example's capture.

    Regenerate deliberately with REPROBOX_UPDATE_GOLDEN=1.
    """
    manifest = manifest_io.read(path)
    rendered = render.dockerfile(manifest, _golden_base(manifest))
    golden = ROOT / "dockerfiles" / f"{path.stem}.Dockerfile"
    if os.environ.get("REPROBOX_UPDATE_GOLDEN") == "1":
        golden.write_text(rendered)
    assert golden.read_text() == rendered


def test_examples_have_goldens() -> None:
    assert {p.stem for p in EXAMPLES} >= {"numpy-sgd"}


def test_same_manifest_same_bytes(sample_manifest: Manifest) -> None:
    first = render.dockerfile(sample_manifest, "base:1")
    reordered = replace(
        sample_manifest,
        determinism=replace(
            sample_manifest.determinism,
            env=dict(reversed(list(sample_manifest.determinism.env.items()))),
        ),
    )
    assert render.dockerfile(reordered, "base:1") == first


def test_layers_are_ordered_for_the_cache(sample_manifest: Manifest) -> None:
    text = render.dockerfile(sample_manifest, "base:1")
    assert text.index("--require-hashes") < text.index("COPY --chown=1000:1000 source/")
    assert "--no-index --no-deps" in text and "USER 1000:1000" in text
    assert 'CMD ["python", "train.py", "--epochs", "3"]' in text
    assert "PYTHONHASHSEED=1234" in text


def test_env_values_with_spaces_are_quoted(sample_manifest: Manifest) -> None:
    odd = replace(
        sample_manifest,
        determinism=replace(sample_manifest.determinism, env={"XLA_FLAGS": "--a=1 --b=2"}),
    )
    assert 'XLA_FLAGS="--a=1 --b=2"' in render.dockerfile(odd, "base:1")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("python", "t.py"), ("python", "t.py")),
        (("python3.11", "-m", "pkg"), ("python", "-m", "pkg")),
        (("/home/u/.venv/bin/python", "t.py"), ("python", "t.py")),
        (("/opt/env/interp", "t.py"), ("python", "t.py")),
        (("train-model", "--x"), ("train-model", "--x")),
    ],
)
def test_container_argv_maps_the_host_interpreter(
    argv: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    assert render.container_argv(argv, "/opt/env/interp") == expected


def test_workdir_is_under_the_project(sample_manifest: Manifest) -> None:
    sub = replace(sample_manifest, run=replace(sample_manifest.run, workdir="src/exp"))
    assert render.container_workdir(sub) == "/app/src/exp"
    assert render.container_workdir(sample_manifest) == "/app"


NVIDIA_ENV = "ENV NVIDIA_VISIBLE_DEVICES=all \\\n    NVIDIA_DRIVER_CAPABILITIES=compute,utility\n"


def _example(name: str) -> Manifest:
    return manifest_io.read(ROOT / "tests" / "data" / "manifests" / f"{name}.yaml")


@pytest.mark.parametrize(
    ("name", "nvidia"),
    [("a100-torch231-cu121", True), ("rtx4090-torch212-cu118", True),
     ("h100-torch211-cu130", True), ("cupy-cuda12x-l4", True),
     ("torch-h100-nogpufields", True),  # no GPU probe, but a CUDA build
     ("cpu-torch240", False), ("numpy-sgd", False)],
)
def test_nvidia_runtime_variables_only_for_gpu_runs(name: str, nvidia: bool) -> None:
    assert (NVIDIA_ENV in render.dockerfile(_example(name), "base:1")) is nvidia


def test_a_cpu_build_that_saw_a_gpu_still_gets_the_gpu(sample_manifest: Manifest) -> None:
    gpus = Gpus("nvml", "535.183.01", "12.2", (Gpu(0, "NVIDIA L4", "GPU-1", 23034, "8.9"),))
    saw = replace(sample_manifest, gpu=gpus)
    assert NVIDIA_ENV in render.dockerfile(saw, "base:1")
    hidden = replace(sample_manifest, gpu=replace(gpus, visible_devices=""))
    assert NVIDIA_ENV not in render.dockerfile(hidden, "base:1")


def test_comments_name_the_captured_gpu_driver_and_cuda() -> None:
    notes = render.gpu_notes(_example("a100-torch231-cu121"))
    assert notes == [
        "GPU at capture: 2 x NVIDIA A100-SXM4-80GB (compute 8.0, 81920 MiB); "
        "CUDA_VISIBLE_DEVICES=0,1.",
        "NVIDIA driver at capture: 535.183.01, for CUDA up to 12.2.",
        "CUDA 12.1 in the environment (torch 2.3.1+cu121); a replay host needs an NVIDIA driver "
        ">= 530.30.02.",
    ]
    assert render.gpu_notes(_example("numpy-sgd")) == []
    assert render.gpu_notes(_example("cpu-torch240")) == [
        "No NVIDIA GPU at capture.", "torch 2.4.0+cpu is a CPU build."]


def test_a_cuda_base_states_that_it_must_carry_python() -> None:
    text = render.dockerfile(_example("cupy-cuda12x-l4"), "nvidia/cuda:12.2.2-runtime-ubuntu22.04")
    assert "# Needs the system CUDA toolkit: cupy-cuda12x 13.3.0 for CUDA 12" in text
    assert "must also carry python3 with venv (apt-get install python3 python3-venv)" in text
    assert text.count("FROM nvidia/cuda:12.2.2-runtime-ubuntu22.04") == 2
    assert "RUN python3 -m venv /opt/reprobox/env" in text


def test_the_image_turns_tf32_off_where_the_original_had_it_off() -> None:
    # a real H100 capture: torch's default, matmul TF32 off and cuDNN TF32 on
    manifest = manifest_io.read(ROOT / "tests" / "data" / "manifests" / "torch-h100.yaml")
    assert manifest.determinism.state["torch.matmul.allow_tf32"] is False
    assert "    REPROBOX_TF32_OFF=matmul \\\n" in render.dockerfile(manifest, "base:1")
