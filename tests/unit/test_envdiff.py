"""envdiff: two runs' environments compared, the likeliest explanation of a difference first.

The environments are real: manifests captured on real GPU hosts (tests/data/manifests,
tests/data/gpu) and the container probe run here, on this host's interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from reprobox import envdiff
from reprobox import manifest as manifest_io
from reprobox.capture.gpu import SMI_FIELDS
from reprobox.errors import BundleError, ProbeUnavailable
from reprobox.manifest import Blas, Gpus, Manifest, Package

DATA = Path(__file__).resolve().parents[1] / "data"
H100 = DATA / "manifests" / "h100-torch211-cu130.yaml"
H200 = DATA / "gpu" / "h200-driver580" / "torch-gpu-manifest.yaml"
A100 = DATA / "manifests" / "a100-torch231-cu121.yaml"


def _environment(path: Path) -> envdiff.Environment:
    return envdiff.of_manifest(manifest_io.read(path))


def _by_what(differences: list[Any]) -> dict[str, Any]:
    return {d.what: d for d in differences}


def test_the_same_environment_has_no_differences() -> None:
    assert envdiff.differences(_environment(H100), _environment(H100)) == []


def test_h100_to_h200_differs_only_in_the_gpu_model_and_says_so_first() -> None:
    # two real captures of the same program (README: same bits on both)
    h100 = _environment(DATA / "manifests" / "torch-h100.yaml")
    (only,) = envdiff.differences(h100, _environment(H200))
    assert (only.what, only.original, only.replay, only.weight) == (
        "GPU model", "1× NVIDIA H100 80GB HBM3", "1× NVIDIA H200", 3)
    assert "kernels" in only.why


def test_an_a100_host_with_cuda_12_ranks_gpu_and_cuda_above_the_os() -> None:
    found = envdiff.differences(_environment(H100), _environment(A100))
    rows = _by_what(found)
    assert [d.weight for d in found] == sorted((d.weight for d in found), reverse=True)
    assert rows["GPU model"].replay == "2× NVIDIA A100-SXM4-80GB" and rows["GPU model"].weight == 3
    assert (rows["GPU compute capability"].original, rows["GPU compute capability"].replay) == (
        "9.0", "8.0")
    assert rows["torch"].weight == 3 and rows["torch"].replay == "2.3.1+cu121"
    assert rows["NVIDIA driver"].weight == 2 and rows["GPU count"].weight == 2
    assert rows["OS"].weight == 1 and rows["kernel"].weight == 1
    cuda = next(d for d in found if d.what.startswith("CUDA libraries"))
    assert cuda.weight == 3 and "nvidia-cudnn-cu12 8.9.2.26" in cuda.replay
    assert "nvidia-cudnn-cu13 9.19.0.56" in cuda.original and "cu12" not in cuda.original


def test_package_weights_follow_the_table() -> None:
    assert envdiff.package_weight("torch")[0] == 3
    assert envdiff.package_weight("nvidia-cudnn-cu12")[::2] == (3, "CUDA libraries")
    assert envdiff.package_weight("scipy-openblas64")[0] == 3
    assert envdiff.package_weight("scipy")[0] == 2
    assert envdiff.package_weight("nvidia-nvtx-cu12")[::2] == (2, "other CUDA components")
    assert envdiff.package_weight("requests")[::2] == (1, "other packages")


def test_unrelated_packages_share_one_row(sample_manifest: Manifest) -> None:
    before = envdiff.of_manifest(sample_manifest)
    extra = tuple(Package(f"util{i}", "1.0") for i in range(9))
    after = replace(before, python=replace(
        before.python, packages=(Package("numpy", "2.2.0"), Package("pyyaml", "6.0.1"), *extra)))
    rows = _by_what(envdiff.differences(before, after))
    assert set(rows) == {"numpy", "other packages (10 packages)"}
    assert rows["numpy"].original == "2.1.3" and rows["numpy"].weight == 3
    gathered = rows["other packages (10 packages)"]
    assert gathered.weight == 1 and gathered.original == "pyyaml 6.0.2"
    assert gathered.replay.startswith("pyyaml 6.0.1, util0 1.0")
    assert gathered.replay.endswith("… (+4)")


def test_python_patch_is_unlikely_and_minor_is_likely(sample_manifest: Manifest) -> None:
    before = envdiff.of_manifest(sample_manifest)

    def python(version: str) -> Any:
        after = replace(before, python=replace(before.python, version=version))
        return _by_what(envdiff.differences(before, after))["Python"]

    assert python("3.11.2").weight == 1 and python("3.12.1").weight == 3


def test_cpu_instruction_sets_blas_and_threads(sample_manifest: Manifest) -> None:
    openblas = Blas("scipy-openblas", "0.3.27", "pthreads", 1, "numpy")
    system = replace(sample_manifest.system, blas=(openblas,),
                     cpu_flags=("avx2", "avx512f", "avx512bw", "sse4_2", "hypervisor"))
    before = replace(envdiff.of_manifest(sample_manifest), system=system)
    after = replace(before, system=replace(
        system, cpu_flags=("avx2", "sse4_2"), blas=(replace(openblas, num_threads=4),)))
    rows = _by_what(envdiff.differences(before, after))
    assert set(rows) == {"CPU instruction sets", "BLAS threads"}
    assert (rows["CPU instruction sets"].original, rows["CPU instruction sets"].replay) == (
        "avx512bw avx512f", "none extra")
    assert rows["CPU instruction sets"].weight == 2 and rows["BLAS threads"].weight == 3


def test_determinism_state_differences(sample_manifest: Manifest) -> None:
    state = {"processes": 1, "seed": 7, "torch.cudnn.benchmark": False,
             "env.OMP_NUM_THREADS": "1", "torch.num_threads": 1, "process.pid": 10,
             "numpy.state_sha256": "aa"}
    before = replace(envdiff.of_manifest(sample_manifest), state=state)
    after = replace(before, state={**state, "torch.cudnn.benchmark": True,
                                   "env.OMP_NUM_THREADS": "4", "process.pid": 11,
                                   "numpy.state_sha256": "bb"})
    found = envdiff.differences(before, after)
    assert [(d.what, d.original, d.replay, d.weight) for d in found] == [
        ("OMP_NUM_THREADS", "1", "4", 3), ("cuDNN benchmark", "False", "True", 3)]


def test_a_replay_the_shim_never_reached_is_said_once(sample_manifest: Manifest) -> None:
    before = replace(envdiff.of_manifest(sample_manifest), state={"processes": 1, "seed": 7})
    after = replace(before, state={"processes": 0})
    (only,) = envdiff.differences(before, after)
    assert (only.what, only.original, only.replay, only.weight) == (
        "seeding shim", "ran in 1 process(es)", "did not report", 3)


def test_parts_a_side_did_not_record_are_left_out(sample_manifest: Manifest) -> None:
    unknown = envdiff.of_state({}, "the replay recorded no environment.json")
    assert envdiff.differences(envdiff.of_manifest(sample_manifest), unknown) == []


def test_an_unused_gpu_is_an_unlikely_explanation(sample_manifest: Manifest) -> None:
    h100 = manifest_io.read(H100)
    cpu_run = replace(envdiff.of_manifest(sample_manifest), gpu=h100.gpu)  # GPU host, numpy run
    on_a100 = replace(cpu_run, gpu=manifest_io.read(A100).gpu)
    assert {d.weight for d in envdiff.differences(cpu_run, on_a100)} == {1}


# --- the replay's side: the probe -----------------------------------------------------------------


def _probe_here() -> dict[str, Any]:
    """The container probe, run here by this interpreter as the image's would run it."""
    script = envdiff.PROBE_SCRIPTS[0]
    done = subprocess.run([sys.executable, "-I", str(script), ",".join(SMI_FIELDS)],
                          capture_output=True, text=True, check=True, timeout=120)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _nvidia_smi(folder: str, returncode: int = 0) -> dict[str, Any]:
    gpu = DATA / "gpu" / folder
    return {"fields": ",".join(SMI_FIELDS),
            "query": {"returncode": returncode, "stderr": "",
                      "stdout": (gpu / "nvidia-smi-query.csv").read_text()},
            "header": {"returncode": 0, "stderr": "",
                       "stdout": (gpu / "nvidia-smi.txt").read_text()}}


def test_the_probe_describes_this_interpreter() -> None:
    import platform

    report = _probe_here()
    state = {"processes": 1, "seed": 5}
    env = envdiff.from_probe(report, state, gpus_passed=False, host_gpus=Gpus("none"))
    assert env.python is not None and env.python.version == platform.python_version()
    assert "numpy" in {package.name for package in env.python.packages}
    assert env.system is not None and env.system.cpu_count >= 1 and env.system.cpu_flags
    assert env.system.blas and env.system.blas[0].provider == "numpy"
    assert env.gpu == Gpus("none") and env.state == state and env.notes == ()


def test_gpus_inside_the_container_come_from_nvidia_smi() -> None:
    report = {**_probe_here(), "nvidia_smi": _nvidia_smi("h200-driver580")}
    state = {"env.CUDA_VISIBLE_DEVICES": "0", "torch.cuda.initialized": True}
    env = envdiff.from_probe(report, state, gpus_passed=True, host_gpus=Gpus("none"))
    assert env.gpu is not None and env.gpu.describe() == (
        "1× NVIDIA H200 (9.0), driver 580.159.04, CUDA 13.0")
    assert env.gpu.visible_devices == "0" and env.gpu_used


def test_a_failing_nvidia_smi_falls_back_to_the_host_with_a_note() -> None:
    host = manifest_io.read(H100).gpu
    assert host is not None
    report = {**_probe_here(), "nvidia_smi": _nvidia_smi("h200-driver580", returncode=9)}
    env = envdiff.from_probe(report, {}, gpus_passed=True, host_gpus=host)
    assert env.gpu == host and "nvidia-smi failed" in env.notes[0]
    missing = envdiff.from_probe({**report, "nvidia_smi": None}, {}, True, host)
    assert "there is no nvidia-smi" in missing.notes[0]


def test_a_report_that_is_not_one_is_refused() -> None:
    with pytest.raises(ProbeUnavailable, match="unexpected environment report"):
        envdiff.from_probe({"interpreter": {"version": "3.11"}}, {}, False, Gpus("none"))


def test_environment_json_round_trips_and_names_a_bad_file() -> None:
    env = envdiff.from_probe({**_probe_here(), "nvidia_smi": _nvidia_smi("h100-driver580")},
                             {"seed": 1, "torch.matmul.allow_tf32": False}, True, Gpus("none"))
    assert envdiff.Environment.from_json(env.to_json(), "environment.json") == env
    with pytest.raises(BundleError, match="r1/environment.json: not an environment record"):
        envdiff.Environment.from_json('{"python": {"version": "3.11"}}', "r1/environment.json")


def test_the_probe_command_runs_the_image_python_isolated() -> None:
    command = envdiff.probe_command("/opt/p")
    assert command[:3] == ("python", "-I", "/opt/p/container_probe.py")
    assert command[3].split(",") == list(SMI_FIELDS)
    assert [path.name for path in envdiff.PROBE_SCRIPTS] == [
        "container_probe.py", "interpreter_probe.py"]


def test_a_probe_report_recorded_on_a_real_h200() -> None:
    report = json.loads((DATA / "gpu" / "h200-driver580" / "container-probe.json").read_text())
    state = {"processes": 1, "torch.cuda.initialized": True}
    env = envdiff.from_probe(report, state, gpus_passed=True, host_gpus=Gpus("none"))
    assert env.gpu is not None and env.notes == ()
    assert env.gpu.describe() == "1× NVIDIA H200 (9.0), driver 580.159.04, CUDA 13.0"
    assert env.python is not None and env.python.version == "3.12.3"
    assert env.cuda is not None and env.cuda.torch_cuda == "13.0"
    h100 = _environment(DATA / "manifests" / "torch-h100.yaml")
    rows = _by_what(envdiff.differences(h100, env))
    assert rows["GPU model"].weight == 3 and rows["GPU model"].replay == "1× NVIDIA H200"
    # probed outside the shim: OpenBLAS sized its pool to the 16 cores, the capture had 1
    assert (rows["BLAS threads"].original, rows["BLAS threads"].replay) == ("1", "16")
