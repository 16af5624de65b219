"""fileio: atomic writes and staged folders leave nothing half-written."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from reprobox.fileio import (
    atomic_write,
    fast_digest,
    fast_digests,
    sha256_file,
    staged_dir,
)


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


def test_fast_digest_is_xxh3_128_of_the_bytes(tmp_path: Path) -> None:
    import xxhash

    data = bytes(range(256)) * 40_000  # 10 MB: more than one read chunk
    (tmp_path / "big").write_bytes(data)
    (tmp_path / "empty").write_bytes(b"")  # cannot be mapped: read instead
    assert fast_digest(tmp_path / "big") == xxhash.xxh3_128(data).hexdigest()
    assert fast_digest(tmp_path / "empty") == xxhash.xxh3_128(b"").hexdigest()
    assert len(fast_digest(tmp_path / "big")) == 32


def test_fast_digest_reads_what_cannot_be_mapped() -> None:
    import xxhash

    version = Path("/proc/version")  # size 0 to stat, yet it has content
    if not version.is_file():
        pytest.skip("no /proc here")
    assert fast_digest(version) == xxhash.xxh3_128(version.read_bytes()).hexdigest()


def test_fast_digests_of_many_files_on_threads(tmp_path: Path) -> None:
    paths = []
    for index in range(7):
        path = tmp_path / f"f{index}"
        path.write_bytes(str(index % 3).encode() * 1000)
        paths.append(path)
    digests = fast_digests([*paths, paths[0]], workers=3)
    assert list(digests) == paths and digests == {p: fast_digest(p) for p in paths}
    assert len(set(digests.values())) == 3 and fast_digests([]) == {}


def test_fast_digests_hash_large_files_side_by_side(tmp_path: Path) -> None:
    small, large, other = tmp_path / "small", tmp_path / "large", tmp_path / "other"
    small.write_bytes(b"s" * 100)
    large.write_bytes(b"L" * (17 << 20))  # over the size that gets a thread of its own
    other.write_bytes(b"O" * (17 << 20))
    digests = fast_digests([large, small, other], workers=2)
    assert list(digests) == [large, small, other]
    assert digests == {path: fast_digest(path) for path in (large, small, other)}


def test_fast_digest_of_a_file_read_in_chunks_is_the_digest_of_its_bytes(tmp_path: Path) -> None:
    import xxhash

    data = b"abc" * (3 << 20)  # 9 MiB: more than one 4 MiB chunk, and not a multiple of one
    (tmp_path / "f").write_bytes(data)
    assert fast_digest(tmp_path / "f") == xxhash.xxh3_128(data).hexdigest()


def test_atomic_writes_get_the_mode_a_plain_open_would_give(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        atomic_write(tmp_path / "report.html", "<p>shared</p>")
        (tmp_path / "plain.html").write_text("<p>shared</p>")
    finally:
        os.umask(previous)
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "plain.html").stat().st_mode & 0o777 == 0o644
