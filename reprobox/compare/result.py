"""The result of a comparison: a verdict per output and overall, ready for JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

Verdict = Literal["identical", "equivalent", "within_tolerance", "different", "missing", "extra"]
OverallVerdict = Literal["identical", "equivalent", "within_tolerance", "different"]

_RANK: dict[str, int] = {"identical": 0, "equivalent": 1, "within_tolerance": 2, "different": 3}
_OVERALL: tuple[OverallVerdict, ...] = ("identical", "equivalent", "within_tolerance", "different")


@dataclass(frozen=True, slots=True)
class OutputComparison:
    """How one output of the replay compares with the original's."""

    path: str
    verdict: Verdict
    kind: str  # "npy", "npz", "json", "csv", "text" or "bytes": how it was compared
    detail: str  # one human line
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    where: str | None = None  # first value that differs: "w[3, 7]", "$.metrics.loss", "line 12"
    n_different: int | None = None  # outside tolerance when different, not equal when within
    n_total: int | None = None  # elements, JSON values, CSV cells or text lines compared
    max_ulps: int | None = None  # largest distance in units in the last place (float arrays)
    # the first few differing values side by side: ("w[3, 7]", "0.1234", "0.1235")
    samples: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class CurveComparison:
    """One metric curve (loss or accuracy per step) of an output, original against replay."""

    path: str  # the output it was read from
    metric: str  # "loss"
    steps: tuple[float, ...]  # the step of each point, as the log numbers them
    expected: tuple[float, ...]  # the original's values (charts may thin them out)
    actual: tuple[float, ...]  # the replay's, at the same steps
    parted_at: float | None = None  # first step where the curves differ beyond tolerance
    end_gap: float | None = None  # |replay - original| at the last common step


@dataclass(frozen=True, slots=True)
class EnvironmentDifference:
    """One way the replay's environment differs from the original's, ranked by how likely it
    explains a difference in the outputs (`weight`: 3 likely, 2 possible, 1 unlikely)."""

    what: str  # "torch", "GPU model", "driver", "Python", "OMP_NUM_THREADS", "cuDNN benchmark"
    original: str
    replay: str
    weight: int
    why: str  # one line: why this can change the numbers


@dataclass(frozen=True, slots=True)
class Comparison:
    """The verdict over all outputs (the worst one) and each output's own."""

    verdict: OverallVerdict
    outputs: tuple[OutputComparison, ...]
    notes: tuple[str, ...] = ()  # e.g. environment differences that may explain a difference
    curves: tuple[CurveComparison, ...] = ()
    environment: tuple[EnvironmentDifference, ...] = field(default=())  # most likely first

    def with_environment(self, differences: Sequence[EnvironmentDifference]) -> Comparison:
        """The same comparison with its environment differences, most likely cause first."""
        ranked = sorted(differences, key=lambda d: (-d.weight, d.what))
        return replace(self, environment=tuple(ranked))

    @property
    def reproduced(self) -> bool:
        """True unless some output is different or missing."""
        return self.verdict != "different"

    def to_json(self) -> str:
        """Stable, indented JSON: what `compare --json` prints and each replay stores."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; non-finite floats become the strings "inf", "-inf" and "nan"."""
        return {
            "verdict": self.verdict,
            "reproduced": self.reproduced,
            "outputs": [_plain(o) for o in self.outputs],
            "notes": list(self.notes),
            "curves": [_plain(c) for c in self.curves],
            "environment": [_plain(d) for d in self.environment],
        }


def combine(results: Sequence[OutputComparison], notes: Sequence[str] = ()) -> Comparison:
    """One Comparison from per-output results: the overall verdict is the worst of them."""
    return Comparison(verdict=_overall(results), outputs=tuple(results), notes=tuple(notes))


def _overall(results: Sequence[OutputComparison]) -> OverallVerdict:
    ranks = [_RANK.get(r.verdict, 3) for r in results if r.verdict != "extra"]
    return _OVERALL[max(ranks, default=0)]


def _plain(record: Any) -> dict[str, Any]:
    return {f.name: json_safe(getattr(record, f.name)) for f in fields(record)}


def json_safe(value: Any) -> Any:
    """Non-finite floats as "inf", "-inf", "nan" (JSON has no such numbers), tuples as lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, tuple):
        return [json_safe(item) for item in value]
    return value
