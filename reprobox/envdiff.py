"""Why two runs may differ: their environments compared, most likely explanation first.

Pure: records in, records out. The original's environment comes from its manifest
(`of_manifest`); a replay's from the probe run in a container made like the replay's
(`from_probe`), which replay keeps as the replay's `environment.json`. `differences` weighs each
thing that differs by the table in reprobox/data/envdiff.yaml: 3 likely, 2 possible, 1 unlikely.
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import functools
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from reprobox import preflight
from reprobox.capture import gpu as gpu_probe
from reprobox.capture.cuda_stack import from_report
from reprobox.capture.python_env import PROBE_SCRIPT, python_record
from reprobox.compare.result import EnvironmentDifference
from reprobox.errors import BundleError, ProbeUnavailable
from reprobox.manifest import Blas, CudaStack, Gpu, Gpus, Manifest, Package, Python, Scalar, System

DATA_FILE = Path(__file__).with_name("data") / "envdiff.yaml"
# Mounted side by side into the container: the first runs, and loads the second (capture's own).
PROBE_SCRIPTS = (PROBE_SCRIPT.with_name("container_probe.py"), PROBE_SCRIPT)
LIKELY, POSSIBLE, UNLIKELY = 3, 2, 1
MAX_LISTED = 6  # packages named in a row that gathers a group of them
_NEVER_IMAGED = frozenset({"reprobox"})
ABSENT = "not installed"
_UNUSED = "the run used no GPU"
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Environment:
    """What one run ran on, as far as it can explain the run's numbers."""

    python: Python | None = None
    system: System | None = None  # `blas`: the BLAS the environment's numpy loads
    gpu: Gpus | None = None  # the GPUs the run was given (the host's, where none were)
    cuda: CudaStack | None = None
    gpu_used: bool = False
    state: Mapping[str, Scalar] = field(default_factory=dict)  # the shim's, at the run's end
    notes: tuple[str, ...] = ()  # what could not be recorded, and why

    def to_json(self) -> str:
        """Indented JSON: the replay's `environment.json`."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> Environment:
        """Read `to_json`'s text back; BundleError naming `source` if it is not one."""
        try:
            data = json.loads(text)
            return cls(
                python=_maybe(_python, data.get("python")),
                system=_maybe(_system, data.get("system")),
                gpu=_maybe(_gpus, data.get("gpu")),
                cuda=_maybe(lambda d: CudaStack(**d), data.get("cuda")),
                gpu_used=bool(data.get("gpu_used")),
                state=dict(data.get("state") or {}),
                notes=tuple(data.get("notes") or ()),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BundleError(f"{source}: not an environment record ({exc})",
                              hint="replay the run again to record its environment") from None


def _maybe(build: Callable[[Any], _T], data: Any) -> _T | None:
    return None if data is None else build(data)


def _python(data: Mapping[str, Any]) -> Python:
    return Python(**{**data, "packages": tuple(Package(**p) for p in data["packages"])})


def _system(data: Mapping[str, Any]) -> System:
    return System(**{**data, "cpu_flags": tuple(data["cpu_flags"]),
                     "blas": tuple(Blas(**b) for b in data["blas"])})


def _gpus(data: Mapping[str, Any]) -> Gpus:
    return Gpus(**{**data, "devices": tuple(Gpu(**g) for g in data["devices"])})


# --- the two sides ------------------------------------------------------------------------------


def of_manifest(manifest: Manifest) -> Environment:
    """The original run's environment, as its manifest recorded it."""
    return Environment(manifest.python, manifest.system, manifest.gpu, manifest.cuda,
                       preflight.used_gpu(manifest), dict(manifest.determinism.state))


def of_state(state: Mapping[str, Scalar], note: str) -> Environment:
    """A replay whose environment was not recorded: only the shim's state is known."""
    return Environment(gpu_used=_state_used_gpu(state), state=dict(state), notes=(note,))


def probe_command(folder: str) -> tuple[str, ...]:
    """The command that runs the probe mounted at `folder` with the image's Python.

    `-I` keeps the shim and the project off sys.path: what is listed is the environment itself.
    """
    return ("python", "-I", f"{folder}/{PROBE_SCRIPTS[0].name}", ",".join(gpu_probe.SMI_FIELDS))


def from_probe(report: Mapping[str, Any], state: Mapping[str, Scalar], gpus_passed: bool,
               host_gpus: Gpus) -> Environment:
    """A replay's environment from its container probe's report (capture/container_probe.py).

    The GPUs are nvidia-smi's answer inside the container when the replay was given GPUs, else
    `host_gpus` (what the preflight saw). Raises ProbeUnavailable for a report that is not one.
    """
    try:
        interpreter = report["interpreter"]
        python = python_record(interpreter)
        blas = tuple(_blas(item) for item in interpreter.get("blas") or ())
        system = _probed_system(report["system"], blas)
        cuda = from_report(interpreter.get("cuda_files"), python.packages)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProbeUnavailable(f"unexpected environment report ({exc!r})") from None
    gpus, notes = _replay_gpus(report.get("nvidia_smi"), gpus_passed, host_gpus, state)
    return Environment(python, system, gpus, cuda, _state_used_gpu(state), dict(state), notes)


def _blas(item: Mapping[str, Any]) -> Blas:
    threads = item.get("num_threads")
    return Blas(name=str(item["name"]), version=_optional(item.get("version")),
                threading=_optional(item.get("threading")),
                num_threads=None if threads is None else int(threads),
                provider=_optional(item.get("provider")))


def _optional(value: Any) -> str | None:
    return None if value is None else str(value)


def _probed_system(data: Mapping[str, Any], blas: tuple[Blas, ...]) -> System:
    release = data.get("os_release") or {}
    return System(
        os_id=str(release.get("ID", "unknown")),
        os_version=str(release.get("VERSION_ID", "unknown")),
        os_name=str(release.get("PRETTY_NAME") or release.get("NAME") or "unknown"),
        kernel=str(data["kernel"]), arch=str(data["arch"]), libc=str(data["libc"]),
        cpu_model=str(data["cpu_model"]), cpu_count=int(data["cpu_count"]),
        cpu_flags=tuple(str(flag) for flag in data["cpu_flags"]), blas=blas)


def _replay_gpus(smi: Any, passed: bool, host: Gpus,
                 state: Mapping[str, Scalar]) -> tuple[Gpus, tuple[str, ...]]:
    if not passed:
        return host, ()
    visible = state.get("env.CUDA_VISIBLE_DEVICES")
    try:
        return _from_nvidia_smi(smi, visible if isinstance(visible, str) else None), ()
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return host, (f"GPUs as the host reported them: inside the container, {exc}",)


def _from_nvidia_smi(smi: Any, visible: str | None) -> Gpus:
    if not smi:
        raise ValueError("there is no nvidia-smi")
    query = smi["query"]
    if query["returncode"] != 0:
        said = (query["stderr"] or query["stdout"]).strip().splitlines() or ["no output"]
        raise ValueError(f"nvidia-smi failed: {said[0]}")
    fields = str(smi["fields"]).split(",")
    devices = gpu_probe.parse_query(query["stdout"], fields)
    rows = [row for row in csv.reader(query["stdout"].splitlines(), skipinitialspace=True) if row]
    driver = rows[0][fields.index("driver_version")].strip() if devices else None
    cuda = gpu_probe.cuda_version_in(smi["header"]["stdout"])
    return Gpus("nvidia-smi" if devices else "none", driver, cuda, devices, visible)


def _state_used_gpu(state: Mapping[str, Scalar]) -> bool:
    return bool(state.get("torch.cuda.devices_used")) or state.get("torch.cuda.initialized") is True


# --- differences --------------------------------------------------------------------------------


def differences(original: Environment, replay: Environment) -> list[EnvironmentDifference]:
    """What differs between two runs' environments, most likely explanation first.

    A part one side did not record (an older replay, a probe that failed) is left out, not
    reported as different.
    """
    found: list[EnvironmentDifference] = []
    if original.python and replay.python:
        found += _python_differences(original.python, replay.python)
        found += _package_differences(original.python.packages, replay.python.packages)
    if original.system and replay.system:
        found += _system_differences(original.system, replay.system)
        found += _blas_differences(original.system.blas, replay.system.blas)
    if original.gpu and replay.gpu:
        found += _gpu_differences(original.gpu, replay.gpu,
                                  original.gpu_used or replay.gpu_used)
    found += _state_differences(original.state, replay.state)
    return sorted(found, key=lambda d: (-d.weight, d.what))


def _differs(what: str, original: object, replay: object, weight: int,
             why: str) -> list[EnvironmentDifference]:
    """One difference when `original != replay`, else none."""
    if original == replay:
        return []
    return [EnvironmentDifference(what, _text(original), _text(replay), weight, why)]


def _text(value: object) -> str:
    return "unset" if value is None else str(value)


def _python_differences(a: Python, b: Python) -> list[EnvironmentDifference]:
    same_minor = a.version.split(".")[:2] == b.version.split(".")[:2]
    why = ("a patch release changes no numerics; its packages do" if same_minor
           else "another Python release runs other builds of every package")
    return [*_differs("Python implementation", a.implementation, b.implementation, LIKELY,
                      "another interpreter brings other math and float formatting"),
            *_differs("Python", a.version, b.version, UNLIKELY if same_minor else LIKELY, why)]


def _package_differences(a: Iterable[Package],
                         b: Iterable[Package]) -> list[EnvironmentDifference]:
    before = {package.name: package.version for package in a}
    after = {package.name: package.version for package in b}
    # reprobox itself is never in the image (the shim is copied in instead): not a difference
    changed = sorted(name for name in before.keys() | after.keys()
                     if before.get(name) != after.get(name) and name not in _NEVER_IMAGED)
    found: list[EnvironmentDifference] = []
    gathered: dict[str, tuple[int, str, list[str]]] = {}
    for name in changed:
        weight, why, label = package_weight(name)
        if label is None:
            found.append(EnvironmentDifference(name, before.get(name, ABSENT),
                                               after.get(name, ABSENT), weight, why))
        else:
            gathered.setdefault(label, (weight, why, []))[2].append(name)
    for label, (weight, why, names) in gathered.items():
        found.append(_gathered(label, names, before, after, weight, why))
    return found


def _gathered(label: str, names: Sequence[str], before: Mapping[str, str],
              after: Mapping[str, str], weight: int, why: str) -> EnvironmentDifference:
    """One row for a group of packages: a CUDA move or a dozen utilities would drown the rest."""

    def listed(versions: Mapping[str, str]) -> str:
        present = [f"{name} {versions[name]}" for name in names if name in versions]
        more = len(present) - MAX_LISTED
        return ", ".join(present[:MAX_LISTED]) + (f", … (+{more})" if more > 0 else "") or ABSENT

    what = names[0] if len(names) == 1 else f"{label} ({len(names)} packages)"
    return EnvironmentDifference(what, listed(before), listed(after), weight, why)


def package_weight(name: str) -> tuple[int, str, str | None]:
    """How likely another version of package `name` changes a run's numbers, why, and the label
    of the row it is gathered in (None: a row of its own)."""
    for group in _table()["packages"]:
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in group["names"]):
            return int(group["weight"]), str(group["why"]), group.get("label")
    return UNLIKELY, "outside the numerical stack: unlikely to change the numbers", \
        "other packages"


def _system_differences(a: System, b: System) -> list[EnvironmentDifference]:
    simd = set(_table()["cpu_flags"])
    only_a = sorted(simd & set(a.cpu_flags) - set(b.cpu_flags))
    only_b = sorted(simd & set(b.cpu_flags) - set(a.cpu_flags))
    return [
        *_differs("architecture", a.arch, b.arch, LIKELY,
                  "another instruction set: every compiled kernel is another one"),
        *_differs("CPU instruction sets", " ".join(only_a) or "none extra",
                  " ".join(only_b) or "none extra", POSSIBLE,
                  "numpy and BLAS pick SIMD kernels by instruction set (AVX-512 vs AVX2), "
                  "which sum in another order"),
        *_differs("CPU model", a.cpu_model, b.cpu_model, POSSIBLE,
                  "BLAS libraries choose their kernels and blocking by CPU model"),
        *_differs("glibc", a.libc, b.libc, POSSIBLE,
                  "libm's exp, log and pow can round differently between releases"),
        *_differs("usable CPUs", a.cpu_count, b.cpu_count, UNLIKELY,
                  "thread counts are pinned; only code that sizes its own pools notices"),
        *_differs("OS", a.os_name, b.os_name, UNLIKELY,
                  "the image's OS; the numerics come from the packages"),
        *_differs("kernel", a.kernel, b.kernel, UNLIKELY, "the kernel does no arithmetic"),
    ]


def _blas_differences(a: Sequence[Blas], b: Sequence[Blas]) -> list[EnvironmentDifference]:
    if not a or not b:  # one side has no numpy, or could not say: nothing to weigh
        return []
    first, second = a[0], b[0]
    return [
        *_differs("BLAS", _blas_name(first), _blas_name(second), LIKELY,
                  "another BLAS build runs other kernels for every matrix product"),
        *_differs("BLAS threads", first.num_threads, second.num_threads, LIKELY,
                  "the thread count decides how sums are split, and so how they round"),
        *_differs("BLAS threading", first.threading, second.threading, POSSIBLE,
                  "another threading layer can split work differently"),
    ]


def _blas_name(blas: Blas) -> str:
    return f"{blas.name} {blas.version}" if blas.version else blas.name


def _gpu_differences(a: Gpus, b: Gpus, used: bool) -> list[EnvironmentDifference]:
    likely, possible = (LIKELY, POSSIBLE) if used else (UNLIKELY, UNLIKELY)
    found = _differs("GPU model", _models(a), _models(b), likely,
                     "another GPU runs other kernels (tile sizes, SM count) and sums in another "
                     "order" if used else _UNUSED)
    if not (a.devices and b.devices):
        return found
    return [
        *found,
        *_differs("GPU compute capability", _capabilities(a), _capabilities(b), likely,
                  "kernels are compiled and chosen per compute capability" if used else _UNUSED),
        *_differs("GPU count", len(a.devices), len(b.devices), possible,
                  "work split over another number of GPUs reduces in another order"
                  if used else _UNUSED),
        *_differs("NVIDIA driver", a.driver_version, b.driver_version, possible,
                  "the driver's JIT compiler and libraries can pick other kernels"
                  if used else _UNUSED),
        *_differs("CUDA (driver)", a.cuda_driver_version, b.cuda_driver_version, possible,
                  "the driver's CUDA can change which kernels load" if used else _UNUSED),
    ]


def _models(gpus: Gpus) -> str:
    counts = Counter(gpu.name for gpu in gpus.devices)
    return ", ".join(f"{count}× {name}" for name, count in sorted(counts.items())) or "none"


def _capabilities(gpus: Gpus) -> str:
    return ", ".join(sorted({gpu.compute_capability or "unknown" for gpu in gpus.devices}))


def _state_differences(a: Mapping[str, Scalar],
                       b: Mapping[str, Scalar]) -> list[EnvironmentDifference]:
    """The shim's records that differ; keys one side lacks say nothing (torch not imported).

    An empty state is an unknown one; `processes: 0` says the shim never reported.
    """
    if not (a and b):
        return []
    if not (_recorded(a) and _recorded(b)):
        return _differs("seeding shim", _shim_ran(a), _shim_ran(b), LIKELY,
                        "without the shim the run was not seeded and drew other numbers")
    found: list[EnvironmentDifference] = []
    for key, (label, weight, why) in _state_keys().items():
        if key in a and key in b:
            found += _differs(label, a[key], b[key], weight, why)
    return found


def _recorded(state: Mapping[str, Scalar]) -> bool:
    return state.get("processes") != 0


def _shim_ran(state: Mapping[str, Scalar]) -> str:
    if not _recorded(state):
        return "did not report"
    return f"ran in {state.get('processes', 1)} process(es)"


@functools.cache
def _state_keys() -> dict[str, tuple[str, int, str]]:
    """State key -> (label, weight, why), from the table."""
    return {key: (str(label), int(group["weight"]), str(group["why"]))
            for group in _table()["state"] for key, label in group["keys"].items()}


@functools.cache
def _table() -> Mapping[str, Any]:
    table: Mapping[str, Any] = yaml.safe_load(DATA_FILE.read_text(encoding="utf-8"))
    return table
