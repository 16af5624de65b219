"""Declared-file hashing, the allowlisted source snapshot, and output detection by mtime."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from reprobox.capture import files
from reprobox.capture.runner import RunOutput, subprocess_runner
from reprobox.errors import CaptureError
from reprobox.fileio import sha256_bytes

SECRET_FILES = [
    ".env", ".env.local", ".envrc", ".netrc", ".npmrc", ".pypirc", "server.pem", "tls/site.key",
    "id_rsa", "id_ed25519.pub", ".aws/credentials", ".ssh/config", ".config/gcloud/adc.json",
    ".docker/config.json", ".dvc/config.local", "wandb/run-1/files/config.yaml",
    "mlruns/0/meta.yaml", ".git-credentials", "sub/.env",
]
SOURCE = ["train.py", "src/model.py", "configs/base.yaml", ".gitignore", ".dvc/config",
          "docs/keys.md"]
SKIPPED = ["__pycache__/train.cpython-311.pyc", ".reprobox/runs/r1/manifest.yaml",
           "node_modules/pkg/index.js", "venv/pyvenv.cfg", "venv/lib/site.py"]


def _tree(root: Path, paths: list[str]) -> None:
    for rel in paths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"content of {rel}\n")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    _tree(root, SOURCE + SECRET_FILES + SKIPPED + ["data/train.csv", "out/model.npy"])
    return root


def _git(root: Path, *args: str) -> None:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@e.org",
           "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@e.org"}
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, env=env)


def test_walk_outside_git_uses_allowlist_and_deny_list(project: Path) -> None:
    chosen = files.source_files(project, subprocess_runner, exclude=["data", "out/model.npy"])
    # Hidden folders are skipped by the walk; hidden files at the top are kept unless denied.
    assert chosen == sorted(["train.py", "src/model.py", "configs/base.yaml", ".gitignore",
                             "docs/keys.md"])


def test_git_repo_lists_tracked_and_untracked_minus_ignored_and_denied(project: Path) -> None:
    (project / ".gitignore").write_text("ignored.log\n")
    (project / "ignored.log").write_text("x")
    _git(project, "init", "-q")
    _git(project, "add", "-f", "--", *SECRET_FILES)  # even tracked secrets stay out
    _git(project, "add", "train.py", "src/model.py", "docs/keys.md")
    _git(project, "commit", "-q", "-m", "c")
    (project / "src" / "model.py").write_text("changed\n")
    (project / "docs" / "keys.md").unlink()  # deleted in the work tree: skipped
    chosen = files.source_files(project, subprocess_runner, exclude=["data/train.csv"])
    assert chosen == sorted(["train.py", "src/model.py", "configs/base.yaml", ".gitignore",
                             ".dvc/config", "out/model.npy"])
    assert not any(files.is_denied(rel) for rel in chosen)


def test_size_cap_reports_skipped_files(project: Path) -> None:
    (project / "big.bin").write_bytes(b"x" * 2048)
    skipped: list[tuple[str, int]] = []
    chosen = files.source_files(project, subprocess_runner, exclude=(), max_bytes=1024,
                                on_skip=lambda rel, size: skipped.append((rel, size)))
    assert "big.bin" not in chosen and "train.py" in chosen
    assert skipped == [("big.bin", 2048)]


def test_links_out_of_the_project_are_skipped(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours")
    (project / "escape.txt").symlink_to(outside)
    (project / "alias.py").symlink_to(project / "train.py")
    (project / "dangling.py").symlink_to(project / "gone.py")
    chosen = files.source_files(project, subprocess_runner, exclude=())
    assert "alias.py" in chosen
    assert "escape.txt" not in chosen and "dangling.py" not in chosen


@pytest.mark.parametrize("rel", SECRET_FILES + [".git", "a/.git/config", "x/.ssh/id"])
def test_is_denied(rel: str) -> None:
    assert files.is_denied(rel)


@pytest.mark.parametrize("rel", SOURCE + ["keys/readme.md", "environment.yml", "mykey.py"])
def test_is_not_denied(rel: str) -> None:
    assert not files.is_denied(rel)


def test_hash_record(project: Path) -> None:
    record = files.hash_record(project, "data/train.csv")
    expected = b"content of data/train.csv\n"
    assert (record.path, record.sha256, record.size) == (
        "data/train.csv", sha256_bytes(expected), len(expected))


def test_hash_record_missing_or_folder(project: Path) -> None:
    with pytest.raises(CaptureError, match="data/missing.csv: no such file") as missing:
        files.hash_record(project, "data/missing.csv")
    assert missing.value.hint and "--input" in missing.value.hint
    with pytest.raises(CaptureError, match="data: not a regular file"):
        files.hash_record(project, "data")


def test_changed_files_finds_new_and_modified_outputs(project: Path) -> None:
    before = files.snapshot_mtimes(project)
    assert "train.py" in before and ".env" not in before and "venv/lib/site.py" not in before
    stamp = before["out/model.npy"][0]
    (project / "out" / "model.npy").write_text("new weights, other size\n")
    os.utime(project / "out" / "model.npy", ns=(stamp, stamp))  # same mtime, size differs
    (project / "out" / "metrics.json").write_text("{}")
    (project / "train.py").touch()
    os.utime(project / "train.py", ns=(stamp + 10**9, stamp + 10**9))
    (project / "__pycache__" / "new.pyc").write_text("x")  # skipped folder
    (project / ".reprobox" / "runs" / "r2.yaml").write_text("x")  # bundles are not outputs
    after = files.snapshot_mtimes(project)
    assert files.changed_files(before, after) == ["out/metrics.json", "out/model.npy",
                                                  "train.py"]


def test_changed_files_ignores_deleted() -> None:
    assert files.changed_files({"a": (1, 1), "b": (1, 1)}, {"a": (1, 1)}) == []


def test_snapshot_outside_git_over_the_file_count_is_an_error(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "MAX_WALK_FILES", 5)
    with pytest.raises(CaptureError, match=f"{project}: over 5 files") as error:
        files.source_files(project, subprocess_runner, exclude=())
    assert error.value.hint and "git repository" in error.value.hint


def test_snapshot_outside_git_over_the_byte_total_is_an_error(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "MAX_WALK_BYTES", 100)
    (project / "a.bin").write_bytes(b"x" * 60)
    (project / "b.bin").write_bytes(b"x" * 60)  # each under the per-file cap, together over
    with pytest.raises(CaptureError, match=f"{project}: over 0 MB"):
        files.source_files(project, subprocess_runner, exclude=())


def test_git_caps_nothing_but_a_git_ls_files_timeout_is_an_error(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "MAX_WALK_FILES", 5)
    _git(project, "init", "-q")
    assert "train.py" in files.source_files(project, subprocess_runner, exclude=())

    def impatient(argv: Sequence[str], cwd: Path | None = None, timeout: float = 30) -> RunOutput:
        # real git, with no time to answer ls-files: the runner's own timeout fires
        return subprocess_runner(argv, cwd, 1e-6 if "ls-files" in argv else timeout)

    with pytest.raises(CaptureError, match="cannot list the repository's files"):
        files.source_files(project, impatient, exclude=())


def test_snapshot_mtimes_keeps_only_regular_files(project: Path) -> None:
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(project / "s.sock"))
        os.mkfifo(project / "pipe")
        snapshot = files.snapshot_mtimes(project)
    assert "s.sock" not in snapshot and "pipe" not in snapshot and "train.py" in snapshot


def test_copy_and_hash_copies_bytes_mode_and_times(project: Path, tmp_path: Path) -> None:
    source = project / "src" / "model.py"
    source.chmod(0o750)
    os.utime(source, ns=(10**18, 10**18))
    target = tmp_path / "copy" / "src" / "model.py"
    record = files.copy_and_hash(project, "src/model.py", target)
    assert record == files.hash_record(project, "src/model.py")
    assert target.read_bytes() == source.read_bytes()
    assert (target.stat().st_mode, target.stat().st_mtime_ns) == (
        source.stat().st_mode, 10**18)


def test_submodule_files_are_in_the_snapshot(tmp_path: Path, isolated_git: None) -> None:
    sub, project = tmp_path / "sub", tmp_path / "project"
    for repo in (sub, project):
        repo.mkdir()
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    (sub / "layers.py").write_text("X = 1\n")
    subprocess.run(["git", "add", "."], cwd=sub, check=True)
    subprocess.run(["git", "commit", "-qm", "s"], cwd=sub, check=True)
    (project / "train.py").write_text("import vendor.layers\n")
    subprocess.run(["git", "-c", "protocol.file.allow=always", "submodule", "add", "-q",
                    str(sub), "vendor"], cwd=project, check=True)
    listed = files.source_files(project, subprocess_runner, exclude=())
    assert "vendor/layers.py" in listed and "train.py" in listed
