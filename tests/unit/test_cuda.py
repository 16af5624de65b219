"""cuda: wheel indexes from local labels, driver floors, and which environments need a CUDA base."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from reprobox import cuda
from reprobox import manifest as manifest_io
from reprobox.errors import RenderError
from reprobox.manifest import CudaStack, Gpu, Gpus, Manifest, Package

MANIFESTS = Path(__file__).resolve().parents[1] / "data" / "manifests"
PYTORCH = "https://download.pytorch.org/whl"


def _example(name: str) -> Manifest:
    return manifest_io.read(MANIFESTS / f"{name}.yaml")


def _env(base: Manifest, packages: str, python: str = "3.10.12", stack: CudaStack | None = None,
         driver_cuda: str | None = None) -> Manifest:
    """`base` with these packages ("name==version ..."), Python, CUDA probe and driver."""
    pins = tuple(Package(name, version) for name, _, version in
                 (pin.partition("==") for pin in packages.split()))
    gpu = Gpus("nvml", "999.1", driver_cuda, (Gpu(0, "NVIDIA L4", "GPU-x", 23034),)) \
        if driver_cuda else None
    return replace(base, python=replace(base.python, version=python, packages=pins),
                   cuda=stack, gpu=gpu)


def _image(manifest: Manifest) -> str:
    base = cuda.base_image(manifest)
    assert base is not None, "expected a CUDA base"
    return base.image


@pytest.fixture
def no_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPROBOX_TORCH_INDEX_URL", raising=False)


# ---------------------------------------------------------------------------- indexes


@pytest.mark.parametrize(
    ("name", "version", "expected"),
    [
        ("torch", "2.3.1+cu121", f"{PYTORCH}/cu121"),
        ("torchvision", "0.18.1+cu121", f"{PYTORCH}/cu121"),
        ("torch", "2.4.0+cpu", f"{PYTORCH}/cpu"),
        ("torchaudio", "2.3.1+rocm6.0", f"{PYTORCH}/rocm6.0"),
        ("torch", "2.11.0", None),  # PyPI's own CUDA build carries no label
        ("numpy", "2.1.3+cu121", None),  # not a package PyTorch's index serves
        ("torch", "2.5.0+git1234abc", None),  # a local source build, not an index label
        ("pytorch-triton", "3.0.0+dedb7bdf33", None),
    ],
)
def test_index_url_from_the_local_label(
    no_mirror: None, name: str, version: str, expected: str | None
) -> None:
    assert cuda.index_url(name, version) == expected


def test_a_mirror_is_where_wheels_are_fetched_but_never_what_is_recorded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPROBOX_TORCH_INDEX_URL", "https://alice:s3cret@mirror.lan/pytorch/")
    assert cuda.index_url("torch", "2.3.1+cu121") == f"{PYTORCH}/cu121"
    captured = Package("torch", "2.3.1+cu121", index_url=f"{PYTORCH}/cu121")
    assert cuda.package_index(captured) == f"{PYTORCH}/cu121"
    assert cuda.fetch_url(f"{PYTORCH}/cu121") == "https://alice:s3cret@mirror.lan/pytorch/cu121"
    assert cuda.fetch_url("https://pkgs.example/simple") == "https://pkgs.example/simple"


def test_credentials_in_a_recorded_index_are_dropped() -> None:
    recorded = Package("torch", "2.3.1+cu121", index_url="https://bob:tok@pkgs.example/simple")
    assert cuda.package_index(recorded) == "https://pkgs.example/simple"
    assert cuda.describe_index("https://bob:tok@pkgs.example/simple") == (
        "the index https://pkgs.example/simple")


def test_package_index_prefers_what_capture_recorded(no_mirror: None) -> None:
    recorded = Package("torch", "2.3.1+cu121", index_url="https://pkgs.example/simple")
    assert cuda.package_index(recorded) == "https://pkgs.example/simple"
    assert cuda.package_index(Package("torch", "2.3.1+cu121")) == f"{PYTORCH}/cu121"
    local = Package("torch", "2.3.1+cu121", source="local", url="file:///src/pytorch")
    assert cuda.package_index(local) is None  # built from its source, fetched from no index
    assert cuda.describe_index("https://pkgs.example/simple") == (
        "the index https://pkgs.example/simple")


@pytest.mark.parametrize(
    ("version", "expected"),
    [("2.3.1+cu121", "12.1"), ("2.1.2+cu118", "11.8"), ("2.11.0+cu130", "13.0"),
     ("1.8.0+cu92", "9.2"), ("2.4.0+cpu", None), ("2.11.0", None)],
)
def test_label_cuda_follows_cogs_rule(version: str, expected: str | None) -> None:
    assert cuda.label_cuda(version) == expected


# ---------------------------------------------------------------------------- drivers

# NVIDIA's CUDA Toolkit release notes, table 3 (GA rows, Linux x86_64).
RELEASE_NOTES = {
    "11.8": "520.61.05", "12.0": "525.60.13", "12.1": "530.30.02", "12.2": "535.54.03",
    "12.3": "545.23.06", "12.4": "550.54.14", "12.5": "555.42.02", "12.6": "560.28.03",
    "12.8": "570.26", "12.9": "575.51.03", "13.0": "580.65.06",
}


@pytest.mark.parametrize(("toolkit", "driver"), sorted(RELEASE_NOTES.items()))
def test_min_driver_is_nvidias_table(toolkit: str, driver: str) -> None:
    assert cuda.min_driver(toolkit) == driver
    assert cuda.min_driver(f"{toolkit}.1") == driver  # an update release keys on X.Y


def test_min_driver_of_a_major_alone_and_of_unknown_versions() -> None:
    assert cuda.min_driver("12") == "525.60.13"  # minor-version compatibility's floor
    assert cuda.min_driver("13.x") == "580.65.06"
    assert cuda.min_driver("10.2") == "440.33" and cuda.min_driver("11.7") == "515.43.04"
    assert cuda.min_driver("9.2") is None and cuda.min_driver("garbage") is None


@pytest.mark.parametrize(
    ("driver", "toolkit", "ok"),
    [("535.183.01", "12.2", True), ("530.30.02", "12.2", False), ("550.54.14", "12.4", True),
     ("580.159.04", "13.0", True), ("575.57.08", "13.0", False), ("550.120", "11.8", True),
     ("535.183.01", "9.0", None), ("unknown", "12.2", None)],
)
def test_driver_satisfies_compares_numerically(driver: str, toolkit: str, ok: bool | None) -> None:
    assert cuda.driver_satisfies(driver, toolkit) is ok


# ---------------------------------------------------------------------------- the environment


@pytest.mark.parametrize(
    ("name", "version", "source"),
    [
        ("a100-torch231-cu121", "12.1", "torch 2.3.1+cu121"),
        ("rtx4090-torch212-cu118", "11.8", "torch 2.1.2+cu118"),
        ("h100-torch211-cu130", "13.0", "torch 2.11.0+cu130"),
        # no CUDA probe, no label: the nvidia-cuda-runtime wheel says which CUDA
        ("torch-h100-nogpufields", "13.0", "nvidia-cuda-runtime 13.0.96"),
        ("cupy-cuda12x-l4", "12", "cupy-cuda12x 13.3.0"),
    ],
)
def test_environment_cuda(name: str, version: str, source: str) -> None:
    assert cuda.environment_cuda(_example(name)) == cuda.CudaUse(version, source)
    assert cuda.is_cuda_build(_example(name))


@pytest.mark.parametrize("name", ["cpu-torch240", "numpy-sgd", "clock-noise"])
def test_cpu_environments_are_not_cuda_builds(name: str) -> None:
    assert cuda.environment_cuda(_example(name)) is None
    assert not cuda.is_cuda_build(_example(name))


def test_saw_gpu_needs_a_device_the_run_could_see() -> None:
    a100 = _example("a100-torch231-cu121")
    assert cuda.saw_gpu(a100) and a100.gpu is not None
    assert cuda.saw_gpu(replace(a100, gpu=replace(a100.gpu, visible_devices=None)))
    for hidden in ("", "-1", " NoDevFiles "):
        assert not cuda.saw_gpu(replace(a100, gpu=replace(a100.gpu, visible_devices=hidden)))
    assert not cuda.saw_gpu(_example("cpu-torch240"))  # source "none"
    assert not cuda.saw_gpu(_example("torch-h100-nogpufields"))  # not probed


# ---------------------------------------------------------------------------- base images


@pytest.mark.parametrize(
    "name",
    ["a100-torch231-cu121", "rtx4090-torch212-cu118", "cpu-torch240", "h100-torch211-cu130",
     "torch-h100-nogpufields", "numpy-sgd"],
)
def test_pip_wheels_carry_cuda_so_a_slim_base_serves(name: str) -> None:
    assert cuda.base_image(_example(name)) is None
    assert cuda.toolkit_reason(_example(name)) is None


def test_cupy_without_cuda_wheels_needs_the_toolkit_image() -> None:
    base = cuda.base_image(_example("cupy-cuda12x-l4"))
    assert base == cuda.CudaBase(
        image="nvidia/cuda:12.2.2-runtime-ubuntu22.04", cuda="12.2.2", cudnn=None,
        ubuntu="22.04", python="3.10",
        reason="cupy-cuda12x 13.3.0 for CUDA 12 without the nvidia-cuda-runtime-cu12, "
        "nvidia-cuda-nvrtc-cu12 wheels",
    )


def test_cupy_with_its_cuda_wheels_needs_no_toolkit() -> None:
    wheels = ("cupy-cuda12x==13.3.0 nvidia-cuda-runtime-cu12==12.6.77 "
              "nvidia-cuda-nvrtc-cu12==12.6.85")
    assert cuda.base_image(_env(_example("cupy-cuda12x-l4"), wheels)) is None
    wrong_major = ("cupy-cuda12x==13.3.0 nvidia-cuda-runtime-cu11==11.8.89 "
                   "nvidia-cuda-nvrtc==11.8.89")
    assert cuda.base_image(_env(_example("cupy-cuda12x-l4"), wrong_major)) is not None


def test_the_image_follows_the_driver_and_the_python() -> None:
    base = _example("numpy-sgd")
    newer_driver = _env(base, "cupy-cuda12x==13.3.0", python="3.12.3", driver_cuda="12.8")
    assert _image(newer_driver) == "nvidia/cuda:12.8.1-runtime-ubuntu24.04"
    older_driver = _env(base, "cupy-cuda12x==13.3.0", python="3.12.3", driver_cuda="12.4")
    assert _image(older_driver) == "nvidia/cuda:12.4.1-runtime-ubuntu22.04"
    not_probed = _env(base, "cupy-cuda12x==13.3.0", python="3.10.12")
    assert _image(not_probed) == "nvidia/cuda:12.8.1-runtime-ubuntu22.04"
    cuda11 = _env(base, "cupy-cuda11x==13.3.0", driver_cuda="12.2")
    assert _image(cuda11) == "nvidia/cuda:11.8.0-runtime-ubuntu22.04"


def test_jax_with_a_local_cuda_plugin_needs_cudnn_from_the_image() -> None:
    local = _env(_example("numpy-sgd"), "jax==0.4.30 jaxlib==0.4.30 jax-cuda12-plugin==0.4.30 "
                 "jax-cuda12-pjrt==0.4.30", python="3.12.3", driver_cuda="13.0",
                 stack=CudaStack(frameworks={"jax": "12"}))
    base = cuda.base_image(local)
    assert base is not None and base.cudnn == "9"
    assert base.image == "nvidia/cuda:12.9.1-cudnn-runtime-ubuntu24.04"
    assert base.reason.startswith("jax-cuda12-plugin 0.4.30 for CUDA 12 without the nvidia-cuda")


def test_tensorflow_before_2_14_always_needs_the_toolkit() -> None:
    old = _env(_example("numpy-sgd"), "tensorflow==2.13.1 nvidia-cudnn-cu11==8.6.0.163",
               stack=CudaStack(frameworks={"tensorflow": "11.8"}), driver_cuda="12.2")
    base = cuda.base_image(old)
    assert base is not None and base.image == "nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04"
    assert "tensorflow 2.13.1 loads CUDA 11 from the system" in base.reason


def test_tensorflow_and_cuda_wheels_or_the_exact_toolkit() -> None:
    stack = CudaStack(frameworks={"tensorflow": "12.2"})
    with_wheels = _env(_example("numpy-sgd"), "tensorflow==2.15.1 nvidia-cudnn-cu12==8.9.4.25 "
                       "nvidia-cuda-runtime-cu12==12.2.140", stack=stack)
    assert cuda.base_image(with_wheels) is None
    bare = _env(_example("numpy-sgd"), "tensorflow==2.15.1", stack=stack)
    assert _image(bare) == "nvidia/cuda:12.2.2-cudnn8-runtime-ubuntu22.04"


def test_a_toolkit_the_table_lacks_is_a_clear_error() -> None:
    ancient = _env(_example("numpy-sgd"), "tensorflow==2.3.0",
                   stack=CudaStack(frameworks={"tensorflow": "10.1"}))
    with pytest.raises(RenderError, match="cuda.yaml has no nvidia/cuda image for CUDA 10.1") as e:
        cuda.base_image(ancient)
    assert "--base-image" in (e.value.hint or "")


def test_the_base_image_table_agrees_with_its_tags_and_driver_floors() -> None:
    data = yaml.safe_load(cuda.DATA_FILE.read_text())
    python_of = {"20.04": "3.8", "22.04": "3.10", "24.04": "3.12"}
    for row in data["base_images"]:
        cudnn = {None: "", "8": "cudnn8-"}.get(row["cudnn"], "cudnn-")
        assert row["image"] == f"nvidia/cuda:{row['cuda']}-{cudnn}runtime-ubuntu{row['ubuntu']}"
        assert row["python"] == python_of[row["ubuntu"]]
        assert cuda.min_driver(row["cuda"]), f"no driver floor for {row['cuda']}"
        if re.match(r"12\.[4-9]|13", row["cuda"]):
            assert row["cudnn"] in (None, "9")  # from 12.4 the tag drops cuDNN's major: it is 9
