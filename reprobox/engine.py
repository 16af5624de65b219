"""The only module that talks to Docker: images, builds and hardened containers."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol

import docker  # type: ignore[import-untyped]
import docker.errors  # type: ignore[import-untyped]
import docker.types  # type: ignore[import-untyped]
import docker.utils  # type: ignore[import-untyped]
import requests.exceptions

from reprobox.errors import BaseImageError, BuildFailed, EngineError, ReproboxError, UsageError

LOG_TAIL_LINES = 40
_DEFAULT_HOST = "unix:///var/run/docker.sock"
_CONTAINER_LABEL = "reprobox.container"
_SAVE_CHUNK = 4 << 20


@dataclass(frozen=True, slots=True)
class Mount:
    """A host path bound into the container."""

    source: str
    target: str
    read_only: bool = True


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """Everything needed to start one hardened container."""

    image: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    workdir: str
    user: str = "1000:1000"
    mounts: tuple[Mount, ...] = ()
    # An anonymous volume at this path, initialised by Docker from the image's content there.
    writable_dir: str | None = None
    network: bool = False
    read_only_root: bool = True
    pids_limit: int = 1024
    memory: str | None = None
    timeout_s: float | None = None
    # GPUs through the NVIDIA runtime: these host devices (indexes or UUIDs), else the first N
    gpu_ids: tuple[str, ...] = ()
    gpu_count: int = 0


@dataclass(frozen=True, slots=True)
class ContainerResult:
    """How a container ended and which of the requested paths were copied out."""

    exit_code: int
    timed_out: bool
    fetched: tuple[str, ...] = field(default=())
    stdout: bytes = b""  # kept apart here; `on_output` saw both streams interleaved
    stderr: bytes = b""


class Engine(Protocol):
    """What reprobox needs from a container engine."""

    def ping(self) -> None: ...
    def gpu_runtimes(self) -> tuple[str, ...]: ...
    def has_image(self, ref: str) -> bool: ...
    def image_labels(self, ref: str) -> dict[str, str]: ...
    def image_id(self, ref: str) -> str: ...
    def repo_digest(self, ref: str) -> str | None: ...
    def image_env(self, ref: str) -> dict[str, str]: ...
    def pull(self, ref: str, timeout_s: float = 20) -> None: ...
    def import_rootfs(self, tar_path: Path, ref: str, changes: Sequence[str] = ()) -> str: ...
    def build(
        self, context_tar: Path, labels: Mapping[str, str], on_log: Callable[[str], None]
    ) -> str: ...
    def tag(self, image_id: str, ref: str) -> None: ...
    def remove_image(self, ref: str) -> None: ...
    def save_images(self, refs: Sequence[str], out: BinaryIO,
                    on_bytes: Callable[[int], None]) -> None: ...
    def load_image(self, stream: BinaryIO) -> list[str]: ...
    def run(
        self,
        spec: ContainerSpec,
        on_output: Callable[[bytes], None],
        fetch: Sequence[str] = (),
        fetch_into: Path | None = None,
    ) -> ContainerResult: ...


# ---------------------------------------------------------------------------- error translation


def _docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or _DEFAULT_HOST


def _first_line(text: object, limit: int = 300) -> str:
    lines = str(text).strip().splitlines()
    line = lines[0].strip() if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _unreachable() -> EngineError:
    host = _docker_host()
    return EngineError(
        f"cannot reach the Docker daemon at {host}",
        hint=f"is the Docker daemon running? (DOCKER_HOST={host}); "
        "are you allowed to use it (docker group)?",
    )


def _api_error(action: str, exc: docker.errors.APIError) -> EngineError:
    reason = _first_line(exc.explanation or exc)
    if "could not select device driver" in reason:  # asked for GPUs, no NVIDIA toolkit
        hint = "install the NVIDIA Container Toolkit, run `nvidia-ctk runtime configure " \
            "--runtime=docker` and restart Docker; or replay with --cpu"
    elif "no space left on device" in reason:
        hint = "the disk under Docker's data root is full: `docker system df`, " \
            "`docker builder prune`"
    elif exc.status_code == 404:
        hint = "check the name (`docker images`, `docker ps -a`)"
    elif exc.status_code == 409:
        hint = "a leftover container or image is in the way (`docker ps -a`, `docker images`)"
    else:
        hint = "see the Docker daemon's log for details"
    return EngineError(f"Docker could not {action}: {reason}", hint=hint)


def _looks_unreachable(exc: docker.errors.DockerException) -> bool:
    text = str(exc)
    return "Error while fetching server API version" in text or "Connection" in text


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn any docker/requests failure inside the block into one EngineError."""
    try:
        yield
    except ReproboxError:
        raise
    except requests.exceptions.ConnectionError as exc:
        raise _unreachable() from exc
    except requests.exceptions.Timeout as exc:
        raise EngineError(
            f"Docker did not answer in time while trying to {action}",
            hint=f"is the Docker daemon at {_docker_host()} overloaded or stuck?",
        ) from exc
    except docker.errors.APIError as exc:
        raise _api_error(action, exc) from exc
    except docker.errors.DockerException as exc:
        if _looks_unreachable(exc):
            raise _unreachable() from exc
        raise EngineError(f"Docker could not {action}: {_first_line(exc)}",
                          hint="see the Docker daemon's log for details") from exc


def _split_ref(ref: str) -> tuple[str, str | None]:
    repo, tag = docker.utils.parse_repository_tag(ref)
    return repo, tag


# ---------------------------------------------------------------------------- the engine


class DockerEngine:
    """Engine backed by the Docker daemon (docker-py)."""

    def __init__(self, client: Any = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        """The docker client, created on first use so that importing reprobox never fails."""
        if self._client is None:
            with _translated("connect"):
                self._client = docker.from_env()
        return self._client

    def ping(self) -> None:
        """Raise EngineError unless the daemon answers."""
        with _translated("answer a ping"):
            self.client.ping()

    def gpu_runtimes(self) -> tuple[str, ...]:
        """The NVIDIA runtimes registered with the daemon (`nvidia-ctk runtime configure`)."""
        with _translated("describe itself"):
            info = self.client.info()
        names = {str(name) for name in info.get("Runtimes") or {} if "nvidia" in str(name)}
        default = str(info.get("DefaultRuntime") or "")
        return tuple(sorted(names | ({default} if "nvidia" in default else set())))

    def has_image(self, ref: str) -> bool:
        """Whether `ref` (a name or an id) is present locally."""
        with _translated(f"look up image {ref}"):
            try:
                self.client.images.get(ref)
            except docker.errors.ImageNotFound:
                return False
        return True

    def _image_config(self, ref: str) -> dict[str, Any]:
        with _translated(f"inspect image {ref}"):
            try:
                attrs = self.client.images.get(ref).attrs
            except docker.errors.ImageNotFound as exc:
                raise EngineError(f"image {ref} is not present locally",
                                  hint="`docker images` lists what is there") from exc
        return dict(attrs.get("Config") or {})

    def image_id(self, ref: str) -> str:
        """The content-derived id (`sha256:…`) of a local image."""
        with _translated(f"inspect image {ref}"):
            try:
                return str(self.client.images.get(ref).id)
            except docker.errors.ImageNotFound as exc:
                raise EngineError(f"image {ref} is not present locally",
                                  hint="`docker images` lists what is there") from exc

    def repo_digest(self, ref: str) -> str | None:
        """`name@sha256:…` as a registry served `ref`; None for an image built or imported here."""
        with _translated(f"inspect image {ref}"):
            attrs = self.client.images.get(ref).attrs
        name = _split_ref(ref)[0]
        return next((str(d) for d in attrs.get("RepoDigests") or ()
                     if str(d).partition("@")[0] == name), None)

    def image_labels(self, ref: str) -> dict[str, str]:
        """The labels of a local image."""
        return dict(self._image_config(ref).get("Labels") or {})

    def image_env(self, ref: str) -> dict[str, str]:
        """The ENV of a local image, as a mapping."""
        pairs = (item.partition("=") for item in self._image_config(ref).get("Env") or [])
        return {name: value for name, _, value in pairs}

    def pull(self, ref: str, timeout_s: float = 20) -> None:
        """Pull `ref`; BaseImageError when no registry answers within `timeout_s` or it is unknown.

        `timeout_s` bounds each silence of the daemon (no progress), not the whole pull: the
        daemon streams progress all along a real download, and answers a dead registry at once.
        """
        repo, tag = _split_ref(ref)
        with _translated(f"pull {ref}"):
            api = self.client.api  # connects first, so an unreachable daemon is reported as such

        def stream() -> Iterator[Any]:
            return iter(api.pull(repo, tag=tag or "latest", stream=True, decode=True))

        try:
            for chunk in _with_idle_timeout(stream, timeout_s):
                if isinstance(chunk, dict) and chunk.get("error"):
                    raise _pull_failed(ref, chunk["error"])
        except requests.exceptions.ConnectionError as exc:
            raise _unreachable() from exc
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            reason = exc.explanation if isinstance(exc, docker.errors.APIError) else exc
            raise _pull_failed(ref, reason or exc) from exc
        except TimeoutError as exc:
            raise _pull_failed(ref, f"no answer within {timeout_s:g} s") from exc

    def import_rootfs(self, tar_path: Path, ref: str, changes: Sequence[str] = ()) -> str:
        """`docker import` a root filesystem tarball; returns the image id ("" ref: untagged)."""
        repo, tag = _split_ref(ref) if ref else (None, None)
        with _translated(f"import {tar_path.name}"):
            answer = self.client.api.import_image(
                src=str(tar_path), repository=repo, tag=tag, changes=list(changes) or None
            )
        return _imported_id(str(answer), tar_path)

    def build(
        self, context_tar: Path, labels: Mapping[str, str], on_log: Callable[[str], None]
    ) -> str:
        """Build the tarred context with no network; returns the UNTAGGED image id."""
        tail: list[str] = []
        with _translated("build the image"), context_tar.open("rb") as context:
            stream = self.client.api.build(
                fileobj=context, custom_context=True, labels=dict(labels),
                network_mode="none", rm=True, forcerm=True, decode=True,
            )
            image_id = _follow_build(stream, tail, on_log)
        if not image_id:
            raise BuildFailed("the image build ended without an image id",
                              log_tail="\n".join(tail), hint="see the build log above")
        return image_id

    def tag(self, image_id: str, ref: str) -> None:
        """Give `image_id` the name `ref`."""
        repo, tag = _split_ref(ref)
        with _translated(f"tag {image_id[:19]} as {ref}"):
            self.client.api.tag(image_id, repo, tag=tag or "latest", force=True)

    def remove_image(self, ref: str) -> None:
        """Remove a local image name; nothing happens if it is already gone."""
        with _translated(f"remove image {ref}"), contextlib.suppress(docker.errors.ImageNotFound):
            self.client.images.remove(ref)

    def save_images(self, refs: Sequence[str], out: BinaryIO,
                    on_bytes: Callable[[int], None]) -> None:
        """`docker save REF...` streamed into `out`: layers the images share are stored once.

        docker-py saves one image per call; the Engine API's /images/get takes several names,
        so it is asked directly, through the client's own request and streaming helpers.
        """
        api = self.client.api
        with _translated(f"save {' '.join(refs)}"):
            response = api._get(api._url("/images/get"), params={"names": list(refs)},
                                stream=True)
            for chunk in api._stream_raw_result(response, _SAVE_CHUNK, False):
                out.write(chunk)
                on_bytes(len(chunk))

    def load_image(self, stream: BinaryIO) -> list[str]:
        """`docker load` a saved image from `stream`; returns the names (or ids) it loaded."""
        loaded: list[str] = []
        with _translated("load an image"):
            for message in self.client.api.load_image(stream):
                loaded.extend(_loaded_names(message))
        return loaded

    def run(
        self,
        spec: ContainerSpec,
        on_output: Callable[[bytes], None],
        fetch: Sequence[str] = (),
        fetch_into: Path | None = None,
    ) -> ContainerResult:
        """Run `spec` hardened, stream its output, copy `fetch` out; always remove the container."""
        with _translated(f"run a container from {spec.image}"):
            container = self.client.containers.create(**_create_kwargs(spec))
        volumes: list[str] = []
        try:
            with _translated(f"run a container from {spec.image}"):
                volumes = _anonymous_volumes(container)
                exit_code, timed_out = _start_and_wait(container, spec.timeout_s, on_output)
                fetched = _fetch_all(container, spec.workdir, fetch, fetch_into)
                stdout = container.logs(stdout=True, stderr=False)
                stderr = container.logs(stdout=False, stderr=True)
            return ContainerResult(exit_code, timed_out, fetched, stdout, stderr)
        finally:
            self._discard(container, volumes)

    def _discard(self, container: Any, volumes: list[str]) -> None:
        # Runs on every exit path, Ctrl-C included; a failure here must not hide the real one.
        with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
            container.remove(v=True, force=True)
        for name in volumes:
            with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
                self.client.volumes.get(name).remove(force=True)


# ---------------------------------------------------------------------------- save and load


def _loaded_names(message: Any) -> list[str]:
    """The names in one `docker load` message ("Loaded image: x:y"); raise on an error."""
    if not isinstance(message, dict):
        return []
    if message.get("error"):
        raise EngineError(f"Docker could not load the image: {_first_line(message['error'])}",
                          hint="is it a `docker save` tar? see the Docker daemon's log")
    names = []
    for line in str(message.get("stream", "")).splitlines():
        for prefix in ("Loaded image: ", "Loaded image ID: "):
            if line.startswith(prefix):
                names.append(line[len(prefix):].strip())
    return names


# ---------------------------------------------------------------------------- pull helpers


def _pull_failed(ref: str, reason: object) -> BaseImageError:
    return BaseImageError(
        f"could not pull {ref}: {_first_line(reason)}",
        hint="no registry answers? `reprobox base --python X.Y` builds a local base image, "
        "or pass --base-image IMAGE",
    )


def _with_idle_timeout(start: Callable[[], Iterator[Any]], idle_s: float) -> Iterator[Any]:
    """Yield from an iterator run in a thread; TimeoutError after `idle_s` with nothing new."""
    items: queue.Queue[tuple[str, Any]] = queue.Queue()

    def pump() -> None:
        try:
            for item in start():
                items.put(("item", item))
            items.put(("end", None))
        except BaseException as exc:  # handed to the caller's thread
            items.put(("raise", exc))

    threading.Thread(target=pump, name="reprobox-pull", daemon=True).start()
    while True:
        try:
            kind, value = items.get(timeout=idle_s)
        except queue.Empty as exc:
            raise TimeoutError(f"no answer within {idle_s} s") from exc
        if kind == "end":
            return
        if kind == "raise":
            raise value
        yield value


# ---------------------------------------------------------------------------- import and build


def _imported_id(answer: str, tar_path: Path) -> str:
    image_id = ""
    for line in answer.splitlines():
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if message.get("error"):
                raise EngineError(f"Docker could not import {tar_path}: "
                                  f"{_first_line(message['error'])}",
                                  hint="is it a tar of a root filesystem?")
            status = str(message.get("status", ""))
            image_id = status if status.startswith("sha256:") else image_id
    if not image_id:
        raise EngineError(f"Docker imported {tar_path} but reported no image id",
                          hint="see the Docker daemon's log for details")
    return image_id


def _follow_build(stream: Iterator[Any], tail: list[str], on_log: Callable[[str], None]) -> str:
    """Log the build's messages; on an error read the stream to its end (freeing the socket)."""
    image_id = ""
    for chunk in stream:
        try:
            image_id = _take_build_chunk(chunk, tail, on_log) or image_id
        except BuildFailed:
            for _rest in stream:
                pass
            raise
    return image_id


def _take_build_chunk(chunk: Any, tail: list[str], on_log: Callable[[str], None]) -> str:
    """Log one build message, keep the tail, raise on an error; returns an image id if any."""
    if not isinstance(chunk, dict):
        return ""
    for line in str(chunk.get("stream", "")).splitlines():
        if not line.strip():
            continue
        tail.append(line)
        del tail[:-LOG_TAIL_LINES]
        on_log(line)
    if chunk.get("error"):
        error = str(chunk["error"]).strip()
        tail.append(error)
        on_log(error)
        raise BuildFailed(f"the image build failed: {_first_line(error)}",
                          log_tail="\n".join(tail[-LOG_TAIL_LINES:]),
                          hint="see the build log above (its last lines are kept)")
    aux = chunk.get("aux")
    return str(aux.get("ID", "")) if isinstance(aux, dict) else ""


# ---------------------------------------------------------------------------- containers


def _create_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    env = dict(spec.env)
    env.setdefault("HOME", "/tmp")
    mounts = [docker.types.Mount(m.target, m.source, type="bind", read_only=m.read_only)
              for m in spec.mounts]
    if spec.writable_dir:
        # A volume with no source is anonymous; Docker fills it from the image at first mount.
        mounts.append(docker.types.Mount(spec.writable_dir, None, type="volume"))
    kwargs: dict[str, Any] = {
        "image": spec.image, "command": list(spec.argv), "environment": env,
        "working_dir": spec.workdir, "user": spec.user, "mounts": mounts,
        "network_mode": "bridge" if spec.network else "none",
        "cap_drop": ["ALL"], "security_opt": ["no-new-privileges"],
        "read_only": spec.read_only_root, "tmpfs": {"/tmp": "rw,nosuid,nodev"},
        "pids_limit": spec.pids_limit, "init": True, "labels": {_CONTAINER_LABEL: "1"},
        "stdin_open": False, "tty": False,
    }
    if spec.memory:
        kwargs.update(mem_limit=spec.memory, memswap_limit=spec.memory)
    if spec.gpu_ids:  # `docker run --gpus '"device=0,2"'`
        kwargs["device_requests"] = [docker.types.DeviceRequest(
            device_ids=list(spec.gpu_ids), capabilities=[["gpu"]])]
    elif spec.gpu_count:  # `docker run --gpus N`
        kwargs["device_requests"] = [docker.types.DeviceRequest(
            count=spec.gpu_count, capabilities=[["gpu"]])]
    return kwargs


_MEMORY = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(?:([kmg])b?|b)?", re.IGNORECASE)
_MEMORY_UNITS = {"": 0, "b": 0, "k": 1, "m": 2, "g": 3}


def memory_bytes(limit: str) -> int:
    """A memory limit as Docker reads it ("8g", "512m", "1.5g", "1073741824"), in bytes."""
    match = _MEMORY.fullmatch(limit.strip())
    if not match:
        raise UsageError(f"memory limit {limit!r} is not a Docker size",
                         hint="write it as Docker does: a number and b, k, m or g (8g, 512m)")
    exact = Decimal(match.group(1)) * 1024 ** _MEMORY_UNITS[(match.group(2) or "").lower()]
    if exact <= 0 or exact != exact.to_integral_value():
        raise UsageError(f"memory limit {limit!r} is not a positive whole number of bytes",
                         hint="use a whole number of a smaller unit (1536m, not 1.4999g)")
    return int(exact)


def cli_flags(spec: ContainerSpec) -> list[str]:
    """`docker create`/`docker run` options giving what `_create_kwargs` gives, env aside.

    For job scripts run where reprobox is not (a Slurm node); a test holds the two together.
    The GPU flag is left to the caller: on a cluster node the devices are the job's.
    """
    flags = ["--init", "--network", "bridge" if spec.network else "none",
             "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--user", spec.user,
             "--tmpfs", "/tmp:rw,nosuid,nodev", "--pids-limit", str(spec.pids_limit),
             "--label", f"{_CONTAINER_LABEL}=1", "--workdir", spec.workdir]
    if spec.read_only_root:
        flags.append("--read-only")
    if spec.memory:
        flags += ["--memory", spec.memory, "--memory-swap", spec.memory]
    for mount in spec.mounts:
        fields = [f"source={mount.source}", f"target={mount.target}"]
        flags += ["--mount", ",".join([*map(_csv_field, fields), "type=bind",
                                       *(["readonly"] if mount.read_only else [])])]
    if spec.writable_dir:
        flags += ["--mount", f"type=volume,{_csv_field('target=' + spec.writable_dir)}"]
    return flags


def _csv_field(field_text: str) -> str:
    """Docker reads --mount as one CSV row: a field with a comma or a quote is quoted."""
    if "," in field_text or '"' in field_text:
        return '"' + field_text.replace('"', '""') + '"'
    return field_text


def _anonymous_volumes(container: Any) -> list[str]:
    container.reload()
    return [str(m["Name"]) for m in container.attrs.get("Mounts") or []
            if m.get("Type") == "volume" and m.get("Name")]


def _start_and_wait(
    container: Any, timeout_s: float | None, on_output: Callable[[bytes], None]
) -> tuple[int, bool]:
    """Start, stream output in this thread, kill on timeout; returns (exit code, timed out)."""
    killed = threading.Event()

    def kill_on_timeout() -> None:
        with contextlib.suppress(docker.errors.APIError):
            container.kill()
            killed.set()

    timer = threading.Timer(timeout_s, kill_on_timeout) if timeout_s else None
    container.start()
    if timer:
        timer.daemon = True
        timer.start()
    output = container.logs(stream=True, follow=True, stdout=True, stderr=True)
    try:
        for chunk in output:
            on_output(chunk)
        status = container.wait()
    finally:
        _close_stream(output)
        if timer:
            timer.cancel()
            # The output can end before the kill request returns; wait for its verdict.
            timer.join()
    return int(status.get("StatusCode", -1)), killed.is_set()


def _close_stream(stream: Any) -> None:
    """Close a docker-py log stream cut short, socket included (its close() alone leaks it)."""
    with contextlib.suppress(Exception):
        stream.close()
    response = getattr(stream, "_response", None)
    if response is not None:
        with contextlib.suppress(Exception):
            response.close()


# ---------------------------------------------------------------------------- fetching outputs


def _fetch_all(
    container: Any, workdir: str, paths: Sequence[str], into: Path | None
) -> tuple[str, ...]:
    if not paths:
        return ()
    if into is None:
        raise EngineError("asked to fetch files from a container without a folder to put them",
                          hint="pass fetch_into")
    fetched = []
    for path in paths:
        if _fetch_one(container, workdir, path, into):
            fetched.append(path)
    return tuple(fetched)


def _fetch_one(container: Any, workdir: str, path: str, into: Path) -> bool:
    """Copy one container path into `into`; False when nothing was written (absent, or a link
    that leads nowhere fetchable)."""
    source = PurePosixPath(path)
    if not source.is_absolute():
        raise EngineError(f"cannot fetch {path}: container paths must be absolute",
                          hint="name outputs by their absolute path in the container")
    try:
        chunks, stat = container.get_archive(path)
    except docker.errors.NotFound:
        return False
    anchor = _anchor(source, workdir)
    link_target = (stat or {}).get("linkTarget")
    if link_target:  # the archive holds only the link, which extraction would skip
        return _fetch_link_target(container, source, link_target, anchor, into)
    with _spooled_archive(chunks) as archive:
        return _extract_safely(archive, source.parent, anchor, into) > 0


@contextlib.contextmanager
def _spooled_archive(chunks: Any) -> Iterator[tarfile.TarFile]:
    with tempfile.TemporaryFile(prefix="reprobox-fetch-") as spool:
        for chunk in chunks:
            spool.write(chunk)
        spool.seek(0)
        with tarfile.open(fileobj=spool, mode="r:") as archive:
            yield archive


def _fetch_link_target(container: Any, link: PurePosixPath, link_target: str,
                       anchor: PurePosixPath, into: Path) -> bool:
    """Write the regular file a container symlink points to under the link's own name.

    Only targets inside the link's top folder (/work for /work/out/latest.pt) are followed,
    so an output linked to /etc/passwd copies nothing out of the image.
    """
    target = _normalized(link.parent / link_target)  # Docker sends it absolute and resolved
    top = PurePosixPath("/", *link.parts[1:2])
    destination = _inside(into, link.relative_to(anchor))
    if top not in target.parents or destination is None or link == anchor:
        return False
    try:
        chunks, _stat = container.get_archive(str(target))
    except docker.errors.NotFound:  # a dangling link
        return False
    with _spooled_archive(chunks) as archive:
        member = next((m for m in archive if m.name == target.name), None)
        if member is None or not member.isfile():  # a folder, or a link again: not followed
            return False
        _write_member(archive, member, destination)
    return True


def _normalized(path: PurePosixPath) -> PurePosixPath:
    """`path` with ".." applied lexically, never above "/" (the container's root)."""
    parts: list[str] = []
    for part in path.parts[1:]:
        if part != "..":
            parts.append(part)
        elif parts:
            parts.pop()
    return PurePosixPath("/", *parts)


def _anchor(source: PurePosixPath, workdir: str) -> PurePosixPath:
    """Paths under the workdir keep their layout relative to it; others relative to /."""
    root = PurePosixPath(workdir)
    return root if source == root or root in source.parents else PurePosixPath("/")


def _inside(into: Path, relative: PurePosixPath) -> Path | None:
    """`into / relative` resolved, or None when that would land outside `into`."""
    root = into.resolve()
    target = (root / relative).resolve()
    return target if target == root or root in target.parents else None


def _extract_safely(
    archive: tarfile.TarFile, parent: PurePosixPath, anchor: PurePosixPath, into: Path
) -> int:
    """Write regular files and folders only; links, devices and escaping names are skipped.

    Returns how many files and folders were written.
    """
    into.mkdir(parents=True, exist_ok=True)
    written = 0
    for member in archive:
        name = PurePosixPath(member.name)
        if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
            continue
        target = _inside(into, (parent / name).relative_to(anchor))
        if target is None:
            continue
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            _write_member(archive, member, target)
        written += 1
    return written


def _write_member(archive: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    source = archive.extractfile(member)
    if source is None:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with source, target.open("wb") as sink:
        shutil.copyfileobj(source, sink)
    target.chmod((member.mode & 0o755) | 0o600)
