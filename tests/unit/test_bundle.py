"""bundle: resolving BUNDLE arguments and finding the newest complete run."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprobox import bundle
from reprobox.errors import BundleError


def _run(root: Path, name: str) -> Path:
    path = root / ".reprobox" / "runs" / name
    path.mkdir(parents=True)
    (path / "manifest.yaml").write_text("schema_version: 1\n")
    return path


def test_newest_complete_run_is_the_default(tmp_path: Path) -> None:
    _run(tmp_path, "20261127T100000Z-aaaaaa")
    newest = _run(tmp_path, "20261127T110000Z-bbbbbb")
    (tmp_path / ".reprobox" / "runs" / ".20261127T120000Z.partial").mkdir()
    assert bundle.find(None, tmp_path).path == newest


def test_a_run_id_or_folder_selects_a_bundle(tmp_path: Path) -> None:
    first = _run(tmp_path, "20261127T100000Z-aaaaaa")
    _run(tmp_path, "20261127T110000Z-bbbbbb")
    assert bundle.find("20261127T100000Z-aaaaaa", tmp_path).path == first
    assert bundle.find(str(first), tmp_path).path == first


def test_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no captured runs") as err:
        bundle.find(None, tmp_path)
    assert "reprobox capture" in (err.value.hint or "")
    with pytest.raises(BundleError, match="nope: not a reprobox bundle"):
        bundle.find("nope", tmp_path)


def test_runs_are_found_from_anywhere_inside_the_project(tmp_path: Path) -> None:
    run = _run(tmp_path, "20261127T100000Z-aaaaaa")
    deep = tmp_path / "exp 1" / "sub"
    deep.mkdir(parents=True)
    assert bundle.find(None, deep).path == run
    assert bundle.find("20261127T100000Z-aaaaaa", deep).path == run
