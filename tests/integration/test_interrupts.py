"""Ctrl-C (SIGINT) during capture, build and replay: exit 130 and nothing half-made left behind."""

from __future__ import annotations

import hashlib
import sys
import uuid
from pathlib import Path

import pytest

from reprobox.baseimage import BaseImage
from reprobox.bundle import Bundle
from reprobox.engine import DockerEngine

from .helpers import (
    ImageTracker,
    interrupt,
    leftover_containers,
    make_project,
    numpy_venv,
    only_bundle,
    reprobox,
    reprobox_process,
    run_entries,
    venv_env,
    wait_for_line,
)

pytestmark = pytest.mark.docker

# Quick on the host; in the image (the only place with /opt/reprobox) it sleeps, to be interrupted.
SLEEPY = '''\
import pathlib, time
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path("out/done.txt").write_text("done\\n")
if pathlib.Path("/opt/reprobox").is_dir():
    print("replay is sleeping", flush=True)
    time.sleep(120)
'''


@pytest.fixture(scope="module")
def sleepy(
    base_image: BaseImage, images: ImageTracker, tmp_path_factory: pytest.TempPathFactory
) -> Bundle:
    """A captured bundle whose image is not built yet."""
    env = venv_env(numpy_venv(tmp_path_factory))
    project = make_project(tmp_path_factory.mktemp("interrupts"), "sleepy", {"job.py": SLEEPY})
    captured = reprobox(["capture", "--", "python", "job.py"], images.track(project), env)
    assert captured.code == 0, captured
    return only_bundle(project)


def _processes_mentioning(marker: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended while we looked
        if marker in text:
            found.append(f"{cmdline.parent.name}: {text}")
    return found


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sigint_during_capture(tmp_path: Path) -> None:
    project = make_project(tmp_path, "capture", {"README.md": "nothing\n"})
    marker = f"rbx-{uuid.uuid4().hex}"
    code = f"print('started', flush=True); import time; time.sleep(30)  # {marker}"
    process = reprobox_process(["capture", "--", sys.executable, "-c", code], project, {})
    assert process.stdout is not None
    wait_for_line(process, process.stdout, "started", timeout_s=60)
    exit_code, _, err = interrupt(process)
    assert exit_code == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert run_entries(project) == []  # no bundle, no staging folder
    assert _processes_mentioning(marker) == []  # the command was stopped too


def test_sigint_during_build(sleepy: Bundle, images: ImageTracker, tmp_path: Path) -> None:
    manifest_digest = _digest(sleepy.manifest_path)
    before = sorted(p.name for p in sleepy.path.iterdir())
    process = reprobox_process(["build", str(sleepy.path)], tmp_path, {"TMPDIR": str(tmp_path)})
    assert process.stderr is not None
    wait_for_line(process, process.stderr, "Step ", timeout_s=300)
    exit_code, out, err = interrupt(process)
    assert exit_code == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert out == ""  # no tag printed
    assert images.tagged(sleepy.path.parents[2]) == []
    # The bundle is as it was, give or take the files build writes before it starts the build.
    assert _digest(sleepy.manifest_path) == manifest_digest
    after = sorted(p.name for p in sleepy.path.iterdir())
    assert set(after) - set(before) <= {"Dockerfile", "requirements.lock"}, after
    assert not (sleepy.path / "build.json").exists()
    assert not [p for p in after if p.startswith(".")]  # no temporary files
    assert list(tmp_path.iterdir()) == []  # the build context was removed


def test_sigint_during_replay(
    sleepy: Bundle, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    built = reprobox(["build", str(sleepy.path)], tmp_path)
    assert built.code == 0, built
    tag = built.out.strip()
    process = reprobox_process(["replay", str(sleepy.path)], tmp_path, {})
    assert process.stdout is not None
    wait_for_line(process, process.stdout, "replay is sleeping", timeout_s=120)
    [container] = leftover_containers(docker_engine, tag)
    volumes = [m["Name"] for m in container.attrs["Mounts"] if m["Type"] == "volume"]
    assert volumes  # the writable /app volume
    exit_code, _, err = interrupt(process)
    assert exit_code == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert sleepy.replays() == []
    assert not sleepy.replays_dir.exists() or list(sleepy.replays_dir.iterdir()) == []
    assert leftover_containers(docker_engine, tag) == []
    names = {v.name for v in docker_engine.client.volumes.list()}
    assert names.isdisjoint(volumes)
