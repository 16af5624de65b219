"""Before a replay spends any GPU time: can this host replay the run as captured, and how close?

Pure: the manifest and what the host has (its GPUs, Docker's NVIDIA runtimes) in, a decision
out. A missing GPU or a driver too old for the image's CUDA major version is an error, with
`--cpu` as the explicit way out; another GPU model, compute capability or count is a warning,
and the comparison then expects tolerance instead of bitwise equality.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from reprobox import cuda
from reprobox.errors import PreflightError
from reprobox.manifest import Gpus, Manifest

_CPU_HINT = "replay on a host with an NVIDIA GPU, or pass --cpu to run on the CPU and compare " \
    "with tolerance"


@dataclass(frozen=True, slots=True)
class Preflight:
    """How the replay runs on this host, and what the comparison should expect."""

    gpus: bool = False  # hand the host's GPUs to the container
    expect_tolerance: bool = False  # bitwise equality is not expected here
    notes: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)  # added to the replay's environment


def check(manifest: Manifest, host: Gpus, runtimes: tuple[str, ...], cpu: bool) -> Preflight:
    """Decide how to replay `manifest` here; raises PreflightError when it cannot be done."""
    original = manifest.gpu
    if original is None or not used_gpu(manifest):
        note = ("--cpu: the original run used no GPU, so nothing changes",) if cpu else ()
        return Preflight(notes=note)
    if cpu:
        return Preflight(expect_tolerance=True, env={"CUDA_VISIBLE_DEVICES": ""}, notes=(
            f"replayed on the CPU (--cpu); the original ran on {original.describe()}: "
            "bitwise equality is not expected, outputs are judged by tolerance",))
    if not host.devices:
        raise PreflightError(f"the original run used {original.describe()}; this host has no "
                             "NVIDIA GPU", hint=_CPU_HINT)
    notes = [*_driver_notes(manifest, host), *_runtime_notes(runtimes)]
    differences = _gpu_differences(manifest, original, host)
    if differences:
        notes.append(f"{'; '.join(differences)}: bitwise equality is not expected on another "
                     "GPU, outputs are judged by tolerance")
    return Preflight(gpus=True, expect_tolerance=bool(differences), notes=tuple(notes))


def used_gpu(manifest: Manifest) -> bool:
    """Whether the original run used a GPU: torch said so, or a non-torch CUDA framework ran."""
    state = manifest.determinism.state
    if state.get("torch.cuda.devices_used") or state.get("torch.cuda.initialized") is True:
        return True
    gpus, cuda = manifest.gpu, manifest.cuda
    others = set(cuda.frameworks) - {"torch"} if cuda else set()
    # Without torch's word, a CUDA framework on a GPU host is taken to have used the GPU.
    return bool(gpus and gpus.devices and others)


def _version(text: str | None) -> tuple[int, ...]:
    match = re.match(r"^(\d+)(?:\.(\d+))?", text or "")
    return (int(match[1]), int(match[2] or 0)) if match else ()


def _driver_notes(manifest: Manifest, host: Gpus) -> list[str]:
    use, supported = cuda.environment_cuda(manifest), host.cuda_driver_version
    needed = use.version if use else None
    if not needed or not supported or _version(supported) >= _version(needed):
        return []
    if _version(supported)[0] < _version(needed)[0]:
        floor = cuda.min_driver(needed)
        raise PreflightError(
            f"this host's driver {host.driver_version} supports CUDA up to {supported}; "
            f"the environment was built for CUDA {needed} ({use.source if use else ''})",
            hint=f"upgrade the NVIDIA driver to {floor or 'one for CUDA ' + needed} or newer, "
            "replay on another host, or pass --cpu")
    return [f"the driver here supports CUDA {supported}, the environment was built for "
            f"{needed}: it runs by CUDA's minor-version compatibility, but kernels compiled "
            "for the newer version may fail to load"]


def _runtime_notes(runtimes: tuple[str, ...]) -> list[str]:
    if runtimes:
        return []
    return ["Docker lists no NVIDIA runtime; GPUs reach the container only if the NVIDIA "
            "Container Toolkit's hook is installed"]


def _gpu_differences(manifest: Manifest, original: Gpus, host: Gpus) -> list[str]:
    before = _used_models(manifest, original)
    after = [gpu.name for gpu in host.devices]
    differences = []
    if set(before) != set(after):
        differences.append(f"GPU model differs: original {', '.join(sorted(set(before)))}, "
                           f"here {', '.join(sorted(set(after)))}")
    before_cc = {gpu.compute_capability for gpu in original.devices if gpu.compute_capability}
    after_cc = {gpu.compute_capability for gpu in host.devices if gpu.compute_capability}
    if before_cc and after_cc and before_cc != after_cc:
        differences.append(f"compute capability differs: original {', '.join(sorted(before_cc))}"
                           f", here {', '.join(sorted(after_cc))}")
    if len(after) < len(before):
        differences.append(f"fewer GPUs: the original used {len(before)}, here {len(after)}")
    return differences


def _used_models(manifest: Manifest, original: Gpus) -> list[str]:
    """The models of the GPUs the run allocated on ("0:NVIDIA H100; 1:..."), else all it saw."""
    used = manifest.determinism.state.get("torch.cuda.devices_used")
    if isinstance(used, str) and used:
        return [entry.partition(":")[2] for entry in used.split("; ")]
    return [gpu.name for gpu in original.devices]
