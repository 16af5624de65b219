"""Time `reprobox.archive.pack` / `unpack` and size the archive against `docker save | gzip`.

The numpy-sgd example is captured in a throwaway git project and built once (Docker's layer
cache bypassed, like the other Docker benchmarks). Then, in this one process, N times and
interleaved: `archive.pack(bundle)` (zstandard, the bundle, `docker save` of the image and of the
base image when `reprobox base` made it, checksums, REPRODUCE.md) and the baseline
`docker save IMAGE | gzip` (subprocesses, gzip's default level, to a file); then
`archive.unpack` (verify every digest, extract, `docker load`) into a fresh folder and the
baseline `gzip -dc FILE | docker load`. Both loads run with the images already present, as on
the machine that packed them. Extra rows: `archive.verify` alone (no Docker), and, when the
archive carries the base image, `docker save IMAGE BASE | gzip` (the same images as the archive).
Printed: medians, sizes, and the ratios baseline / reprobox (time) and archive / baseline
(size). The image, its layers and every file written are removed afterwards.

Usage: python benchmarks/bench_pack.py [--quick] [--repeats N]
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

import zstandard
from _common import BENCH_HOME, Builds, arguments, captured_numpy_sgd, median, seconds, table

from reprobox import archive
from reprobox.bundle import Bundle
from reprobox.engine import DockerEngine

MB = 1e6


def main() -> None:
    args = arguments(__doc__.splitlines()[0], 3, 1, "1 repeat")
    bundle = captured_numpy_sgd(BENCH_HOME / "bench-pack")
    builds = Builds(bundle)
    scratch = Path(tempfile.mkdtemp(prefix="reprobox-bench-pack-", dir=BENCH_HOME))
    try:
        built = builds.build(expect_reused=False)
        samples, sizes = _measure(bundle, built.tag, scratch, args.repeats)
        base = _packed_base(scratch / "exp.rbx")
        if base is not None:
            sizes["baseline, image + base"] = _gzip_save([built.tag, base], scratch / "both.gz")
    finally:
        builds.remove_all()
        shutil.rmtree(scratch, ignore_errors=True)
    _report(built.tag, base, samples, sizes, args.repeats)


def _measure(bundle: Bundle, tag: str, scratch: Path,
             repeats: int) -> tuple[dict[str, list[float]], dict[str, int]]:
    engine = DockerEngine()
    out, saved = scratch / "exp.rbx", scratch / "image.tar.gz"
    samples: dict[str, list[float]] = {name: [] for name in
                                       ("pack", "save|gzip", "verify", "unpack", "gunzip|load")}
    for attempt in range(repeats):
        out.unlink(missing_ok=True)
        samples["pack"].append(seconds(lambda: archive.pack(bundle, out, engine, _quiet)))
        samples["save|gzip"].append(seconds(lambda: _gzip_save([tag], saved)))
        samples["verify"].append(seconds(lambda: archive.verify(out)))
        dest = scratch / f"unpacked-{attempt}"
        samples["unpack"].append(seconds(lambda: archive.unpack(out, dest, engine)))  # noqa: B023
        samples["gunzip|load"].append(seconds(lambda: _gunzip_load(saved)))
        shutil.rmtree(dest)
    sizes = {"archive (.rbx)": out.stat().st_size, "baseline, image": saved.stat().st_size,
             "docker save, uncompressed": _saved_bytes([tag])}
    return samples, sizes


def _quiet(_what: str, _done: int) -> None:
    """Pack's progress callback; silent, so that the timing is of the work alone."""


def _gzip_save(images: Sequence[str], target: Path) -> int:
    """`docker save IMAGES | gzip > target`; the bytes written."""
    with target.open("wb") as sink:
        save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
        assert save.stdout is not None
        gzip = subprocess.run(["gzip", "-c"], stdin=save.stdout, stdout=sink, check=False)
        save.stdout.close()
        _check(save.wait(), gzip.returncode, "docker save | gzip")
    return target.stat().st_size


def _gunzip_load(saved: Path) -> None:
    """`gzip -dc saved | docker load`."""
    gunzip = subprocess.Popen(["gzip", "-dc", str(saved)], stdout=subprocess.PIPE)
    assert gunzip.stdout is not None
    load = subprocess.run(["docker", "load", "-q"], stdin=gunzip.stdout,
                          stdout=subprocess.DEVNULL, check=False)
    gunzip.stdout.close()
    _check(gunzip.wait(), load.returncode, "gzip -dc | docker load")


def _saved_bytes(images: Sequence[str]) -> int:
    """The size of `docker save IMAGES`, counted as it streams."""
    save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
    stream = save.stdout
    assert stream is not None
    total = sum(len(chunk) for chunk in iter(lambda: stream.read(1 << 20), b""))
    _check(save.wait(), 0, "docker save")
    return total


def _check(first: int, second: int, what: str) -> None:
    if first or second:
        raise SystemExit(f"{what} failed (exit codes {first}, {second}): no measurement")


def _packed_base(out: Path) -> str | None:
    """The base image the archive carries, when `reprobox base` made it (else None)."""
    text = _member(out, "REPRODUCE.md")
    marker = "built on `"
    if marker not in text:
        return None
    return text.split(marker, 1)[1].split("`", 1)[0]


def _member(out: Path, name: str) -> str:
    """The text of one member of an archive, read with plain tarfile and zstandard."""
    with out.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream, \
            tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.name == name:
                data = tar.extractfile(member)
                return data.read().decode() if data else ""
    return ""


def _report(tag: str, base: str | None, samples: dict[str, list[float]], sizes: dict[str, int],
            repeats: int) -> None:
    rows = [(name, f"{median(times):.2f}", f"{min(times):.2f}") for name, times in samples.items()]
    print(f"image {tag}" + (f", base {base} (made locally, packed too)" if base else ""))
    print(table(("step", f"median s ({repeats} runs)", "min s"), rows))
    print()
    print(table(("file", "MB"), [(name, f"{size / MB:.1f}") for name, size in sizes.items()]))
    pack, save = median(samples["pack"]), median(samples["save|gzip"])
    unpack, load = median(samples["unpack"]), median(samples["gunzip|load"])
    print(f"\npack: (docker save | gzip) / pack = {save / pack:.2f}")
    print(f"unpack: (gzip -dc | docker load) / unpack = {load / unpack:.2f}")
    print(f"size: archive / (docker save | gzip) = "
          f"{sizes['archive (.rbx)'] / sizes['baseline, image']:.2f}")
    if "baseline, image + base" in sizes:
        print(f"size: archive / (docker save IMAGE BASE | gzip) = "
              f"{sizes['archive (.rbx)'] / sizes['baseline, image + base']:.2f}")


if __name__ == "__main__":
    main()
