"""The result of a comparison: a verdict per output and overall, ready for JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
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


@dataclass(frozen=True, slots=True)
class Comparison:
    """The verdict over all outputs (the worst one) and each output's own."""

    verdict: OverallVerdict
    outputs: tuple[OutputComparison, ...]
    notes: tuple[str, ...] = ()  # e.g. environment differences that may explain a difference

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
            "outputs": [{f.name: json_safe(getattr(o, f.name)) for f in fields(o)}
                        for o in self.outputs],
            "notes": list(self.notes),
        }


def combine(results: Sequence[OutputComparison], notes: Sequence[str] = ()) -> Comparison:
    """One Comparison from per-output results: the overall verdict is the worst of them."""
    return Comparison(verdict=_overall(results), outputs=tuple(results), notes=tuple(notes))


def _overall(results: Sequence[OutputComparison]) -> OverallVerdict:
    ranks = [_RANK.get(r.verdict, 3) for r in results if r.verdict != "extra"]
    return _OVERALL[max(ranks, default=0)]


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
