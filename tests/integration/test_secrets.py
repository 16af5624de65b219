"""Secrets planted around a run never reach the bundle, the logs, or any byte of the built image."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from reprobox.baseimage import BaseImage
from reprobox.bundle import Bundle
from reprobox.engine import DockerEngine

from .helpers import (
    CliResult,
    ImageTracker,
    git,
    make_project,
    numpy_venv,
    only_bundle,
    reprobox,
    venv_env,
)

pytestmark = pytest.mark.docker

MARKER = "RBXCANARY7f3a"  # in every planted secret; no legitimate file holds it
ENV_SECRETS = {
    "HF_TOKEN": f"hf_{MARKER}HfToken0123456789",
    "AWS_SECRET_ACCESS_KEY": f"{MARKER}/AwsSecret+0123456789abcdef",
    "MY_SETTING": f"sk-{MARKER}MySetting0123456789",  # an allowlisted name with a token value
}
API_KEY = f"{MARKER}ApiKeyArgv0123"
REMOTE = f"https://user:ghp_{MARKER}GhRemote0123456789@example.org/x.git"
# Reports which secrets it was given, never their values.
TRAIN = '''\
import argparse, json, os, pathlib
parser = argparse.ArgumentParser()
parser.add_argument("--api-key")
args = parser.parse_args()
seen = {name: bool(os.environ.get(name)) for name in ("HF_TOKEN", "AWS_SECRET_ACCESS_KEY",
                                                       "MY_SETTING")}
seen["api_key"] = bool(args.api_key)
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path("out/seen.json").write_text(json.dumps(seen, sort_keys=True))
print("trained")
'''
CHUNK = 1 << 20


@dataclass(frozen=True)
class Planted:
    """A project with planted secrets, captured and built."""

    project: Path
    bundle: Bundle
    tag: str
    cli: tuple[CliResult, ...]


@pytest.fixture(scope="module")
def planted(
    base_image: BaseImage, docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Planted]:
    env = {**venv_env(numpy_venv(tmp_path_factory)), **ENV_SECRETS}
    files = {"train.py": TRAIN, ".env": f"SERVICE_TOKEN={MARKER}DotEnv0123\n"}
    project = make_project(tmp_path_factory.mktemp("secrets"), "secrets", files)
    git(project, "remote", "add", "origin", REMOTE)
    images = ImageTracker(docker_engine)
    images.track(project)
    try:
        argv = ["capture", "--env", "MY_SETTING", "--", "python", "train.py", "--api-key", API_KEY]
        captured = reprobox(argv, project, env)
        assert captured.code == 0, captured
        bundle = only_bundle(project)
        built = reprobox(["build", str(bundle.path)], project)
        assert built.code == 0, built
        yield Planted(project, bundle, built.out.strip(), (captured, built))
    finally:
        images.remove_all()


def test_the_run_did_get_the_secrets(planted: Planted) -> None:
    seen = json.loads((planted.project / "out" / "seen.json").read_text())
    assert seen == {"AWS_SECRET_ACCESS_KEY": True, "HF_TOKEN": True, "MY_SETTING": True,
                    "api_key": True}
    run = planted.bundle.manifest().run
    assert set(ENV_SECRETS) <= set(run.env_redacted)
    assert run.argv[-2:] == ("--api-key", "***")
    git_record = planted.bundle.manifest().git
    assert git_record is not None and git_record.remote == "https://example.org/x.git"
    assert not (planted.bundle.source_dir / ".env").exists()


def test_no_secret_in_the_bundle_or_the_logs(planted: Planted) -> None:
    files = [p for p in planted.bundle.path.rglob("*") if p.is_file()]
    assert {"manifest.yaml", "requirements.lock", "Dockerfile", "build.json", "stdout.log",
            "train.py"} <= {p.name for p in files}
    leaks = [str(p) for p in files if _found(p.open("rb"), [MARKER.encode()])]
    assert leaks == []
    for result in planted.cli:
        assert MARKER not in result.out + result.err


def test_no_secret_in_any_byte_of_the_image(
    planted: Planted, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    image = docker_engine.client.images.get(planted.tag)
    metadata = json.dumps([image.attrs, image.history()]).encode()
    assert MARKER.encode() not in metadata
    archive = tmp_path / "image.tar"
    with archive.open("wb") as sink:
        for chunk in image.save(named=True):
            sink.write(chunk)
    # The project's name is in the image (manifest, labels): proof the scan reads the layers.
    found = _scan_saved_image(archive, [MARKER.encode(), planted.project.name.encode()])
    assert found[MARKER.encode()] == []
    assert any(where.endswith("opt/reprobox/manifest.yaml") for where in
               found[planted.project.name.encode()])


def _scan_saved_image(archive: Path, needles: list[bytes]) -> dict[bytes, list[str]]:
    """Where each needle occurs: in an archive member, or in a file inside a layer tar."""
    found: dict[bytes, list[str]] = {needle: [] for needle in needles}
    with tarfile.open(archive) as outer:
        for member in outer:
            if not member.isfile():
                continue
            for needle in _found(_open(outer, member), needles):
                found[needle].append(member.name)
            for where, needle in _scan_layer(_open(outer, member), needles):
                found[needle].append(f"{member.name}:{where}")
    return found


def _scan_layer(layer: IO[bytes], needles: list[bytes]) -> Iterator[tuple[str, bytes]]:
    """(file, needle) for each needle in a file or file name of a (maybe compressed) tar."""
    inner = _as_tar(layer)
    if inner is None:
        return  # the config or index JSON, already scanned whole
    with inner:
        for member in inner:
            for needle in needles:
                if needle in member.name.encode() or needle in member.linkname.encode():
                    yield member.name, needle
            if member.isfile():
                for needle in _found(_open(inner, member), needles):
                    yield member.name, needle


def _as_tar(stream: IO[bytes]) -> tarfile.TarFile | None:
    try:
        return tarfile.open(fileobj=stream, mode="r:*")
    except tarfile.TarError:
        return None


def _open(archive: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    handle = archive.extractfile(member)
    assert handle is not None
    return handle


def _found(stream: IO[bytes], needles: Iterable[bytes]) -> list[bytes]:
    """The needles present in a stream, read in chunks (a needle may span two of them)."""
    wanted = list(needles)
    overlap = max(len(n) for n in wanted) - 1
    found: set[bytes] = set()
    tail = b""
    with stream:
        while block := stream.read(CHUNK):
            window = tail + block
            found.update(n for n in wanted if n in window)
            tail = window[-overlap:]
    return sorted(found)
