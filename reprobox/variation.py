"""Run-to-run variation: how far N replays of one run in one image agree with each other.

Each replay is compared with the original (and its comparison.json written, as `compare` does).
Replays are grouped by the fast digests of what they wrote; one replay of each group is then
compared with one of every other, so the spread of each output costs one comparison per pair of
groups, not per pair of replays, and none at all when every replay wrote the same bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from itertools import combinations
from pathlib import Path
from typing import Any

from reprobox.bundle import Bundle
from reprobox.compare import Comparison, OutputComparison
from reprobox.compare.result import json_safe
from reprobox.compare.tolerances import Tolerance
from reprobox.fileio import fast_digests
from reprobox.replay import compare_replay, compare_runs, read_result, replay_run
from reprobox.sweep import Sweep, metrics_of, summarize

# Worst last: "missing" between two replays means one wrote the file and the other did not.
_ORDER = ("identical", "equivalent", "within_tolerance", "different", "missing", "extra")
Fingerprint = tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, slots=True)
class OutputSpread:
    """One output across the replays."""

    path: str
    distinct: int  # different contents among the replays; "not written" counts as one
    verdict: str  # the worst verdict between any two replays; "identical" when all agree
    max_abs_diff: float | None = None  # the largest |Δ| between any two replays, where numeric


@dataclass(frozen=True, slots=True)
class Variation:
    """N replays of one run, against each other and against the original."""

    replays: tuple[str, ...]  # replay ids, oldest first
    groups: tuple[tuple[str, ...], ...]  # replays that wrote the same bytes; largest group first
    verdicts: tuple[str, ...]  # each replay's verdict against the original, in `replays` order
    outputs: tuple[OutputSpread, ...]

    @property
    def identical_to_each_other(self) -> bool:
        return len(self.groups) == 1

    @property
    def identical_to_original(self) -> int:
        return self.verdicts.count("identical")

    @property
    def reproduced(self) -> int:
        """Replays whose comparison with the original passed (as `compare`'s exit code says)."""
        return sum(verdict != "different" for verdict in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what `--repeat N --json` prints."""
        return {
            "replays": list(self.replays), "groups": [list(group) for group in self.groups],
            "verdicts": dict(zip(self.replays, self.verdicts, strict=True)),
            "identical_to_each_other": self.identical_to_each_other,
            "identical_to_original": self.identical_to_original, "reproduced": self.reproduced,
            "outputs": [{f.name: json_safe(getattr(o, f.name)) for f in fields(o)}
                        for o in self.outputs],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def measure(bundle: Bundle, replay_dirs: Sequence[Path],
            tolerances: Sequence[Tolerance] = ()) -> Variation:
    """Compare each replay with the original, then the replays with each other."""
    comparisons = [compare_replay(bundle, folder, tolerances)[1] for folder in replay_dirs]
    prints = _fingerprints(replay_dirs, _compared_files(bundle, replay_dirs))
    groups = _groups(replay_dirs, prints)
    spreads = _spreads(bundle, [group[0] for group in groups], tolerances)
    return Variation(
        replays=tuple(folder.name for folder in replay_dirs),
        groups=tuple(tuple(folder.name for folder in group) for group in groups),
        verdicts=tuple(comparison.verdict for comparison in comparisons),
        outputs=_outputs(prints, spreads),
    )


def measure_sweep(bundle: Bundle, replay_dirs: Sequence[Path],
                  tolerances: Sequence[Tolerance] = (),
                  lost: Mapping[int, str] | None = None) -> Sweep:
    """A seed sweep: each replay compared with the original (its comparison.json written, as
    `compare` does), then every metric's spread over the other seeds than the original's own.

    `lost` maps seeds whose replay never ran (a Slurm task that could not start) to why.
    """
    manifest = bundle.manifest()
    per_seed: dict[int, dict[str, float]] = {}
    failed = dict(lost or {})
    own: tuple[int, str] | None = None
    for folder in replay_dirs:
        verdict = compare_replay(bundle, folder, tolerances)[1].verdict
        result = read_result(folder)
        seed = manifest.determinism.seed if result.seed is None else result.seed
        if result.timed_out or result.exit_code != manifest.run.exit_code:
            failed[seed] = ("timed out" if result.timed_out
                            else f"exit code {result.exit_code}, the original's "
                            f"{manifest.run.exit_code}")
        elif seed == manifest.determinism.seed:
            own = (seed, verdict)
        else:
            per_seed[seed] = metrics_of(folder / "outputs", manifest.outputs)
    return summarize(metrics_of(bundle.outputs_dir, manifest.outputs), per_seed, failed, own)


def _compared_files(bundle: Bundle, replay_dirs: Sequence[Path]) -> list[str]:
    """What identity means here: every file a replay wrote, or its stdout when none is recorded."""
    recorded = bundle.manifest().outputs
    if not recorded:
        return ["logs/stdout.log"]
    found = {path.relative_to(folder).as_posix() for folder in replay_dirs
             for path in (folder / "outputs").rglob("*") if path.is_file()}
    return sorted(found | {f"outputs/{output.path}" for output in recorded})


def _fingerprints(replay_dirs: Sequence[Path],
                  names: Sequence[str]) -> dict[Path, Fingerprint]:
    """Each replay's files by fast digest (None: not written), plus how its run ended."""
    present = [folder / name for folder in replay_dirs for name in names
               if (folder / name).is_file()]
    digests = fast_digests(present)
    prints = {}
    for folder in replay_dirs:
        result = read_result(folder)
        ending = ("exit", f"{result.exit_code}{' timed out' if result.timed_out else ''}")
        prints[folder] = (*((name, digests.get(folder / name)) for name in names), ending)
    return prints


def _groups(replay_dirs: Sequence[Path],
            prints: Mapping[Path, Fingerprint]) -> list[list[Path]]:
    groups: dict[Fingerprint, list[Path]] = {}
    for folder in replay_dirs:
        groups.setdefault(prints[folder], []).append(folder)
    return sorted(groups.values(), key=lambda group: -len(group))  # stable: oldest first on ties


def _spreads(bundle: Bundle, representatives: Sequence[Path],
             tolerances: Sequence[Tolerance]) -> list[OutputComparison]:
    """Per output, every comparison between two groups of replays."""
    found: list[OutputComparison] = []
    for first, second in combinations(representatives, 2):
        comparison: Comparison = compare_runs(replay_run(bundle, first),
                                              replay_run(bundle, second), tolerances)
        found += comparison.outputs
    return found


def _outputs(prints: Mapping[Path, Fingerprint],
             spreads: Sequence[OutputComparison]) -> tuple[OutputSpread, ...]:
    names = [name for name, _ in next(iter(prints.values()))[:-1]]
    found = []
    for name in names:
        path = name.removeprefix("outputs/") if name.startswith("outputs/") else "stdout"
        distinct = len({dict(fingerprint[:-1])[name] for fingerprint in prints.values()})
        pairs = [spread for spread in spreads if spread.path == path]
        found.append(_spread(path, distinct, pairs))
    return tuple(found)


def _spread(path: str, distinct: int, pairs: Sequence[OutputComparison]) -> OutputSpread:
    if distinct == 1 or not pairs:
        return OutputSpread(path, distinct, "identical" if distinct == 1 else "different",
                            0.0 if distinct == 1 else None)
    verdict = max((pair.verdict for pair in pairs), key=_ORDER.index)
    numbers = [pair.max_abs_diff for pair in pairs if pair.max_abs_diff is not None]
    if not numbers and all(pair.verdict == "identical" for pair in pairs):
        numbers = [0.0]
    largest = max(numbers, key=lambda x: math.inf if math.isnan(x) else x) if numbers else None
    return OutputSpread(path, distinct, verdict, largest)
