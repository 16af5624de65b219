"""The CLI's `compare A B` and `--repeat N`, on bundles on disk and a scripted engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reprobox.bundle import Bundle
from reprobox.cli import main
from reprobox.manifest import Gpus, Manifest
from reprobox.replay import replay_many
from tests.unit.scripted import BUILT, ScriptedEngine, bundle_with_outputs, npy

SAME, OTHER = npy([1.0, 2.0]), npy([1.0, 2.5])


@pytest.fixture
def project(tmp_path: Path, sample_manifest: Manifest, monkeypatch: pytest.MonkeyPatch) -> Bundle:
    monkeypatch.chdir(tmp_path)
    return bundle_with_outputs(tmp_path, sample_manifest, {"out/w.npy": SAME})


def _engine(monkeypatch: pytest.MonkeyPatch, *writes: bytes, **options: object) -> ScriptedEngine:
    """The engine every `DockerEngine()` of the CLI gets; the host has no GPU."""
    engine = ScriptedEngine(images={BUILT.tag}, writes=[{"out/w.npy": w} for w in writes],
                            **options)  # type: ignore[arg-type]
    monkeypatch.setattr("reprobox.engine.DockerEngine", lambda: engine)
    monkeypatch.setattr("reprobox.cli._host_gpus", lambda cpu: Gpus("none"))
    return engine


def _replays(project: Bundle, *writes: bytes) -> list[Path]:
    engine = ScriptedEngine(images={BUILT.tag}, writes=[{"out/w.npy": w} for w in writes])
    return replay_many(project, engine, lambda chunk: None, len(writes))


def test_compare_two_replays(project: Bundle, capsys: pytest.CaptureFixture[str]) -> None:
    first, second, third = _replays(project, SAME, OTHER, SAME)
    assert main(["compare", "--json", str(first), str(third)]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "identical"
    assert main(["compare", "--json", str(first), str(second)]) == 3
    (output,) = json.loads(capsys.readouterr().out)["outputs"]
    assert (output["verdict"], output["max_abs_diff"]) == ("different", 0.5)
    assert not (second / "comparison.json").exists()  # A vs B is not "the replay's comparison"


def test_compare_the_original_against_a_replay_and_back(
        project: Bundle, capsys: pytest.CaptureFixture[str]) -> None:
    (replay,) = _replays(project, OTHER)
    assert main(["compare", str(replay), str(project.path)]) == 3
    table = capsys.readouterr().out
    assert "NOT REPRODUCED" in table
    assert main(["compare", "--json", "r1", str(replay)]) == 3  # a run id works as A
    assert json.loads(capsys.readouterr().out)["outputs"][0]["max_abs_diff"] == 0.5


def test_one_replay_folder_is_compared_with_its_original(
        project: Bundle, capsys: pytest.CaptureFixture[str]) -> None:
    first, _newest = _replays(project, SAME, OTHER)
    assert main(["compare", "--json", str(first)]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "identical"
    assert json.loads((first / "comparison.json").read_text())["verdict"] == "identical"
    assert main(["compare", "--json"]) == 3  # no argument: the newest replay, as always


def test_bad_runs_are_one_line_errors(project: Bundle, capsys: pytest.CaptureFixture[str]) -> None:
    (replay,) = _replays(project, SAME)
    assert main(["compare", str(replay), "no/such/place"]) == 1
    err = capsys.readouterr().err
    assert "error: no/such/place: neither a bundle nor a replay folder" in err
    assert "hint:" in err and "Traceback" not in err
    assert main(["compare", str(project.path), str(replay), "--replay", str(replay)]) == 2
    assert "--replay picks a replay of BUNDLE" in capsys.readouterr().err


def test_replay_repeat_reports_the_variation(
        project: Bundle, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    engine = _engine(monkeypatch, SAME, OTHER, SAME)
    assert main(["replay", "--repeat", "3"]) == 0  # all three ran and exited 0
    captured = capsys.readouterr()
    assert "run-to-run variation over 3 replays in one image: 2 different results (2 + 1" in (
        captured.out.replace("\n", " "))
    assert "2 of 3 identical to the original" in captured.out.replace("\n", " ")
    assert captured.err.count("replay ") >= 3 and len(engine.probes) == 1
    assert len(project.replays()) == 3


def test_replay_repeat_exit_code_covers_every_replay(
        project: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    _engine(monkeypatch, SAME, SAME, exit_codes=[0, 1])
    assert main(["replay", "--repeat", "2"]) == 1


def test_run_repeat_json_is_one_document_and_fails_if_any_did_not_reproduce(
        project: Bundle, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _engine(monkeypatch, SAME, OTHER)
    monkeypatch.setattr("reprobox.build.build", lambda *args, **kwargs: BUILT)
    assert main(["run", "--repeat", "2", "--json"]) == 3  # the newest differs
    document = json.loads(capsys.readouterr().out)
    assert document["verdict"] == "different"
    assert document["variation"]["reproduced"] == 1
    assert document["variation"]["outputs"][0]["max_abs_diff"] == 0.5
    _engine(monkeypatch, OTHER, SAME)
    assert main(["run", "--repeat", "2"]) == 3  # the newest reproduced, the first did not


def test_repeat_must_be_a_positive_count(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit) as exit_info:
            main(["replay", "--repeat", bad])
        assert exit_info.value.code == 2
    assert "expected a number of replays ≥ 1" in capsys.readouterr().err
