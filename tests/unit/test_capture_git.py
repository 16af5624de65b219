"""The git probe against real repositories made in tmp_path."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from reprobox.capture import git
from reprobox.capture.runner import RunOutput, subprocess_runner
from reprobox.errors import ProbeUnavailable
from reprobox.fileio import sha256_bytes

CANARY_REMOTE = "https://user:ghp_SECRETCANARY@git.example.org/x.git"


pytestmark = pytest.mark.usefixtures("isolated_git")


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    (root / "train.py").write_text("print('hi')\n")
    (root / ".gitignore").write_text("outputs/\n")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "first")
    return root


def test_clean_repository(repo: Path) -> None:
    record, diff = git.probe(repo, subprocess_runner)
    assert record.commit == _git(repo, "rev-parse", "HEAD") and len(record.commit) == 40
    assert (record.branch, record.remote, record.dirty) == ("main", None, False)
    assert (record.diff_file, record.diff_sha256, diff) == (None, None, "")


def test_ignored_files_keep_it_clean(repo: Path) -> None:
    (repo / "outputs").mkdir()
    (repo / "outputs" / "w.npy").write_bytes(b"\x00")
    assert git.probe(repo, subprocess_runner)[0].dirty is False


def test_dirty_tracked_file_gives_redacted_diff(repo: Path) -> None:
    token = "hf_" + "CANARYabcdefghijklmnopqrstuvwxyz1234"
    (repo / "train.py").write_text(f"print('hi')\nTOKEN = '{token}'\n")
    record, diff = git.probe(repo, subprocess_runner)
    assert record.dirty is True
    assert "+TOKEN = '***'" in diff and "CANARY" not in diff
    assert record.diff_file == "git.diff"
    assert record.diff_sha256 == sha256_bytes(diff.encode())


def test_untracked_file_is_dirty_without_diff(repo: Path) -> None:
    (repo / "new.py").write_text("x = 1\n")
    record, diff = git.probe(repo, subprocess_runner)
    assert record.dirty is True and diff == "" and record.diff_file is None


def test_binary_and_staged_changes_are_in_diff(repo: Path) -> None:
    (repo / "blob.bin").write_bytes(bytes(range(256)))
    _git(repo, "add", "blob.bin")
    record, diff = git.probe(repo, subprocess_runner)
    assert "GIT binary patch" in diff and record.dirty


def test_detached_head_has_no_branch(repo: Path) -> None:
    _git(repo, "checkout", "-q", "--detach")
    record, _ = git.probe(repo, subprocess_runner)
    assert record.branch is None and record.commit == _git(repo, "rev-parse", "HEAD")


def test_remote_credentials_stripped_origin_preferred(repo: Path) -> None:
    _git(repo, "remote", "add", "backup", "git@other.example.org:o/x.git")
    _git(repo, "remote", "add", "origin", CANARY_REMOTE)
    record, _ = git.probe(repo, subprocess_runner)
    assert record.remote == "https://git.example.org/x.git"
    assert "SECRETCANARY" not in repr(record)


def test_first_remote_when_no_origin(repo: Path) -> None:
    _git(repo, "remote", "add", "upstream", "git@other.example.org:o/x.git")
    assert git.probe(repo, subprocess_runner)[0].remote == "git@other.example.org:o/x.git"


def test_no_commits(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    _git(root, "init", "-q")
    with pytest.raises(ProbeUnavailable, match="not a git repository: .*no commits"):
        git.probe(root, subprocess_runner)


def test_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(ProbeUnavailable, match="not a git repository"):
        git.probe(plain, subprocess_runner)
    assert git.project_root(plain, subprocess_runner) == plain


def test_git_missing() -> None:
    def no_git(argv: Sequence[str], cwd: Path | None = None, timeout: float = 30) -> RunOutput:
        raise ProbeUnavailable(f"{argv[0]}: command not found")

    with pytest.raises(ProbeUnavailable, match="not a git repository: .*command not found"):
        git.probe(Path("/somewhere"), no_git)
    assert git.project_root(Path("/somewhere"), no_git) == Path("/somewhere")


def test_project_root_from_subfolder(repo: Path) -> None:
    sub = repo / "src" / "pkg"
    sub.mkdir(parents=True)
    assert git.project_root(sub, subprocess_runner) == repo
    record, _ = git.probe(sub, subprocess_runner)
    assert record.branch == "main"


@pytest.mark.parametrize(("url", "expected"), [
    ("hg::https://u:CANARYpw@h.example.org/r", "hg::https://h.example.org/r"),
    ("https://u:pa/CANARY@h.example.org/r.git", "https://h.example.org/r.git"),
    ("https://u:CANARY@h.example.org/r.git", "https://h.example.org/r.git"),
    ("ssh://git@h.example.org/r.git", "ssh://git@h.example.org/r.git"),
    ("git@h.example.org:o/r.git", "git@h.example.org:o/r.git"),
])
def test_remote_password_is_removed_in_any_url_form(repo: Path, url: str, expected: str) -> None:
    _git(repo, "remote", "add", "origin", url)
    assert git.probe(repo, subprocess_runner)[0].remote == expected
