"""capture() for real: a git project in tmp_path, the command a real Python subprocess."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reprobox import manifest as manifest_io
from reprobox.bundle import Bundle
from reprobox.capture import CaptureOptions, capture
from reprobox.fileio import sha256_bytes
from reprobox.manifest import Manifest

# Built by joining so that no scanner flags this file.
HF = "hf_" + "CANARYabcdefghijklmnopqrstuvwxyz1234"

TRAIN = """
import os, random, sys
os.makedirs("out", exist_ok=True)
with open("out/metrics.txt", "w") as handle:
    handle.write(f"{random.random()}\\n")
with open("made_by_run.py", "w") as handle:
    handle.write("print('created during the run')\\n")
print("loss 0.5 token " + sys.argv[-1])
sys.stderr.buffer.write(b"binary \\xff\\xfe ok\\n")
"""


pytestmark = pytest.mark.usefixtures("isolated_git")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    (root / "train.py").write_text(textwrap.dedent(TRAIN))
    (root / "data" / "train.csv").write_text("x,y\n1,2\n")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "first")
    return root


def _capture(project: Path, *argv: str, inputs: tuple[str, ...] = (),
             outputs: tuple[str, ...] = ()) -> tuple[Bundle, Manifest, bytes]:
    out, err = io.BytesIO(), io.BytesIO()
    options = CaptureOptions(argv=argv, seed=3, cwd=project, inputs=inputs, outputs=outputs)
    bundle = capture(options, terminal=(out, err))
    return bundle, manifest_io.read(bundle.manifest_path), out.getvalue()


def test_bundle_layout_outputs_and_a_snapshot_taken_before_the_run(project: Path) -> None:
    (project / "train.py").write_text((project / "train.py").read_text() + "# dirty\n")
    bundle, manifest, _ = _capture(project, sys.executable, "train.py", "x")

    assert bundle.path.parent == project / ".reprobox" / "runs"
    assert sorted(p.name for p in bundle.path.iterdir()) == [
        "git.diff", "logs", "manifest.yaml", "outputs", "requirements.lock", "source"]
    assert sorted(p.name for p in bundle.logs_dir.iterdir()) == ["stderr.log", "stdout.log"]
    assert manifest.run.exit_code == 0 and manifest.git is not None and manifest.git.dirty
    # outputs: what the run created, copied with its digest
    assert [o.path for o in manifest.outputs] == ["made_by_run.py", "out/metrics.txt"]
    metrics = (bundle.outputs_dir / "out" / "metrics.txt").read_bytes()
    assert manifest.outputs[1].sha256 == sha256_bytes(metrics) and manifest.outputs[1].stored
    # the image is built from the project as it was before the run
    assert not (bundle.source_dir / "made_by_run.py").exists()
    assert sorted(r.path for r in manifest.source_files) == ["data/train.csv", "train.py"]
    assert (bundle.source_dir / "train.py").read_text().endswith("# dirty\n")
    assert manifest.source_files[1].sha256 == sha256_bytes(
        (project / "train.py").read_bytes())
    assert not any(note.startswith("seeds:") for note in manifest.notes)


def test_logs_are_redacted_the_terminal_is_not(project: Path) -> None:
    bundle, manifest, shown = _capture(project, sys.executable, "train.py", HF)

    assert HF.encode() in shown
    stdout_log = (bundle.logs_dir / "stdout.log").read_bytes()
    assert stdout_log == b"loss 0.5 token ***\n"
    assert (bundle.logs_dir / "stderr.log").read_bytes() == b"binary \xff\xfe ok\n"
    assert HF not in bundle.manifest_path.read_text()


def test_secret_arguments_are_masked_ml_arguments_kept(project: Path) -> None:
    argv = (sys.executable, "train.py", "--num-key-value-heads", "8", "--api-key", "CANARY",
            "--sort-key", "loss")
    _, manifest, _ = _capture(project, *argv)
    assert manifest.run.argv == (*argv[:5], "***", "--sort-key", "loss")


def test_declared_inputs_stay_out_of_the_snapshot_existing_outputs_stay_in(
        project: Path) -> None:
    (project / "out").mkdir()
    (project / "out" / "metrics.txt").write_text("from an earlier run\n")
    bundle, manifest, _ = _capture(project, sys.executable, "train.py", "x",
                                   inputs=("data/train.csv",), outputs=("out/metrics.txt",))

    assert [o.path for o in manifest.outputs] == ["out/metrics.txt"]
    assert [r.path for r in manifest.inputs] == ["data/train.csv"]
    assert (bundle.source_dir / "out" / "metrics.txt").read_text() == "from an earlier run\n"
    assert not (bundle.source_dir / "data" / "train.csv").exists()
    assert not (bundle.source_dir / "made_by_run.py").exists()  # created, undeclared


def test_a_package_installed_by_the_run_is_not_the_starting_environment(
        project: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (project / "install.py").write_text(textwrap.dedent("""
        import pathlib, sysconfig
        dist = pathlib.Path(sysconfig.get_paths()["purelib"]) / "latecomer-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text("Metadata-Version: 2.1\\nName: latecomer\\nVersion: 1.0\\n")
        """))
    _, manifest, _ = _capture(project, str(venv / "bin" / "python"), "install.py")

    assert any((venv / "lib").rglob("latecomer-1.0.dist-info"))  # the run did install it
    assert "latecomer" not in {package.name for package in manifest.python.packages}


def test_a_python_run_the_shim_never_saw_is_noted(project: Path) -> None:
    _, manifest, _ = _capture(project, sys.executable, "-I", "train.py", "x")
    assert manifest.determinism.state == {"processes": 0}
    assert any(note.startswith("seeds:") and "python -I" in note for note in manifest.notes)


def test_a_declared_output_folder_stands_for_its_files(project: Path) -> None:
    _, manifest, _ = _capture(project, sys.executable, "train.py", "x", outputs=("out",))
    assert [o.path for o in manifest.outputs] == ["out/metrics.txt"]


def test_a_declared_output_the_run_did_not_write_leaves_no_bundle(project: Path) -> None:
    from reprobox.errors import CaptureError

    with pytest.raises(CaptureError, match="nowhere.npy"):
        _capture(project, sys.executable, "train.py", "x", outputs=("nowhere.npy",))
    runs = project / ".reprobox" / "runs"
    assert [p.name for p in runs.iterdir()] == []


def test_a_host_without_gpus_is_recorded_as_such_and_the_cuda_stack_as_empty(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no nvidia-smi on this machine either way
    _, manifest, _ = _capture(project, sys.executable, "train.py")
    assert manifest.gpu is not None and manifest.gpu.source == "none"
    assert manifest.gpu.devices == ()
    assert manifest.cuda is not None and manifest.cuda.torch_version is None


def test_a_run_stopped_by_strict_determinism_is_told_about_warn_only(project: Path) -> None:
    # torch 2.11's own words (tests/data/gpu/h100-driver580/torch-warn-only.json)
    (project / "strict.py").write_text(
        "import sys\nsys.exit('RuntimeError: _histc_cuda with floating point input does not have "
        "a deterministic implementation, but you set torch.use_deterministic_algorithms(True)')\n")
    out, err = io.BytesIO(), io.BytesIO()
    bundle = capture(CaptureOptions(argv=(sys.executable, "strict.py"), seed=3, cwd=project),
                     terminal=(out, err))
    notes = manifest_io.read(bundle.manifest_path).notes
    assert any("capture again with --warn-only" in note for note in notes)


def test_warn_only_is_recorded(project: Path) -> None:
    options = CaptureOptions(argv=(sys.executable, "train.py"), seed=3, cwd=project,
                             warn_only=True)
    bundle = capture(options, terminal=(io.BytesIO(), io.BytesIO()))
    determinism = manifest_io.read(bundle.manifest_path).determinism
    assert determinism.warn_only and determinism.env["REPROBOX_WARN_ONLY"] == "1"
    assert determinism.state["warn_only"] is True  # the shim saw it too
