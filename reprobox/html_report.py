"""A Comparison as one self-contained HTML page: verdict, outputs, metric-curve charts, causes.

The page loads nothing and runs nothing: CSS is inline, each chart is inline SVG drawn here as
polylines, fonts are the reader's own, and a Content-Security-Policy forbids every fetch, so the
report opens the same from an archive years later and on a machine with no network.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

from reprobox import __version__
from reprobox.compare import Comparison, CurveComparison, OutputComparison
from reprobox.errors import ReproboxError
from reprobox.fileio import atomic_write
from reprobox.report import (
    MAX_SAMPLES,
    figure,
    headline,
    likelihood,
    ranked,
    split_at_difference,
    step_text,
)

WIDTH, HEIGHT = 960, 280  # of each chart, in CSS pixels (the SVG scales down on narrow screens)
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 70, 20, 28, 40
_MAX_POINTS = 800  # per polyline; a longer run keeps each bucket's lowest and highest value
_LOG_SPAN = 100.0  # positive values spanning this factor or more get a log axis (losses do)
_VERDICT_ORDER = ("identical", "equivalent", "within_tolerance", "different", "missing", "extra")
# (column title, OutputComparison field) of the measures shown when any output has one
_MEASURES = (("differing", "n_different"), ("max |Δ|", "max_abs_diff"),
             ("max rel Δ", "max_rel_diff"), ("max ULPs", "max_ulps"), ("where", "where"))

# autoescape: paths, details and sample values come from user files and must stay text.
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("reprobox", "templates"),
    undefined=jinja2.StrictUndefined,
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True, slots=True)
class Chart:
    """One metric curve in SVG pixel coordinates: what the template draws, nothing to compute."""

    curve: CurveComparison
    original: tuple[str, ...]  # `points` of each polyline: one per run of drawable values
    replay: tuple[str, ...]
    x_ticks: tuple[tuple[float, str], ...]  # (pixel, label)
    y_ticks: tuple[tuple[float, str], ...]
    parted_x: float | None  # where the "parted at" line goes, if the curves part
    log_y: bool
    not_drawn: int  # values that are NaN or infinite (or not positive on a log axis)
    left: float = _MARGIN_LEFT
    right: float = WIDTH - _MARGIN_RIGHT
    top: float = _MARGIN_TOP
    bottom: float = HEIGHT - _MARGIN_BOTTOM


@dataclass(frozen=True, slots=True)
class _Axis:
    """Data (log10 of it on a log axis) from lo..hi onto pixels from start..end."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool = False

    def pixel(self, value: float) -> float:
        data = math.log10(value) if self.log else value
        return self.start + (data - self.lo) / (self.hi - self.lo) * (self.end - self.start)

    def drawable(self, value: float) -> bool:
        return math.isfinite(value) and (value > 0 or not self.log)


ORIGINAL_AND_REPLAY = ("original", "replay")


def comparison_html(comparison: Comparison, subject: str = "",
                    sides: tuple[str, str] = ORIGINAL_AND_REPLAY) -> str:
    """The whole page as text. `subject` names what was compared (run and replay), if known;
    `sides` are the two runs' names where they are not an original and its replay."""
    words, reason = headline(comparison)
    return _TEMPLATES.get_template("comparison.html.j2").render(
        comparison=comparison,
        sides=sides,
        headline=words,
        reason=reason,
        subject=subject,
        counts=verdict_counts(comparison.outputs),
        measures=[(title, name) for title, name in _MEASURES
                  if any(getattr(output, name) is not None for output in comparison.outputs)],
        charts=[curve_chart(curve) for curve in comparison.curves],
        environment=ranked(comparison.environment),
        max_samples=MAX_SAMPLES,
        version=__version__,
        width=WIDTH,
        height=HEIGHT,
        figure=figure,
        step_text=step_text,
        likelihood=likelihood,
        split_at_difference=split_at_difference,
    )


def write_html(path: Path, comparison: Comparison, subject: str = "",
               sides: tuple[str, str] = ORIGINAL_AND_REPLAY) -> None:
    """Write the page to `path` atomically: a reader sees the old report or the new one."""
    page = comparison_html(comparison, subject, sides)
    try:
        atomic_write(path, page)
    except OSError as exc:
        raise ReproboxError(f"{path}: cannot write the HTML report: {exc.strerror or exc}",
                            hint="give --html a file path in a folder you can write to") from exc


def verdict_counts(outputs: Sequence[OutputComparison]) -> str:
    """How many outputs got each verdict: `5 outputs: 1 identical, 2 different, 1 extra`."""
    counts: Counter[str] = Counter(output.verdict for output in outputs)
    parts = [f"{counts[v]} {v.replace('_', ' ')}" for v in _VERDICT_ORDER if counts[v]]
    noun = "output" if len(outputs) == 1 else "outputs"
    return f"{len(outputs)} {noun}: " + ", ".join(parts) if parts else f"0 {noun}"


def curve_chart(curve: CurveComparison) -> Chart:
    """Place one curve's points, ticks and parted-at line on the chart."""
    x = _x_axis(curve.steps)
    y = _y_axis([*curve.expected, *curve.actual])
    parted = curve.parted_at
    return Chart(
        curve=curve,
        original=_polylines(curve.steps, curve.expected, x, y),
        replay=_polylines(curve.steps, curve.actual, x, y),
        x_ticks=tuple((x.pixel(t), _tick_label(t)) for t in _ticks(x.lo, x.hi)),
        y_ticks=_y_ticks(y),
        parted_x=x.pixel(parted) if parted is not None and math.isfinite(parted) else None,
        log_y=y.log,
        not_drawn=_not_drawn(curve, y),
    )


def _not_drawn(curve: CurveComparison, y: _Axis) -> int:
    return sum(not (math.isfinite(step) and y.drawable(value))
               for values in (curve.expected, curve.actual)
               for step, value in zip(curve.steps, values, strict=False))


def _x_axis(steps: Sequence[float]) -> _Axis:
    finite = [s for s in steps if math.isfinite(s)]
    lo, hi = _spread(min(finite, default=0.0), max(finite, default=1.0))
    return _Axis(lo, hi, _MARGIN_LEFT, WIDTH - _MARGIN_RIGHT)


def _y_axis(values: Sequence[float]) -> _Axis:
    finite = [v for v in values if math.isfinite(v)]
    log = bool(finite) and min(finite) > 0 and max(finite) / min(finite) >= _LOG_SPAN
    data = [math.log10(v) for v in finite] if log else finite
    lo, hi = _spread(min(data, default=0.0), max(data, default=1.0))
    pad = 0.0 if log else (hi - lo) * 0.05  # a log axis already ends on whole decades
    lo, hi = (math.floor(lo), math.ceil(hi)) if log else (lo - pad, hi + pad)
    return _Axis(lo, hi, HEIGHT - _MARGIN_BOTTOM, _MARGIN_TOP, log)


def _spread(lo: float, hi: float) -> tuple[float, float]:
    """A range with room in it: a flat curve gets ±1 (or ±10%) around its value."""
    if hi > lo:
        return lo, hi
    half = abs(lo) * 0.1 or 1.0
    return lo - half, hi + half


def _polylines(steps: Sequence[float], values: Sequence[float], x: _Axis,
               y: _Axis) -> tuple[str, ...]:
    """One `points` string per run of drawable values: a NaN breaks the line, as it should."""
    runs: list[list[tuple[float, float]]] = [[]]
    for step, value in zip(steps, values, strict=False):
        if math.isfinite(step) and y.drawable(value):
            runs[-1].append((x.pixel(step), y.pixel(value)))
        elif runs[-1]:
            runs.append([])
    return tuple(_points(_thin(run)) for run in runs if run)


def _thin(run: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """At most about _MAX_POINTS points, keeping each bucket's extremes so spikes survive."""
    if len(run) <= _MAX_POINTS:
        return run
    size = math.ceil(len(run) / (_MAX_POINTS // 2))
    kept: list[tuple[float, float]] = []
    for start in range(0, len(run), size):
        bucket = run[start:start + size]
        low, high = min(bucket, key=lambda p: p[1]), max(bucket, key=lambda p: p[1])
        kept += sorted({low, high})
    return kept


def _points(run: list[tuple[float, float]]) -> str:
    # A lone point is drawn as a zero-length line, which round caps turn into a dot.
    pairs = run * 2 if len(run) == 1 else run
    return " ".join(f"{px:.1f},{py:.1f}" for px, py in pairs)


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) from lo to hi."""
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9)
    return [i * step for i in range(first, math.floor(hi / step + 1e-9) + 1)]


def _y_ticks(y: _Axis) -> tuple[tuple[float, str], ...]:
    if not y.log:
        return tuple((y.pixel(t), _tick_label(t)) for t in _ticks(y.lo, y.hi))
    return tuple((y.pixel(10.0**k), _tick_label(10.0**k))
                 for k in range(int(y.lo), int(y.hi) + 1))


def _tick_label(value: float) -> str:
    return step_text(0.0 if abs(value) < 1e-12 else float(f"{value:.6g}"))
