"""The running tally of one output's values: counts, extremes and where they first differ."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from reprobox.compare.result import OutputComparison, Verdict

Number = int | float  # ints stay ints, so integers above 2**53 are compared exactly


class Unparseable(Exception):
    """A file is not what its suffix says; the message says why, for the detail line."""


@dataclass(slots=True)
class Tally:
    """Counts and extremes over one output's values, added one value or one chunk at a time."""

    rtol: float
    atol: float
    unit: str  # "elements", "values", "cells", "lines"
    n_total: int = 0
    n_unequal: int = 0
    n_far: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    numeric: bool = False  # some numbers differed, so max_abs and max_rel mean something
    first_unequal: tuple[str, str] | None = None  # (where, "expected vs actual")
    first_far: tuple[str, str] | None = None

    def add(self, n_total: int, n_unequal: int = 0, n_far: int = 0, max_abs: float = 0.0,
            max_rel: float = 0.0, unequal_at: tuple[str, str] | None = None,
            far_at: tuple[str, str] | None = None) -> None:
        self.n_total += n_total
        self.n_unequal += n_unequal
        self.n_far += n_far
        if max_abs or max_rel:
            self.numeric = True
            self.max_abs, self.max_rel = max(self.max_abs, max_abs), max(self.max_rel, max_rel)
        self.first_unequal = self.first_unequal or unequal_at
        self.first_far = self.first_far or far_at

    def add_exact(self, equal: bool, where: str, reason: str) -> None:
        """One non-numeric value: equal or far, nothing in between."""
        at = None if equal else (where, reason)
        self.add(1, int(not equal), int(not equal), unequal_at=at, far_at=at)

    def add_numbers(self, pairs: Sequence[tuple[Number, Number]], where: str, reason: str) -> None:
        """Numbers that make up one value (one cell, one line), counted as that one value."""
        outcomes = [_number_outcome(e, a, self.rtol, self.atol) for e, a in pairs]
        equal = all(o[0] for o in outcomes)
        close = all(o[1] for o in outcomes)
        at = (where, reason)
        self.add(1, int(not equal), int(not close), max((o[2] for o in outcomes), default=0.0),
                 max((o[3] for o in outcomes), default=0.0),
                 None if equal else at, None if close else at)

    def result(self, path: str, kind: str, lead: str = "") -> OutputComparison:
        if self.n_far:
            return self._summary(path, kind, "different", self.n_far, self.first_far, lead)
        if self.n_unequal:
            return self._summary(path, kind, "within_tolerance", self.n_unequal,
                                 self.first_unequal, lead)
        detail = f"{lead}same {self.n_total} {self.unit} as the original, in different bytes"
        return OutputComparison(path, "equivalent", kind, detail, n_different=0,
                                n_total=self.n_total)

    def _summary(self, path: str, kind: str, verdict: Verdict, count: int,
                 first: tuple[str, str] | None, lead: str) -> OutputComparison:
        where, reason = first or ("?", "")
        tolerance = f"rtol={self.rtol:g}, atol={self.atol:g}"
        scope = "outside" if verdict == "different" else "differ, all within"
        detail = (f"{lead}{count} of {self.n_total} {self.unit} {scope} {tolerance}; "
                  f"first at {where}: {reason}")
        if self.numeric:
            detail += f"; max |Δ| {self.max_abs:.3g}, max rel Δ {self.max_rel:.3g}"
        max_abs, max_rel = (self.max_abs, self.max_rel) if self.numeric else (None, None)
        return OutputComparison(path, verdict, kind, detail, max_abs_diff=max_abs,
                                max_rel_diff=max_rel, where=where, n_different=count,
                                n_total=self.n_total)


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
