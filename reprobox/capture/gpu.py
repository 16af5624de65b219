"""Probe the host's NVIDIA driver and GPUs: NVML first, then nvidia-smi, else a recorded "none".

NVML (through nvidia-ml-py, module `pynvml`, optional) is asked first: NVIDIA keeps it and its
Python bindings backwards compatible, which nvidia-smi's output is not. Where NVML cannot answer,
`nvidia-smi --query-gpu` is run with a short timeout, and where that cannot answer either, the
answer is `Gpus(source="none")`: no GPU is a recorded fact, not a missing one.

Notes say what went wrong on the way, so a GPU host whose driver is broken is not mistaken for a
CPU host. A plain CPU host says nothing: no `pynvml`, NVML's library not found, or no
`nvidia-smi` program are the normal state of a machine without an NVIDIA driver and give no
note. Everything else does: NVML failing to start (driver not loaded, no permission), a driver
that lists no GPU, a device NVML cannot read, and nvidia-smi hanging, failing (the "couldn't
communicate with the NVIDIA driver" error, exit 9) or printing what cannot be read.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from reprobox.capture.runner import Runner, RunOutput
from reprobox.errors import ProbeUnavailable
from reprobox.manifest import Gpu, Gpus

SMI_TIMEOUT_S = 10.0  # a hung driver makes nvidia-smi hang; read at call time, so tests shorten it
SMI_FIELDS: tuple[str, ...] = (
    "index", "name", "uuid", "memory.total", "compute_cap", "mig.mode.current", "pci.bus_id",
    "driver_version",
)
# Fields an older nvidia-smi may not know (compute_cap came with driver 510): asked without them.
_OPTIONAL_FIELDS = frozenset({"compute_cap", "mig.mode.current", "pci.bus_id"})
_UNKNOWN_FIELD = re.compile(r'Field "([^"]+)" is not a valid field to query')
_CUDA_VERSION = re.compile(r"CUDA Version\s*:\s*(\d+\.\d+)")
_NOT_A_VALUE = frozenset({"", "N/A", "[N/A]", "Not Supported", "[Not Supported]", "Unknown"})
_MIG_MODES = {0: "Disabled", 1: "Enabled"}  # NVML_DEVICE_MIG_DISABLE / NVML_DEVICE_MIG_ENABLE
_MIB = 2**20
_NOT_INSTALLED = "command not found"  # how subprocess_runner says the program does not exist
_SILENT_NVML_ERRORS = frozenset({"NVMLError_LibraryNotFound"})  # no driver: a CPU host


class _NoAnswer(Exception):
    """A source could not answer; `notes` say why (empty where silence is right)."""

    def __init__(self, *notes: str) -> None:
        super().__init__(*notes)
        self.notes = notes


Answer = tuple[Gpus, tuple[str, ...]]


def probe(
    runner: Runner, environ: Mapping[str, str], nvml: Any | None = None,
    *, nvidia_smi: str = "nvidia-smi",
) -> Answer:
    """The host's NVIDIA driver and GPUs, and notes on anything that could not be read.

    `nvml` is a `pynvml`-like module (None: import nvidia-ml-py's `pynvml` if installed);
    `nvidia_smi` the program to run where NVML cannot answer. The GPUs are listed in NVML's
    (PCI bus) order; `visible_devices` is CUDA_VISIBLE_DEVICES as `environ` has it.
    """
    sources: tuple[Callable[[], Answer], ...] = (
        lambda: _from_nvml(_load_nvml() if nvml is None else nvml),
        lambda: _from_nvidia_smi(runner, nvidia_smi),
    )
    notes: list[str] = []
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    for read in sources:
        try:
            gpus, more = read()
        except _NoAnswer as unanswered:
            notes.extend(unanswered.notes)
            continue
        return replace(gpus, visible_devices=visible), (*notes, *more)
    return Gpus(source="none", visible_devices=visible), tuple(notes)


# --- NVML ---------------------------------------------------------------------------------


def _load_nvml() -> Any | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the old `pynvml` package warns that it is deprecated
            return importlib.import_module("pynvml")
    except ImportError:
        return None


def _from_nvml(nvml: Any | None) -> Answer:
    if nvml is None:
        raise _NoAnswer()
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        silent = type(exc).__name__ in _SILENT_NVML_ERRORS
        raise _NoAnswer(*(() if silent else (f"NVML: cannot start ({_error(exc)})",))) from None
    try:
        return _read_nvml(nvml)
    except (nvml.NVMLError, AttributeError) as exc:
        raise _NoAnswer(f"NVML: cannot read the GPUs ({_error(exc)}); asked nvidia-smi") from None
    finally:
        _call_quietly(nvml, "nvmlShutdown")


def _read_nvml(nvml: Any) -> Answer:
    driver = _text(nvml.nvmlSystemGetDriverVersion())
    cuda = _optional(nvml, lambda: _cuda_version(nvml.nvmlSystemGetCudaDriverVersion()))
    devices = tuple(_nvml_gpu(nvml, index) for index in range(nvml.nvmlDeviceGetCount()))
    if not devices:
        notes = (f"NVML: driver {driver} is loaded but lists no GPU",)
        return Gpus(source="none", driver_version=driver, cuda_driver_version=cuda), notes
    gpus = Gpus(source="nvml", driver_version=driver, cuda_driver_version=cuda, devices=devices)
    return gpus, ()


def _nvml_gpu(nvml: Any, index: int) -> Gpu:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    return Gpu(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        memory_mib=int(nvml.nvmlDeviceGetMemoryInfo(handle).total) // _MIB,
        compute_capability=_optional(
            nvml, lambda: _capability(nvml.nvmlDeviceGetCudaComputeCapability(handle))),
        # GPUs without MIG raise NVMLError_NotSupported: no mode to record.
        mig_mode=_optional(nvml, lambda: _MIG_MODES.get(nvml.nvmlDeviceGetMigMode(handle)[0])),
        pci_bus_id=_optional(nvml, lambda: _text(nvml.nvmlDeviceGetPciInfo(handle).busId)),
    )


def _optional(nvml: Any, read: Callable[[], str | None]) -> str | None:
    """What `read` returns, or None where this GPU, driver or binding cannot say."""
    try:
        return read() or None
    except (nvml.NVMLError, AttributeError):  # AttributeError: an old binding lacks the call
        return None


def _call_quietly(nvml: Any, function: str) -> None:
    with contextlib.suppress(nvml.NVMLError, AttributeError):
        getattr(nvml, function)()


def _capability(major_minor: Sequence[int]) -> str:
    return f"{major_minor[0]}.{major_minor[1]}"


def _cuda_version(encoded: int) -> str:
    """NVML's 13000 → "13.0", 12040 → "12.4" (major * 1000 + minor * 10)."""
    return f"{encoded // 1000}.{encoded % 1000 // 10}"


def _text(value: object) -> str:
    """nvidia-ml-py returns str since 11.5xx and bytes before."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text.strip("\x00 ")


def _error(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


# --- nvidia-smi ---------------------------------------------------------------------------


def _from_nvidia_smi(runner: Runner, program: str) -> Answer:
    fields, text = _query(runner, program)
    try:
        rows = _rows(text, fields)
        devices = tuple(_smi_gpu(row) for row in rows)
    except (KeyError, ValueError) as exc:
        raise _NoAnswer(f"nvidia-smi: cannot read its --query-gpu output ({exc})") from None
    if not devices:
        raise _NoAnswer("nvidia-smi: the driver lists no GPU")
    cuda, notes = _smi_cuda_version(runner, program)
    driver = _present(rows[0].get("driver_version", ""))
    gpus = Gpus(
        source="nvidia-smi", driver_version=driver, cuda_driver_version=cuda, devices=devices,
    )
    return gpus, notes


def _query(runner: Runner, program: str) -> tuple[tuple[str, ...], str]:
    """Run the device query, asking again without each optional field the program rejects."""
    fields = SMI_FIELDS
    for _ in range(len(_OPTIONAL_FIELDS) + 1):
        output = _run(runner, [program, f"--query-gpu={','.join(fields)}",
                               "--format=csv,noheader,nounits"])
        unknown = _UNKNOWN_FIELD.search(output.stdout + output.stderr)
        if output.returncode == 0 or not unknown or unknown.group(1) not in _OPTIONAL_FIELDS:
            break
        fields = tuple(field for field in fields if field != unknown.group(1))
    if output.returncode != 0:
        raise _NoAnswer(f"nvidia-smi: {_first_line(output)} (exit {output.returncode})")
    return fields, output.stdout


def _smi_cuda_version(runner: Runner, program: str) -> tuple[str | None, tuple[str, ...]]:
    """The CUDA version from the header of plain `nvidia-smi`; the query has no field for it."""
    try:
        output = _run(runner, [program])
    except _NoAnswer as unanswered:
        return None, unanswered.notes
    return cuda_version_in(output.stdout), ()


def _run(runner: Runner, argv: Sequence[str]) -> RunOutput:
    try:
        return runner(argv, timeout=SMI_TIMEOUT_S)
    except ProbeUnavailable as exc:
        missing = str(exc).endswith(_NOT_INSTALLED)
        raise _NoAnswer(*(() if missing else (str(exc),))) from None


def parse_query(text: str, fields: Sequence[str]) -> tuple[Gpu, ...]:
    """The GPUs in `nvidia-smi --query-gpu=FIELDS --format=csv,noheader,nounits` output.

    Raises ValueError for a row that does not fit the fields or lacks index, name, uuid or memory.
    """
    return tuple(_smi_gpu(row) for row in _rows(text, fields))


def _rows(text: str, fields: Sequence[str]) -> list[dict[str, str]]:
    rows = [row for row in csv.reader(text.splitlines(), skipinitialspace=True) if row]
    for row in rows:
        if len(row) != len(fields):
            raise ValueError(f"{len(row)} values for {len(fields)} fields: {', '.join(row)}")
    return [dict(zip(fields, (cell.strip() for cell in row), strict=True)) for row in rows]


def _smi_gpu(row: Mapping[str, str]) -> Gpu:
    return Gpu(
        index=int(_required(row, "index")),
        name=_required(row, "name"),
        uuid=_required(row, "uuid"),
        memory_mib=int(_required(row, "memory.total").split()[0]),  # "81559" (or "81559 MiB")
        compute_capability=_present(row.get("compute_cap", "")),
        mig_mode=_present(row.get("mig.mode.current", "")),
        pci_bus_id=_present(row.get("pci.bus_id", "")),
    )


def _required(row: Mapping[str, str], field: str) -> str:
    value = _present(row[field])
    if value is None:
        raise ValueError(f"{field} is {row[field]!r}")
    return value


def _present(value: str) -> str | None:
    """A cell's value, or None for nvidia-smi's "[N/A]", "[Not Supported]" and the like."""
    return None if value.strip() in _NOT_A_VALUE else value.strip()


def cuda_version_in(text: str) -> str | None:
    """The newest CUDA the driver supports, as nvidia-smi's header (or `-q`) prints it."""
    found = _CUDA_VERSION.search(text)
    return found.group(1) if found else None


def _first_line(output: RunOutput) -> str:
    lines = (output.stdout + "\n" + output.stderr).splitlines()
    return next((line.strip() for line in lines if line.strip()), "no output")
