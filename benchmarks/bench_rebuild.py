"""Time a cold `reprobox build` against an unchanged rebuild of the same bundle.

The numpy-sgd example is captured once in a throwaway git project (its venv holds numpy, built
once under $REPROBOX_BENCH_HOME, default /tmp/reprobox-bench). Then, in this one process, N
times: a cold build (`reprobox.build.build`, image absent, Docker's layer cache bypassed with
nocache so nothing from earlier builds is reused, reprobox's wheel cache warm) and, right after
it, an unchanged rebuild of the same bundle (image present, so reprobox only re-derives the tag
and finds it). Baseline is the cold build; the ratio is cold / unchanged. Extra rows: the
unchanged rebuild through the CLI (`python -m reprobox build`, a subprocess, start-up
included) and, once and not with --quick, a cold build with an empty wheel cache whose wheel
is downloaded from the package index (PIP_FIND_LINKS unset, pip's cache empty too).
Every image and intermediate layer these builds make is removed at the end.

Usage: python benchmarks/bench_rebuild.py [--quick] [--repeats N]
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from _common import (
    BENCH_HOME,
    REPROBOX_CLI,
    Builds,
    arguments,
    captured_numpy_sgd,
    median,
    run,
    seconds,
    table,
)


def main() -> None:
    args = arguments(__doc__.splitlines()[0], 3, 1, "1 repeat, no cold-cache build")
    bundle = captured_numpy_sgd(BENCH_HOME / "bench-rebuild")
    builds = Builds(bundle)
    samples: dict[str, list[float]] = {"cold": [], "unchanged": [], "unchanged_cli": []}
    try:
        builds.build(expect_reused=False)  # untimed: warms reprobox's wheel cache, hashes the lock
        builds.remove_all()
        cold_cache = None if args.quick else _cold_cache_build(builds)
        for _ in range(args.repeats):
            samples["cold"].append(seconds(lambda: builds.build(expect_reused=False)))
            samples["unchanged"].append(seconds(lambda: builds.build(expect_reused=True)))
            cli = [*REPROBOX_CLI, "build", str(bundle.path)]
            samples["unchanged_cli"].append(seconds(lambda: run(cli)))  # noqa: B023 - runs now
            builds.remove_all()
    finally:
        builds.remove_all()
    _report(samples, cold_cache, args.repeats)
    print(f"clean-up: removed {builds.removed} images by id or tag (with their untagged parents)")


def _cold_cache_build(builds: Builds) -> float:
    """One cold build whose wheel must come from the package index, not from any cache."""
    with (
        tempfile.TemporaryDirectory(prefix="reprobox-bench-cache-") as empty,
        _environ(XDG_CACHE_HOME=empty, PIP_FIND_LINKS=None),
    ):
        took = seconds(
            lambda: builds.build(expect_reused=False, cache=Path(empty) / "reprobox" / "wheels")
        )
    builds.remove_all()
    return took


@contextlib.contextmanager
def _environ(**changes: str | None) -> Iterator[None]:
    """Set (or, for None, unset) environment variables for the duration of a block."""
    saved = {name: os.environ.get(name) for name in changes}
    try:
        for name, value in changes.items():
            _set(name, value)
        yield
    finally:
        for name, value in saved.items():
            _set(name, value)


def _set(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _report(samples: dict[str, list[float]], cold_cache: float | None, n: int) -> None:
    labels = {
        "cold": "cold build: image absent, no layer cache, wheel cache warm (baseline)",
        "unchanged": "unchanged rebuild: same bundle, image present (in-process)",
        "unchanged_cli": "unchanged rebuild through the CLI (subprocess, diagnostic)",
    }
    rows = [
        (labels[key], f"{median(times):.2f}", f"{min(times):.2f}") for key, times in samples.items()
    ]
    if cold_cache is not None:
        label = "cold build, empty wheel cache, wheel downloaded (once)"
        rows.append((label, f"{cold_cache:.2f}", ""))
    print(table((f"what (median of {n})", "median s", "min s"), rows))
    ratio = median(samples["cold"]) / median(samples["unchanged"])
    print(f"\nratio cold/unchanged = {ratio:.1f}x  (an unchanged rebuild is {ratio:.1f}x faster)")


if __name__ == "__main__":
    main()
