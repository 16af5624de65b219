"""The CLI's exit codes and messages, on bundles laid out on disk (no Docker needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reprobox import manifest as manifest_io
from reprobox.cli import main
from reprobox.fileio import sha256_file
from reprobox.manifest import Manifest, Output
from reprobox.replay import ReplayResult


@pytest.fixture
def project(tmp_path: Path, sample_manifest: Manifest, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project holding one captured run with one output, out/weights.npy."""
    monkeypatch.chdir(tmp_path)
    bundle = tmp_path / ".reprobox" / "runs" / "20261127T200000Z-aaaaaa"
    weights = bundle / "outputs" / "out" / "weights.npy"
    weights.parent.mkdir(parents=True)
    np.save(weights, np.arange(4, dtype=np.float64))
    output = Output("out/weights.npy", sha256_file(weights), weights.stat().st_size)
    from dataclasses import replace

    manifest_io.write(replace(sample_manifest, outputs=(output,)), bundle / "manifest.yaml")
    return tmp_path


def _replay(project: Path, weights: np.ndarray, exit_code: int = 0) -> Path:
    bundle = next((project / ".reprobox" / "runs").iterdir())
    folder = bundle / "replays" / "20261127T210000Z-bbbbbb"
    (folder / "outputs" / "out").mkdir(parents=True)
    np.save(folder / "outputs" / "out" / "weights.npy", weights)
    result = ReplayResult("20261127T210000Z-bbbbbb", "img", exit_code, False, 1.0, "now", {})
    (folder / "replay.json").write_text(result.to_json())
    return folder


def test_compare_identical_exits_0_and_writes_comparison(project: Path, capsys) -> None:
    folder = _replay(project, np.arange(4, dtype=np.float64))
    assert main(["compare", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "identical" and report["reproduced"] is True
    assert json.loads((folder / "comparison.json").read_text())["verdict"] == "identical"


def test_compare_different_exits_3_and_names_the_difference(project: Path, capsys) -> None:
    _replay(project, np.array([0.0, 1.0, 2.5, 3.0]))
    assert main(["compare", "--json"]) == 3
    output = json.loads(capsys.readouterr().out)["outputs"][0]
    assert output["verdict"] == "different" and output["max_abs_diff"] == 0.5


def test_compare_table_and_exit_code_note(project: Path, capsys) -> None:
    _replay(project, np.arange(4, dtype=np.float64), exit_code=1)
    assert main(["compare"]) == 3  # same files, but the replay failed: not the same run
    out = capsys.readouterr().out
    assert "NOT REPRODUCED" in out and "exit code differs: original 0, replay 1" in out


def test_compare_without_replays_is_an_error_with_a_hint(project: Path, capsys) -> None:
    assert main(["compare"]) == 1
    err = capsys.readouterr().err
    assert "no replays yet" in err and "hint:" in err and "Traceback" not in err


def test_show_prints_the_manifest(project: Path, capsys) -> None:
    assert main(["show", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"]["argv"][:2] == ["python", "train.py"]
    assert main(["show"]) == 0
    assert "train.py" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("schema_version: 1\nrun: [", "not valid YAML"),
        ("!!python/object/apply:os.system ['echo pwned']\n", "refused YAML"),
        ("schema_version: 99\n", "newer reprobox"),
        ("", "expected a mapping"),
    ],
)
def test_bad_manifest_is_one_line_error_naming_the_file(
    project: Path, capsys, content: str, message: str
) -> None:
    path = next((project / ".reprobox" / "runs").iterdir()) / "manifest.yaml"
    path.write_text(content)
    assert main(["show"]) == 1
    err = capsys.readouterr().err
    assert message in err and "manifest.yaml" in err and "Traceback" not in err
    assert main(["--debug", "show"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_no_bundle_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["show"]) == 1
    assert "reprobox capture" in capsys.readouterr().err
    assert main(["build", "nosuch"]) == 1
    assert "not a reprobox bundle" in capsys.readouterr().err


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


@pytest.mark.parametrize("timeout", ["inf", "nan", "-5", "0", "soon"])
def test_a_timeout_that_is_no_positive_number_of_seconds_is_a_usage_error(
        timeout: str, capsys: pytest.CaptureFixture[str]) -> None:
    for verb in (["replay"], ["run"], ["export", "slurm"]):
        with pytest.raises(SystemExit) as exc:
            main([*verb, "--timeout", timeout])
        assert exc.value.code == 2
        assert "expected a number of seconds > 0" in capsys.readouterr().err


def test_capture_of_a_missing_command_leaves_nothing(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["capture", "--", "no-such-command-xyz"]) == 1
    assert "no-such-command-xyz: cannot run" in capsys.readouterr().err
    runs = tmp_path / ".reprobox" / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_capture_without_command_is_an_error(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["capture"]) == 2
    assert "no command given" in capsys.readouterr().err


def test_failed_command_is_recorded_and_said(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["capture", "--", "python3", "-c", "import sys; sys.exit(4)"]) == 1
    assert "exited with 4" in capsys.readouterr().err
    (bundle,) = (tmp_path / ".reprobox" / "runs").iterdir()
    assert manifest_io.read(bundle / "manifest.yaml").run.exit_code == 4


def test_error_text_is_not_read_as_markup(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["show", "[bold]weird[/bold]"]) == 1
    assert "[bold]weird[/bold]: not a reprobox bundle" in capsys.readouterr().err


def test_a_failed_build_shows_its_log_tail_then_the_error(capsys) -> None:
    from rich.console import Console

    from reprobox.cli import _print_error
    from reprobox.errors import BuildFailed

    console = Console(stderr=True, width=200)
    _print_error(
        console,
        BuildFailed("the image build failed: boom", log_tail="Step 4/9 : RUN [x]\nboom"),
        debug=False,
    )
    err = capsys.readouterr().err
    assert err.index("last lines of the build log:") < err.index("RUN [x]") < err.index("error:")
