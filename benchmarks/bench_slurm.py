"""Time a replay through Slurm against the same replay on this host's Docker.

The numpy-sgd example is captured in a throwaway git project and built once (Docker's layer
cache bypassed, like the other Docker benchmarks). Then, in this one process, N times and
interleaved, as subprocesses: `reprobox replay` (local Docker, the baseline) and `reprobox replay
--on slurm` (write the job, sbatch, follow with squeue at pauses growing from 0.25 s to 2 s,
gather from the job's folder); then the same pair for a four-seed sweep (`--seeds 1-4`: four
local replays one after another, or one Slurm job array whose tasks run side by side on the
node's cores, each with its own environment probe). The first Slurm
submission, which saves the image for the nodes (`docker save`, once per image), is timed apart.
Needs Docker and a Slurm whose node is this machine (scripts/slurm-single-node.sh starts one).
Printed: medians and the ratios Slurm / local.

Usage: python benchmarks/bench_slurm.py [--quick] [--repeats N]
"""

from __future__ import annotations

import shutil

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

from reprobox.bundle import Bundle


def main() -> None:
    args = arguments(__doc__.splitlines()[0], 3, 1, "1 repeat")
    run(["sinfo", "--noheader"])  # no Slurm, no measurement
    bundle = captured_numpy_sgd(BENCH_HOME / "bench-slurm")
    builds = Builds(bundle)
    try:
        builds.build(expect_reused=False)
        first = seconds(lambda: _replay(bundle, "--on", "slurm"))
        samples: dict[str, list[float]] = {key: [] for key in ("local", "slurm", "local4",
                                                                 "slurm4")}
        for _ in range(args.repeats):
            samples["local"].append(seconds(lambda: _replay(bundle)))
            samples["slurm"].append(seconds(lambda: _replay(bundle, "--on", "slurm")))
            samples["local4"].append(seconds(lambda: _replay(bundle, "--seeds", "1-4")))
            samples["slurm4"].append(seconds(lambda: _replay(bundle, "--seeds", "1-4", "--on",
                                                             "slurm")))
    finally:
        builds.remove_all()
        shutil.rmtree(bundle.path.parent.parent.parent, ignore_errors=True)
    _report(first, {key: median(values) for key, values in samples.items()}, args.repeats)


def _replay(bundle: Bundle, *options: str) -> None:
    run([*REPROBOX_CLI, "replay", *options, str(bundle.path)], cwd=bundle.path)


def _report(first: float, medians: dict[str, float], repeats: int) -> None:
    rows = [
        ("one replay", f"{medians['slurm']:.2f} s", f"{medians['local']:.2f} s",
         f"{medians['slurm'] / medians['local']:.2f}"),
        ("four seeds (--seeds 1-4)", f"{medians['slurm4']:.2f} s", f"{medians['local4']:.2f} s",
         f"{medians['slurm4'] / medians['local4']:.2f}"),
        ("first submission (image saved for the nodes)", f"{first:.2f} s", "", ""),
    ]
    print(f"numpy-sgd, medians of {repeats}, subprocesses (CLI start-up included)")
    print(table(("what", "--on slurm", "local Docker", "slurm / local"), rows))


if __name__ == "__main__":
    main()
