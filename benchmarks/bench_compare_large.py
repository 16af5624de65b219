"""Time comparing two large outputs against reading both files once, and the memory it takes.

For each format (.npy, .npz, a torch.save checkpoint .pt) the script writes a pair of files of
about 1 GiB each (`--quick`: 100 MiB), float32 data, the replay's copy with five elements changed
(one in the last chunk). A fresh child process per format then times, interleaved, N times each:

  read once   both files read start to end into one 8 MiB buffer (what `cat` does), same process
  content     the format's comparer alone (compare_npy / compare_npz / compare_checkpoint)
  whole       compare_file: the digest of the replay's copy, the first differing byte, then the
              content (what `reprobox compare` does for an output whose digest differs)

and reports medians, the ratio content / read once (goal: under 2), how far the peak RSS rose
above the RSS after the imports over all of these runs (VmHWM; the files are never mapped, so
pages read do not count) and tracemalloc's peak during one more content comparison. The files
stay in the page cache (they were just written; the first read warms them), so this measures
the comparison, not the disk.

Usage: python benchmarks/bench_compare_large.py [--quick] [--repeats N] [--keep]
Files go to $REPROBOX_BENCH_HOME/compare-large (default /tmp/reprobox-bench) and are removed
unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))  # torch_format: torch.save's format without torch
BENCH_HOME = Path(os.environ.get("REPROBOX_BENCH_HOME", "/tmp/reprobox-bench"))
FORMATS = ("npy", "npz", "pt")
READ_BUFFER = 8 << 20
CHANGES = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 MiB files (the CI size)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each row")
    parser.add_argument("--keep", action="store_true", help="leave the files in place")
    parser.add_argument("--measure", nargs=2, metavar=("FORMAT", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]), args.repeats)))
        return
    size = (100 if args.quick else 1024) << 20
    folder = BENCH_HOME / "compare-large"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for kind in FORMATS:
            made = seconds(lambda kind=kind: write_pair(kind, folder, size))  # type: ignore[misc]
            print(f"{kind}: wrote two {size >> 20} MiB files in {made:.1f} s", flush=True)
            rows.append(run_child(kind, folder, args.repeats))
            if not args.keep:
                for path in folder.glob(f"*.{kind}"):
                    path.unlink()
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print_table(rows, size)


# --- the files ----------------------------------------------------------------------------------


def changed_positions(count: int) -> list[int]:
    """Five scattered elements, the last in the final chunk."""
    return [count // 7, count // 3, count // 2, (count * 5) // 6, count - 3]


def write_pair(kind: str, folder: Path, size: int) -> None:
    count = size // 4
    values = np.random.default_rng(0).standard_normal(count, dtype=np.float32)
    for side in ("original", "replay"):
        if side == "replay":
            values[changed_positions(count)] += 1.0
        write(kind, folder / f"{side}.{kind}", values)


def write(kind: str, path: Path, values: np.ndarray) -> None:  # type: ignore[type-arg]
    quarters = np.array_split(values, 4)
    if kind == "npy":
        np.save(path, values.reshape(-1, 1024) if values.size % 1024 == 0 else values)
    elif kind == "npz":
        np.savez(path, **{f"layer{i}": part for i, part in enumerate(quarters)})
    else:
        from torch_format import save_zip, tensor

        state = {"model": {f"layer{i}.weight": tensor(part) for i, part in enumerate(quarters)},
                 "epoch": 3}
        save_zip(path, state)


# --- the measurement, in a fresh process --------------------------------------------------------


def run_child(kind: str, folder: Path, repeats: int) -> dict[str, object]:
    command = [sys.executable, __file__, "--measure", kind, str(folder), "--repeats",
               str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"measuring {kind} failed:\n{done.stderr[-3000:]}")
    row: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def measure(kind: str, folder: Path, repeats: int) -> dict[str, object]:
    from reprobox.compare.arrays import compare_npy, compare_npz
    from reprobox.compare.files import compare_file
    from reprobox.compare.tensors import compare_checkpoint
    from reprobox.manifest import Output

    expected, actual = folder / f"original.{kind}", folder / f"replay.{kind}"
    output = Output(f"out/model.{kind}", "0" * 64, expected.stat().st_size)  # digest differs
    comparer = {"npy": compare_npy, "npz": compare_npz, "pt": compare_checkpoint}[kind]
    reset_peak_rss()
    rss_before = status_mib("VmRSS")  # python, numpy and reprobox imported, nothing read
    read_once(expected, actual)  # warm the page cache
    rows: dict[str, list[float]] = {"read once": [], "content": [], "whole": []}
    result = None
    for _ in range(repeats):
        rows["read once"].append(seconds(lambda: read_once(expected, actual)))
        rows["content"].append(seconds(lambda: comparer(expected, actual, output)))
        start = time.perf_counter()
        result = compare_file(expected, actual, output)
        rows["whole"].append(time.perf_counter() - start)
    rss_growth = status_mib("VmHWM") - rss_before
    tracemalloc.start()
    comparer(expected, actual, output)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    assert result is not None
    return {"kind": kind, "bytes": expected.stat().st_size + actual.stat().st_size,
            **{name: statistics.median(times) for name, times in rows.items()},
            "rss_growth_mib": rss_growth, "max_rss_mib": status_mib("VmHWM"),
            "traced_peak_mib": peak, "verdict": result.verdict,
            "where": result.where, "n_different": result.n_different}


def read_once(*paths: Path) -> int:
    """Read each file start to end into one reused buffer, as cat does; the bytes read."""
    buffer = bytearray(READ_BUFFER)
    total = 0
    for path in paths:
        with path.open("rb", buffering=0) as handle:
            while count := handle.readinto(buffer):
                total += count
    return total


def reset_peak_rss() -> None:
    """Start the peak RSS (VmHWM) afresh from the current RSS (Linux 4.0+)."""
    Path("/proc/self/clear_refs").write_text("5")


def status_mib(field: str) -> float:
    """VmRSS or VmHWM of this process, in MiB. Not ru_maxrss: after fork and exec it still
    holds the parent's peak, which here held the arrays that were written."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    raise SystemExit(f"no {field} in /proc/self/status: Linux only")


def seconds(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def print_table(rows: list[dict[str, object]], size: int) -> None:
    print(f"\ntwo files of {size >> 20} MiB each; medians; ratio = content / read once")
    header = ("format", "read once", "content", "ratio", "whole compare_file", "RSS growth",
              "max RSS", "traced peak", "verdict")
    lines = [header]
    for row in rows:
        read, content, whole = (float(row[k]) for k in ("read once", "content", "whole"))  # type: ignore[arg-type]
        lines.append((str(row["kind"]), f"{read:.3f} s", f"{content:.3f} s",
                      f"{content / read:.2f}", f"{whole:.3f} s ({whole / read:.2f}×)",
                      f"{float(row['rss_growth_mib']):.1f} MiB",  # type: ignore[arg-type]
                      f"{float(row['max_rss_mib']):.0f} MiB",  # type: ignore[arg-type]
                      f"{float(row['traced_peak_mib']):.1f} MiB",  # type: ignore[arg-type]
                      f"{row['verdict']} at {row['where']} ({row['n_different']} elements)"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for number, line in enumerate(lines):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
        if number == 0:
            print("  ".join("-" * width for width in widths))


if __name__ == "__main__":
    main()
