"""Unit tests of engine.py: Docker failures become one-line reprobox errors; safe extraction."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import docker.errors
import pytest
import requests.exceptions

from reprobox import engine as engine_mod
from reprobox.engine import ContainerSpec, DockerEngine, Mount
from reprobox.errors import BaseImageError, BuildFailed, EngineError, UsageError


class FakeImages:
    def __init__(self, present: set[str]) -> None:
        self.present = present

    def get(self, ref: str) -> Any:
        if ref not in self.present:
            raise docker.errors.ImageNotFound(f"No such image: {ref}")
        return type("Image", (), {"attrs": {"Config": {"Labels": {"a": "1"}, "Env": ["X=1=2"]}}})

    def remove(self, ref: str) -> None:
        raise docker.errors.ImageNotFound(f"No such image: {ref}")


class FakeApi:
    def __init__(self) -> None:
        self.build_chunks: list[Any] = []
        self.build_kwargs: dict[str, Any] = {}
        self.pull_result: Any = iter(())

    def build(self, **kwargs: Any) -> Iterator[Any]:
        self.build_kwargs = kwargs
        return iter(self.build_chunks)

    def pull(self, repo: str, tag: str, stream: bool, decode: bool) -> Any:
        if isinstance(self.pull_result, Exception):
            raise self.pull_result
        return self.pull_result


class FakeClient:
    def __init__(self, images: set[str] | None = None) -> None:
        self.images = FakeImages(images or set())
        self.api = FakeApi()
        self.ping_error: Exception | None = None

    def ping(self) -> bool:
        if self.ping_error:
            raise self.ping_error
        return True


def api_error(status: int, explanation: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError("boom", response=response, explanation=explanation)


def test_unreachable_daemon_names_docker_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nowhere.sock")
    client = FakeClient()
    client.ping_error = requests.exceptions.ConnectionError("Connection aborted")
    with pytest.raises(EngineError) as caught:
        DockerEngine(client).ping()
    assert "cannot reach the Docker daemon at unix:///nowhere.sock" in str(caught.value)
    assert "is the Docker daemon running? (DOCKER_HOST=unix:///nowhere.sock)" in caught.value.hint


def test_from_env_failure_is_translated_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise docker.errors.DockerException(
            "Error while fetching server API version: ('Connection aborted.', FileNotFoundError)")

    monkeypatch.setattr(engine_mod.docker, "from_env", refuse)
    engine = DockerEngine()  # constructing must not contact the daemon
    with pytest.raises(EngineError, match="cannot reach the Docker daemon"):
        engine.has_image("x")


def test_api_errors_become_one_line_engine_errors() -> None:
    client = FakeClient()
    client.ping_error = api_error(409, "Conflict. The name is in use\nby container abc")
    with pytest.raises(EngineError) as caught:
        DockerEngine(client).ping()
    assert str(caught.value) == "Docker could not answer a ping: Conflict. The name is in use"
    assert "leftover" in caught.value.hint


def test_disk_full_gets_a_disk_hint() -> None:
    client = FakeClient()
    client.ping_error = api_error(500, "write /var/lib/docker/x: no space left on device")
    with pytest.raises(EngineError) as caught:
        DockerEngine(client).ping()
    assert "docker builder prune" in caught.value.hint


def test_images_labels_env_and_idempotent_remove() -> None:
    engine = DockerEngine(FakeClient({"present:1"}))
    assert engine.has_image("present:1") and not engine.has_image("absent:1")
    assert engine.image_labels("present:1") == {"a": "1"}
    assert engine.image_env("present:1") == {"X": "1=2"}
    engine.remove_image("absent:1")
    with pytest.raises(EngineError, match="image absent:1 is not present locally"):
        engine.image_labels("absent:1")


def test_pull_registry_failure_is_a_base_image_error() -> None:
    client = FakeClient()
    client.api.pull_result = api_error(500, 'Get "https://r.example/v2/": dial tcp: no such host')
    with pytest.raises(BaseImageError, match="could not pull python:3.11.7-slim: Get"):
        DockerEngine(client).pull("python:3.11.7-slim")


def test_pull_error_chunk_is_a_base_image_error() -> None:
    client = FakeClient()
    client.api.pull_result = iter([{"status": "Pulling"}, {"error": "manifest unknown"}])
    with pytest.raises(BaseImageError, match="manifest unknown"):
        DockerEngine(client).pull("python:9.9.9-slim")


def test_pull_that_goes_silent_fails_within_the_timeout() -> None:
    def silent() -> Iterator[Any]:
        time.sleep(5)
        yield {}

    client = FakeClient()
    client.api.pull_result = silent()
    started = time.monotonic()
    with pytest.raises(BaseImageError, match="no answer within 0.2 s"):
        DockerEngine(client).pull("python:3.11.7-slim", timeout_s=0.2)
    assert time.monotonic() - started < 2


def test_build_returns_untagged_id_with_network_off() -> None:
    client = FakeClient()
    client.api.build_chunks = [{"stream": "Step 1/2 : FROM x\n"}, {"aux": {"ID": "sha256:abc"}}]
    lines: list[str] = []
    context = Path(__file__)  # any readable file stands in for the context tar
    image_id = DockerEngine(client).build(context, {"k": "v"}, lines.append)
    assert image_id == "sha256:abc"
    assert lines == ["Step 1/2 : FROM x"]
    assert client.api.build_kwargs["network_mode"] == "none"
    assert "tag" not in client.api.build_kwargs
    assert client.api.build_kwargs["labels"] == {"k": "v"}


def test_build_error_keeps_the_last_40_lines() -> None:
    client = FakeClient()
    client.api.build_chunks = [{"stream": f"line {n}\n"} for n in range(100)]
    client.api.build_chunks.append({"error": "The command '/bin/sh -c false' returned 1"})
    with pytest.raises(BuildFailed) as caught:
        DockerEngine(client).build(Path(__file__), {}, lambda line: None)
    tail = caught.value.log_tail.splitlines()
    assert len(tail) == 40
    assert tail[0] == "line 61" and tail[-1].startswith("The command")
    assert "returned 1" in str(caught.value)


def test_build_without_an_id_fails() -> None:
    client = FakeClient()
    client.api.build_chunks = [{"stream": "Step 1/1 : FROM x\n"}]
    with pytest.raises(BuildFailed, match="without an image id"):
        DockerEngine(client).build(Path(__file__), {}, lambda line: None)


def test_create_kwargs_are_hardened() -> None:
    spec = ContainerSpec(image="img", argv=("python", "t.py"), env={"A": "1"}, workdir="/w",
                         mounts=(Mount("/host/data", "/w/data"),), writable_dir="/w/out",
                         memory="1g")
    kwargs = engine_mod._create_kwargs(spec)
    assert kwargs["network_mode"] == "none"
    assert kwargs["cap_drop"] == ["ALL"]
    assert kwargs["security_opt"] == ["no-new-privileges"]
    assert kwargs["read_only"] is True and "/tmp" in kwargs["tmpfs"]
    assert kwargs["user"] == "1000:1000" and kwargs["init"] is True
    assert kwargs["environment"] == {"A": "1", "HOME": "/tmp"}
    assert kwargs["mem_limit"] == kwargs["memswap_limit"] == "1g"
    bind, volume = kwargs["mounts"]
    assert bind["Type"] == "bind" and bind["ReadOnly"] is True
    assert volume["Type"] == "volume" and volume["Source"] is None
    assert "device_requests" not in kwargs


def test_gpus_are_requested_as_docker_run_gpus_does() -> None:
    spec = ContainerSpec(image="img", argv=("python",), env={}, workdir="/w", gpu_count=2)
    (request,) = engine_mod._create_kwargs(spec)["device_requests"]
    assert (request["Count"], request["Capabilities"], request["Driver"]) == (2, [["gpu"]], "")
    chosen = ContainerSpec(image="img", argv=("python",), env={}, workdir="/w",
                           gpu_ids=("GPU-5", "GPU-6"), gpu_count=2)
    (request,) = engine_mod._create_kwargs(chosen)["device_requests"]
    assert (request["DeviceIDs"], request["Count"]) == (["GPU-5", "GPU-6"], 0)


def test_a_daemon_that_cannot_hand_out_gpus_is_told_how_to_fix_it() -> None:
    exc = docker.errors.APIError("500", explanation='could not select device driver "" with '
                                 "capabilities: [[gpu]]")
    error = engine_mod._api_error("run a container from img", exc)
    assert "could not select device driver" in str(error)
    assert error.hint is not None and "nvidia-ctk runtime configure" in error.hint
    assert "--cpu" in error.hint


@pytest.mark.parametrize(("info", "expected"), [
    ({"Runtimes": {"runc": {}}, "DefaultRuntime": "runc"}, ()),
    ({"Runtimes": {"runc": {}, "nvidia": {}}, "DefaultRuntime": "runc"}, ("nvidia",)),
    ({"Runtimes": {"nvidia": {}}, "DefaultRuntime": "nvidia"}, ("nvidia",)),
])
def test_gpu_runtimes_are_read_from_docker_info(info: dict[str, Any],
                                                expected: tuple[str, ...]) -> None:
    class InfoClient:
        def info(self) -> dict[str, Any]:
            return info

    assert DockerEngine(InfoClient()).gpu_runtimes() == expected


class InterruptedContainer:
    """A container whose output stream is cut by Ctrl-C."""

    def __init__(self) -> None:
        self.removed: dict[str, Any] = {}
        self.attrs = {"Mounts": [{"Type": "volume", "Name": "anon1"}, {"Type": "bind"}]}

    def reload(self) -> None:
        pass

    def start(self) -> None:
        pass

    def logs(self, **kwargs: Any) -> Iterator[bytes]:
        yield b"epoch 1\n"
        raise KeyboardInterrupt

    def remove(self, **kwargs: Any) -> None:
        self.removed = kwargs


def test_run_removes_container_and_volume_on_ctrl_c() -> None:
    container = InterruptedContainer()
    removed_volumes: list[str] = []
    client = FakeClient()
    client.containers = type("C", (), {"create": lambda self, **kw: container})()
    volume = type("V", (), {"remove": lambda self, force: removed_volumes.append("anon1")})()
    client.volumes = type("Vs", (), {"get": lambda self, name: volume})()
    output: list[bytes] = []
    spec = ContainerSpec(image="img", argv=("x",), env={}, workdir="/w")
    with pytest.raises(KeyboardInterrupt):
        DockerEngine(client).run(spec, output.append)
    assert output == [b"epoch 1\n"]
    assert container.removed == {"v": True, "force": True}
    assert removed_volumes == ["anon1"]


def tar_with(entries: list[tarfile.TarInfo], payload: bytes = b"data") -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for entry in entries:
            archive.addfile(entry, io.BytesIO(payload) if entry.isfile() else None)
    buffer.seek(0)
    return tarfile.open(fileobj=buffer, mode="r:")


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    info.size = 4 if kind == tarfile.REGTYPE else 0
    return info


def test_extract_keeps_regular_files_and_drops_links_and_escapes(tmp_path: Path) -> None:
    archive = tar_with([
        entry("out", tarfile.DIRTYPE), entry("out/w.npy"), entry("out/../../evil"),
        entry("/abs"), entry("out/link", tarfile.SYMTYPE, "/etc/passwd"),
        entry("out/hard", tarfile.LNKTYPE, "out/w.npy"), entry("out/fifo", tarfile.FIFOTYPE),
    ])
    engine_mod._extract_safely(archive, PurePosixPath("/work"), PurePosixPath("/work"), tmp_path)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert written == ["out", "out/w.npy"]
    assert (tmp_path / "out/w.npy").read_bytes() == b"data"
    assert not (tmp_path.parent / "evil").exists()


def test_fetched_paths_keep_layout_relative_to_workdir_or_root() -> None:
    assert engine_mod._anchor(PurePosixPath("/work/out/a"), "/work") == PurePosixPath("/work")
    assert engine_mod._anchor(PurePosixPath("/work"), "/work") == PurePosixPath("/work")
    assert engine_mod._anchor(PurePosixPath("/workx/a"), "/work") == PurePosixPath("/")


def test_repo_digest_is_the_one_of_the_images_own_repository() -> None:
    class Images:
        def get(self, ref: str) -> Any:
            class Image:
                attrs = {"RepoDigests": ["mirror.example/python@sha256:" + "cd" * 32,
                                         "python@sha256:" + "ab" * 32]}
            return Image()

    class Client:
        images = Images()

    engine = DockerEngine(Client())
    assert engine.repo_digest("python:3.11.7-slim-bookworm") == "python@sha256:" + "ab" * 32
    assert engine.repo_digest("other:1") is None


@pytest.mark.parametrize(("limit", "size"), [
    ("8g", 8 << 30), ("512M", 512 << 20), ("1.5g", 3 << 29), ("1073741824", 1 << 30),
    ("64kb", 64 << 10), (" 2G ", 2 << 30), ("100b", 100),
])
def test_memory_limits_are_read_as_docker_reads_them(limit: str, size: int) -> None:
    assert engine_mod.memory_bytes(limit) == size


@pytest.mark.parametrize("limit", ["", "8x", "-1g", "0", "1.0000001k", "g8", "8 g"])
def test_a_memory_limit_docker_would_refuse_is_a_usage_error(limit: str) -> None:
    with pytest.raises(UsageError, match="memory limit"):
        engine_mod.memory_bytes(limit)
