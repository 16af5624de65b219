"""Manifest → Dockerfile text: pure and deterministic, the same bytes for the same inputs.

A run that used an NVIDIA GPU, or whose environment is a CUDA build, gets the NVIDIA container
runtime's variables, and comment lines that name the captured GPU, driver and CUDA.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Sequence
from itertools import groupby

import jinja2

from reprobox import cuda, seeding
from reprobox.lock import locked_packages
from reprobox.manifest import Gpu, Gpus, Manifest

ENV_DIR = "/opt/reprobox/env"
SHIM_DIR = seeding.CONTAINER_SHIM_DIR
PROJECT_DIR = "/app"
UID = 1000
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")
_SAFE_ENV_VALUE = re.compile(r"^[A-Za-z0-9_.,:/+=@%-]*$")
# Read by the NVIDIA container runtime: every GPU the replay is given, compute and nvidia-smi.
NVIDIA_ENV = (("NVIDIA_VISIBLE_DEVICES", "all"), ("NVIDIA_DRIVER_CAPABILITIES", "compute,utility"))

# StrictUndefined: a missing variable is a bug, never an empty string in a Dockerfile.
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("reprobox", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)


def dockerfile(manifest: Manifest, base_image: str) -> str:
    """Render the Dockerfile that rebuilds the captured environment on `base_image`."""
    return _TEMPLATES.get_template("Dockerfile.j2").render(
        python=manifest.python,
        system=manifest.system,
        package_count=len(locked_packages(manifest)),
        base_image=base_image,
        env_dir=ENV_DIR,
        shim_dir=SHIM_DIR,
        uid=UID,
        environment=sorted((k, _env_value(v))
                           for k, v in seeding.replay_env(manifest.determinism).items()),
        notes=gpu_notes(manifest),
        nvidia_env=" \\\n    ".join(f"{k}={v}" for k, v in NVIDIA_ENV) if _wants_gpu(manifest)
        else "",
        workdir=container_workdir(manifest),
        command=json.dumps(list(container_argv(manifest.run.argv, manifest.python.executable))),
    )


def container_workdir(manifest: Manifest) -> str:
    """The run's working directory inside the image."""
    return posixpath.normpath(posixpath.join(PROJECT_DIR, manifest.run.workdir))


def container_argv(argv: Sequence[str], interpreter: str) -> tuple[str, ...]:
    """The command as the image runs it: the host's interpreter path becomes `python`."""
    if not argv:
        return ()
    head = argv[0]
    if head == interpreter or _PYTHON.match(posixpath.basename(head)):
        head = "python"
    return (head, *argv[1:])


def _env_value(value: str) -> str:
    # Values are quoted only when they need it, so the common case stays readable.
    return value if _SAFE_ENV_VALUE.match(value) else json.dumps(value)


def gpu_notes(manifest: Manifest) -> list[str]:
    """Comment lines on the captured GPU, driver and CUDA, and what a replay host needs."""
    notes = _host_notes(manifest.gpu) if manifest.gpu else []
    use = cuda.environment_cuda(manifest)
    if use:
        floor = cuda.min_driver(use.version)
        needs = f"; a replay host needs an NVIDIA driver >= {floor}" if floor else ""
        notes.append(f"CUDA {use.version} in the environment ({use.source}){needs}.")
    elif manifest.cuda and manifest.cuda.torch_version:
        notes.append(f"torch {manifest.cuda.torch_version} is a CPU build.")
    reason = cuda.toolkit_reason(manifest)
    if reason:
        notes.append(f"Needs the system CUDA toolkit: {reason}.")
        notes.append("So the base is an nvidia/cuda image, which must also carry python3 with venv "
                     "(apt-get install python3 python3-venv).")
    return notes


def _wants_gpu(manifest: Manifest) -> bool:
    return cuda.saw_gpu(manifest) or cuda.is_cuda_build(manifest)


def _host_notes(gpu: Gpus) -> list[str]:
    if not gpu.devices:
        return ["No NVIDIA GPU at capture."]
    visible = f"; CUDA_VISIBLE_DEVICES={gpu.visible_devices}" if gpu.visible_devices else ""
    notes = [f"GPU at capture: {_devices(gpu.devices)}{visible}."]
    if gpu.driver_version:
        supports = f", for CUDA up to {gpu.cuda_driver_version}" if gpu.cuda_driver_version else ""
        notes.append(f"NVIDIA driver at capture: {gpu.driver_version}{supports}.")
    return notes


def _devices(devices: Sequence[Gpu]) -> str:
    """'2 x NVIDIA A100-SXM4-80GB (compute 8.0, 81920 MiB)', kinds joined by ' + '."""
    kinds = []
    for (name, capability, memory, mig), group in groupby(
        devices, key=lambda d: (d.name, d.compute_capability, d.memory_mib, d.mig_mode)
    ):
        details = [f"compute {capability}" if capability else "", f"{memory} MiB",
                   "MIG enabled" if mig == "Enabled" else ""]
        kinds.append(f"{len(list(group))} x {name} ({', '.join(d for d in details if d)})")
    return " + ".join(kinds)
