"""The preflight: GPU runs refused, run on the CPU, or replayed with tolerance."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from reprobox import manifest as manifest_io
from reprobox import preflight, replay
from reprobox.errors import PreflightError, UsageError
from reprobox.manifest import CudaStack, Gpu, Gpus, Manifest
from tests.unit.scripted import BUILT

DATA = Path(__file__).resolve().parents[1] / "data" / "manifests"
# As NVML read them on a real H100 host (tests/data/gpu/h100-driver580/nvml.json).
H100 = Gpu(0, "NVIDIA H100 80GB HBM3", "GPU-ff35ffd0-a8cf-06e7-f065-0d19afd675e6", 81559, "9.0",
           "Disabled", "00000000:00:06.0")
A100 = Gpu(0, "NVIDIA A100-SXM4-80GB", "GPU-5e0b6a2c-0000-0000-0000-000000000000", 81920, "8.0",
           "Disabled", "00000000:07:00.0")
H100_HOST = Gpus("nvml", "580.159.04", "13.0", (H100,))
USED_H100 = {"torch.cuda.initialized": True, "torch.cuda.devices_used": "0:NVIDIA H100 80GB HBM3"}


def _gpu_run(state: dict[str, object] | None = None, cuda: str = "13.0") -> Manifest:
    base = manifest_io.read(DATA / "torch-h100-nogpufields.yaml")
    determinism = replace(base.determinism, state={**base.determinism.state,
                                                   **(USED_H100 if state is None else state)})
    stack = CudaStack("2.11.0+cu130", cuda, {}, {"torch": cuda})
    return replace(base, gpu=H100_HOST, cuda=stack, determinism=determinism)


def test_the_same_gpu_replays_with_gpus_and_expects_equality() -> None:
    plan = preflight.check(_gpu_run(), H100_HOST, ("nvidia",), cpu=False)
    assert (plan.gpus, plan.expect_tolerance, plan.notes) == (True, False, ())


def test_no_gpu_on_the_host_is_refused_with_the_cpu_way_out() -> None:
    with pytest.raises(PreflightError) as caught:
        preflight.check(_gpu_run(), Gpus("none"), (), cpu=False)
    assert "1× NVIDIA H100 80GB HBM3 (9.0)" in str(caught.value)
    assert "this host has no NVIDIA GPU" in str(caught.value)
    assert caught.value.hint is not None and "--cpu" in caught.value.hint
    assert (caught.value.exit_code, caught.value.code) == (4, "gpu-missing")


def test_cpu_runs_without_gpus_hides_cuda_and_expects_tolerance() -> None:
    plan = preflight.check(_gpu_run(), Gpus("none"), (), cpu=True)
    assert (plan.gpus, plan.expect_tolerance) == (False, True)
    assert plan.env == {"CUDA_VISIBLE_DEVICES": ""}
    assert "replayed on the CPU (--cpu)" in plan.notes[0]


def test_another_gpu_model_is_a_warning_and_tolerance_is_expected() -> None:
    plan = preflight.check(_gpu_run(), Gpus("nvml", "580.159.04", "13.0", (A100,)), ("nvidia",),
                           cpu=False)
    assert (plan.gpus, plan.expect_tolerance) == (True, True)
    assert plan.notes == (
        "GPU model differs: original NVIDIA H100 80GB HBM3, here NVIDIA A100-SXM4-80GB",
        "compute capability differs: original 9.0, here 8.0")
    assert [concern.code for concern in plan.concerns] == ["gpu-model", "gpu-capability"]


def test_fewer_gpus_than_the_run_used_is_a_warning() -> None:
    state = {"torch.cuda.devices_used": "0:NVIDIA H100 80GB HBM3; 1:NVIDIA H100 80GB HBM3"}
    plan = preflight.check(_gpu_run(state), H100_HOST, ("nvidia",), cpu=False)
    assert plan.expect_tolerance
    assert plan.notes[0] == "fewer GPUs: the original used 2, here 1"
    assert (plan.gpu_count, plan.env["CUDA_VISIBLE_DEVICES"]) == (1, "0")


def test_the_replay_gets_as_many_gpus_as_the_run_used_from_this_hosts_allocation() -> None:
    eight = tuple(replace(H100, index=i, uuid=f"GPU-{i}") for i in range(8))
    host = Gpus("nvml", "580.159.04", "13.0", eight)
    plan = preflight.check(_gpu_run(), host, ("nvidia",), cpu=False)
    assert (plan.gpu_count, plan.gpu_ids, plan.concerns) == (1, (), ())
    scheduled = replace(host, visible_devices="GPU-5,GPU-6")  # a scheduler's CUDA_VISIBLE_DEVICES
    two_used = _gpu_run({"torch.cuda.devices_used":
                         "0:NVIDIA H100 80GB HBM3; 1:NVIDIA H100 80GB HBM3"})
    plan = preflight.check(two_used, scheduled, ("nvidia",), cpu=False)
    assert (plan.gpu_count, plan.gpu_ids) == (2, ("GPU-5", "GPU-6"))
    assert plan.env == {"CUDA_VISIBLE_DEVICES": "0,1"}


def test_a_mig_instance_of_the_same_gpu_model_is_the_same_model() -> None:
    mig_host = Gpus("nvml", "580.159.04", "13.0", (replace(H100, mig_mode="Enabled"),))
    state = {"torch.cuda.devices_used": "0:NVIDIA H100 80GB HBM3 MIG 1g.10gb"}
    plan = preflight.check(_gpu_run(state), mig_host, ("nvidia",), cpu=False)
    assert plan.concerns == ()


def test_before_cuda_11_1_an_older_minor_driver_is_refused() -> None:
    host = Gpus("nvidia-smi", "418.87.00", "10.1", (H100,))
    with pytest.raises(PreflightError, match="built for CUDA 10.2") as caught:
        preflight.check(_gpu_run(cuda="10.2"), host, ("nvidia",), cpu=False)
    assert caught.value.hint is not None and "440.33" in caught.value.hint


def test_a_cuda_base_that_needs_a_newer_driver_is_a_concern() -> None:
    host = Gpus("nvml", "535.104.05", "12.2", (H100,))
    image_env = {"NVIDIA_REQUIRE_CUDA": "cuda>=12.6 brand=tesla,driver>=470,driver<471"}
    plan = preflight.check(_gpu_run(cuda="12.2"), host, ("nvidia",), False, image_env)
    concerns = {concern.code: concern.message for concern in plan.concerns}
    assert "requires CUDA 12.6" in concerns["image-requires-cuda"]


def test_a_driver_for_an_older_cuda_major_is_refused() -> None:
    old_host = Gpus("nvidia-smi", "535.104.05", "12.2", (H100,))
    with pytest.raises(PreflightError, match="supports CUDA up to 12.2; the environment was "
                                             "built for CUDA 13.0") as caught:
        preflight.check(_gpu_run(), old_host, ("nvidia",), cpu=False)
    assert caught.value.hint is not None and "580.65.06" in caught.value.hint
    assert caught.value.code == "driver-too-old"


def test_a_driver_for_an_older_cuda_minor_is_a_warning() -> None:
    host = Gpus("nvml", "535.104.05", "12.2", (H100,))
    plan = preflight.check(_gpu_run(cuda="12.4"), host, ("nvidia",), cpu=False)
    assert plan.gpus and not plan.expect_tolerance
    assert [concern.code for concern in plan.concerns] == ["driver-minor", "driver-older"]
    assert "minor-version compatibility" in plan.notes[0]
    assert "older than the run's 580.159.04" in plan.notes[1]


def test_no_nvidia_runtime_in_docker_is_said() -> None:
    plan = preflight.check(_gpu_run(), H100_HOST, (), cpu=False)
    assert "Docker lists no NVIDIA runtime" in plan.notes[0]


def test_a_cpu_run_on_a_gpu_host_needs_no_gpu() -> None:
    cpu_run = _gpu_run({"torch.cuda.initialized": False})
    assert preflight.check(cpu_run, Gpus("none"), (), cpu=False) == preflight.Preflight()


def test_without_torchs_word_a_cuda_build_on_a_gpu_host_counts_as_used() -> None:
    older_capture = _gpu_run({})  # a shim that did not record torch.cuda.* yet
    assert preflight.used_gpu(older_capture)
    no_gpu_host = replace(older_capture, gpu=Gpus("none"))
    assert not preflight.used_gpu(no_gpu_host)


def test_a_cuda_framework_other_than_torch_on_a_gpu_host_counts_as_used() -> None:
    manifest = replace(_gpu_run({}), cuda=CudaStack(None, None, {}, {"jax": "13"}))
    assert preflight.used_gpu(manifest)
    with pytest.raises(PreflightError):
        preflight.check(manifest, Gpus("none"), (), cpu=False)


def test_a_bundle_from_before_gpus_were_recorded_replays_as_before() -> None:
    manifest = manifest_io.read(DATA / "numpy-sgd.yaml")
    assert preflight.check(manifest, Gpus("none"), (), cpu=True).notes == (
        "--cpu: the original run used no GPU, so nothing changes",)


def test_gpus_describe_themselves_in_one_line() -> None:
    two = Gpus("nvml", "550.54.15", "12.4", (A100, replace(A100, index=1)))
    assert two.describe() == "2× NVIDIA A100-SXM4-80GB (8.0), driver 550.54.15, CUDA 12.4"
    assert Gpus("none").describe() == "no NVIDIA GPU"


def test_a_real_h100_capture_on_a_real_h200_host_expects_tolerance() -> None:
    h100_run = manifest_io.read(DATA / "torch-h100.yaml")
    gpu_data = DATA.parent / "gpu" / "h200-driver580"
    h200_host = manifest_io.read(gpu_data / "torch-gpu-manifest.yaml").gpu
    assert h200_host is not None
    plan = preflight.check(h100_run, h200_host, ("nvidia",), cpu=False)
    assert plan.gpus and plan.expect_tolerance
    assert [concern.code for concern in plan.concerns] == ["gpu-model"]
    assert plan.notes[0] == "GPU model differs: original NVIDIA H100 80GB HBM3, here NVIDIA H200"


def test_a_driver_that_names_no_cuda_version_is_weighed_against_the_minimum_drivers() -> None:
    # nvidia-smi of old drivers prints no "CUDA Version" (tests/data/gpu: driver 396)
    silent = Gpus("nvidia-smi", "470.82.01", None, (H100,))
    plan = preflight.check(_gpu_run(cuda="12.1"), silent, ("nvidia",), cpu=False)
    floor = next(c for c in plan.concerns if c.code == "driver-floor")
    assert "below 530.30.02, the minimum for CUDA 12.1" in floor.message
    recent = Gpus("nvidia-smi", "590.10.01", None, (H100,))
    assert "driver-floor" not in [c.code for c in preflight.check(
        _gpu_run(cuda="12.1"), recent, ("nvidia",), cpu=False).concerns]


# --- a scheduler's node (a Slurm job): only the request is weighed ----------------------------


def gpu_manifest(sample_manifest: Manifest, devices: int = 1,
                 used: str = "0:NVIDIA H100 80GB HBM3",
                 env: dict[str, str] | None = None) -> Manifest:
    """`sample_manifest` as a torch run on `devices` H100s that allocated on `used`."""
    gpus = Gpus("nvml", "580.159.04", "13.0",
                tuple(replace(H100, index=i, uuid=f"GPU-{i}") for i in range(devices)))
    state: dict[str, bool | str] = {"torch.cuda.initialized": True,
                                    "torch.cuda.devices_used": used}
    return replace(sample_manifest, gpu=gpus,
                   cuda=CudaStack("2.11.0+cu130", "13.0", {}, {"torch": "13.0"}),
                   determinism=replace(sample_manifest.determinism, state=state),
                   run=replace(sample_manifest.run, env=env or sample_manifest.run.env))


def test_scheduler_a_cpu_run_asks_for_no_gpu(sample_manifest: Manifest) -> None:
    plan = preflight.for_scheduler(sample_manifest, 0, cpu=False)
    assert (plan.gpu_count, plan.expect_tolerance, plan.notes) == (0, False, ())


def test_scheduler_gpus_for_a_cpu_run_are_refused(sample_manifest: Manifest) -> None:
    with pytest.raises(UsageError, match="--gpus: the captured run used no GPU") as err:
        preflight.for_scheduler(sample_manifest, 2, cpu=False)
    assert "leave --gpus out" in (err.value.hint or "")


def test_scheduler_a_gpu_run_asks_for_its_gpus_or_those_named(sample_manifest: Manifest) -> None:
    manifest = gpu_manifest(sample_manifest)
    assert preflight.for_scheduler(manifest, 0, cpu=False).gpu_count == 1
    assert preflight.for_scheduler(manifest, 4, cpu=False).gpu_count == 4


def test_scheduler_a_gpu_run_asks_for_the_gpus_it_used_not_all_the_host_had(
        sample_manifest: Manifest) -> None:
    # a run that used one of eight GPUs must not wait in the queue for eight
    manifest = gpu_manifest(sample_manifest, devices=8)
    assert preflight.for_scheduler(manifest, 0, cpu=False).gpu_count == 1


def test_scheduler_a_gpu_run_sees_the_gpus_slurm_gives_it(sample_manifest: Manifest) -> None:
    # captured inside an allocation as CUDA_VISIBLE_DEVICES=3: Docker numbers the GPUs it hands
    # over from 0, so passing "3" on would hide the job's GPU from the replay
    manifest = gpu_manifest(sample_manifest, env={"CUDA_VISIBLE_DEVICES": "3"})
    plan = preflight.for_scheduler(manifest, 0, cpu=False)
    spec = replay.container_spec(manifest, BUILT, (), 60.0, plan=plan)
    assert spec.env.get("CUDA_VISIBLE_DEVICES") == "0"


def test_scheduler_cpu_replays_of_a_gpu_run_expect_tolerance(sample_manifest: Manifest) -> None:
    plan = preflight.for_scheduler(gpu_manifest(sample_manifest), 0, cpu=True)
    assert plan.gpu_count == 0 and plan.expect_tolerance
    assert plan.env == {"CUDA_VISIBLE_DEVICES": ""}
    assert "replayed on the CPU (--cpu)" in plan.notes[0]


def test_scheduler_cpu_for_a_cpu_run_only_says_so(sample_manifest: Manifest) -> None:
    plan = preflight.for_scheduler(sample_manifest, 0, cpu=True)
    assert plan == preflight.check(sample_manifest, replay.NO_GPU, (), True)
    assert not plan.expect_tolerance


# --- a scheduler's node, weighed after the fact (the task's probe saw its GPUs) ---------------


def test_on_node_the_runs_own_gpu_model_is_no_concern() -> None:
    assert preflight.on_node(_gpu_run(), H100_HOST, 1) == ()
    mig = Gpus("nvidia-smi", "580.159.04", "13.0", (replace(H100, mig_mode="Enabled"),))
    mig_run = _gpu_run({"torch.cuda.devices_used": "0:NVIDIA H100 80GB HBM3 MIG 1g.10gb"})
    assert preflight.on_node(mig_run, mig, 1) == ()


def test_on_node_another_gpu_model_expects_tolerance() -> None:
    node = Gpus("nvidia-smi", "550.54.15", "12.4", (A100,))
    concerns = preflight.on_node(_gpu_run(), node, 1)
    assert [(c.code, c.tolerance) for c in concerns] == [("gpu-model", True),
                                                         ("gpu-capability", True)]
    assert concerns[0].message == ("GPU model differs: original NVIDIA H100 80GB HBM3, here "
                                   "NVIDIA A100-SXM4-80GB")


def test_on_node_fewer_gpus_than_the_run_used_expects_tolerance() -> None:
    two = _gpu_run({"torch.cuda.devices_used": "0:NVIDIA H100 80GB HBM3; 1:NVIDIA H100 80GB HBM3"})
    node = Gpus("nvidia-smi", "580.159.04", "13.0", (H100, replace(H100, index=1)))
    assert preflight.on_node(two, node, 2) == ()
    (fewer,) = preflight.on_node(two, node, 1)
    assert (fewer.code, fewer.tolerance) == ("gpu-count", True)
    assert fewer.message == "fewer GPUs: the original used 2, here 1"


def test_on_node_a_run_that_used_no_gpu_has_nothing_to_weigh(sample_manifest: Manifest) -> None:
    node = Gpus("nvidia-smi", "550.54.15", "12.4", (A100,))
    assert preflight.on_node(sample_manifest, node, 0) == ()
    assert preflight.on_node(_gpu_run({"torch.cuda.initialized": False}), node, 0) == ()


def test_on_node_a_real_h100_capture_replayed_on_a_real_h200_node() -> None:
    h100_run = manifest_io.read(DATA / "torch-h100.yaml")
    h200_node = manifest_io.read(DATA.parent / "gpu" / "h200-driver580" /
                                 "torch-gpu-manifest.yaml").gpu
    assert h200_node is not None
    concerns = preflight.on_node(h100_run, h200_node, 1)
    assert [c.code for c in concerns] == ["gpu-model"] and concerns[0].tolerance
