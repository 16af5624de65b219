"""reprobox doctor: each hazard found where it is and not where it is not, on real manifests."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from reprobox import doctor, report
from reprobox import manifest as manifest_io
from reprobox.bundle import Bundle
from reprobox.cli import main
from reprobox.doctor import Facts, Finding, SourceScan, diagnose, facts_from_manifest
from reprobox.manifest import CudaStack, FileRecord, Git, Gpu, Gpus, Manifest, Package, Scalar

MANIFESTS = Path(__file__).resolve().parents[1] / "data" / "manifests"
CUDA_PACKAGES = (Package("torch", "2.11.0"), Package("nvidia-cublas", "13.1.0.3"))
# As recorded on the H100 host of tests/data/gpu/h100-driver580.
H100 = Gpu(0, "NVIDIA H100 80GB HBM3", "GPU-4f3c", 81559, "9.0", "Disabled")
A100 = Gpu(0, "NVIDIA A100-SXM4-80GB", "GPU-9a1b", 81920, "8.0", "Disabled")
H100_HOST = Gpus("nvidia-smi", "580.159.04", "13.0", (H100,))
NO_GPU = Gpus("none")


def _read(name: str) -> Manifest:
    return manifest_io.read(MANIFESTS / f"{name}.yaml")


@pytest.fixture
def clean() -> Manifest:
    """A real CPU capture with no hazard: clean git, thread counts and seeds injected."""
    return _read("numpy-sgd")


def _with_state(manifest: Manifest, **changes: Scalar) -> Manifest:
    state = {**manifest.determinism.state, **{k.replace("__", "."): v for k, v in changes.items()}}
    return replace(manifest, determinism=replace(manifest.determinism, state=state))


def _with_packages(manifest: Manifest, *packages: Package) -> Manifest:
    return replace(manifest, python=replace(manifest.python, packages=packages))


def _found(manifest: Manifest, sources: Mapping[str, str] | None = None,
           host: Gpus | None = None) -> dict[str, Finding]:
    findings = diagnose(facts_from_manifest(manifest, sources or {}, host))
    return {finding.code: finding for finding in findings}


def _scan(code: str) -> SourceScan:
    return doctor.scan_source("train.py", textwrap.dedent(code))


# --- real manifests ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["numpy-sgd", "clock-noise"])
def test_real_cpu_captures_have_no_hazards(name: str) -> None:
    assert diagnose(facts_from_manifest(_read(name), {})) == ()


def test_the_real_h100_capture_ran_with_cudnn_tf32_on() -> None:
    found = _found(_read("torch-h100-nogpufields"))
    assert set(found) == {"tf32"}
    assert found["tf32"].severity == "warning"  # torch's CUDA wheels are installed
    assert "cuDNN convolutions" in found["tf32"].message
    assert "matmul" not in found["tf32"].message  # matmul TF32 was off


# --- cuDNN benchmark and TF32 -----------------------------------------------------------------


def test_cudnn_benchmark_on_at_the_end_of_the_run(clean: Manifest) -> None:
    on = _with_state(_with_packages(clean, *CUDA_PACKAGES), torch__cudnn__benchmark=True)
    assert _found(on)["cudnn-benchmark"].severity == "warning"
    off = _with_state(on, torch__cudnn__benchmark=False)
    assert "cudnn-benchmark" not in _found(off)


def test_cudnn_benchmark_without_cuda_is_only_a_note(clean: Manifest) -> None:
    on = _with_state(clean, torch__cudnn__benchmark=True)
    assert _found(on)["cudnn-benchmark"].severity == "info"


def test_cudnn_benchmark_set_in_the_code_names_the_line(clean: Manifest) -> None:
    code = "import torch\n\ntorch.backends.cudnn.benchmark = True\n"
    finding = _found(clean, {"train.py": code})["cudnn-benchmark"]
    assert "train.py:3" in finding.message and "cudnn.benchmark = False" in finding.fix


@pytest.mark.parametrize("code", [
    "torch.backends.cudnn.benchmark = False",
    "# torch.backends.cudnn.benchmark = True",
    "HELP = 'set torch.backends.cudnn.benchmark = True for speed'",
    "torch.backends.cudnn.deterministic = True",
])
def test_cudnn_benchmark_not_found_where_it_is_not_turned_on(code: str) -> None:
    assert _scan(code).cudnn_benchmark == ()


def test_cudnn_benchmark_found_through_an_alias_and_in_a_function() -> None:
    scan = _scan("""
        from torch.backends import cudnn
        def main():
            cudnn.benchmark = True
    """)
    assert scan.cudnn_benchmark == ("train.py:4",)


@pytest.mark.parametrize(("key", "value", "where"), [
    ("torch.matmul.allow_tf32", True, "matmul"),
    ("torch.float32_matmul_precision", "high", "matmul"),
    ("torch.float32_matmul_precision", "medium", "matmul"),
    ("torch.cudnn.allow_tf32", True, "cuDNN"),
])
def test_tf32_on_at_the_end_of_the_run(clean: Manifest, key: str, value: Scalar,
                                       where: str) -> None:
    on = _with_state(_with_packages(clean, *CUDA_PACKAGES), **{key.replace(".", "__"): value})
    finding = _found(on)["tf32"]
    assert finding.severity == "warning" and where in finding.message


def test_tf32_off_is_no_hazard(clean: Manifest) -> None:
    off = _with_state(clean, torch__matmul__allow_tf32=False, torch__cudnn__allow_tf32=False,
                      torch__float32_matmul_precision="highest")
    assert "tf32" not in _found(off)


def test_nvidia_tf32_override_turns_tf32_off_everywhere(clean: Manifest) -> None:
    on = _with_state(clean, torch__cudnn__allow_tf32=True)
    overridden = replace(on, run=replace(on.run, env={"NVIDIA_TF32_OVERRIDE": "0"}))
    assert "tf32" in _found(on) and "tf32" not in _found(overridden)


@pytest.mark.parametrize(("code", "lines"), [
    ("torch.backends.cuda.matmul.allow_tf32 = True", ("train.py:1",)),
    ("torch.backends.cudnn.allow_tf32 = True", ("train.py:1",)),
    ('torch.set_float32_matmul_precision("high")', ("train.py:1",)),
    ('torch.set_float32_matmul_precision(precision="medium")', ("train.py:1",)),
    ('torch.backends.cuda.matmul.fp32_precision = "tf32"', ("train.py:1",)),
    ('torch.set_float32_matmul_precision("highest")', ()),
    ("torch.backends.cuda.matmul.allow_tf32 = False", ()),
    ('torch.backends.cuda.matmul.fp32_precision = "ieee"', ()),
])
def test_tf32_in_the_code(code: str, lines: tuple[str, ...]) -> None:
    assert _scan(code).tf32 == lines


# --- environment variables --------------------------------------------------------------------


def test_cublas_workspace_unset_in_a_cuda_run(clean: Manifest) -> None:
    cuda = _with_packages(clean, *CUDA_PACKAGES)
    unset = _with_state(cuda, env__CUBLAS_WORKSPACE_CONFIG=None)  # the run saw it unset
    assert _found(unset)["cublas-workspace"].severity == "warning"
    assert "cublas-workspace" not in _found(cuda)


def test_cublas_workspace_does_not_matter_without_cuda(clean: Manifest) -> None:
    unset = _with_state(clean, env__CUBLAS_WORKSPACE_CONFIG=None)
    assert "cublas-workspace" not in _found(unset)


def test_cuda_use_is_what_torch_reported_when_it_did(clean: Manifest) -> None:
    cpu_only = _with_state(_with_packages(clean, *CUDA_PACKAGES),
                           env__CUBLAS_WORKSPACE_CONFIG=None, torch__cuda__initialized=False)
    assert "cublas-workspace" not in _found(cpu_only)
    built_for_cuda = replace(_with_state(clean, env__CUBLAS_WORKSPACE_CONFIG=None),
                             cuda=CudaStack("2.4.0+cu121", "12.1"))
    assert "cublas-workspace" in _found(built_for_cuda)


def test_unset_thread_counts_are_named(clean: Manifest) -> None:
    unset = _with_state(clean, env__OMP_NUM_THREADS=None, env__MKL_NUM_THREADS=None)
    finding = _found(unset)["thread-counts"]
    assert finding.message.startswith("OMP_NUM_THREADS, MKL_NUM_THREADS are not set")
    assert "OPENBLAS" not in finding.message
    assert "thread-counts" not in _found(clean)


def test_environment_facts_read_variables_as_given() -> None:
    hazards = {f.code for f in diagnose(Facts(env={"OMP_NUM_THREADS": "1"}, git=_git()))}
    assert hazards == {"thread-counts"}
    threads = dict.fromkeys(doctor.THREAD_VARS, "4")
    assert diagnose(Facts(env=threads, git=_git())) == ()


# --- packages ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("package", "code", "severity"), [
    (Package("mylib", "0.1", "editable", "/home/a/mylib"), "editable-package", "warning"),
    (Package("mylib", "0.1", "local", "/home/a/mylib"), "local-package", "warning"),
    (Package("mylib", "0.1", "vcs", "git+https://example.org/m.git"), "vcs-package", "warning"),
    (Package("mylib", "0.1", "vcs", "git+https://example.org/m.git", "ab" * 20), "vcs-package",
     "info"),
    (Package("mylib", "0.1", "url", "https://example.org/mylib-0.1.tar.gz"), "url-package",
     "info"),
    (Package("mylib", "1.0+g1234abc"), "unpinned-version", "warning"),
    (Package("mylib", "0+unknown"), "unpinned-version", "warning"),
    # jaxlib's CUDA builds came from Google's own index, which no lock names
    (Package("jaxlib", "0.4.20+cuda12.cudnn89"), "unpinned-version", "warning"),
])
def test_packages_not_from_an_index_or_not_pinnable(clean: Manifest, package: Package,
                                                    code: str, severity: str) -> None:
    found = _found(_with_packages(clean, Package("numpy", "2.1.3"), package))
    assert set(found) == {code}
    assert found[code].severity == severity and package.name in found[code].message


def test_reprobox_itself_installed_editable_is_no_hazard(clean: Manifest) -> None:
    # it is never installed in the image: the stdlib-only shim is copied in instead
    assert _found(_with_packages(clean, Package("reprobox", "0.1.0", "editable", "/src"))) == {}


@pytest.mark.parametrize("version", ["2.1.3", "2.4.0+cu121", "2.4.0+cpu", "6.2.4+rocm6.2",
                                     "2.7.0+xpu"])
def test_index_packages_with_index_versions_are_fine(clean: Manifest, version: str) -> None:
    assert _found(_with_packages(clean, Package("torch", version))) == {}


def test_a_local_version_with_its_index_recorded_is_pinnable(clean: Manifest) -> None:
    package = Package("mylib", "1.0+internal", index_url="https://pypi.example.org/simple")
    assert _found(_with_packages(clean, package)) == {}


def test_many_packages_are_listed_briefly(clean: Manifest) -> None:
    editable = [Package(f"lib{i}", "1.0", "editable", f"/src/lib{i}") for i in range(8)]
    message = _found(_with_packages(clean, *editable))["editable-package"].message
    assert "lib4 1.0 (/src/lib4)" in message and "lib5" not in message and "and 3 more" in message


# --- git --------------------------------------------------------------------------------------


def _git(dirty: bool = False) -> Git:
    return Git("ce68a395a9066ebc3686e650c5f9c56a8b383d3c", "main", None, dirty)


def test_dirty_tree_and_no_git(clean: Manifest) -> None:
    assert "ce68a395a906" in _found(replace(clean, git=_git(dirty=True)))["dirty-tree"].message
    assert _found(replace(clean, git=None))["no-git"].severity == "warning"
    assert _found(replace(clean, git=_git())) == {}


# --- DataLoader workers -----------------------------------------------------------------------


@pytest.mark.parametrize("call", [
    "DataLoader(ds, batch_size=8, num_workers=4)",
    "DataLoader(ds, num_workers=args.workers)",
    "torch.utils.data.DataLoader(ds, num_workers=os.cpu_count())",
    "DataLoader(ds, 8, True, None, None, 2)",
    "DataLoader(ds, num_workers=4, generator=None, worker_init_fn=None)",
])
def test_dataloader_workers_without_seeding(call: str) -> None:
    assert _scan(f"loader = {call}").unseeded_loaders == ("train.py:1",)


@pytest.mark.parametrize("call", [
    "DataLoader(ds, batch_size=8)",
    "DataLoader(ds, num_workers=0)",
    "DataLoader(ds, num_workers=4, worker_init_fn=seed_worker)",
    "DataLoader(ds, num_workers=4, generator=g)",
    "DataLoader(ds, 8, True, None, None, 2, None, False, False, 0, seed_worker)",
    "DataLoader(ds, **loader_options)",
    "DataLoader(*args)",
    "'DataLoader(ds, num_workers=4)'",
    "MyLoader(ds, num_workers=4)",
])
def test_dataloader_without_workers_or_with_seeding(call: str) -> None:
    assert _scan(f"loader = {call}").unseeded_loaders == ()


def test_dataloader_finding_names_each_place(clean: Manifest) -> None:
    sources = {"a.py": "DataLoader(ds, num_workers=2)\n",
               "b/c.py": "\n\nDataLoader(x, num_workers=n)"}
    finding = _found(clean, sources)["dataloader-workers"]
    assert "a.py:1, b/c.py:3" in finding.message and "worker_init_fn" in finding.fix


def test_files_that_are_not_python_are_noted_not_failed(clean: Manifest) -> None:
    found = _found(clean, {"broken.py": "def f(:\n", "nul.py": "x = 1\0"})
    assert set(found) == {"not-checked"}
    assert found["not-checked"].severity == "info"
    assert "broken.py" in found["not-checked"].message and "nul.py" in found["not-checked"].message


# --- determinism and seeds --------------------------------------------------------------------


def test_deterministic_mode_off(clean: Manifest) -> None:
    off = replace(clean, determinism=replace(clean.determinism, deterministic=False))
    assert "--no-deterministic" in _found(off)["deterministic-off"].message
    turned_off = _with_state(clean, torch__deterministic_algorithms=False)
    assert "use_deterministic_algorithms(False)" in _found(turned_off)["deterministic-off"].message
    turned_on = _with_state(clean, torch__deterministic_algorithms=True)
    assert "deterministic-off" not in _found(turned_on)


def test_ops_that_fired_in_warn_only_mode(clean: Manifest) -> None:
    fired = _with_state(clean, torch__deterministic_warn_only=True,
                        torch__nondeterministic_ops="_bincount_cuda; _histc_cuda")
    assert "_bincount_cuda; _histc_cuda" in _found(fired)["nondeterministic-ops"].message
    quiet = _with_state(clean, torch__deterministic_warn_only=True,
                        torch__nondeterministic_ops=None)
    assert "nondeterministic-ops" not in _found(quiet)


def test_seeds_not_injected(clean: Manifest) -> None:
    assert _found(_with_state(clean, processes=0))["seeds-not-injected"].severity == "warning"
    assert "seeds-not-injected" not in _found(_with_state(clean, processes=2))


@pytest.mark.parametrize("library", ["random", "numpy"])
def test_user_reseeding(clean: Manifest, library: str) -> None:
    from_os = _with_state(clean, **{f"{library}__reseeded_by_user": True})
    assert _found(from_os)["user-reseeded"].severity == "warning"
    fixed = _with_state(from_os, **{f"{library}__user_seed": 42})
    finding = _found(fixed)["user-reseeded"]
    assert finding.severity == "info" and f"{library}.seed(42)" in finding.message


# --- GPUs of the bundle against this host -----------------------------------------------------


@pytest.fixture
def gpu_run(clean: Manifest) -> Manifest:
    """A CUDA run on one H100 (driver 580.159.04, CUDA 13.0), torch built for CUDA 13.0."""
    cuda = replace(_with_packages(clean, *CUDA_PACKAGES), gpu=H100_HOST)
    return replace(cuda, cuda=CudaStack("2.11.0+cu130", "13.0", frameworks={"torch": "13.0"}))


def test_gpu_run_on_a_host_without_gpu_is_an_error(gpu_run: Manifest) -> None:
    finding = _found(gpu_run, host=NO_GPU)["gpu-missing"]
    assert finding.severity == "error" and "NVIDIA H100 80GB HBM3" in finding.message
    assert "--cpu" in finding.fix


def test_gpu_run_on_the_same_gpu_is_fine(gpu_run: Manifest) -> None:
    assert _found(gpu_run, host=H100_HOST) == {}
    newer = replace(H100_HOST, driver_version="590.10.01")
    assert _found(gpu_run, host=newer) == {}


def test_gpu_run_not_compared_when_the_host_is_unknown(gpu_run: Manifest) -> None:
    assert _found(gpu_run, host=None) == {}


def test_another_gpu_model_or_count(gpu_run: Manifest) -> None:
    a100 = replace(H100_HOST, devices=(A100,))
    assert "NVIDIA A100-SXM4-80GB" in _found(gpu_run, host=a100)["gpu-model"].message
    two = replace(H100_HOST, devices=(H100, replace(H100, index=1, uuid="GPU-other")))
    assert _found(gpu_run, host=two) == {}  # the replay is handed one of them, as the run had
    found = _found(replace(gpu_run, gpu=two), host=H100_HOST)
    assert set(found) == {"gpu-count"} and "CUDA_VISIBLE_DEVICES" in found["gpu-count"].fix


def test_older_driver_warns_and_one_without_the_cuda_major_is_an_error(gpu_run: Manifest) -> None:
    older = replace(H100_HOST, driver_version="580.65.06")
    assert _found(gpu_run, host=older)["driver-older"].severity == "warning"
    too_old = replace(H100_HOST, driver_version="550.54.15", cuda_driver_version="12.4")
    found = _found(gpu_run, host=too_old)
    assert set(found) == {"driver-too-old"} and found["driver-too-old"].severity == "error"
    assert "CUDA 13.0" in found["driver-too-old"].message


def test_a_gpu_host_run_that_did_not_use_cuda_needs_no_gpu(clean: Manifest) -> None:
    cpu_run = _with_state(replace(clean, gpu=H100_HOST), torch__cuda__initialized=False)
    found = _found(cpu_run, host=NO_GPU)
    assert set(found) == {"gpu-unused"} and found["gpu-unused"].severity == "info"


def test_errors_come_first_and_notes_do_not_count_as_hazards(gpu_run: Manifest) -> None:
    findings = diagnose(facts_from_manifest(replace(gpu_run, git=None), {}, NO_GPU, ["a note"]))
    assert [f.severity for f in findings] == ["error", "warning", "info"]
    assert doctor.has_hazards(findings)
    assert not doctor.has_hazards([f for f in findings if f.severity == "info"])


# --- bundles on disk --------------------------------------------------------------------------


def _bundle(root: Path, manifest: Manifest, sources: Mapping[str, str] | None) -> Bundle:
    folder = root / ".reprobox" / "runs" / "20261127T200000Z-aaaaaa"
    folder.mkdir(parents=True)
    if sources is not None:
        (folder / "source").mkdir()
    records = []
    for rel, text in (sources or {}).items():
        (folder / "source" / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / "source" / rel).write_text(text)
        records.append(FileRecord(rel, "00" * 32, len(text)))
    manifest_io.write(replace(manifest, source_files=tuple(records)), folder / "manifest.yaml")
    return Bundle(folder)


def test_check_bundle_scans_the_source_snapshot(tmp_path: Path, clean: Manifest) -> None:
    target = _bundle(tmp_path, clean, {"src/data.py": "DataLoader(ds, num_workers=4)\n",
                                       "README.md": "cudnn.benchmark = True\n"})
    diagnosis = doctor.check_bundle(target)
    assert diagnosis.subject == "bundle 20261127T200000Z-aaaaaa"
    assert [f.code for f in diagnosis.findings] == ["dataloader-workers"]
    assert "src/data.py:1" in diagnosis.findings[0].message and diagnosis.hazardous


def test_check_bundle_reads_nothing_outside_its_source_folder(tmp_path: Path,
                                                              clean: Manifest) -> None:
    target = _bundle(tmp_path, clean, {"train.py": "x = 1\n"})
    (target.path / "evil.py").write_text("torch.backends.cudnn.benchmark = True\n")
    escaping = replace(clean, source_files=(FileRecord("../evil.py", "00" * 32, 1),))
    manifest_io.write(escaping, target.manifest_path)
    assert doctor.check_bundle(target).findings == ()


def test_check_bundle_without_a_source_folder_says_so(tmp_path: Path, clean: Manifest) -> None:
    findings = doctor.check_bundle(_bundle(tmp_path, clean, None)).findings
    assert [(f.code, f.severity) for f in findings] == [("not-checked", "info")]
    assert "source/" in findings[0].message


def test_check_bundle_asks_the_gpu_probe_only_for_a_gpu_run(tmp_path: Path, gpu_run: Manifest,
                                                            clean: Manifest) -> None:
    asked = []

    def probe() -> doctor.GpuAnswer:
        asked.append(True)
        return NO_GPU, ("gpus: nvidia-smi: no answer within 10 s",)

    assert doctor.check_bundle(_bundle(tmp_path / "cpu", clean, {}), probe).findings == ()
    assert not asked
    findings = doctor.check_bundle(_bundle(tmp_path / "gpu", gpu_run, {}), probe).findings
    assert [f.code for f in findings] == ["gpu-missing", "not-checked"]
    assert "no answer within 10 s" in findings[1].message


# --- the environment and the CLI --------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, isolated_git: None, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A committed git project with a clean train.py, thread counts set, as the cwd."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "train.py").write_text("import random\nprint(random.random())\n")
    _git_run(root, "init", "-q")
    _git_run(root, "add", "-A")
    _git_run(root, "commit", "-q", "-m", "start")
    for name in doctor.THREAD_VARS:
        monkeypatch.setenv(name, "1")
    monkeypatch.chdir(root)
    return root


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An interpreter with no packages installed (a venv without pip)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(venv / "bin" / "python")


def _git_run(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True)


def _doctor_json(capsys: pytest.CaptureFixture[str], *args: str
                 ) -> tuple[int, list[dict[str, str]]]:
    code = main(["doctor", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_cli_clean_environment_exits_0(project: Path, bare_python: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, findings = _doctor_json(capsys, "--python", bare_python)
    assert (code, findings) == (0, [])


def test_cli_environment_hazards_exit_3(project: Path, bare_python: str,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (project / "loader.py").write_text("loader = DataLoader(ds, num_workers=8)\n")
    monkeypatch.delenv("OMP_NUM_THREADS")
    code, findings = _doctor_json(capsys, "--python", bare_python)
    assert code == 3
    assert {f["code"] for f in findings} == {"dirty-tree", "dataloader-workers", "thread-counts"}
    assert set(findings[0]) == {"code", "severity", "message", "fix"}


def test_cli_environment_outside_git(tmp_path: Path, isolated_git: None, bare_python: str,
                                     monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    for name in doctor.THREAD_VARS:
        monkeypatch.setenv(name, "1")
    monkeypatch.chdir(tmp_path)
    code, findings = _doctor_json(capsys, "--python", bare_python)
    assert code == 3 and [f["code"] for f in findings] == ["no-git"]


def test_the_default_interpreter_is_python3_on_path(bare_python: str, tmp_path: Path) -> None:
    bin_dir = str(Path(bare_python).parent)
    assert doctor.find_interpreter(None, {"PATH": bin_dir}) == str(Path(bin_dir) / "python3")
    assert doctor.find_interpreter(None, {"PATH": str(tmp_path)}) == sys.executable
    assert doctor.find_interpreter("python", {"PATH": bin_dir}) == bare_python


def test_cli_environment_table(project: Path, bare_python: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--python", bare_python]) == 0
    out = capsys.readouterr().out
    assert f"Doctor: project {project} with {bare_python}" in out.replace("\n", "")
    assert "no determinism hazards found" in out


def test_cli_bundle_table_and_json(project: Path, clean: Manifest,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    _bundle(project, clean, {"train.py": "x = 1\n"})
    assert _doctor_json(capsys, "20261127T200000Z-aaaaaa") == (0, [])
    assert main(["doctor", "20261127T200000Z-aaaaaa"]) == 0
    assert "no determinism hazards found" in capsys.readouterr().out


def test_cli_bundle_notes_exit_0_and_hazards_exit_3(project: Path, clean: Manifest,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bundle = _bundle(project, _with_state(clean, torch__cudnn__benchmark=True), {})
    assert main(["doctor", str(bundle.path)]) == 0  # a note only: the run used no CUDA
    out = capsys.readouterr().out
    assert "cudnn-benchmark" in out and "READY (1 note)" in out
    hazardous = _with_state(bundle.manifest(), processes=0)
    manifest_io.write(hazardous, bundle.manifest_path)
    code, findings = _doctor_json(capsys, str(bundle.path))
    assert code == 3 and findings[0]["code"] == "seeds-not-injected"


def test_cli_missing_bundle_is_an_error_with_a_hint(project: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "no-such-run"]) == 1
    err = capsys.readouterr().err
    assert "no-such-run: not a reprobox bundle" in err and "hint:" in err
    assert "Traceback" not in err


def test_cli_python_is_for_environments_only(project: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "some-run", "--python", sys.executable]) == 2
    assert main(["doctor", "--python", str(project / "no-python")]) == 1
    assert "no such Python interpreter" in capsys.readouterr().err


# --- the report -------------------------------------------------------------------------------


def _rendered(findings: list[Finding]) -> str:
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(report.findings_table(findings, "bundle x"))
    return console.export_text()


def test_findings_table_and_json() -> None:
    findings = [Finding("gpu-missing", "error", "no GPU here", "replay --cpu"),
                Finding("not-checked", "info", "skipped", "nothing")]
    text = _rendered(findings)
    assert "Doctor: bundle x" in text and "gpu-missing" in text and "replay --cpu" in text
    assert "NOT READY (1 error, 1 note)" in text
    assert "READY (1 note)" in _rendered(findings[1:]) and "no determinism hazards" in _rendered([])
    assert json.loads(report.findings_json(findings))[0] == {
        "code": "gpu-missing", "severity": "error", "message": "no GPU here", "fix": "replay --cpu"}
