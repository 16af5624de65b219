"""Pack a real run, delete its image, then verify, unpack and replay it from the archive alone."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from reprobox.baseimage import BaseImage
from reprobox.build import read_built
from reprobox.bundle import Bundle
from reprobox.engine import DockerEngine

from .helpers import (
    EXAMPLES,
    ImageTracker,
    assert_one_line_error,
    make_project,
    numpy_venv,
    only_bundle,
    reprobox,
    venv_env,
)

pytestmark = pytest.mark.docker


def test_a_packed_run_replays_identically_from_its_archive_alone(
    base_image: BaseImage, images: ImageTracker, docker_engine: DockerEngine,
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
) -> None:
    env = venv_env(numpy_venv(tmp_path_factory))
    project = images.track(make_project(tmp_path, "pack", copy_from=EXAMPLES / "numpy-sgd"))
    assert reprobox(["capture", "--seed", "3", "--", "python", "train.py"], project, env).code == 0
    bundle = only_bundle(project)
    assert reprobox(["build", str(bundle.path)], project).code == 0
    tag = read_built(bundle).tag

    archive = tmp_path / "exp.rbx"
    started = time.monotonic()
    packed = reprobox(["pack", str(bundle.path), "-o", str(archive)], project)
    assert packed.code == 0, packed
    print(f"pack: {time.monotonic() - started:.1f} s, {archive.stat().st_size / 1e6:.1f} MB")

    docker_engine.remove_image(tag)
    assert not docker_engine.has_image(tag)
    verified = reprobox(["verify", str(archive)], tmp_path)
    assert verified.code == 0 and "OK, format 1" in verified.out, verified

    where = tmp_path / "elsewhere"
    started = time.monotonic()
    unpacked = reprobox(["unpack", str(archive), str(where)], tmp_path)
    assert unpacked.code == 0, unpacked
    print(f"unpack: {time.monotonic() - started:.1f} s")
    assert docker_engine.has_image(tag) and tag in unpacked.err
    moved = Bundle(where / "bundle")
    assert read_built(moved).tag == tag and (where / "REPRODUCE.md").is_file()

    assert reprobox(["replay", str(moved.path)], where).code == 0
    compared = reprobox(["compare", "--json", str(moved.path)], where)
    assert compared.code == 0, compared
    assert json.loads(compared.out)["verdict"] == "identical"


def test_a_damaged_archive_loads_nothing(docker_engine: DockerEngine, tmp_path: Path) -> None:
    archive = tmp_path / "bad.rbx"
    archive.write_bytes(b"\x28\xb5\x2f\xfd" + bytes(1000))  # a zstd magic, then nonsense
    result = reprobox(["unpack", str(archive), str(tmp_path / "d")], tmp_path)
    assert_one_line_error(result, "bad.rbx", code=5)
    assert not (tmp_path / "d").exists()
