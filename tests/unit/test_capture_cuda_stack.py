"""The CUDA stack of an environment, read from its files: torch is never imported."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reprobox.capture import cuda_stack, python_env
from reprobox.capture.runner import subprocess_runner
from reprobox.manifest import CudaStack, Package

H100 = Path(__file__).resolve().parents[1] / "data" / "gpu" / "h100-driver580"
# The shape TensorFlow's generated tensorflow/python/platform/build_info.py has (2.x):
# an OrderedDict of literal pairs, which a plain literal_eval refuses.
TENSORFLOW_BUILD_INFO = """\
# Copyright 2020 The TensorFlow Authors. All Rights Reserved.
\"\"\"Auto-generated module providing information about the build.\"\"\"
import collections

build_info = collections.OrderedDict([('cpu_compiler', '/usr/lib/llvm-17/bin/clang'), \
('cuda_compute_capabilities', ['sm_50', 'sm_60', 'sm_70', 'sm_80', 'compute_90']), \
('cuda_version', '12.2'), ('cudnn_version', '8'), ('is_cuda_build', True), \
('is_rocm_build', False), ('is_tensorrt_build', True)])
"""


@pytest.fixture(scope="module")
def cuda_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real venv with a torch whose import fails, its version.py, and CUDA wheels' metadata."""
    root = tmp_path_factory.mktemp("cuda") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    (site,) = root.glob("lib/python*/site-packages")
    torch = site / "torch"
    torch.mkdir()
    (torch / "__init__.py").write_text("raise RuntimeError('torch was imported')\n")
    shutil.copy(H100 / "torch-version.py.txt", torch / "version.py")
    (site / "tensorflow" / "python" / "platform").mkdir(parents=True)
    (site / "tensorflow" / "__init__.py").write_text("raise RuntimeError('tf was imported')\n")
    (site / "tensorflow" / "python" / "platform" / "build_info.py").write_text(
        TENSORFLOW_BUILD_INFO)
    for name, version in (("torch", "2.11.0"), ("nvidia-cudnn-cu13", "9.19.0.56"),
                          ("nvidia-nccl-cu13", "2.28.9"), ("nvidia-ml-py", "13.610.43"),
                          ("cupy-cuda13x", "14.2.0"), ("tensorflow", "2.15.0")):
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return root


def test_the_probe_reads_torch_and_tensorflow_builds_without_importing_them(
        cuda_venv: Path) -> None:
    environment = python_env.probe_environment(str(cuda_venv / "bin" / "python"),
                                               subprocess_runner)
    assert environment.cuda == CudaStack(
        torch_version="2.11.0+cu130",  # version.py's, not the metadata's "2.11.0"
        torch_cuda="13.0",
        libraries={"nvidia-cudnn-cu13": "9.19.0.56", "nvidia-nccl-cu13": "2.28.9"},
        frameworks={"torch": "13.0", "tensorflow": "12.2", "cupy": "13.x"},
    )


def test_the_recorded_h100_environment_gives_its_cuda_stack() -> None:
    report = json.loads((H100 / "interpreter-probe.json").read_text().strip().splitlines()[-1])
    packages = python_env.python_record(report).packages
    torch_file = {"__version__": "2.11.0+cu130", "cuda": "13.0"}
    stack = cuda_stack.from_report({"torch": torch_file, "tensorflow": None}, packages)
    assert stack.frameworks == {"torch": "13.0", "cupy": "13.x", "jax": "13"}
    assert stack.libraries["nvidia-cudnn-cu13"] == "9.19.0.56"
    assert "nvidia-ml-py" not in stack.libraries  # NVML's bindings carry no CUDA


@pytest.mark.parametrize(("packages", "frameworks"), [
    ({}, {}),
    ({"torch": "2.4.0+cpu"}, {}),
    ({"cupy-cuda118": "12.3.0"}, {"cupy": "11.8"}),
    ({"cupy-cuda12x": "13.1.0"}, {"cupy": "12.x"}),
    ({"jax": "0.4.30", "jax-cuda12-plugin": "0.4.30"}, {"jax": "12"}),
    ({"jaxlib": "0.4.20+cuda12.cudnn89"}, {"jax": "12"}),
])
def test_frameworks_are_named_by_the_cuda_they_were_built_for(
        packages: dict[str, str], frameworks: dict[str, str]) -> None:
    stack = cuda_stack.from_report({}, [Package(n, v) for n, v in packages.items()])
    assert stack.frameworks == frameworks


def test_a_cpu_torch_has_no_cuda() -> None:
    stack = cuda_stack.from_report({"torch": {"__version__": "2.4.0+cpu", "cuda": None}},
                                   [Package("torch", "2.4.0+cpu")])
    assert (stack.torch_version, stack.torch_cuda, dict(stack.frameworks)) == (
        "2.4.0+cpu", None, {})


def test_a_tensorflow_cpu_build_has_no_cuda() -> None:
    info = {"is_cuda_build": False, "cuda_version": "12.2"}
    assert cuda_stack.from_report({"tensorflow": info}, []).frameworks == {}
