"""Before a replay spends any GPU time: can this host replay the run as captured, and how close?

Pure: the manifest and what the host has (its GPUs, Docker's NVIDIA runtimes) in, a decision
out. A missing GPU or a driver too old for the image's CUDA major version is an error, with
`--cpu` as the explicit way out; another GPU model, compute capability or count is a concern,
and the comparison then expects tolerance instead of bitwise equality. `reprobox doctor` asks
the same questions and reports the same concerns by their codes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from reprobox import cuda
from reprobox.errors import PreflightError, UsageError
from reprobox.manifest import Gpus, Manifest

_CPU_HINT = "replay on a host with an NVIDIA GPU, or pass --cpu to run on the CPU and compare " \
    "with tolerance"


@dataclass(frozen=True, slots=True)
class Concern:
    """Something that lets the replay run but may change its numbers."""

    code: str  # "gpu-model", "gpu-capability", "gpu-count", "driver-older", ...
    message: str
    tolerance: bool = False  # bitwise equality can no longer be expected


@dataclass(frozen=True, slots=True)
class Preflight:
    """How the replay runs on this host, and what the comparison should expect."""

    gpu_count: int = 0  # GPUs handed to the container: as many as the run used, if there are
    gpu_ids: tuple[str, ...] = ()  # which ones, where this host's CUDA_VISIBLE_DEVICES says
    concerns: tuple[Concern, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)  # added to the replay's environment

    @property
    def gpus(self) -> bool:
        """Whether the container gets GPUs."""
        return self.gpu_count > 0

    @property
    def expect_tolerance(self) -> bool:
        """Whether bitwise equality is not expected here (another GPU, the CPU)."""
        return any(concern.tolerance for concern in self.concerns)

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(concern.message for concern in self.concerns)


_MINOR_COMPATIBLE_FROM = (11, 1)  # CUDA minor-version compatibility began with 11.1
_REQUIRED_CUDA = re.compile(r"\bcuda>=(\d+\.\d+)")


def check(manifest: Manifest, host: Gpus, runtimes: tuple[str, ...], cpu: bool,
          image_env: Mapping[str, str] | None = None) -> Preflight:
    """Decide how to replay `manifest` here; raises PreflightError when it cannot be done.

    `image_env` is the built image's environment: a CUDA base names the CUDA it needs there.
    """
    original = manifest.gpu
    if original is None or not used_gpu(manifest):
        unneeded = Concern("cpu-unneeded", "--cpu: the original run used no GPU, so nothing "
                           "changes")
        return Preflight(concerns=(unneeded,) if cpu else ())
    if cpu:
        return Preflight(env={"CUDA_VISIBLE_DEVICES": ""}, concerns=(Concern(
            "cpu", f"replayed on the CPU (--cpu); the original ran on {original.describe()}: "
            "bitwise equality is not expected", tolerance=True),))
    if not host.devices:
        raise PreflightError(f"the original run used {original.describe()}; this host has no "
                             "NVIDIA GPU", hint=_CPU_HINT, code="gpu-missing")
    used = _used_models(manifest, original)
    ids = _allocated(host)[:len(used)]
    count = len(ids) or min(len(used), len(host.devices)) or 1
    concerns = [*_gpu_differences(used, original, host, count),
                *_driver_concerns(manifest, host), *_floor_concerns(manifest, host),
                *_image_concerns(image_env or {}, host),
                *_runtime_concerns(runtimes)]
    # Inside the container the GPUs it was given are numbered from 0, whatever the original
    # CUDA_VISIBLE_DEVICES named (indexes or UUIDs of another host's GPUs).
    visible = {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(count))}
    return Preflight(count, ids, tuple(concerns), visible)


def for_scheduler(manifest: Manifest, gpus: int, cpu: bool) -> Preflight:
    """How to replay where a scheduler hands out the GPUs (a Slurm job): the node is not known
    here, so only the request is weighed. `gpus` 0 asks for as many as the run used."""
    if cpu or not used_gpu(manifest) or manifest.gpu is None:
        if gpus and not cpu:
            raise UsageError("--gpus: the captured run used no GPU",
                             hint="leave --gpus out; the replay runs on the node's CPUs")
        return check(manifest, Gpus(source="none"), (), cpu)
    count = gpus or len(_used_models(manifest, manifest.gpu)) or 1
    # The job's GPUs are numbered from 0 in the container, whatever the capture host's were.
    return Preflight(count, env={"CUDA_VISIBLE_DEVICES": ",".join(map(str, range(count)))})


def on_node(manifest: Manifest, node: Gpus, count: int) -> tuple[Concern, ...]:
    """A scheduler's node weighed after the fact, as `check` weighs this host: another GPU
    model or fewer GPUs than the run used (`count` were handed to the replay)."""
    if manifest.gpu is None or not used_gpu(manifest):
        return ()
    used = _used_models(manifest, manifest.gpu)
    return tuple(_gpu_differences(used, manifest.gpu, node, count))


def _allocated(host: Gpus) -> tuple[str, ...]:
    """The GPUs this host's own CUDA_VISIBLE_DEVICES allows (a scheduler's allocation), if set."""
    visible = (host.visible_devices or "").strip()
    return tuple(part.strip() for part in visible.split(",") if part.strip())


def used_gpu(manifest: Manifest) -> bool:
    """Whether the original run used a GPU: torch's word, else a CUDA build on a GPU host."""
    state = manifest.determinism.state
    initialized = state.get("torch.cuda.initialized")
    if state.get("torch.cuda.devices_used") or initialized is True:
        return True
    if initialized is False:  # torch ran in every process and none of them touched CUDA
        return False
    gpus, stack = manifest.gpu, manifest.cuda
    # No word from torch (not imported, or an older capture): a CUDA build on a GPU host.
    return bool(gpus and gpus.devices and stack and stack.frameworks)


def _driver_concerns(manifest: Manifest, host: Gpus) -> list[Concern]:
    use, supported = cuda.environment_cuda(manifest), host.cuda_driver_version
    concerns = []
    needed, available = cuda.version_key(use.version if use else None), cuda.version_key(supported)
    if use and needed and available and available[:2] < needed[:2]:
        if available[0] < needed[0] or needed[:2] < _MINOR_COMPATIBLE_FROM:
            floor = cuda.min_driver(use.version)
            raise PreflightError(
                f"this host's driver {host.driver_version} supports CUDA up to {supported}; "
                f"the environment was built for CUDA {use.version} ({use.source})",
                hint=f"upgrade the NVIDIA driver to {floor or 'one for CUDA ' + use.version} or "
                "newer, replay on another host, or pass --cpu", code="driver-too-old")
        concerns.append(Concern(
            "driver-minor", f"the driver here supports CUDA {supported}, the environment was "
            f"built for {use.version}: it runs by CUDA's minor-version compatibility, but "
            "kernels compiled for the newer version may fail to load"))
    captured = manifest.gpu.driver_version if manifest.gpu else None
    if captured and cuda.version_key(host.driver_version) < cuda.version_key(captured):
        concerns.append(Concern(
            "driver-older", f"this host's NVIDIA driver {host.driver_version} is older than the "
            f"run's {captured}: kernels compiled at load time can differ"))
    return concerns


def _floor_concerns(manifest: Manifest, host: Gpus) -> list[Concern]:
    """Where the driver does not say which CUDA it supports (old nvidia-smi), its version is
    weighed against NVIDIA's table of minimum drivers instead."""
    use = cuda.environment_cuda(manifest)
    if use is None or host.cuda_driver_version or not host.driver_version:
        return []
    if cuda.driver_satisfies(host.driver_version, use.version) is not False:
        return []
    return [Concern("driver-floor", f"this host's driver {host.driver_version} is below "
                    f"{cuda.min_driver(use.version)}, the minimum for CUDA {use.version} "
                    f"({use.source}): the replay may fail to start")]


def _image_concerns(image_env: Mapping[str, str], host: Gpus) -> list[Concern]:
    """nvidia/cuda bases state the CUDA they need; the NVIDIA runtime checks it at start."""
    required = _REQUIRED_CUDA.search(image_env.get("NVIDIA_REQUIRE_CUDA", ""))
    supported = cuda.version_key(host.cuda_driver_version)
    if not required or not supported or supported >= cuda.version_key(required[1]):
        return []
    return [Concern("image-requires-cuda", f"the image's base requires CUDA {required[1]} "
                    f"(NVIDIA_REQUIRE_CUDA) and this driver supports {supported}: the NVIDIA "
                    "runtime may refuse to start the container")]


def _runtime_concerns(runtimes: tuple[str, ...]) -> list[Concern]:
    if runtimes:
        return []
    return [Concern("no-nvidia-runtime", "Docker lists no NVIDIA runtime; GPUs reach the "
                    "container only if the NVIDIA Container Toolkit's hook is installed")]


def _gpu_differences(before: list[str], original: Gpus, host: Gpus,
                     handed: int) -> list[Concern]:
    after = [gpu.name for gpu in host.devices]
    concerns = []
    if set(before) != set(after):
        concerns.append(Concern("gpu-model", f"GPU model differs: original "
                                f"{', '.join(sorted(set(before)))}, here "
                                f"{', '.join(sorted(set(after)))}", tolerance=True))
    before_cc = {gpu.compute_capability for gpu in original.devices if gpu.compute_capability}
    after_cc = {gpu.compute_capability for gpu in host.devices if gpu.compute_capability}
    if before_cc and after_cc and before_cc != after_cc:
        concerns.append(Concern("gpu-capability", "compute capability differs: original "
                                f"{', '.join(sorted(before_cc))}, here "
                                f"{', '.join(sorted(after_cc))}", tolerance=True))
    if handed < len(before):  # work split over fewer GPUs adds up in another order
        concerns.append(Concern("gpu-count", f"fewer GPUs: the original used {len(before)}, "
                                f"here {handed}", tolerance=True))
    return concerns


def _used_models(manifest: Manifest, original: Gpus) -> list[str]:
    """The models of the GPUs the run allocated on ("0:NVIDIA H100; 1:..."), else all it saw."""
    used = manifest.determinism.state.get("torch.cuda.devices_used")
    if isinstance(used, str) and used:
        # torch names a MIG instance "NVIDIA A100-SXM4-40GB MIG 1g.5gb"; NVML names its GPU
        return [entry.partition(":")[2].split(" MIG ")[0] for entry in used.split("; ")]
    return [gpu.name for gpu in original.devices]
