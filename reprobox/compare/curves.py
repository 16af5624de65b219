"""Metric curves (loss, accuracy, lr per step) read from both copies of an output, side by side.

A metric log is a table: rows of JSON (a list of records, a dict of lists, or either one level
down, as in `{"log_history": [...]}`), JSON lines, or CSV/TSV with a header. Its step is
the first column named `step`, `global_step`, `_step`, `iteration`, `iter` or `epoch`, else the
row number (from 1), and then every other numeric column is a metric. With no step column only
columns named like metrics (`loss`, `val_acc`, `lr`, ...) count, so a table of predictions is
no curve. Fields that record time or speed (see `masks.volatile_kind`) are never metrics.

Points pair up by step (the n-th row at a step with the n-th at that step on the other side).
`parted_at` is the first step whose values differ beyond the output's tolerance (rtol/atol as
np.isclose, NaN equal to NaN, or within `ulps` float64 steps), and `end_gap` |Δ| at the last
common step, both over every point; the points kept for charts are thinned to at most 500.
"""

from __future__ import annotations

import csv
import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reprobox.compare.arrays import ordered_bits
from reprobox.compare.masks import volatile_kind
from reprobox.compare.records import load_json, read_jsonl
from reprobox.compare.result import CurveComparison, Verdict
from reprobox.compare.tally import Unparseable
from reprobox.compare.text import number_cells, open_text
from reprobox.manifest import Output

CHART_POINTS = 500
_MAX_BYTES = 64 << 20  # a metric log is small; a larger table is data, not a log
_MAX_CURVES = 32  # per output
# the trainer's own step first: wandb's `_step` counts log calls, not training steps
_STEP_NAMES = ("step", "global_step", "trainer/global_step", "iteration", "iter", "_step",
               "epoch")
_METRIC_WORD = re.compile(
    r"(?:^|[^a-z])(?:loss|acc|accuracy|err|error|lr|learning_rate|perplexity|ppl|f1|auc|bleu"
    r"|rouge\w*|reward|return|score|precision|recall|mse|mae|rmse|grad_norm|norm|entropy|kl"
    r"|iou|map|top1|top5|wer|cer)(?:$|[^a-z])")

Row = dict[str, float]
Table = list[Row]
_Points = dict[tuple[float, int], float]  # (step, n-th row at that step) -> value


def curves_for(expected: Path, actual: Path, output: Output,
               verdict: Verdict) -> tuple[CurveComparison, ...]:
    """The metric curves in an output compared as `verdict`; none when it holds no table."""
    if verdict in ("missing", "extra") or actual.is_symlink() or not actual.is_file():
        return ()
    if verdict == "identical":
        expected = actual  # the same bytes (the original may not even be stored): read once
    elif not expected.is_file():
        return ()
    return metric_curves(expected, actual, output)


def metric_curves(expected: Path, actual: Path, output: Output) -> tuple[CurveComparison, ...]:
    """Every metric of the table(s) in both copies, original against replay."""
    reader = _READERS.get(expected.suffix.lower())
    if reader is None:
        return ()
    try:
        if max(expected.stat().st_size, actual.stat().st_size) > _MAX_BYTES:
            return ()
        left = reader(expected)
        right = left if expected == actual else reader(actual)
    except (Unparseable, OSError, UnicodeDecodeError, ValueError, RecursionError, csv.Error):
        return ()
    curves = (curve for name, table in left.items() if name in right
              for curve in _table_curves(output, name, table, right[name]))
    return tuple(itertools.islice(curves, _MAX_CURVES))


# --- reading tables ---------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Table]:
    return tables_in(load_json(path, "original"))


def _read_jsonl(path: Path) -> dict[str, Table]:
    rows = [_numeric_row(record) for record in read_jsonl(path) if isinstance(record, dict)]
    return {"": rows} if rows else {}


def _read_csv(path: Path) -> dict[str, Table]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open_text(path, "") as handle:
        cells = csv.reader(handle, delimiter=delimiter)
        header = next(cells, None)
        if not header or any(number_cells(name, name) for name in header):
            return {}
        if _step_column(header) is None and not any(_metric_like(n) for n in header):
            return {}  # decided from the header, before reading a large table
        return {"": [_numeric_row(dict(zip(header, row, strict=False))) for row in cells]}


_READERS: dict[str, Callable[[Path], dict[str, Table]]] = {
    ".json": _read_json, ".jsonl": _read_jsonl,
    ".ndjson": _read_jsonl, ".csv": _read_csv, ".tsv": _read_csv,
}


LOG_SUFFIXES = frozenset(_READERS)


def read_tables(path: Path) -> dict[str, Table]:
    """The metric tables of a log whose suffix is in LOG_SUFFIXES, by name ("" for the top)."""
    return _READERS[path.suffix.lower()](path)


def metric_names(table: Table) -> list[str]:
    """The table's metric columns, as a curve comparison would chart them."""
    columns = _columns(table)
    return _metric_columns(columns, _step_column(columns))


def tables_in(document: Any) -> dict[str, Table]:
    """The table at the top of a document, else the tables one level down, by their key."""
    table = _as_table(document)
    if table is not None:
        return {"": table}
    if not isinstance(document, dict):
        return {}
    found = ((str(key), _as_table(value)) for key, value in document.items())
    return {key: table for key, table in found if table is not None}


def _as_table(value: Any) -> Table | None:
    """Rows from a list of records or a dict of equal-purpose lists, else None."""
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return [_numeric_row(item) for item in value]
    if isinstance(value, dict):
        columns = {str(k): v for k, v in value.items() if isinstance(v, list) and len(v) > 1}
        if columns and any(_metric_like(name) or _is_step(name) for name in columns):
            length = max(len(column) for column in columns.values())
            return [_numeric_row({name: column[i] for name, column in columns.items()
                                  if i < len(column)}) for i in range(length)]
    return None


def _numeric_row(record: Mapping[Any, Any], prefix: str = "") -> Row:
    """The numbers of one record by name; nested records flattened as `metrics.loss`."""
    row: Row = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            row.update(_numeric_row(value, f"{name}."))
        elif (number := _number(value)) is not None:
            row[name] = number
    return row


def _number(value: Any) -> float | None:
    if isinstance(value, str):
        pair = number_cells(value, value)
        value = pair[0] if pair else None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


# --- columns ----------------------------------------------------------------------------------


def _is_step(name: str) -> bool:
    return name.lower() in _STEP_NAMES


def _metric_like(name: str) -> bool:
    return bool(_METRIC_WORD.search(name.lower()))


def _step_column(names: Iterable[str]) -> str | None:
    by_lower = {name.lower(): name for name in names}
    return next((by_lower[s] for s in _STEP_NAMES if s in by_lower), None)


def _columns(table: Table) -> list[str]:
    return list(dict.fromkeys(name for row in table for name in row))


def _metric_columns(columns: Sequence[str], step: str | None) -> list[str]:
    candidates = [c for c in columns if not _is_step(c) and volatile_kind(c) is None]
    return candidates if step is not None else [c for c in candidates if _metric_like(c)]


# --- comparing --------------------------------------------------------------------------------


def _table_curves(output: Output, name: str, expected: Table,
                  actual: Table) -> Iterator[CurveComparison]:
    step = _step_column(_columns(expected))
    if step != _step_column(_columns(actual)):
        return
    for metric in _metric_columns(_columns(expected), step):
        left, right = _points(expected, step, metric), _points(actual, step, metric)
        common = [key for key in left if key in right]
        if len(common) >= 2:
            label = f"{name}.{metric}" if name else metric
            yield _curve(output, label, common, left, right)


def _points(table: Table, step: str | None, metric: str) -> _Points:
    points: _Points = {}
    seen: dict[float, int] = {}
    for number, row in enumerate(table, start=1):
        at = row.get(step, math.nan) if step is not None else float(number)
        if metric in row and not math.isnan(at):
            seen[at] = seen.get(at, -1) + 1
            points[(at, seen[at])] = row[metric]
    return points


def _curve(output: Output, metric: str, common: list[tuple[float, int]], left: _Points,
           right: _Points) -> CurveComparison:
    steps = np.array([key[0] for key in common])
    expected = np.array([left[key] for key in common])
    actual = np.array([right[key] for key in common])
    apart = ~_close(expected, actual, output)
    parted = int(np.argmax(apart)) if apart.any() else None
    kept = _thinned(len(common), parted)
    return CurveComparison(
        path=output.path, metric=metric,
        steps=tuple(float(s) for s in steps[kept]),
        expected=tuple(float(v) for v in expected[kept]),
        actual=tuple(float(v) for v in actual[kept]),
        parted_at=None if parted is None else float(steps[parted]),
        end_gap=_gap(float(expected[-1]), float(actual[-1])))


def _close(expected: np.ndarray[Any, Any], actual: np.ndarray[Any, Any],
           output: Output) -> np.ndarray[Any, Any]:
    with np.errstate(all="ignore"):
        close: np.ndarray[Any, Any] = np.isclose(actual, expected, rtol=output.rtol,
                                                 atol=output.atol, equal_nan=True)
    if output.ulps:
        close |= _ulps_apart(expected, actual) <= output.ulps
    return close


def _ulps_apart(expected: np.ndarray[Any, Any],
                actual: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """How many float64 values lie between the two, exactly (the max for NaN or inf pairs)."""
    left, right = _ordered(expected), _ordered(actual)
    with np.errstate(over="ignore"):
        distance = np.where(left >= right, left.view(np.uint64) - right.view(np.uint64),
                            right.view(np.uint64) - left.view(np.uint64))
    finite = np.isfinite(expected) & np.isfinite(actual)
    return np.where(finite, distance, np.iinfo(np.uint64).max)


def _ordered(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """float64 values as int64 that sort as the floats do (-0.0 and 0.0 both 0)."""
    return ordered_bits(np.ascontiguousarray(values, dtype=np.float64).view(np.int64))


def _gap(expected: float, actual: float) -> float:
    """|Δ|: 0 for equal values (NaN and NaN, inf and inf), inf when only one is NaN."""
    if expected == actual or (math.isnan(expected) and math.isnan(actual)):
        return 0.0
    gap = abs(actual - expected)
    return math.inf if math.isnan(gap) else gap


def _thinned(count: int, keep: int | None) -> np.ndarray[Any, Any]:
    """At most CHART_POINTS indices spread evenly from first to last, `keep` among them."""
    if count <= CHART_POINTS:
        return np.arange(count)
    spread = np.round(np.linspace(0, count - 1, CHART_POINTS - 1)).astype(np.int64)
    extra = [keep] if keep is not None else []
    return np.unique(np.concatenate([spread, np.array(extra, dtype=np.int64)]))
