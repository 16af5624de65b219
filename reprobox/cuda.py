"""CUDA compatibility facts, read from data files: wheel indexes, driver floors, CUDA base images.

Everything here is a pure function of a manifest (or a version) and `data/cuda.yaml`.

Which base an environment needs (`base_image`):

- None, a slim Python base, when pip's wheels carry the CUDA libraries or nothing uses CUDA:
  torch CUDA builds (their libraries are nvidia-* wheels or sit in torch/lib), CPU builds, and
  frameworks whose nvidia-* wheels are installed (cupy with nvidia-cuda-runtime and -nvrtc,
  jax[cuda12], tensorflow[and-cuda]).
- An `nvidia/cuda` runtime image when a framework loads CUDA from the system: cupy-cuda12x
  without those wheels, jax with a `-local` CUDA plugin, tensorflow < 2.14. Among the table's
  images of that CUDA major (and minor, when the framework names one), it takes one no newer than
  the CUDA the captured driver supports, then the one whose Ubuntu python3 is the captured
  Python X.Y, without cuDNN unless the framework needs it, then the newest CUDA and Ubuntu.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from reprobox.errors import RenderError
from reprobox.manifest import Manifest, Package

DATA_FILE = Path(__file__).parent / "data" / "cuda.yaml"
_VERSION = re.compile(r"^(\d+)(?:\.(\d+))?")
_WHEEL = re.compile(r"^nvidia-(?P<part>[a-z0-9-]+?)(?:-cu(?P<major>\d+))?$")
_RUNTIME_WHEEL = "cuda-runtime"
_NO_GPU = frozenset({"", "-1", "none", "void", "nodevfiles"})  # CUDA_VISIBLE_DEVICES hiding all


@dataclass(frozen=True, slots=True)
class CudaBase:
    """An nvidia/cuda runtime image for an environment that needs the system CUDA toolkit."""

    image: str  # "nvidia/cuda:12.2.2-runtime-ubuntu22.04"
    cuda: str  # "12.2.2"
    cudnn: str | None  # cuDNN major in the image; None: no cuDNN
    ubuntu: str  # "22.04"
    python: str  # the Ubuntu release's python3 X.Y, which a base made FROM the image adds
    reason: str  # why the system toolkit is needed: "cupy-cuda12x 13.3.0 without ..."


@dataclass(frozen=True, slots=True)
class CudaUse:
    """The CUDA version an environment is built for, and what says so."""

    version: str  # "12.1", or a major alone ("12") when that is all that is known
    source: str  # "torch 2.3.1+cu121"


@dataclass(frozen=True, slots=True)
class _Need:
    framework: str
    major: int
    minor: int | None
    cudnn: bool
    reason: str


@functools.cache
def _data() -> Mapping[str, Any]:
    data: Mapping[str, Any] = yaml.safe_load(DATA_FILE.read_text(encoding="utf-8"))
    return data


# ---------------------------------------------------------------------------- wheel indexes


def torch_index_base() -> str:
    """PyTorch's public wheel index: what locks and manifests name, whatever mirror is used."""
    return str(_data()["torch_index"]["url"]).rstrip("/")


def local_label(version: str) -> str | None:
    """The local version label: '2.3.1+cu121' -> 'cu121'; None without one."""
    return version.partition("+")[2] or None


def index_url(name: str, version: str) -> str | None:
    """The wheel index a torch-family pin needs: '+cu121' -> <index>/cu121; None: PyPI."""
    index = _data()["torch_index"]
    label = local_label(version)
    if name not in index["packages"] or label is None or not re.match(index["labels"], label):
        return None
    return f"{torch_index_base()}/{label}"


def package_index(package: Package) -> str | None:
    """The index a locked package needs: the captured one, else the one its label names.

    Credentials never leave the machine: a URL is named without its user and password.
    Packages built from local, VCS or URL sources need no index.
    """
    if package.source != "index":
        return None
    url = package.index_url or index_url(package.name, package.version)
    return without_credentials(url.rstrip("/")) if url else None


def package_indexes(packages: Iterable[Package]) -> list[str]:
    """The distinct extra indexes a set of pins needs, sorted."""
    return sorted({url for package in packages if (url := package_index(package))})


def fetch_url(url: str) -> str:
    """Where to fetch from an index: PyTorch's public one moves to REPROBOX_TORCH_INDEX_URL.

    Only pip's command line sees the result, which may carry a mirror's credentials.
    """
    index = _data()["torch_index"]
    mirror = (os.environ.get(index["env"]) or "").rstrip("/")
    public = torch_index_base()
    if mirror and url.startswith(public + "/"):
        return mirror + url[len(public):]
    return url


def without_credentials(url: str) -> str:
    """`https://user:token@host/path` -> `https://host/path`."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def describe_index(url: str) -> str:
    """'the PyTorch cu121 index' for PyTorch's index, else 'the index URL'."""
    base, _, label = url.rstrip("/").rpartition("/")
    if base == torch_index_base() and re.match(_data()["torch_index"]["labels"], label):
        return f"the PyTorch {label} index"
    return f"the index {without_credentials(url)}"


def label_cuda(version: str) -> str | None:
    """The CUDA version a '+cuXYZ' label names (cog's rule: a dot before the last digit)."""
    match = re.fullmatch(r"cu(\d+)(\d)", local_label(version) or "")
    return f"{match[1]}.{match[2]}" if match else None


# ---------------------------------------------------------------------------- drivers


def min_driver(cuda: str) -> str | None:
    """The minimum Linux driver for CUDA 'X.Y[.Z]'; for a major alone, its first minor's floor."""
    floors: Mapping[str, str] = _data()["min_driver"]
    parts = _version(cuda)
    if parts is None:
        return None
    major, minor = parts
    if minor is not None:
        return floors.get(f"{major}.{minor}")
    same_major = sorted((version_key(v), d) for v, d in floors.items()
                        if version_key(v)[0] == major)
    return same_major[0][1] if same_major else None


def driver_satisfies(driver: str, cuda: str) -> bool | None:
    """Whether `driver` ('535.183.01') is new enough for CUDA `cuda`; None when not known."""
    floor = min_driver(cuda)
    if floor is None or not version_key(driver):
        return None
    return version_key(driver) >= version_key(floor)


# ---------------------------------------------------------------------------- the environment


def saw_gpu(manifest: Manifest) -> bool:
    """True when the captured run could see an NVIDIA GPU."""
    gpu = manifest.gpu
    if gpu is None or not gpu.devices:
        return False
    visible = gpu.visible_devices
    return visible is None or visible.strip().lower() not in _NO_GPU


def environment_cuda(manifest: Manifest) -> CudaUse | None:
    """The CUDA the environment is built for: torch's, the runtime wheel's, or a framework's."""
    stack = manifest.cuda
    if stack and stack.torch_cuda:
        return CudaUse(stack.torch_cuda, f"torch {stack.torch_version or ''}".strip())
    torch = next((p for p in manifest.python.packages if p.name == "torch"), None)
    torch_cuda = label_cuda(torch.version) if torch else None
    if torch and torch_cuda:
        return CudaUse(torch_cuda, f"torch {torch.version}")
    for wheel, version in sorted(_wheels(manifest).items()):
        parts = _version(version)
        if _wheel_part(wheel)[0] == _RUNTIME_WHEEL and parts:
            return CudaUse(_joined(parts), f"{wheel} {version}")
    use = next(_framework_uses(manifest), None)
    return CudaUse(_joined(use.cuda), use.label) if use else None


def is_cuda_build(manifest: Manifest) -> bool:
    """True when the environment carries or needs CUDA (whatever the capture host had)."""
    return environment_cuda(manifest) is not None


def toolkit_reason(manifest: Manifest) -> str | None:
    """Why the environment needs the system CUDA toolkit; None when pip's wheels suffice."""
    need = _toolkit_need(manifest)
    return need.reason if need else None


def base_image(manifest: Manifest) -> CudaBase | None:
    """The nvidia/cuda image the environment needs; None when a slim Python base serves."""
    need = _toolkit_need(manifest)
    if need is None:
        return None
    rows = _candidates(need, manifest)
    if not rows:
        wanted = f"{need.major}.{need.minor}" if need.minor is not None else f"{need.major}.x"
        raise RenderError(
            f"{DATA_FILE.name} has no nvidia/cuda image for CUDA {wanted} ({need.reason})",
            hint="pass --base-image IMAGE: an image with that CUDA toolkit and python3",
        )
    xy = ".".join(manifest.python.version.split(".")[:2])
    best = max(rows, key=lambda r: _preference(r, need, xy))
    return CudaBase(best["image"], best["cuda"], best["cudnn"], best["ubuntu"], best["python"],
                    need.reason)


# ---------------------------------------------------------------------------- helpers


def _version(text: str) -> tuple[int, int | None] | None:
    match = _VERSION.match(text.strip())
    if not match:
        return None
    return int(match[1]), int(match[2]) if match[2] is not None else None


def _joined(parts: tuple[int, int | None]) -> str:
    return f"{parts[0]}.{parts[1]}" if parts[1] is not None else str(parts[0])


def version_key(version: str | None) -> tuple[int, ...]:
    """'535.183.01' -> (535, 183, 1); '12.x' -> (12,); empty when it starts with no number."""
    numbers = []
    for part in (version or "").strip().split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def _wheels(manifest: Manifest) -> dict[str, str]:
    """nvidia-* wheels, from the CUDA probe and from the package list (older manifests)."""
    found = {p.name: p.version for p in manifest.python.packages if p.name.startswith("nvidia-")}
    if manifest.cuda:
        found.update(manifest.cuda.libraries)
    return found


def _wheel_part(name: str) -> tuple[str | None, int | None]:
    """'nvidia-cudnn-cu12' -> ('cudnn', 12); 'nvidia-cuda-runtime' -> ('cuda-runtime', None)."""
    match = _WHEEL.match(name)
    if not match:
        return None, None
    return match["part"], int(match["major"]) if match["major"] else None


def _wheel_major(name: str, version: str) -> int | None:
    """The CUDA major a wheel is for: its -cuNN suffix, else a cuda-* wheel's own version."""
    part, major = _wheel_part(name)
    if major is None and part and part.startswith("cuda-"):
        parts = _version(version)
        major = parts[0] if parts else None
    return major


def _has_wheel(wheels: Mapping[str, str], part: str, major: int) -> bool:
    return any(
        _wheel_part(name)[0] == part and _wheel_major(name, version) in (major, None)
        for name, version in wheels.items()
    )


@dataclass(frozen=True, slots=True)
class _FrameworkUse:
    name: str  # "cupy"
    rule: Mapping[str, Any]
    cuda: tuple[int, int | None]
    label: str  # "cupy-cuda12x 13.3.0", or the framework's name when no package says more
    version: str  # the package's version, "" when unknown


def _framework_uses(manifest: Manifest) -> Iterator[_FrameworkUse]:
    """Each CUDA framework in use: named by the CUDA probe, or by a package like cupy-cuda12x."""
    probed = manifest.cuda.frameworks if manifest.cuda else {}
    for name, rule in sorted(_data()["frameworks"].items()):
        for package in manifest.python.packages:
            match = re.match(rule["package"], package.name)
            if match:
                cuda = _version(probed.get(name) or next(iter(match.groups()), None) or "")
                if cuda:
                    label = f"{package.name} {package.version}"
                    yield _FrameworkUse(name, rule, cuda, label, package.version)
                break
        else:
            cuda = _version(probed.get(name, ""))
            if cuda:
                yield _FrameworkUse(name, rule, cuda, name, "")


def _toolkit_need(manifest: Manifest) -> _Need | None:
    wheels = _wheels(manifest)
    for use in _framework_uses(manifest):
        reason = _why_system(use, wheels)
        if reason:
            return _Need(use.name, use.cuda[0], use.cuda[1], bool(use.rule.get("cudnn")), reason)
    return None


def _why_system(use: _FrameworkUse, wheels: Mapping[str, str]) -> str | None:
    major = use.cuda[0]
    below = use.rule.get("always_below")
    if below and version_key(use.version) and version_key(use.version) < version_key(str(below)):
        return f"{use.label} loads CUDA {major} from the system (no wheels carry it before {below})"
    missing = [part for part in use.rule["wheels"] if not _has_wheel(wheels, part, major)]
    if missing:
        names = ", ".join(f"nvidia-{part}-cu{major}" for part in missing)
        return f"{use.label} for CUDA {major} without the {names} wheels"
    return None


def _candidates(need: _Need, manifest: Manifest) -> list[Mapping[str, Any]]:
    rows = [r for r in _data()["base_images"]
            if version_key(r["cuda"])[0] == need.major and (r["cudnn"] or not need.cudnn)]
    if need.minor is not None:
        exact = [r for r in rows if version_key(r["cuda"])[1] == need.minor]
        rows = exact or [r for r in rows if version_key(r["cuda"])[1] > need.minor]
    driver_cuda = version_key(manifest.gpu.cuda_driver_version or "") if manifest.gpu else ()
    if driver_cuda:
        # nvidia/cuda images refuse to start on a driver older than their CUDA (NVIDIA_REQUIRE_CUDA)
        supported = [r for r in rows if version_key(r["cuda"])[:2] <= driver_cuda[:2]]
        rows = supported or rows
    return rows


def _preference(row: Mapping[str, Any], need: _Need, python_xy: str) -> tuple[Any, ...]:
    return (row["python"] == python_xy, need.cudnn or not row["cudnn"], version_key(row["cuda"]),
            version_key(row["ubuntu"]))
