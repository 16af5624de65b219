"""Fixtures of the Docker tier: a real engine, this machine's local base image, test images."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reprobox import baseimage
from reprobox.engine import DockerEngine
from reprobox.errors import BaseImageError, EngineError
from tests.integration.helpers import ImageTracker

TEST_REPOSITORY = "reprobox-test"


def unshared(dockerfile: str) -> str:
    """Put a unique LABEL right after FROM, so no other build reuses (and races on) our layers.

    The classic builder's cache is daemon-wide: a build by another test run that hits one of
    our cached steps fails with "unknown parent image ID" when our teardown removes it.
    """
    first, _, rest = dockerfile.partition("\n")
    return f"{first}\nLABEL reprobox.test.nonce={uuid.uuid4().hex}\n{rest}"


@pytest.fixture(scope="session")
def docker_engine() -> DockerEngine:
    """A DockerEngine on the real daemon; the Docker tier is skipped only if it is unreachable."""
    engine = DockerEngine()
    try:
        engine.ping()
    except EngineError as exc:
        reason = f"Docker daemon unreachable: {exc} ({exc.hint})"
        if os.environ.get("REPROBOX_REQUIRE_DOCKER") == "1":  # CI: a skipped tier is a failure
            pytest.fail(reason)
        pytest.skip(f"{reason}; Docker tier skipped")
    return engine


@pytest.fixture(scope="session")
def base_image(docker_engine: DockerEngine) -> baseimage.BaseImage:
    """The local reprobox base for this machine's Python X.Y, bootstrapped (~1 min) if absent."""
    xy = f"{sys.version_info.major}.{sys.version_info.minor}"
    try:
        ref = baseimage.local_ref(xy, baseimage.suite_for(xy))
    except BaseImageError as exc:
        pytest.skip(f"no Debian suite ships this machine's Python: {exc}")
    if docker_engine.has_image(ref):
        version = baseimage.python_version_in(docker_engine, ref)
        return baseimage.BaseImage(ref, version, "local")
    return baseimage.make(docker_engine, xy, None, None, lambda line: None)


@pytest.fixture(scope="session")
def test_images(docker_engine: DockerEngine) -> Iterator[list[str]]:
    """Image refs and ids made by tests; all removed at the end of the session."""
    made: list[str] = []
    yield made
    for ref in reversed(made):
        with contextlib.suppress(EngineError):
            docker_engine.remove_image(ref)


@pytest.fixture
def test_tag(test_images: list[str]) -> Callable[[str], str]:
    """A fresh `reprobox-test/<name>:<random>` ref, removed at teardown."""

    def make_tag(name: str) -> str:
        ref = f"{TEST_REPOSITORY}/{name}:{uuid.uuid4().hex[:12]}"
        test_images.append(ref)
        return ref

    return make_tag


@pytest.fixture
def context_tar(tmp_path: Path) -> Callable[[str], Path]:
    """Write a build context holding only the given Dockerfile text; returns the tar's path."""

    def write(dockerfile: str) -> Path:
        data = unshared(dockerfile).encode()
        path = tmp_path / f"context-{uuid.uuid4().hex[:8]}.tar"
        with tarfile.open(path, "w") as archive:
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        return path

    return write


@pytest.fixture(scope="module")
def images(docker_engine: DockerEngine) -> Iterator[ImageTracker]:
    """Tracks the images a module's captures build, and removes them when it ends."""
    tracker = ImageTracker(docker_engine)
    yield tracker
    tracker.remove_all()


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """A real Slurm answering `sinfo`: started with scripts/slurm-single-node.sh if need be.

    Skipped where there is none and none can be started (not root, no packages), except in CI
    (REPROBOX_REQUIRE_SLURM=1), where a skipped Slurm tier is a failure.
    """
    script = Path(__file__).resolve().parents[2] / "scripts" / "slurm-single-node.sh"
    if not _sinfo_answers() and os.geteuid() == 0:
        subprocess.run([str(script)], check=False, capture_output=True, timeout=600)
    if not _sinfo_answers():
        reason = ("no Slurm answers `sinfo` here, and scripts/slurm-single-node.sh could not "
                  "start one")
        if os.environ.get("REPROBOX_REQUIRE_SLURM") == "1":
            pytest.fail(reason)
        pytest.skip(f"{reason}; Slurm tier skipped")
    return subprocess.run(["sinfo", "--noheader", "--format=%N"], capture_output=True,
                          text=True, check=True).stdout.strip()


def _sinfo_answers() -> bool:
    try:
        done = subprocess.run(["sinfo", "--noheader", "--states=idle,mixed,allocated"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and bool(done.stdout.strip())
