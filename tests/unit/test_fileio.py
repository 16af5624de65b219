"""fileio: atomic writes and staged folders leave nothing half-written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from reprobox.fileio import atomic_write, sha256_file, staged_dir


def test_atomic_write_replaces_and_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f.txt"
    atomic_write(path, "one")
    atomic_write(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]


def test_interrupted_write_keeps_the_old_file(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f.txt"
    atomic_write(path, "old")

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, "new")
    assert path.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_staged_dir_appears_only_when_complete(tmp_path: Path) -> None:
    final = tmp_path / "runs" / "r1"
    with staged_dir(final) as staging:
        (staging / "a").write_text("a")
        assert not final.exists()
    assert (final / "a").read_text() == "a"


def test_staged_dir_vanishes_on_ctrl_c(tmp_path: Path) -> None:
    final = tmp_path / "runs" / "r1"
    with pytest.raises(KeyboardInterrupt), staged_dir(final) as staging:
        (staging / "a").write_text("a")
        raise KeyboardInterrupt
    assert not final.exists() and list((tmp_path / "runs").iterdir()) == []


def test_sha256_file_streams(tmp_path: Path) -> None:
    data = b"x" * (3 << 20)
    (tmp_path / "big").write_bytes(data)
    assert sha256_file(tmp_path / "big") == hashlib.sha256(data).hexdigest()
