"""The Manifest: one frozen, versioned record of a run, and its safe YAML form on disk.

Every stage reads a Manifest and none mutates it (`dataclasses.replace` makes changed
copies). On disk it is YAML written with every string double-quoted, so values such as
`1.10`, `NO` or an all-digit commit read back as the same strings, and read with a safe
loader that refuses tags, duplicate keys, unknown fields and newer schema versions.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from reprobox.errors import ManifestError
from reprobox.fileio import atomic_write

SECRET_MASK = "***"  # what stands in a recorded argv, env value or log for a secret
SCHEMA_VERSION = 4  # 2: `gpu`/`cuda`, 3: `determinism.warn_only`, 4: `outputs[].ulps`
Scalar = str | int | float | bool | None
PackageSource = Literal["index", "local", "editable", "vcs", "url"]


@dataclass(frozen=True, slots=True)
class Package:
    """One installed distribution and where it came from (PEP 610 direct_url.json)."""

    name: str  # PEP 503-normalised
    version: str  # exact, local label included: "2.3.0+cpu"
    source: PackageSource = "index"
    url: str | None = None  # path or VCS/archive URL for non-index sources, credentials masked
    commit: str | None = None  # VCS commit id
    subdirectory: str | None = None
    index_url: str | None = None  # the wheel index it needs besides the default one (torch +cu121)


@dataclass(frozen=True, slots=True)
class Python:
    """The interpreter that ran the command and every distribution installed in it."""

    version: str  # "3.11.7"
    implementation: str  # "cpython"
    executable: str
    abi_tag: str  # "cp311"
    platform_tag: str  # "linux_x86_64"
    packages: tuple[Package, ...] = ()


@dataclass(frozen=True, slots=True)
class Blas:
    """A BLAS/LAPACK library loaded by the environment's numerical packages."""

    name: str
    version: str | None = None
    threading: str | None = None
    num_threads: int | None = None
    provider: str | None = None  # the package that loaded it, e.g. "numpy"


@dataclass(frozen=True, slots=True)
class System:
    """The host: OS, kernel, CPU and the BLAS libraries in use."""

    os_id: str  # "debian"
    os_version: str  # "12"
    os_name: str  # "Debian GNU/Linux 12 (bookworm)"
    kernel: str
    arch: str
    libc: str  # "glibc 2.36"
    cpu_model: str
    cpu_count: int
    cpu_flags: tuple[str, ...] = ()
    blas: tuple[Blas, ...] = ()


@dataclass(frozen=True, slots=True)
class Gpu:
    """One NVIDIA GPU on the host."""

    index: int
    name: str  # "NVIDIA H100 80GB HBM3"
    uuid: str
    memory_mib: int
    compute_capability: str | None = None  # "9.0"; None where the driver cannot say
    mig_mode: str | None = None  # "Enabled" / "Disabled"; None on GPUs without MIG
    pci_bus_id: str | None = None


@dataclass(frozen=True, slots=True)
class Gpus:
    """The host's NVIDIA driver and GPUs; `source="none"` records that there were none."""

    source: Literal["nvml", "nvidia-smi", "none"]
    driver_version: str | None = None  # "550.54.15"
    cuda_driver_version: str | None = None  # newest CUDA the driver supports: "12.4"
    devices: tuple[Gpu, ...] = ()
    visible_devices: str | None = None  # CUDA_VISIBLE_DEVICES as the run saw it

    def describe(self) -> str:
        """One line for people: "1× NVIDIA H100 80GB HBM3 (9.0), driver 580.159.04, CUDA 13.0"."""
        if not self.devices:
            return "no NVIDIA GPU"
        names = sorted({(gpu.name, gpu.compute_capability) for gpu in self.devices})
        models = ", ".join(f"{sum(g.name == n for g in self.devices)}× {n}"
                           + (f" ({cc})" if cc else "") for n, cc in names)
        driver = f", driver {self.driver_version}" if self.driver_version else ""
        cuda = f", CUDA {self.cuda_driver_version}" if self.cuda_driver_version else ""
        return models + driver + cuda


@dataclass(frozen=True, slots=True)
class CudaStack:
    """The CUDA the Python environment carries, read from its files (torch is not imported)."""

    torch_version: str | None = None  # "2.4.0+cu121"
    torch_cuda: str | None = None  # "12.1" (torch/version.py); None for CPU builds
    libraries: Mapping[str, str] = field(default_factory=dict)  # nvidia-* wheels: name → version
    frameworks: Mapping[str, str] = field(default_factory=dict)  # cupy/jax/tensorflow CUDA builds


@dataclass(frozen=True, slots=True)
class Git:
    """The state of the project's git repository at capture time."""

    commit: str
    branch: str | None
    remote: str | None  # credentials stripped
    dirty: bool
    diff_file: str | None = None  # "git.diff" inside the bundle, when dirty
    diff_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class FileRecord:
    """A declared input: a file the run read, by path relative to the project."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Output:
    """An output of the run, its digest, whether a copy is in the bundle, and its tolerance."""

    path: str  # relative to the project root
    sha256: str
    size: int
    stored: bool = True  # copied into the bundle's outputs/ (False when over the size cap)
    rtol: float = 1e-7
    atol: float = 0.0
    ulps: int | None = None  # float values this many units in the last place apart also agree


@dataclass(frozen=True, slots=True)
class Determinism:
    """What the shim injects, identically on the host and in the image."""

    seed: int
    python_hash_seed: str
    threads: int  # OMP/MKL/OpenBLAS thread counts
    deterministic: bool = True  # torch deterministic algorithms and cuDNN flags
    warn_only: bool = False  # ops with no deterministic kernel warn (and are recorded), not fail
    env: Mapping[str, str] = field(default_factory=dict)  # set before the interpreter starts
    state: Mapping[str, Scalar] = field(default_factory=dict)  # in force at the end of the run


@dataclass(frozen=True, slots=True)
class Run:
    """The command, where and how it ran, and how it ended."""

    argv: tuple[str, ...]  # secrets masked
    project: str  # project folder name
    workdir: str  # relative to the project root, "." for the root
    started: str  # ISO 8601, UTC
    duration_s: float
    exit_code: int
    env: Mapping[str, str] = field(default_factory=dict)  # allowlisted and redacted
    env_redacted: tuple[str, ...] = ()  # names recorded without values
    env_not_captured: int = 0


@dataclass(frozen=True, slots=True)
class Manifest:
    """The one record of a captured run; `to_dict`/`from_dict` are its only (de)serialisers."""

    schema_version: int
    created_by: str
    run: Run
    determinism: Determinism
    python: Python
    system: System
    git: Git | None = None
    gpu: Gpus | None = None  # None: not probed (schema 1 manifests)
    cuda: CudaStack | None = None
    inputs: tuple[FileRecord, ...] = ()
    outputs: tuple[Output, ...] = ()
    source_files: tuple[FileRecord, ...] = ()  # the project snapshot copied into the bundle
    notes: tuple[str, ...] = ()  # probes that could not answer, and why

    @property
    def succeeded(self) -> bool:
        """True when the original command exited 0."""
        return self.run.exit_code == 0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in field order, ready for YAML or JSON."""
        return _to_plain(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Any, source: str = "manifest") -> Manifest:
        """Validate and build a Manifest, naming `source` and the field on any error."""
        if not isinstance(data, Mapping):
            raise ManifestError(f"{source}: expected a mapping at the top level")
        _check_version(data, source)
        return _from_plain(cls, _migrate(data), source, "")  # type: ignore[no-any-return]


def dumps(manifest: Manifest) -> str:
    """Render a manifest as YAML with every string quoted."""
    return yaml.dump(
        manifest.to_dict(), Dumper=_QuotingDumper, sort_keys=False, allow_unicode=True, width=1000
    )


def loads(text: str, source: str = "manifest") -> Manifest:
    """Parse YAML text into a Manifest; refuses unsafe tags, duplicate keys and newer schemas."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader is a SafeLoader
    except yaml.constructor.ConstructorError as exc:
        raise ManifestError(
            f"{source}: refused YAML ({exc.problem})",
            hint="manifests hold plain data only; was it edited or tampered with?",
        ) from None
    except yaml.YAMLError as exc:
        raise ManifestError(
            f"{source}: not valid YAML ({_yaml_where(exc)})",
            hint="the file is corrupt or truncated; capture the run again",
        ) from None
    return Manifest.from_dict(data, source)


def read(path: Path) -> Manifest:
    """Read and validate a manifest file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(
            f"{path}: no such manifest", hint="run `reprobox capture -- CMD` first"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc})") from None
    return loads(text, str(path))


def write(manifest: Manifest, path: Path) -> None:
    """Write a manifest atomically."""
    atomic_write(path, dumps(manifest))


# --- YAML dialect -------------------------------------------------------------------------


# libyaml's C emitter and parser when present: same bytes and rules, several times faster.
_SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _QuotingDumper(_SafeDumper):  # type: ignore[misc,valid-type]
    """SafeDumper that double-quotes every string so YAML 1.1 cannot re-type it."""


def _quoted_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')


def _plain_keys(dumper: yaml.SafeDumper, value: dict[str, Any]) -> yaml.MappingNode:
    node = dumper.represent_mapping("tag:yaml.org,2002:map", value.items())
    for key_node, _ in node.value:
        plain_tag = dumper.resolve(  # type: ignore[no-untyped-call]
            yaml.ScalarNode, key_node.value, (True, False)
        )
        if key_node.value.isidentifier() and plain_tag == "tag:yaml.org,2002:str":
            key_node.style = None  # field names stay readable; keys like `NO` stay quoted
    return node


_QuotingDumper.add_representer(str, _quoted_str)
_QuotingDumper.add_representer(dict, _plain_keys)


class _StrictLoader(_SafeLoader):  # type: ignore[misc,valid-type]
    """SafeLoader that rejects duplicate keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    return f"{problem} at line {mark.line + 1}" if mark else str(problem)


# --- validation and conversion ----------------------------------------------------------------


def _check_version(data: Mapping[str, Any], source: str) -> None:
    version = data.get("schema_version")
    if version is None:
        raise ManifestError(
            f"{source}: missing schema_version", hint="is this a reprobox manifest?"
        )
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ManifestError(
            f"{source}: schema_version must be a positive integer, got {version!r}",
            hint="the file was edited or is not a reprobox manifest",
        )
    if version > SCHEMA_VERSION:
        raise ManifestError(
            f"{source}: written by a newer reprobox (schema {version}; this one reads up to "
            f"{SCHEMA_VERSION})",
            hint="upgrade reprobox: pip install -U reprobox",
        )


def _migrate(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """Bring an older manifest up to SCHEMA_VERSION in memory; the file is left as it is."""
    # Version 1 had no GPU probe: absent `gpu`/`cuda` mean "not probed", as they do now.
    # Version 2 had no `determinism.warn_only`: absent means strict, as it does now.
    # Version 3 had no `outputs[].ulps`: absent means no ULP tolerance, as it does now.
    return {**data, "schema_version": SCHEMA_VERSION}


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_to_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _to_plain(item) for key, item in sorted(value.items())}
    return value


def _from_plain(kind: Any, value: Any, source: str, where: str) -> Any:
    """Convert plain YAML data to `kind`, raising ManifestError that names `where`."""
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return _build_dataclass(kind, value, source, where)
    if origin in (typing.Union, types.UnionType):
        return _from_union(kind, value, source, where)
    if origin is Literal:
        if value not in typing.get_args(kind):
            _fail(source, where, f"must be one of {', '.join(typing.get_args(kind))}", value)
        return value
    if origin is tuple:
        if not isinstance(value, list):
            _fail(source, where, "expected a list", value)
        item_kind = typing.get_args(kind)[0]
        return tuple(
            _from_plain(item_kind, v, source, f"{where}[{i}]") for i, v in enumerate(value)
        )
    if origin is Mapping:
        return _from_mapping(kind, value, source, where)
    return _from_scalar(kind, value, source, where)


def _from_union(kind: Any, value: Any, source: str, where: str) -> Any:
    options = typing.get_args(kind)
    if value is None and type(None) in options:
        return None
    if kind == Scalar:
        if isinstance(value, (str, int, float, bool)):
            return value
        _fail(source, where, "expected a string, number or boolean", value)
    (inner,) = [option for option in options if option is not type(None)]
    return _from_plain(inner, value, source, where)


def _from_mapping(kind: Any, value: Any, source: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        _fail(source, where, "expected a mapping", value)
    value_kind = typing.get_args(kind)[1]
    return {
        _from_scalar(str, key, source, f"{where}.<key>"): _from_plain(
            value_kind, item, source, f"{where}.{key}"
        )
        for key, item in value.items()
    }


def _from_scalar(kind: type, value: Any, source: str, where: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        _fail(source, where, f"expected {kind.__name__}", value)
    return value


def _build_dataclass(kind: Any, value: Any, source: str, where: str) -> Any:
    if not isinstance(value, Mapping):
        _fail(source, where or "<top>", "expected a mapping", value)
    hints = typing.get_type_hints(kind)
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(value) - names)
    if unknown:
        raise ManifestError(
            f"{source}: unknown field {_join(where, str(unknown[0]))!r}",
            hint="was it written by another tool or a newer reprobox?",
        )
    required = {
        f.name
        for f in dataclasses.fields(kind)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(value))
    if missing:
        raise ManifestError(
            f"{source}: missing field {_join(where, missing[0])!r}",
            hint="the file is incomplete or was edited; capture the run again",
        )
    args = {k: _from_plain(hints[k], v, source, _join(where, k)) for k, v in value.items()}
    return kind(**args)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _fail(source: str, where: str, problem: str, value: Any) -> typing.NoReturn:
    shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
    raise ManifestError(
        f"{source}: field {where!r}: {problem}, got {shown}",
        hint="the file was edited or damaged; capture the run again",
    )
