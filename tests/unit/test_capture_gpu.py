"""The GPU probe against NVML and nvidia-smi output recorded on a real H100 and published from
other hosts (tests/data/gpu/README.md names each source), and against a real nvidia-smi stand-in
that hangs or fails."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from reprobox import manifest as manifest_io
from reprobox.capture import gpu
from reprobox.capture.runner import RunOutput, subprocess_runner
from reprobox.errors import ProbeUnavailable
from reprobox.manifest import Gpu, Gpus

DATA = Path(__file__).parent.parent / "data" / "gpu"
H100 = DATA / "h100-driver580"
H100_GPU = Gpu(
    index=0, name="NVIDIA H100 80GB HBM3", uuid="GPU-ff35ffd0-a8cf-06e7-f065-0d19afd675e6",
    memory_mib=81559, compute_capability="9.0", mig_mode="Disabled", pci_bus_id="00000000:00:06.0",
)
H100_GPUS = Gpus(
    source="nvml", driver_version="580.159.04", cuda_driver_version="13.0", devices=(H100_GPU,),
)


class NVMLError(Exception):
    """nvidia-ml-py's base error; its subclasses are named NVMLError_<Reason>."""


def nvml_error(name: str) -> type[NVMLError]:
    return type(name, (NVMLError,), {})


class FakeNvml:
    """nvidia-ml-py as far as the probe uses it, answering from a recorded nvml.json.

    `as_bytes` answers strings as bytes, as nvidia-ml-py did before 11.515; a recorded
    {"error": "NVMLError_X"} is raised; a call missing from the record is missing from the module.
    """

    NVMLError = NVMLError

    def __init__(self, recorded: dict[str, Any], as_bytes: bool = False,
                 init_error: str | None = None) -> None:
        self.recorded, self.as_bytes, self.init_error = recorded, as_bytes, init_error
        self.calls: list[str] = []

    def nvmlInit(self) -> None:  # noqa: N802 - nvidia-ml-py's names
        self.calls.append("nvmlInit")
        if self.init_error:
            raise nvml_error(self.init_error)(self.init_error.removeprefix("NVMLError_"))

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.calls.append("nvmlShutdown")

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def __getattr__(self, name: str) -> Any:
        if name.startswith("nvmlSystem") or name == "nvmlDeviceGetCount":
            if name not in self.recorded:
                raise AttributeError(name)
            return lambda: self._answer(self.recorded[name])
        if name.startswith("nvmlDevice"):
            return lambda handle: self._answer(self._device_answer(handle, name))
        raise AttributeError(name)

    def _device_answer(self, handle: int, name: str) -> Any:
        answers = self.recorded["devices"][handle]
        if name not in answers:
            raise AttributeError(name)
        return answers[name]

    def _answer(self, value: Any) -> Any:
        if isinstance(value, dict) and "error" in value:
            raise nvml_error(value["error"])(value["message"])
        if isinstance(value, dict):
            return SimpleNamespace(**{key: self._answer(item) for key, item in value.items()})
        if isinstance(value, list):
            return tuple(self._answer(item) for item in value)
        return value.encode() if isinstance(value, str) and self.as_bytes else value


def h100_nvml(**changes: Any) -> dict[str, Any]:
    """The recorded H100 answers, with device 0's answers changed as given."""
    recorded: dict[str, Any] = json.loads((H100 / "nvml.json").read_text())
    recorded["devices"][0].update(changes)
    return recorded


def project(header_csv: str, fields: Sequence[str]) -> RunOutput:
    """What nvidia-smi prints for `--query-gpu=FIELDS --format=csv,noheader,nounits`, from its
    `--format=csv` output: the named columns, units dropped; an unknown field is refused."""
    header, *rows = [line.split(", ") for line in header_csv.splitlines()]
    names = [column.partition(" [")[0] for column in header]
    units = {column.partition(" [")[0]: column.partition(" [")[2].rstrip("]") for column in header}
    for field in fields:
        if field not in names:
            return RunOutput(2, f'Field "{field}" is not a valid field to query.\n\n', "")
    lines = [", ".join(_nounits(row[names.index(field)], units[field]) for field in fields)
             for row in rows]
    return RunOutput(0, "".join(line + "\n" for line in lines), "")


def _nounits(value: str, unit: str) -> str:
    return value.removesuffix(f" {unit}") if unit else value


class SmiFolder:
    """nvidia-smi answering from a fixture folder: its `--format=csv` query output and, where
    the folder has one, its plain output (where it has none, nvidia-smi prints nothing here)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], cwd: Path | None = None,
                 timeout: float = 30) -> RunOutput:
        self.calls.append(list(argv))
        assert argv[0] == "nvidia-smi" and timeout == gpu.SMI_TIMEOUT_S
        if len(argv) == 1:
            plain = self.folder / "nvidia-smi.txt"
            return RunOutput(0, plain.read_text() if plain.exists() else "", "")
        assert argv[2:] == ["--format=csv,noheader,nounits"]
        fields = argv[1].removeprefix("--query-gpu=").split(",")
        return project((self.folder / "nvidia-smi-query-header.csv").read_text(), fields)


def no_runner(argv: Sequence[str], cwd: Path | None = None, timeout: float = 30) -> RunOutput:
    raise AssertionError(f"NVML answered: nothing should run, but {argv} did")


def not_installed(argv: Sequence[str], cwd: Path | None = None, timeout: float = 30) -> RunOutput:
    raise ProbeUnavailable(f"{argv[0]}: command not found")


@pytest.fixture
def no_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host without nvidia-ml-py, whatever this one has."""
    monkeypatch.setitem(sys.modules, "pynvml", None)


# --- NVML -----------------------------------------------------------------------------------


def test_nvml_on_the_recorded_h100() -> None:
    nvml = FakeNvml(h100_nvml())
    found, notes = gpu.probe(no_runner, {"CUDA_VISIBLE_DEVICES": "0"}, nvml=nvml)
    assert found == Gpus(
        source="nvml", driver_version="580.159.04", cuda_driver_version="13.0",
        devices=(H100_GPU,), visible_devices="0",
    )
    assert notes == ()
    assert nvml.calls == ["nvmlInit", "nvmlShutdown"]


def test_old_bindings_answer_bytes() -> None:
    found, notes = gpu.probe(no_runner, {}, nvml=FakeNvml(h100_nvml(), as_bytes=True))
    assert (found, notes) == (H100_GPUS, ())


def test_nvml_and_nvidia_smi_agree_on_the_h100(no_pynvml: None) -> None:
    by_nvml, _ = gpu.probe(no_runner, {}, nvml=FakeNvml(h100_nvml()))
    by_smi, _ = gpu.probe(SmiFolder(H100), {})
    assert by_smi.source == "nvidia-smi"
    assert by_smi.devices == by_nvml.devices
    assert (by_smi.driver_version, by_smi.cuda_driver_version) == ("580.159.04", "13.0")


def test_gpu_without_mig_and_binding_without_compute_capability() -> None:
    recorded = h100_nvml(nvmlDeviceGetMigMode={"error": "NVMLError_NotSupported",
                                               "message": "Not Supported"})
    del recorded["devices"][0]["nvmlDeviceGetCudaComputeCapability"]
    del recorded["nvmlSystemGetCudaDriverVersion"]
    found, notes = gpu.probe(no_runner, {}, nvml=FakeNvml(recorded))
    (device,) = found.devices
    assert (device.mig_mode, device.compute_capability, found.cuda_driver_version) == (
        None, None, None)
    assert device.memory_mib == 81559 and notes == ()


def test_mig_enabled_by_nvml() -> None:
    found, _ = gpu.probe(no_runner, {}, nvml=FakeNvml(h100_nvml(nvmlDeviceGetMigMode=[1, 1])))
    assert found.devices[0].mig_mode == "Enabled"


def test_driver_loaded_but_no_gpu() -> None:
    recorded = h100_nvml()
    recorded.update(nvmlDeviceGetCount=0, devices=[])
    found, notes = gpu.probe(no_runner, {}, nvml=FakeNvml(recorded))
    assert found == Gpus(source="none", driver_version="580.159.04", cuda_driver_version="13.0")
    assert notes == ("NVML: driver 580.159.04 is loaded but lists no GPU",)


def test_nvml_library_not_found_is_a_silent_fall_through() -> None:
    nvml = FakeNvml(h100_nvml(), init_error="NVMLError_LibraryNotFound")
    found, notes = gpu.probe(SmiFolder(H100), {}, nvml=nvml)
    assert found.source == "nvidia-smi" and found.devices == (H100_GPU,)
    assert notes == ()
    assert nvml.calls == ["nvmlInit"]  # never started, so never shut down


def test_driver_not_loaded_is_none_with_notes() -> None:
    nvml = FakeNvml(h100_nvml(), init_error="NVMLError_DriverNotLoaded")
    failed = (DATA / "smi-outputs" / "driver-not-loaded.txt").read_text()

    def smi(argv: Sequence[str], cwd: Path | None = None, timeout: float = 30) -> RunOutput:
        return RunOutput(9, failed, "")

    found, notes = gpu.probe(smi, {"CUDA_VISIBLE_DEVICES": "1"}, nvml=nvml)
    assert found == Gpus(source="none", visible_devices="1")
    assert notes == (
        "NVML: cannot start (DriverNotLoaded)", f"nvidia-smi: {failed.strip()} (exit 9)",
    )


def test_a_gpu_nvml_cannot_read_falls_through_to_nvidia_smi() -> None:
    recorded = h100_nvml(nvmlDeviceGetUUID={"error": "NVMLError_GpuIsLost",
                                            "message": "GPU is lost"})
    nvml = FakeNvml(recorded)
    found, notes = gpu.probe(SmiFolder(H100), {}, nvml=nvml)
    assert found.source == "nvidia-smi" and found.devices == (H100_GPU,)
    assert notes == ("NVML: cannot read the GPUs (GPU is lost); asked nvidia-smi",)
    assert nvml.calls == ["nvmlInit", "nvmlShutdown"]


# --- nvidia-smi, recorded and published --------------------------------------------------


def test_the_fake_prints_what_the_real_nvidia_smi_printed() -> None:
    header_csv = (H100 / "nvidia-smi-query-header.csv").read_text()
    assert project(header_csv, gpu.SMI_FIELDS) == RunOutput(
        0, (H100 / "nvidia-smi-query.csv").read_text(), "")
    refused = project(header_csv, ["index", "no_such_field"])
    assert refused.stdout == (H100 / "nvidia-smi-query-badfield.txt").read_text()
    old = project((DATA / "rtx2080super-driver471/nvidia-smi-query-header.csv").read_text(),
                  gpu.SMI_FIELDS)
    published = (DATA / "smi-outputs" / "driver470-compute-cap.txt").read_text()
    assert old.stdout.strip() == published.strip()


def test_nvidia_smi_on_the_recorded_h100(no_pynvml: None) -> None:
    runner = SmiFolder(H100)
    found, notes = gpu.probe(runner, {})
    assert found == Gpus(source="nvidia-smi", driver_version="580.159.04",
                         cuda_driver_version="13.0", devices=(H100_GPU,))
    assert notes == ()
    assert len(runner.calls) == 2  # one query for the devices, one for the CUDA version


def test_a100_with_mig_enabled(no_pynvml: None) -> None:
    found, notes = gpu.probe(SmiFolder(DATA / "a100-mig-driver535"), {})
    assert found == Gpus(
        source="nvidia-smi", driver_version="535.54.03", cuda_driver_version="12.2",
        devices=(Gpu(0, "NVIDIA A100-SXM4-80GB", "GPU-513536b6-7d19-9063-b049-1e69664bb298",
                     81920, "8.0", "Enabled", "00000000:01:00.0"),),
    )
    assert notes == ()


def test_two_consumer_cards(no_pynvml: None) -> None:
    found, notes = gpu.probe(SmiFolder(DATA / "rtx2080x2-driver590"), {})
    assert (found.driver_version, found.cuda_driver_version) == ("590.44.01", "13.1")
    assert [(d.index, d.name, d.memory_mib, d.compute_capability, d.mig_mode, d.pci_bus_id)
            for d in found.devices] == [
        (0, "NVIDIA GeForce RTX 2080", 8192, "7.5", None, "00000000:01:00.0"),
        (1, "NVIDIA GeForce RTX 2080", 8192, "7.5", None, "00000000:02:00.0"),
    ]
    assert notes == ()


def test_rtx_3090(no_pynvml: None) -> None:
    found, _ = gpu.probe(SmiFolder(DATA / "rtx3090-driver525"), {})
    assert (found.driver_version, found.cuda_driver_version) == ("525.147.05", "12.0")
    assert found.devices == (Gpu(0, "NVIDIA GeForce RTX 3090",
                                 "GPU-12345678-aaaa-bbbb-cccc-0123456789ab", 24576, "8.6", None,
                                 "00000000:00:10.0"),)


def test_old_driver_without_compute_cap_is_asked_again(no_pynvml: None) -> None:
    runner = SmiFolder(DATA / "rtx2080super-driver471")
    found, notes = gpu.probe(runner, {})
    assert found == Gpus(
        source="nvidia-smi", driver_version="471.11",
        devices=(Gpu(0, "NVIDIA GeForce RTX 2080 SUPER",
                     "GPU-df6e7a7c-7314-46f8-abc4-b88b36dcf3aa", 8192, None, None,
                     "00000000:0C:00.0"),),
    )
    assert notes == ()
    queries = [call[1] for call in runner.calls if len(call) > 1]
    assert queries == [f"--query-gpu={','.join(gpu.SMI_FIELDS)}",
                       "--query-gpu=index,name,uuid,memory.total,mig.mode.current,pci.bus_id,"
                       "driver_version"]


@pytest.mark.parametrize(("published", "cuda"), [
    ("v100-driver470.txt", "11.4"),
    ("titanxp-driver450.txt", "11.0"),
    ("snap-smi470-driver580.txt", "13.0"),  # an old nvidia-smi reports the new driver's CUDA
    ("gtx1070-driver396.txt", None),  # drivers before 410 did not print it
])
def test_cuda_version_in_published_headers(published: str, cuda: str | None) -> None:
    assert gpu.cuda_version_in((DATA / "smi-outputs" / published).read_text()) == cuda


@pytest.mark.parametrize("recorded", ["nvidia-smi.txt", "nvidia-smi-q.txt",
                                      "nvidia-smi-version.txt"])
def test_cuda_version_in_every_recorded_form(recorded: str) -> None:
    assert gpu.cuda_version_in((H100 / recorded).read_text()) == "13.0"


def test_query_cells_with_spaces_and_placeholders() -> None:
    text = "0 ,  Tesla K80 , GPU-1 , 11441 , [Not Supported] , [N/A] , [N/A] , 470.82.01\n"
    (device,) = gpu.parse_query(text, gpu.SMI_FIELDS)
    assert device == Gpu(0, "Tesla K80", "GPU-1", 11441, None, None, None)


@pytest.mark.parametrize("text", [
    "0, NVIDIA H100 80GB HBM3, GPU-1\n",  # too few values
    "0, NVIDIA H100 80GB HBM3, [N/A], 81559, 9.0, Disabled, 00000000:00:06.0, 580.159.04\n",
])
def test_unreadable_query_output_is_a_note(no_pynvml: None, text: str) -> None:
    def smi(argv: Sequence[str], cwd: Path | None = None, timeout: float = 30) -> RunOutput:
        return RunOutput(0, text, "")

    found, notes = gpu.probe(smi, {})
    assert found == Gpus(source="none")
    assert len(notes) == 1 and notes[0].startswith("nvidia-smi: cannot read its --query-gpu")


def test_no_devices_found(no_pynvml: None) -> None:
    def smi(argv: Sequence[str], cwd: Path | None = None, timeout: float = 30) -> RunOutput:
        return RunOutput(6, "No devices were found\n", "")

    assert gpu.probe(smi, {}) == (Gpus(source="none"),
                                  ("nvidia-smi: No devices were found (exit 6)",))


# --- no GPU, and a real nvidia-smi stand-in that hangs or fails -------------------------------


def test_cpu_host_is_none_without_notes(no_pynvml: None) -> None:
    assert gpu.probe(not_installed, {}) == (Gpus(source="none"), ())


def test_visible_devices_recorded_without_a_gpu(no_pynvml: None) -> None:
    found, _ = gpu.probe(not_installed, {"CUDA_VISIBLE_DEVICES": ""})
    assert found == Gpus(source="none", visible_devices="")


def _stand_in(tmp_path: Path, body: str) -> str:
    script = tmp_path / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_hanging_nvidia_smi_times_out(no_pynvml: None, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "SMI_TIMEOUT_S", 0.5)
    program = _stand_in(tmp_path, "exec sleep 30")  # exec: the timeout kills the sleeper itself
    started = time.monotonic()
    found, notes = gpu.probe(subprocess_runner, dict(os.environ), nvidia_smi=program)
    assert time.monotonic() - started < 2
    assert found == Gpus(source="none", visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
    assert notes == (f"{program}: no answer within 0.5 s",)


def test_nvidia_smi_that_cannot_reach_the_driver(no_pynvml: None, tmp_path: Path) -> None:
    message = (DATA / "smi-outputs" / "driver-not-loaded.txt").read_text().strip()
    program = _stand_in(tmp_path, f'echo "{message}"\nexit 9')
    found, notes = gpu.probe(subprocess_runner, {}, nvidia_smi=program)
    assert found == Gpus(source="none")
    assert notes == (f"nvidia-smi: {message} (exit 9)",)


def test_nvml_and_nvidia_smi_agree_on_the_recorded_h200(no_pynvml: None) -> None:
    h200 = DATA / "h200-driver580"
    recorded = json.loads((h200 / "nvml.json").read_text())
    by_nvml, _ = gpu.probe(no_runner, {}, nvml=FakeNvml(recorded))
    by_smi, _ = gpu.probe(SmiFolder(h200), {})
    (device,) = by_nvml.devices
    assert (device.name, device.memory_mib, device.compute_capability) == (
        "NVIDIA H200", 143771, "9.0")
    assert by_smi.devices == by_nvml.devices
    # what capture recorded on that machine, through the real nvidia-ml-py
    captured = manifest_io.read(h200 / "torch-gpu-manifest.yaml").gpu
    assert captured is not None and captured.devices == by_nvml.devices
