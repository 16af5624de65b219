"""Compare a replay's outputs with the original's and say how close they are, output by output.

Each output gets the best verdict that holds: `identical` (same bytes), `equivalent` (same
content in other bytes: a reordered .npz, reformatted JSON, CRLF line endings), `within_tolerance`
(numbers differ, but inside the output's rtol/atol), or `different`; plus `missing` for an output
the replay did not write and `extra` for a file it wrote that was never recorded. Numbers follow
`np.isclose(actual, expected, rtol, atol, equal_nan=True)`: the original is the reference.
This module reads files and returns data; `report` renders it.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import math
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from fractions import Fraction
from itertools import zip_longest
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TextIO

import numpy as np

from reprobox.errors import BundleError, ManifestError
from reprobox.fileio import sha256_file
from reprobox.manifest import Output

Verdict = Literal["identical", "equivalent", "within_tolerance", "different", "missing", "extra"]
OverallVerdict = Literal["identical", "equivalent", "within_tolerance", "different"]
Number = int | float  # ints stay ints, so integers above 2**53 are compared exactly

_RANK: dict[str, int] = {"identical": 0, "equivalent": 1, "within_tolerance": 2, "different": 3}
_OVERALL: tuple[OverallVerdict, ...] = ("identical", "equivalent", "within_tolerance", "different")
_CHUNK_BYTES = 1 << 20
_CHUNK_ELEMENTS = 1 << 20  # bounds the temporaries made per step when comparing large arrays
_TEXT_SUFFIXES = frozenset({
    ".txt", ".log", ".md", ".rst", ".out", ".err", ".yaml", ".yml", ".toml", ".ini", ".cfg",
    ".jsonl", ".ndjson", ".html", ".xml", ".tex", ".py", ".sh",
})
_KIND_BY_SUFFIX = {".npy": "npy", ".npz": "npz", ".json": "json", ".csv": "csv", ".tsv": "csv"}
_NUMBER_IN_TEXT = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
_INTEGER = re.compile(r"\s*[-+]?\d+\s*")
_UINT64_SPAN = 2.0**64
_NUMBER_CELL = re.compile(
    r"\s*[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf|infinity)\s*", re.IGNORECASE)


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
            "outputs": [{f.name: _json_safe(getattr(o, f.name)) for f in fields(o)}
                        for o in self.outputs],
            "notes": list(self.notes),
        }


def compare(expected_dir: Path, actual_dir: Path, outputs: Sequence[Output],
            notes: Sequence[str] = ()) -> Comparison:
    """Compare every recorded output, then list files in `actual_dir` nobody recorded."""
    results = [compare_file(expected_dir / _relative(o.path), actual_dir / _relative(o.path), o)
               for o in outputs]
    declared = {_relative(o.path).as_posix() for o in outputs}
    results += [_extra(actual_dir, name) for name in _files_under(actual_dir)
                if name not in declared]
    return combine(results, notes)


def combine(results: Sequence[OutputComparison], notes: Sequence[str] = ()) -> Comparison:
    """One Comparison from per-output results: the overall verdict is the worst of them."""
    return Comparison(verdict=_overall(results), outputs=tuple(results), notes=tuple(notes))


def compare_file(expected: Path, actual: Path, output: Output) -> OutputComparison:
    """Compare the replay's copy `actual` of one output with the original's copy `expected`."""
    kind = _kind_of(output.path)
    if actual.is_symlink():
        return OutputComparison(output.path, "different", kind,
                                "the replay wrote a symbolic link here; it was not followed")
    if not actual.is_file():
        why = "wrote a folder here" if actual.is_dir() else "did not write this file"
        return OutputComparison(output.path, "missing", kind, f"the replay {why}")
    try:
        if sha256_file(actual) == output.sha256:
            return OutputComparison(output.path, "identical", kind, "sha256 matches the record")
        if not expected.is_file():
            return _unstored(output, kind)
        offset = _first_byte_difference(expected, actual)
    except OSError as exc:
        raise BundleError(f"{exc.filename}: cannot read output ({exc.strerror})",
                          hint="check that the file exists and is readable") from None
    if offset is None:
        return OutputComparison(output.path, "identical", kind, "same bytes as the stored copy")
    return _compare_content(expected, actual, output, kind, offset)


# --- dispatch and fallbacks -------------------------------------------------------------------


class _Unparseable(Exception):
    """A file is not what its suffix says; the message says why, for the detail line."""


def _compare_content(expected: Path, actual: Path, output: Output, kind: str,
                     offset: int) -> OutputComparison:
    comparer = _COMPARERS.get(kind)
    suffix_claims_format = comparer is not None
    if comparer is None and _looks_like_text(expected, actual):
        comparer = _compare_text
    if comparer is None:
        return _bytes_result(expected, actual, output, offset)
    try:
        return comparer(expected, actual, output)
    except _Unparseable as exc:
        note = f"{exc}; compared as bytes: " if suffix_claims_format else ""
        return _bytes_result(expected, actual, output, offset, note)


def _bytes_result(expected: Path, actual: Path, output: Output, offset: int,
                  note: str = "") -> OutputComparison:
    sizes = (f"{_bytes(expected.stat().st_size)} in the original, "
             f"{_bytes(actual.stat().st_size)} in the replay")
    return OutputComparison(output.path, "different", "bytes",
                            f"{note}first differing byte at offset {offset} ({sizes})",
                            where=f"byte {offset}")


def _unstored(output: Output, kind: str) -> OutputComparison:
    return OutputComparison(output.path, "different", kind,
                            "sha256 differs from the record and the original was not stored "
                            "(over the size cap), so only the digest could be compared")


def _extra(actual_dir: Path, name: str) -> OutputComparison:
    size = (actual_dir / name).lstat().st_size
    return OutputComparison(name, "extra", _kind_of(name),
                            f"written by the replay but not a recorded output ({_bytes(size)})")


def _overall(results: Sequence[OutputComparison]) -> OverallVerdict:
    ranks = [_RANK.get(r.verdict, 3) for r in results if r.verdict != "extra"]
    return _OVERALL[max(ranks, default=0)]


def _kind_of(path: str) -> str:
    suffix = PurePosixPath(path).suffix.lower()
    return _KIND_BY_SUFFIX.get(suffix) or ("text" if suffix in _TEXT_SUFFIXES else "bytes")


def _relative(path: str) -> PurePosixPath:
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ManifestError(f"output path {path!r} is not inside the project",
                            hint="the manifest may have been edited; capture the run again")
    return relative


def _files_under(folder: Path) -> list[str]:
    """Relative POSIX paths of the files below `folder`, skipping hidden files and folders."""
    found: list[str] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root, f).relative_to(folder).as_posix() for f in files
                  if not f.startswith(".")]
    return sorted(found)


def _first_byte_difference(expected: Path, actual: Path) -> int | None:
    """Offset of the first byte that differs (the shorter length if one is a prefix), or None."""
    offset = 0
    with expected.open("rb") as left, actual.open("rb") as right:
        while True:
            a, b = left.read(_CHUNK_BYTES), right.read(_CHUNK_BYTES)
            if a != b:
                common = min(len(a), len(b))
                unequal = np.frombuffer(a, np.uint8, common) != np.frombuffer(b, np.uint8, common)
                return offset + (int(np.argmax(unequal)) if unequal.any() else common)
            if not a:
                return None
            offset += len(a)


def _looks_like_text(*paths: Path) -> bool:
    """True when the start of every file is NUL-free UTF-8 (a cut multibyte character allowed)."""
    for path in paths:
        with path.open("rb") as handle:
            head = handle.read(8192)
        if b"\0" in head:
            return False
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(head) - 3:
                return False
    return True


# --- the running tally of one output's values -------------------------------------------------


@dataclass(slots=True)
class _Tally:
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


# --- arrays: .npy and .npz --------------------------------------------------------------------


def _compare_npy(expected: Path, actual: Path, output: Output) -> OutputComparison:
    left, right = _load_npy(expected, "original"), _load_npy(actual, "replay")
    tally = _Tally(output.rtol, output.atol, "elements")
    problem = _tally_arrays(left, right, PurePosixPath(output.path).stem, tally)
    if problem:
        return OutputComparison(output.path, "different", "npy", problem)
    return tally.result(output.path, "npy")


def _compare_npz(expected: Path, actual: Path, output: Output) -> OutputComparison:
    with contextlib.ExitStack() as stack:
        left = stack.enter_context(_load_npz(expected, "original"))
        right = stack.enter_context(_load_npz(actual, "replay"))
        problem = _key_set_problem(set(left.files), set(right.files))
        if problem:
            return OutputComparison(output.path, "different", "npz", problem)
        tally = _Tally(output.rtol, output.atol, "elements")
        try:
            for key in left.files:  # one pair of arrays in memory at a time
                problem = _tally_arrays(left[key], right[key], key, tally)
                if problem:
                    return OutputComparison(output.path, "different", "npz", f"{key}: {problem}")
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise _Unparseable(f"an array in the .npz cannot be read ({_clip(str(exc))})") from None
        lead = f"{len(left.files)} arrays: "
    return tally.result(output.path, "npz", lead)


def _load_npy(path: Path, side: str) -> np.ndarray[Any, Any]:
    with path.open("rb") as handle:
        if handle.read(6) != b"\x93NUMPY":
            raise _Unparseable(f"the {side}'s copy is not an .npy file (no NUMPY header)")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)  # type: ignore[no-any-return]
    except (ValueError, OSError, EOFError) as exc:
        raise _Unparseable(f"the {side}'s .npy cannot be loaded ({_clip(str(exc))})") from None


def _load_npz(path: Path, side: str) -> np.lib.npyio.NpzFile:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _Unparseable(f"the {side}'s .npz cannot be loaded ({_clip(str(exc))})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise _Unparseable(f"the {side}'s copy is not an .npz archive")
    return loaded


def _key_set_problem(expected: set[str], actual: set[str]) -> str | None:
    if expected == actual:
        return None
    parts = [f"only in the original: {', '.join(sorted(expected - actual))}" if expected - actual
             else "", f"only in the replay: {', '.join(sorted(actual - expected))}"
             if actual - expected else ""]
    return "array names differ; " + "; ".join(p for p in parts if p)


def _tally_arrays(expected: np.ndarray[Any, Any], actual: np.ndarray[Any, Any], label: str,
                  tally: _Tally) -> str | None:
    """Add the element comparison to `tally`, or return why the arrays cannot be compared."""
    if expected.shape != actual.shape:
        return f"shape {expected.shape} in the original, {actual.shape} in the replay"
    if expected.dtype.newbyteorder("<") != actual.dtype.newbyteorder("<"):
        return f"dtype {expected.dtype} in the original, {actual.dtype} in the replay"
    locate = functools.partial(_index, label, expected.shape)
    kind = expected.dtype.kind
    tally_chunk = (_tally_integer_chunk if kind in "iu" else
                   _tally_numeric_chunk if kind in "fc" else _tally_exact_chunk)
    for offset, left, right in _flat_chunks(expected, actual):
        tally_chunk(left, right, _Locator(locate, offset), tally)
    return None


@dataclass(frozen=True, slots=True)
class _Locator:
    """Turns an index into a chunk into the element's name: "w[3, 7]"."""

    name_of: Callable[[int], str]
    offset: int

    def first(self, mask: np.ndarray[Any, Any], expected: np.ndarray[Any, Any],
              actual: np.ndarray[Any, Any]) -> tuple[str, str] | None:
        """(where, "expected vs actual") of the first element selected by `mask`, if any."""
        if not mask.any():
            return None
        i = int(np.argmax(mask))
        return self.name_of(self.offset + i), f"{expected[i]} vs {actual[i]}"


def _flat_chunks(expected: np.ndarray[Any, Any], actual: np.ndarray[Any, Any]
                 ) -> Iterator[tuple[int, np.ndarray[Any, Any], np.ndarray[Any, Any]]]:
    """Yield (flat offset, expected part, actual part) in C order, slicing along axis 0."""
    if expected.ndim == 0:
        yield 0, expected.reshape(1), actual.reshape(1)
        return
    row = math.prod(expected.shape[1:])
    step = max(1, _CHUNK_ELEMENTS // max(1, row))
    for start in range(0, expected.shape[0], step):
        stop = start + step
        yield start * row, expected[start:stop].reshape(-1), actual[start:stop].reshape(-1)


def _tally_integer_chunk(expected: np.ndarray[Any, Any], actual: np.ndarray[Any, Any],
                         locator: _Locator, tally: _Tally) -> None:
    """Integer arrays exactly: float64 would merge neighbours above 2**53 (2**60, 2**60 + 1)."""
    equal = np.asarray(expected == actual)
    if equal.all():
        tally.add(expected.size)
        return
    diff = _integer_differences(expected, actual)
    reference = np.abs(expected.astype(np.float64))
    close = equal | _integer_close(diff, reference, tally.rtol, tally.atol)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(equal, 0.0, diff / reference)
    tally.add(expected.size, int(np.count_nonzero(~equal)), int(np.count_nonzero(~close)),
              float(diff.max()), float(relative.max()),
              locator.first(~equal, expected, actual), locator.first(~close, expected, actual))


def _integer_differences(expected: np.ndarray[Any, Any],
                         actual: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """|actual - expected| as uint64, exact: every true difference fits, and the wrap-around
    subtraction of the two's-complement bit patterns yields it."""
    wide = np.int64 if expected.dtype.kind == "i" else np.uint64
    left = expected.astype(wide).view(np.uint64)
    right = actual.astype(wide).view(np.uint64)
    with np.errstate(over="ignore"):
        return np.where(actual >= expected, right - left, left - right)


def _integer_close(diff: np.ndarray[Any, Any], reference: np.ndarray[Any, Any], rtol: float,
                   atol: float) -> np.ndarray[Any, Any]:
    """diff <= atol + rtol * reference, comparing the integer diff with the bound's floor."""
    with np.errstate(invalid="ignore", over="ignore"):
        bound = np.floor(atol + rtol * reference)
        unbounded = bound >= _UINT64_SPAN
        usable = (bound > 0) & ~unbounded  # also False where the bound is NaN
    return unbounded | (diff <= np.where(usable, bound, 0.0).astype(np.uint64))


def _tally_numeric_chunk(expected: np.ndarray[Any, Any], actual: np.ndarray[Any, Any],
                         locator: _Locator, tally: _Tally) -> None:
    with np.errstate(all="ignore"):
        equal = expected == actual
        if expected.dtype.kind in "fc":
            equal |= np.isnan(expected) & np.isnan(actual)
        if equal.all():
            tally.add(expected.size)
            return
        close = np.isclose(actual, expected, rtol=tally.rtol, atol=tally.atol, equal_nan=True)
        diff, relative = _differences(expected, actual, equal)
    tally.add(expected.size, int(np.count_nonzero(~equal)), int(np.count_nonzero(~close)),
              float(diff.max()), float(relative.max()),
              locator.first(~equal, expected, actual), locator.first(~close, expected, actual))


def _differences(expected: np.ndarray[Any, Any], actual: np.ndarray[Any, Any],
                 equal: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """|Δ| and |Δ|/|expected| per element: 0 where equal, inf where a NaN or inf is involved."""
    wide = np.complex128 if expected.dtype.kind == "c" else np.float64
    reference = np.abs(expected.astype(wide))
    diff = np.abs(actual.astype(wide) - expected.astype(wide))
    diff[~np.isfinite(diff) | ~np.isfinite(reference)] = np.inf
    diff[equal] = 0.0
    relative = np.where(diff == 0, 0.0, diff / reference)
    relative[np.isnan(relative)] = np.inf
    return diff, relative


def _tally_exact_chunk(expected: np.ndarray[Any, Any], actual: np.ndarray[Any, Any],
                       locator: _Locator, tally: _Tally) -> None:
    if expected.dtype.kind == "V":  # structured records: compare their bytes
        width = expected.dtype.itemsize
        left = np.ascontiguousarray(expected).view(np.uint8).reshape(-1, width)
        right = np.ascontiguousarray(actual).view(np.uint8).reshape(-1, width)
        unequal = (left != right).any(axis=1)
    else:
        unequal = np.asarray(expected != actual)
    first = locator.first(unequal, expected, actual)
    count = int(np.count_nonzero(unequal))
    tally.add(expected.size, count, count, unequal_at=first, far_at=first)


def _index(label: str, shape: tuple[int, ...], flat: int) -> str:
    index = np.unravel_index(flat, shape) if shape else ()
    return f"{label}[{', '.join(str(int(i)) for i in index)}]" if index else label


# --- JSON -------------------------------------------------------------------------------------


def _compare_json(expected: Path, actual: Path, output: Output) -> OutputComparison:
    left, right = _load_json(expected, "original"), _load_json(actual, "replay")
    tally = _Tally(output.rtol, output.atol, "values")
    try:
        _walk_json(left, right, "$", tally)
    except RecursionError:
        raise _Unparseable("the JSON is nested too deeply to walk") from None
    return tally.result(output.path, "json")


def _load_json(path: Path, side: str) -> Any:
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle, parse_float=_json_float)
    except json.JSONDecodeError as exc:
        raise _Unparseable(f"the {side}'s copy is not valid JSON ({exc.msg} at line "
                           f"{exc.lineno})") from None
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise _Unparseable(f"the {side}'s copy is not readable JSON ({_clip(str(exc))})") from None


class _OverflowedLiteral(str):
    """A JSON number such as 1e400 that a float can only hold as inf: compared by its text."""


def _json_float(text: str) -> float | _OverflowedLiteral:
    value = float(text)
    return _OverflowedLiteral(text) if math.isinf(value) else value


def _walk_json(expected: Any, actual: Any, where: str, tally: _Tally) -> None:
    if isinstance(expected, dict) and isinstance(actual, dict):
        _walk_json_object(expected, actual, where, tally)
    elif isinstance(expected, list) and isinstance(actual, list):
        for i, (left, right) in enumerate(zip(expected, actual, strict=False)):
            _walk_json(left, right, f"{where}[{i}]", tally)
        if len(expected) != len(actual):
            tally.add_exact(False, where, f"{len(expected)} items vs {len(actual)}")
    elif _is_json_number(expected) and _is_json_number(actual) and expected != actual:
        tally.add_numbers([(expected, actual)], where, _clip(f"{expected!r} vs {actual!r}"))
    else:
        equal = expected == actual and type(expected) is type(actual) or (
            _is_json_number(expected) and _is_json_number(actual) and expected == actual)
        tally.add_exact(equal, where, f"{_short_json(expected)} vs {_short_json(actual)}")


def _walk_json_object(expected: dict[str, Any], actual: dict[str, Any], where: str,
                      tally: _Tally) -> None:
    for key, value in expected.items():
        if key in actual:
            _walk_json(value, actual[key], _json_path(where, key), tally)
        else:
            tally.add_exact(False, _json_path(where, key), "missing in the replay")
    for key in actual.keys() - expected.keys():
        tally.add_exact(False, _json_path(where, key), "only in the replay")


def _is_json_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_path(where: str, key: str) -> str:
    return f"{where}.{key}" if key.isidentifier() else f"{where}[{json.dumps(key)}]"


def _short_json(value: Any) -> str:
    if isinstance(value, _OverflowedLiteral):
        return str(value)
    return _clip(json.dumps(value, allow_nan=True, sort_keys=True))


# --- CSV and text -----------------------------------------------------------------------------


def _compare_csv(expected: Path, actual: Path, output: Output) -> OutputComparison:
    delimiter = "\t" if expected.suffix.lower() == ".tsv" else ","
    tally = _Tally(output.rtol, output.atol, "cells")
    try:
        with _open_text(expected, "") as left, _open_text(actual, "") as right:
            _walk_csv(csv.reader(left, delimiter=delimiter), csv.reader(right, delimiter=delimiter),
                      tally)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise _Unparseable(f"not readable as CSV ({_clip(str(exc))})") from None
    return tally.result(output.path, "csv")


def _walk_csv(expected: Iterator[list[str]], actual: Iterator[list[str]], tally: _Tally) -> None:
    header: list[str] = []
    for number, (left, right) in enumerate(zip_longest(expected, actual), start=1):
        if left is None or right is None:
            side = "the replay" if left is not None else "the original"
            tally.add_exact(False, f"row {number}", f"row missing in {side}")
            continue
        if number == 1 and not any(_NUMBER_CELL.fullmatch(cell) for cell in left):
            header = left
        if len(left) != len(right):
            tally.add_exact(False, f"row {number}", f"{len(left)} cells vs {len(right)}")
            continue
        for column, (cell, other) in enumerate(zip(left, right, strict=True)):
            name = json.dumps(header[column]) if column < len(header) else str(column + 1)
            _tally_cell(cell, other, f"row {number}, col {name}", tally)


def _tally_cell(expected: str, actual: str, where: str, tally: _Tally) -> None:
    if expected == actual:
        tally.add(1)
    elif (_NUMBER_CELL.fullmatch(expected) and _NUMBER_CELL.fullmatch(actual)
          and (pair := _number_pair(expected, actual))):
        tally.add_numbers([pair], where, f"{_clip(expected)} vs {_clip(actual)}")
    else:
        tally.add_exact(False, where, f"{_clip(expected)!r} vs {_clip(actual)!r}")


def _compare_text(expected: Path, actual: Path, output: Output) -> OutputComparison:
    tally = _Tally(output.rtol, output.atol, "lines")
    try:
        with _open_text(expected, None) as left, _open_text(actual, None) as right:
            for number, (line, other) in enumerate(zip_longest(left, right), start=1):
                _tally_line(line, other, f"line {number}", tally)
    except UnicodeDecodeError:
        raise _Unparseable("not valid UTF-8 text") from None
    return tally.result(output.path, "text")


def _tally_line(expected: str | None, actual: str | None, where: str, tally: _Tally) -> None:
    left, right = (expected or "").rstrip(), (actual or "").rstrip()
    if left == right:
        tally.add(1)  # also a blank line at the end of one file only
        return
    if expected is None or actual is None:
        side = "the replay" if actual is None else "the original"
        tally.add_exact(False, where, f"line missing in {side}")
        return
    reason = f"{_clip(left)!r} vs {_clip(right)!r}"
    pairs = _numbers_in_lines(left, right)
    if pairs is None:
        tally.add_exact(False, where, reason)
    else:
        tally.add_numbers(pairs, where, reason)


def _numbers_in_lines(expected: str, actual: str) -> list[tuple[Number, Number]] | None:
    """The numbers of two lines that differ only in numbers, or None when the text differs."""
    left_parts, right_parts = _NUMBER_IN_TEXT.split(expected), _NUMBER_IN_TEXT.split(actual)
    if len(left_parts) != len(right_parts) or left_parts[::2] != right_parts[::2]:
        return None
    pairs = [_number_pair(e, a) for e, a in zip(left_parts[1::2], right_parts[1::2], strict=True)]
    numbers = [pair for pair in pairs if pair is not None]
    return numbers if len(numbers) == len(pairs) else None


def _number_pair(expected: str, actual: str) -> tuple[Number, Number] | None:
    """Two numbers as written, or None when one overflows to ±inf and the texts differ:
    1e400 and 1e500 are both inf as floats, yet they are not the same number."""
    left, right = _parse_number(expected), _parse_number(actual)
    overflowed = _overflowed(expected, left) or _overflowed(actual, right)
    return None if overflowed and expected.strip() != actual.strip() else (left, right)


def _parse_number(text: str) -> Number:
    if _INTEGER.fullmatch(text):
        with contextlib.suppress(ValueError):  # past int()'s digit limit: read as a float
            return int(text)
    return float(text)


def _overflowed(text: str, value: Number) -> bool:
    """True for a literal such as 1e400 that only parses to ±inf (unlike "inf" itself)."""
    return isinstance(value, float) and math.isinf(value) and any(c.isdigit() for c in text)


def _open_text(path: Path, newline: str | None) -> TextIO:
    return path.open(encoding="utf-8", newline=newline)


def _bytes(size: int) -> str:
    return "1 byte" if size == 1 else f"{size} bytes"


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


_COMPARERS: dict[str, Callable[[Path, Path, Output], OutputComparison]] = {
    "npy": _compare_npy,
    "npz": _compare_npz,
    "json": _compare_json,
    "csv": _compare_csv,
    "text": _compare_text,
}
