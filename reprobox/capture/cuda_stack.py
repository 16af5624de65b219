"""The CUDA the Python environment carries: torch's build, the nvidia-* wheels, CUDA frameworks.

Read from package names and the frameworks' own version files (found by the interpreter probe
without importing them), so capturing costs no CUDA initialisation and works on a host without
a GPU.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from reprobox.manifest import CudaStack, Package

# cupy-cuda12x → "12.x", cupy-cuda118 → "11.8", cupy-cuda13x → "13.x"
_CUPY = re.compile(r"^cupy-cuda(?P<major>\d\d)(?P<minor>\d|x)$")
# jax-cuda12-plugin, jax-cuda12-pjrt, jax-cuda13-plugin → "12" / "13"
_JAX_PLUGIN = re.compile(r"^jax-cuda(?P<major>\d+)-(plugin|pjrt)$")
# jaxlib 0.4.20+cuda12.cudnn89 (the old wheels from Google's index)
_JAXLIB_LOCAL = re.compile(r"\+cuda(?P<major>\d+)")


def from_report(cuda_files: Mapping[str, Any] | None, packages: Iterable[Package]) -> CudaStack:
    """The CudaStack of an environment from the probe's `cuda_files` and its package list."""
    files = cuda_files or {}
    torch = files.get("torch") or {}
    by_name = {package.name: package.version for package in packages}
    torch_cuda = _text(torch.get("cuda"))
    frameworks = {
        "torch": torch_cuda,
        "tensorflow": _tensorflow_cuda(files.get("tensorflow") or {}),
        "cupy": _cupy_cuda(by_name),
        "jax": _jax_cuda(by_name),
    }
    return CudaStack(
        torch_version=_text(torch.get("__version__")) or by_name.get("torch"),
        torch_cuda=torch_cuda,
        libraries={name: version for name, version in sorted(by_name.items())
                   if name.startswith("nvidia-") and name != "nvidia-ml-py"},
        frameworks={name: cuda for name, cuda in frameworks.items() if cuda},
    )


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, (str, int, float)) and str(value) else None


def _tensorflow_cuda(build_info: Mapping[str, Any]) -> str | None:
    if build_info.get("is_cuda_build") is False:
        return None
    return _text(build_info.get("cuda_version"))


def _cupy_cuda(packages: Mapping[str, str]) -> str | None:
    for name in sorted(packages):
        match = _CUPY.match(name)
        if match:
            return f"{int(match['major'])}.{match['minor']}"
    return None


def _jax_cuda(packages: Mapping[str, str]) -> str | None:
    for name in sorted(packages):
        match = _JAX_PLUGIN.match(name)
        if match:
            return match["major"]
    match = _JAXLIB_LOCAL.search(packages.get("jaxlib", ""))
    return match["major"] if match else None
