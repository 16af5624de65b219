"""The running tally of one output's values: counts, extremes and where they first differ."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from reprobox.compare.result import OutputComparison, Verdict
from reprobox.manifest import Output

Number = int | float  # ints stay ints, so integers above 2**53 are compared exactly


class Unparseable(Exception):
    """A file is not what its suffix says; the message says why, for the detail line."""


SAMPLE_LIMIT = 5  # differing values shown side by side per output
Sample = tuple[str, str, str]  # (where, the original's value, the replay's)


@dataclass(slots=True)
class Tally:
    """Counts and extremes over one output's values, added one value or one chunk at a time.

    A value is `unequal` when it differs at all and `far` when it is outside the tolerance:
    rtol/atol as np.isclose has them, or, for floats, at most `ulps` units in the last place
    apart. `problems` are what stops values being compared at all (a key only one side has,
    a shape or dtype change); any of them makes the output different.
    """

    rtol: float
    atol: float
    unit: str  # "elements", "values", "cells", "lines"
    ulps: int | None = None
    n_total: int = 0
    n_unequal: int = 0
    n_far: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    max_ulps: int | None = None  # over float values that differ, both finite
    numeric: bool = False  # some numbers differed, so max_abs and max_rel mean something
    first_unequal: tuple[str, str] | None = None  # (where, "expected vs actual")
    first_far: tuple[str, str] | None = None
    unequal_samples: list[Sample] = field(default_factory=list)
    far_samples: list[Sample] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (where, what)

    @classmethod
    def for_output(cls, output: Output, unit: str) -> Tally:
        """A tally with the output's own tolerance."""
        return cls(output.rtol, output.atol, unit, output.ulps)

    def add(self, n_total: int, n_unequal: int = 0, n_far: int = 0, max_abs: float = 0.0,
            max_rel: float = 0.0, unequal_at: tuple[str, str] | None = None,
            far_at: tuple[str, str] | None = None, max_ulps: int | None = None,
            unequal_samples: Sequence[Sample] = (), far_samples: Sequence[Sample] = ()) -> None:
        self.n_total += n_total
        self.n_unequal += n_unequal
        self.n_far += n_far
        if max_abs or max_rel:
            self.numeric = True
            self.max_abs, self.max_rel = max(self.max_abs, max_abs), max(self.max_rel, max_rel)
        if max_ulps is not None:
            self.max_ulps = max(self.max_ulps or 0, max_ulps)
        self.first_unequal = self.first_unequal or unequal_at
        self.first_far = self.first_far or far_at
        _keep(self.unequal_samples, unequal_samples)
        _keep(self.far_samples, far_samples)

    def add_problem(self, where: str, what: str) -> None:
        """Something that could not be compared value by value: `what` says it in full."""
        self.problems.append((where, what))

    def add_exact(self, equal: bool, where: str, reason: str,
                  sample: tuple[str, str] | None = None) -> None:
        """One non-numeric value: equal or far, nothing in between. `sample` is the pair of
        values as text; without it they are read from a `reason` of the form "a vs b"."""
        at = None if equal else (where, reason)
        samples = () if equal else _sample(where, reason, sample)
        self.add(1, int(not equal), int(not equal), unequal_at=at, far_at=at,
                 unequal_samples=samples, far_samples=samples)

    def add_numbers(self, pairs: Sequence[tuple[Number, Number]], where: str, reason: str,
                    sample: tuple[str, str] | None = None) -> None:
        """Numbers that make up one value (one cell, one line), counted as that one value."""
        outcomes = [_number_outcome(e, a, self.rtol, self.atol) for e, a in pairs]
        ulps = [float_ulps(e, a) for e, a in pairs]
        equal = all(o[0] for o in outcomes)
        close = all(o[1] or self.ulps is not None and u is not None and u <= self.ulps
                    for o, u in zip(outcomes, ulps, strict=True))
        measured = [u for u in ulps if u]
        at = (where, reason)
        shown = _sample(where, reason, sample)
        self.add(1, int(not equal), int(not close), max((o[2] for o in outcomes), default=0.0),
                 max((o[3] for o in outcomes), default=0.0),
                 None if equal else at, None if close else at, max(measured, default=None),
                 unequal_samples=() if equal else shown, far_samples=() if close else shown)

    def result(self, path: str, kind: str, lead: str = "") -> OutputComparison:
        if self.problems:
            return self._problem_summary(path, kind)
        if self.n_far:
            return self._summary(path, kind, "different", self.n_far, self.first_far, lead)
        if self.n_unequal:
            return self._summary(path, kind, "within_tolerance", self.n_unequal,
                                 self.first_unequal, lead)
        detail = f"{lead}same {self.n_total:,} {self.unit} as the original, in different bytes"
        return OutputComparison(path, "equivalent", kind, detail, n_different=0,
                                n_total=self.n_total)

    def _summary(self, path: str, kind: str, verdict: Verdict, count: int,
                 first: tuple[str, str] | None, lead: str) -> OutputComparison:
        where = (first or ("?", ""))[0]
        detail = lead + self._counted(verdict, count, first)
        max_abs, max_rel = (self.max_abs, self.max_rel) if self.numeric else (None, None)
        samples = self.far_samples if verdict == "different" else self.unequal_samples
        return OutputComparison(path, verdict, kind, detail, max_abs_diff=max_abs,
                                max_rel_diff=max_rel, where=where, n_different=count,
                                n_total=self.n_total, max_ulps=self.max_ulps,
                                samples=tuple(samples))

    def _counted(self, verdict: Verdict, count: int, first: tuple[str, str] | None) -> str:
        """"3 of 1,000 elements outside rtol=…, atol=… (0.3% of them); first at …; max |Δ| …"."""
        where, reason = first or ("?", "")
        scope = "outside" if verdict == "different" else "differ, all within"
        text = (f"{count:,} of {self.n_total:,} {self.unit} {scope} {self.tolerance} "
                f"({share(count, self.n_total)} of them); first at {where}: {reason}")
        if self.numeric:
            text += f"; max |Δ| {self.max_abs:.3g}, max rel Δ {self.max_rel:.3g}"
        if self.max_ulps is not None:
            text += f", max ULPs {self.max_ulps:,}"
        return text

    @property
    def tolerance(self) -> str:
        ulps = "" if self.ulps is None else f", ulps={self.ulps}"
        return f"rtol={self.rtol:g}, atol={self.atol:g}{ulps}"

    def _problem_summary(self, path: str, kind: str) -> OutputComparison:
        """Different: the problems first (up to three), then how the values that could be
        compared fared. Each problem counts as one value that differs."""
        shown = "; ".join(what for _, what in self.problems[:3])
        if len(self.problems) > 3:
            shown += f" (and {len(self.problems) - 3} more)"
        if self.n_far:
            rest = "also " + self._counted("different", self.n_far, self.first_far)
        elif self.n_unequal:
            rest = "also " + self._counted("within_tolerance", self.n_unequal,
                                           self.first_unequal)
        elif self.n_total:
            rest = f"the other {self.n_total:,} {self.unit} are the same"
        else:
            rest = ""
        max_abs, max_rel = (self.max_abs, self.max_rel) if self.numeric else (None, None)
        return OutputComparison(path, "different", kind, f"{shown}; {rest}" if rest else shown,
                                max_abs_diff=max_abs, max_rel_diff=max_rel,
                                where=self.problems[0][0],
                                n_different=self.n_far + len(self.problems),
                                n_total=self.n_total + len(self.problems),
                                max_ulps=self.max_ulps, samples=tuple(self.far_samples))


def _keep(kept: list[Sample], new: Sequence[Sample]) -> None:
    kept.extend(new[:SAMPLE_LIMIT - len(kept)])


def _sample(where: str, reason: str, values: tuple[str, str] | None) -> tuple[Sample, ...]:
    """The pair of values side by side, given or read from a reason "a vs b"; none when the
    reason is not a pair ("missing in the replay")."""
    parts = reason.split(" vs ")
    if values is None and len(parts) == 2:
        values = (parts[0], parts[1])
    return () if values is None else ((where, values[0], values[1]),)


def share(count: int, total: int) -> str:
    """`count` as a percentage of `total`: "0.3%", "<0.01%", "100%"."""
    percent = 100 * count / total if total else 100.0
    return f"{percent:.3g}%" if percent >= 0.01 or not count else "<0.01%"


def float_ulps(expected: Number, actual: Number) -> int | None:
    """How many float64 values lie between two finite floats (None for integers, NaN, inf)."""
    if not (isinstance(expected, float) and isinstance(actual, float)) or \
            not (math.isfinite(expected) and math.isfinite(actual)):
        return None
    return abs(_ordered_float(actual) - _ordered_float(expected))


def _ordered_float(value: float) -> int:
    """The float's bits as an integer in the floats' order (-0.0 and 0.0 both 0)."""
    bits: int = struct.unpack("<q", struct.pack("<d", value))[0]
    return bits if bits >= 0 else -(bits & 0x7FFF_FFFF_FFFF_FFFF)


def _number_outcome(expected: Number, actual: Number, rtol: float,
                    atol: float) -> tuple[bool, bool, float, float]:
    """(equal, close, |Δ|, relative Δ) of two numbers, NaN equal to NaN, as np.isclose does."""
    if isinstance(expected, int) and isinstance(actual, int):
        return _integer_outcome(expected, actual, rtol, atol)
    if expected == actual:  # exact even between an int and a float
        return True, True, 0.0, 0.0
    expected, actual = _as_float(expected), _as_float(actual)
    if math.isnan(expected) and math.isnan(actual):
        return True, True, 0.0, 0.0
    finite = math.isfinite(expected) and math.isfinite(actual)
    diff = abs(actual - expected) if finite else math.inf
    close = finite and diff <= atol + rtol * abs(expected)
    relative = diff / abs(expected) if finite and expected else math.inf
    return False, close, diff, relative


def _integer_outcome(expected: int, actual: int, rtol: float,
                     atol: float) -> tuple[bool, bool, float, float]:
    """Integers without rounding: 2**60 and 2**60 + 1 are one float64, yet they differ."""
    if expected == actual:
        return True, True, 0.0, 0.0
    diff, reference = abs(actual - expected), abs(expected)
    try:
        close = diff <= Fraction(atol) + Fraction(rtol) * reference
    except (OverflowError, ValueError):  # an infinite or NaN tolerance
        close = diff <= atol + rtol * _as_float(reference)
    try:
        relative = diff / reference if reference else math.inf
    except OverflowError:
        relative = math.inf
    return False, close, _as_float(diff), relative


def _as_float(value: Number) -> float:
    """`value` as a float; integers past the float range become ±inf instead of raising."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def byte_count(size: int) -> str:
    return "1 byte" if size == 1 else f"{size} bytes"


def clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"
