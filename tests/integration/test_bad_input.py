"""Bad input through the real CLI: one clear line, a hint, the right exit code, nothing left."""

from __future__ import annotations

import gc
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from reprobox.baseimage import BaseImage
from reprobox.bundle import RUNS_DIR, Bundle

from .helpers import (
    CliResult,
    assert_one_line_error,
    git,
    make_project,
    only_bundle,
    reprobox,
    run_entries,
)

pytestmark = pytest.mark.docker

PYTHON = sys.executable  # capture only (no image is built here): any interpreter will do
WRITE_OUTPUT = "import pathlib; pathlib.Path('result.txt').write_text('42\\n')"


def capture(project: Path, *args: str) -> CliResult:
    return reprobox(["capture", *args], project)


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    project = make_project(tmp_path_factory.mktemp("bad"), "good", {"job.py": WRITE_OUTPUT})
    assert capture(project, "--", PYTHON, "job.py").code == 0
    return only_bundle(project)


@pytest.fixture
def bundle_copy(good_bundle: Bundle, tmp_path: Path) -> Bundle:
    """A fresh copy of the good bundle, in a project of its own, for a test to damage."""
    target = tmp_path / "project" / RUNS_DIR / good_bundle.run_id
    shutil.copytree(good_bundle.path, target)
    return Bundle(target)


# --- capture -----------------------------------------------------------------------------------


def test_command_not_found_leaves_no_bundle(tmp_path: Path) -> None:
    project = make_project(tmp_path, "nocmd", {"job.py": WRITE_OUTPUT})
    result = capture(project, "--", "rbx-no-such-command")
    assert_one_line_error(result, "rbx-no-such-command")
    assert run_entries(project) == []  # not even a staging folder


def test_failing_command_is_recorded_as_failed(tmp_path: Path) -> None:
    project = make_project(tmp_path, "fails", {"job.py": "print('about to fail'); exit(4)"})
    result = capture(project, "--", PYTHON, "job.py")
    assert result.code == 1, result
    assert "error: the command exited with 4" in result.err
    assert "Traceback" not in result.err
    bundle = only_bundle(project)
    assert bundle.manifest().run.exit_code == 4
    assert not bundle.manifest().succeeded
    assert "about to fail" in (bundle.logs_dir / "stdout.log").read_text()


def test_capture_outside_git_notes_it(tmp_path: Path) -> None:
    project = make_project(tmp_path, "nogit", {"job.py": WRITE_OUTPUT}, in_git=False)
    result = capture(project, "--", PYTHON, "job.py")
    assert result.code == 0, result
    manifest = only_bundle(project).manifest()
    assert manifest.git is None
    assert any(n.startswith("git: not a git repository") for n in manifest.notes), manifest.notes
    assert [o.path for o in manifest.outputs] == ["result.txt"]


def test_dirty_tree_is_recorded_with_its_diff(tmp_path: Path) -> None:
    project = make_project(tmp_path, "dirty", {"job.py": WRITE_OUTPUT, "notes.txt": "one\n"})
    (project / "notes.txt").write_text("one\nuncommitted-line\n")
    result = capture(project, "--", PYTHON, "job.py")
    assert result.code == 0, result
    bundle = only_bundle(project)
    manifest = bundle.manifest()
    assert manifest.git is not None and manifest.git.dirty is True
    assert manifest.git.commit == git(project, "rev-parse", "HEAD").strip()
    assert manifest.git.diff_file == "git.diff"
    assert "+uncommitted-line" in bundle.diff_path.read_text()


@pytest.mark.parametrize("flag", ["--input", "--output"])
def test_missing_declared_path_is_an_error_and_no_bundle(tmp_path: Path, flag: str) -> None:
    project = make_project(tmp_path, "missing", {"job.py": WRITE_OUTPUT})
    result = capture(project, flag, "data/rbx-missing.csv", "--", PYTHON, "job.py")
    assert_one_line_error(result, "data/rbx-missing.csv")
    assert run_entries(project) == []


# --- damaged manifests -------------------------------------------------------------------------


def _truncated(text: str) -> str:
    cut = text.index('"', text.index("argv:")) + 3  # inside a quoted string: no closing quote
    return text[:cut]


def _future(text: str) -> str:
    lines = [("schema_version: 999" if line.startswith("schema_version:") else line)
             for line in text.splitlines()]
    return "\n".join(lines) + "\n"


PWNED = Path(f"/tmp/rbx-pwned-{uuid.uuid4().hex}")
DAMAGE: dict[str, Callable[[str], str]] = {
    "corrupt": lambda text: text.replace("run:", "run: [unclosed {", 1),
    "truncated": _truncated,
    "python-object": lambda text: f"!!python/object/apply:os.system ['touch {PWNED}']\n",
    "future-version": _future,
}


@pytest.mark.parametrize("verb", ["show", "build"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_manifest_is_one_clear_error(bundle_copy: Bundle, damage: str, verb: str) -> None:
    path = bundle_copy.manifest_path
    path.write_text(DAMAGE[damage](path.read_text()))
    result = reprobox([verb, str(bundle_copy.path)], bundle_copy.path)
    assert_one_line_error(result, str(path))
    assert not PWNED.exists()
    assert not (bundle_copy.path / "build.json").exists()
    debug = reprobox([verb, "--debug", str(bundle_copy.path)], bundle_copy.path)
    assert debug.code == 1 and "Traceback" in debug.err, debug
    assert not PWNED.exists()


# --- Docker problems ---------------------------------------------------------------------------


# docker-py leaves the socket of a failed connect unclosed; collect it here, not in a later test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("verb", ["build", "run"])
def test_unreachable_daemon(bundle_copy: Bundle, verb: str) -> None:
    host = "unix:///nonexistent.sock"
    result = reprobox([verb, str(bundle_copy.path)], bundle_copy.path, {"DOCKER_HOST": host})
    gc.collect()
    assert_one_line_error(result, f"cannot reach the Docker daemon at {host}")
    assert "is the Docker daemon running?" in result.err
    assert not (bundle_copy.path / "build.json").exists()


def test_unknown_base_image(bundle_copy: Bundle, base_image: BaseImage) -> None:
    result = reprobox(["build", "--base-image", "nosuch:1", str(bundle_copy.path)],
                      bundle_copy.path)
    assert_one_line_error(result, "nosuch:1")
    assert not (bundle_copy.path / "build.json").exists()
    assert not bundle_copy.dockerfile_path.exists()


def test_not_a_bundle(tmp_path: Path) -> None:
    result = reprobox(["show", str(tmp_path / "nowhere")], tmp_path)
    assert_one_line_error(result, "nowhere", "not a reprobox bundle")


# --- usage -------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    [], ["frobnicate"], ["capture", "--seed", "abc", "--", "true"], ["build", "--bogus"],
    ["compare", "--json", "--replay"], ["replay", "--timeout", "soon"],
])
def test_usage_errors_exit_2(tmp_path: Path, argv: list[str]) -> None:
    result = reprobox(argv, tmp_path)
    assert result.code == 2, result
    assert "usage: reprobox" in result.err
    assert "Traceback" not in result.err
