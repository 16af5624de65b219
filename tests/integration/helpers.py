"""Shared tools of the Docker tier's CLI tests: in-process calls, git projects, a venv, cleanup."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import pytest

from reprobox import manifest as manifest_io
from reprobox.bundle import RUNS_DIR, Bundle, newest
from reprobox.cli import main
from reprobox.engine import DockerEngine

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
NUMPY_PIN = "numpy==2.1.3"
CONTAINER_LABEL = "reprobox.container"


@dataclass(frozen=True, slots=True)
class CliResult:
    """What one `reprobox` invocation returned and printed."""

    code: int
    out: str
    err: str


def reprobox(
    argv: list[str], cwd: Path, env: Mapping[str, str | None] | None = None
) -> CliResult:
    """Run `reprobox.cli.main(argv)` in this process, in `cwd`, with `env` changes (None: unset)."""
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    stderr = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    with (
        pytest.MonkeyPatch.context() as patch,
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        patch.chdir(cwd)
        for name, value in (env or {}).items():
            if value is None:
                patch.delenv(name, raising=False)
            else:
                patch.setenv(name, value)
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 1
    return CliResult(code, _text(stdout), _text(stderr))


def _text(stream: io.TextIOWrapper) -> str:
    stream.flush()
    buffer = stream.buffer
    assert isinstance(buffer, io.BytesIO)
    return buffer.getvalue().decode("utf-8", errors="replace")


def numpy_venv(factory: pytest.TempPathFactory) -> Path:
    """A real venv with numpy, made once per test session; returns its folder."""
    root = factory.getbasetemp() / "numpy-venv"
    if (root / ".ready").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    subprocess.run(
        [str(root / "bin" / "python"), "-m", "pip", "install", "-q", NUMPY_PIN],
        check=True,
        capture_output=True,
    )
    (root / ".ready").touch()
    return root


def venv_env(venv: Path) -> dict[str, str | None]:
    """Environment changes that make `python` the venv's interpreter, as an activated venv does."""
    return {"PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}


def unique_name(label: str) -> str:
    """A project folder name no other test (or engineer) uses: it names the image too."""
    return f"rbt-{uuid.uuid4().hex[:8]}-{label}"


def git(project: Path, *args: str) -> str:
    """Run git in `project` with a fixed identity; returns stdout."""
    argv = ["git", "-c", "user.email=tests@reprobox.invalid", "-c", "user.name=tests", *args]
    done = subprocess.run(argv, cwd=project, check=True, capture_output=True, text=True)
    return done.stdout


def make_project(
    parent: Path,
    label: str,
    files: Mapping[str, str] | None = None,
    copy_from: Path | None = None,
    in_git: bool = True,
) -> Path:
    """A project folder (a copy of `copy_from` plus `files`), committed to a fresh git repo."""
    project = parent / unique_name(label)
    if copy_from is not None:
        shutil.copytree(copy_from, project)
    project.mkdir(exist_ok=True)
    for rel, text in (files or {}).items():
        path = project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if in_git:
        git(project, "init", "-q")
        git(project, "add", "-A")
        git(project, "commit", "-q", "-m", "initial")
    return project


def only_bundle(project: Path) -> Bundle:
    """The one bundle captured in `project` (fails if there are several)."""
    runs = [p for p in (project / RUNS_DIR).iterdir()]
    assert len(runs) == 1, runs
    return newest(project / RUNS_DIR)


def run_entries(project: Path) -> list[str]:
    """Everything under `.reprobox/runs/`, hidden staging folders included."""
    runs = project / RUNS_DIR
    return sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []


def assert_one_line_error(result: CliResult, *needles: str, code: int = 1) -> None:
    """Exit `code` with `error: ...` on one line naming each needle, a `hint:`, no traceback."""
    assert result.code == code, result
    lines = result.err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.err
    for needle in needles:
        assert needle in errors[0], result.err
    assert any(line.startswith("hint: ") for line in lines), result.err
    assert "Traceback" not in result.err


@dataclass
class ImageTracker:
    """Images the tests of one module made, found by project name and run id; removed at the end."""

    engine: DockerEngine
    projects: list[Path] = field(default_factory=list)

    def track(self, project: Path) -> Path:
        self.projects.append(project)
        return project

    def tagged(self, project: Path) -> list[str]:
        """Tags `reprobox/<project>:*` present now."""
        repository = f"reprobox/{project.name}"
        images = self.engine.client.images.list(name=repository)
        return sorted(t for image in images for t in image.tags if t.startswith(repository + ":"))

    def remove_all(self) -> None:
        client = self.engine.client
        for project in self.projects:
            for tag in self.tagged(project):
                with contextlib.suppress(Exception):
                    client.images.remove(tag)
            for run_id in run_entries(project):  # untagged images of builds cut short
                label = {"label": f"reprobox.run-id={run_id}"}
                for image in client.images.list(all=True, filters=label):
                    with contextlib.suppress(Exception):
                        client.images.remove(image.id)


def leftover_containers(engine: DockerEngine, image: str) -> list[Any]:
    """reprobox containers made from `image`, running or not."""
    filters = {"label": CONTAINER_LABEL, "ancestor": image}
    return list(engine.client.containers.list(all=True, filters=filters))


def reprobox_process(
    argv: Iterable[str], cwd: Path, env: Mapping[str, str]
) -> subprocess.Popen[str]:
    """`python -m reprobox ARGV` as a child process with piped, line-buffered output."""
    return subprocess.Popen(
        [sys.executable, "-m", "reprobox", *argv],
        cwd=cwd,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(
    process: subprocess.Popen[str], stream: IO[str], needle: str, timeout_s: float
) -> list[str]:
    """Read lines until one contains `needle`; returns them (fails on EOF, kills on timeout)."""
    watchdog = threading.Timer(timeout_s, process.kill)
    watchdog.start()
    seen: list[str] = []
    try:
        for line in stream:
            seen.append(line)
            if needle in line:
                return seen
    finally:
        watchdog.cancel()
    raise AssertionError(f"{needle!r} never appeared; read:\n{''.join(seen)}")


def interrupt(process: subprocess.Popen[str], timeout_s: float = 60) -> tuple[int, str, str]:
    """Send SIGINT to the child (as `kill -INT` would) and wait; returns (code, stdout, stderr)."""
    process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"still running {timeout_s} s after SIGINT:\n{err}") from None
    return process.returncode, out, err


DATA = Path(__file__).resolve().parents[1] / "data"  # a GPU run's records, for this GPU-less host


def as_if_on_an_h100(bundle: Bundle) -> None:
    """Give a captured bundle the GPU record and CUDA state of a real H100 capture."""
    h100 = manifest_io.read(DATA / "manifests" / "torch-h100.yaml")
    captured = bundle.manifest()
    used = {key: value for key, value in h100.determinism.state.items()
            if key.startswith("torch.cuda.")}
    determinism = replace(captured.determinism, state={**captured.determinism.state, **used})
    manifest_io.write(replace(captured, gpu=h100.gpu, determinism=determinism),
                      bundle.manifest_path)
