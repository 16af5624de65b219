"""Time reprobox's fast hash against `sha256sum` on the same files.

Baseline: `sha256sum FILE...`, one subprocess for the whole set, as a user would type it.
Measured: `reprobox.fileio.fast_digests(FILES)` in this process: xxh3-128 of each file, read in
4 MiB chunks, the files spread over one thread per core (xxhash lets go of the GIL). Diagnostic
rows: the same on one thread, and reprobox's own SHA-256 (`sha256_file`, hashlib, 1 MiB reads:
what the manifest's digests cost). Every row hashes
files already in the page cache (one untimed pass first), so the rows compare hashing, not the
disk. Rows are timed interleaved, N times each; the table shows medians.

The files (~330 MB: one of 128 MiB, four of 32 MiB, 64 of 1 MiB, 1024 of 16 KiB, random bytes)
are made once under $REPROBOX_BENCH_HOME/hash-files (default /tmp/reprobox-bench) and reused.
Goal (from the issue): the fast hash at least 3x faster than sha256sum on the same files.

Usage: python benchmarks/bench_hash.py [--quick] [--repeats N]
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from _common import BENCH_HOME, arguments, median, run, seconds, table

from reprobox.fileio import FAST_HASH, fast_digest, fast_digests, sha256_file

FILES = BENCH_HOME / "hash-files"
SIZES = ((1, 128 << 20), (4, 32 << 20), (64, 1 << 20), (1024, 16 << 10))  # (count, bytes)


def files() -> list[Path]:
    """The benchmark's files, made once; a marker says they are complete."""
    marker = FILES / ".complete"
    if not marker.is_file():
        shutil.rmtree(FILES, ignore_errors=True)
        FILES.mkdir(parents=True)
        for count, size in SIZES:
            for index in range(count):
                (FILES / f"{size}-{index:04d}.bin").write_bytes(os.urandom(size))
        marker.touch()
    return _listed()


def _listed() -> list[Path]:
    # (a copy of the largest file was made by an earlier version, for a row that is gone)
    return sorted(p for p in FILES.glob("*.bin") if p.name != "copy-of-largest.bin")


def sha256sum(paths: list[Path]) -> None:
    run(["sha256sum", "--", *map(str, paths)])


def main() -> None:
    args = arguments(__doc__ or "", repeats=7, quick_repeats=3, quick_help="3 repeats")
    paths = files()
    total = sum(p.stat().st_size for p in paths)
    rows: dict[str, Callable[[], object]] = {
        "sha256sum FILES (baseline, subprocess)": lambda: sha256sum(paths),
        f"fast_digests: {FAST_HASH}, up to {os.cpu_count()} threads": lambda: fast_digests(paths),
        f"{FAST_HASH}, one thread (diagnostic)": lambda: [fast_digest(p) for p in paths],
        "sha256_file, hashlib (diagnostic)": lambda: [sha256_file(p) for p in paths],
    }
    for action in rows.values():  # warm the page cache; nothing timed reads the disk
        action()
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeats):
        for name, action in rows.items():
            samples[name].append(seconds(action))
    report(samples, total, len(paths), args.repeats)


def report(samples: dict[str, list[float]], total: int, count: int, repeats: int) -> None:
    baseline = median(next(iter(samples.values())))
    body = [(name, f"{median(times):.3f} s", f"{total / median(times) / 1e9:.2f} GB/s",
             f"{baseline / median(times):.1f}x") for name, times in samples.items()]
    print(f"{count} files, {total / 1e6:.0f} MB, page cache warm; medians of {repeats} runs")
    print(table(("row", "median", "throughput", "vs sha256sum"), body))
    fast = median(samples[next(name for name in samples if name.startswith("fast_digests"))])
    print(f"ratio sha256sum / fast hash: {baseline / fast:.1f} (goal >= 3)")


if __name__ == "__main__":
    main()
