"""A fake container engine for the unit tier; the Docker tier tests the real one."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from reprobox.engine import ContainerResult, ContainerSpec
from reprobox.errors import BaseImageError


@dataclass
class FakeEngine:
    """Records what it is asked; `run` answers with canned output; pulls succeed for `pullable`."""

    images: set[str] = field(default_factory=set)
    pullable: set[str] = field(default_factory=set)
    pulled: list[str] = field(default_factory=list)
    run_output: bytes = b""
    run_exit_code: int = 0
    runs: list[ContainerSpec] = field(default_factory=list)
    builds: list[Path] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    runtimes: tuple[str, ...] = ()
    digests: dict[str, str] = field(default_factory=dict)  # ref -> "name@sha256:…"
    envs: dict[str, dict[str, str]] = field(default_factory=dict)  # ref -> its ENV
    saved: dict[str, bytes] = field(default_factory=dict)  # ref -> what `docker save` gives
    loads: list[bytes] = field(default_factory=list)  # what `docker load` was fed

    def ping(self) -> None:
        return None

    def gpu_runtimes(self) -> tuple[str, ...]:
        return self.runtimes

    def has_image(self, ref: str) -> bool:
        return ref in self.images

    def image_id(self, ref: str) -> str:
        return f"sha256:{ref}"

    def image_env(self, ref: str) -> dict[str, str]:
        return self.envs.get(ref, {})

    def repo_digest(self, ref: str) -> str | None:
        return self.digests.get(ref)

    def image_labels(self, ref: str) -> dict[str, str]:
        return self.labels.get(ref, {})

    def pull(self, ref: str, timeout_s: float = 20) -> None:
        self.pulled.append(ref)
        if ref not in self.pullable:
            raise BaseImageError(f"could not pull {ref}: dial tcp: no such host")
        self.images.add(ref)

    def tag(self, image_id: str, ref: str) -> None:
        self.images.add(ref)

    def remove_image(self, ref: str) -> None:
        self.images.discard(ref)
        self.removed.append(ref)

    def build(
        self, context_tar: Path, labels: Mapping[str, str], on_log: Callable[[str], None]
    ) -> str:
        self.builds.append(context_tar)
        return "sha256:feed"

    def save_images(self, refs: Sequence[str], out: BinaryIO,
                    on_bytes: Callable[[int], None]) -> None:
        data = b"".join(self.saved.get(ref, f"saved {ref}".encode()) for ref in refs)
        for start in range(0, len(data), 1 << 16):
            out.write(data[start:start + (1 << 16)])
            on_bytes(len(data[start:start + (1 << 16)]))

    def load_image(self, stream: BinaryIO) -> list[str]:
        data = stream.read()
        self.loads.append(data)
        # what save_images wrote: the saved bytes of each image, one after another
        names = [ref for ref, saved in self.saved.items() if saved in data]
        self.images.update(names)
        return names

    def run(
        self,
        spec: ContainerSpec,
        on_output: Callable[[bytes], None],
        fetch: Sequence[str] = (),
        fetch_into: Path | None = None,
    ) -> ContainerResult:
        self.runs.append(spec)
        on_output(self.run_output)
        return ContainerResult(self.run_exit_code, False, ())
