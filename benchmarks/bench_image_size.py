"""Compare the size of a built bundle image with its base image plus the project's packages.

The numpy-sgd example is captured in a throwaway git project and built (`reprobox.build.build`,
Docker's layer cache bypassed). Measured: the image's size as Docker reports it
(`image.attrs["Size"]`). Baseline: the base image's size plus the apparent size (`du -sb`,
directory entries included) of the site-packages of the venv the run was captured in; that is
about the least an image holding this environment can weigh. Printed: both, the overhead in MB,
the ratio image / (base + site-packages), and the size of each layer the build added.
Sizes do not vary between runs, so one build is enough; --quick changes nothing but is accepted
like the other benchmarks. The image and its layers are removed afterwards.

Usage: python benchmarks/bench_image_size.py [--quick]
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import BENCH_HOME, Builds, captured_numpy_sgd, numpy_venv, site_packages, table

MB = 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="accepted; one build either way")
    parser.parse_args()
    bundle = captured_numpy_sgd(BENCH_HOME / "bench-size")
    folder = site_packages(numpy_venv())
    builds = Builds(bundle)
    try:
        built = builds.build(expect_reused=False)
        image = builds.client.images.get(built.tag)
        base = builds.client.images.get(built.base_image)
        added = _added_layers(image.history(), base.history())
    finally:
        builds.remove_all()
    sizes = Sizes(image.attrs["Size"], base.attrs["Size"], du_bytes(folder, True))
    _report(built.tag, built.base_image, sizes, du_bytes(folder, False), added)


@dataclass(frozen=True)
class Sizes:
    image: int
    base: int
    packages: int

    @property
    def baseline(self) -> int:
        return self.base + self.packages


def du_bytes(folder: Path, count_dirs: bool) -> int:
    """Apparent bytes under `folder`, links not followed: `du -sb` when `count_dirs`."""
    total = folder.lstat().st_size if count_dirs else 0
    for root, dirs, names in os.walk(folder):
        entries = names + dirs if count_dirs else names
        total += sum(os.lstat(os.path.join(root, name)).st_size for name in entries)
    return total


def _added_layers(image: list[dict[str, Any]], base: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(instruction, bytes) of the layers above the base image, oldest first."""
    added = image[: len(image) - len(base)]
    return [(str(layer.get("CreatedBy", "")), int(layer.get("Size", 0))) for layer in added][::-1]


def _report(
    tag: str, base_ref: str, sizes: Sizes, files_only: int, added: list[tuple[str, int]]
) -> None:
    rows = [
        (f"image {tag}", f"{sizes.image / MB:.2f}"),
        (f"base image {base_ref}", f"{sizes.base / MB:.2f}"),
        ("site-packages of the captured venv (du -sb)", f"{sizes.packages / MB:.2f}"),
        ("  the same, files only (no directory entries)", f"{files_only / MB:.2f}"),
        ("baseline: base + site-packages (du -sb)", f"{sizes.baseline / MB:.2f}"),
        ("overhead: image - baseline", f"{(sizes.image - sizes.baseline) / MB:+.2f}"),
    ]
    print(table(("what", "MB"), rows))
    print(f"\nratio image/(base+site-packages) = {sizes.image / sizes.baseline:.3f}")
    print("\nlayers the build added on top of the base:")
    layers = [(f"{size / MB:8.2f}", _short(created_by)) for created_by, size in added]
    print(table(("MB", "instruction"), layers))


def _short(created_by: str, width: int = 80) -> str:
    text = " ".join(created_by.replace("/bin/sh -c #(nop) ", "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


if __name__ == "__main__":
    main()
