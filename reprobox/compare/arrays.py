"""Arrays: .npy and .npz, compared element by element in bounded chunks."""

from __future__ import annotations

import contextlib
import functools
import math
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from reprobox.compare.result import OutputComparison
from reprobox.compare.tally import Tally, Unparseable, clip
from reprobox.manifest import Output

_CHUNK_ELEMENTS = 1 << 20  # bounds the temporaries made per step when comparing large arrays
_UINT64_SPAN = 2.0**64


def compare_npy(expected: Path, actual: Path, output: Output) -> OutputComparison:
    left, right = _load_npy(expected, "original"), _load_npy(actual, "replay")
    tally = Tally(output.rtol, output.atol, "elements")
    problem = _tally_arrays(left, right, PurePosixPath(output.path).stem, tally)
    if problem:
        return OutputComparison(output.path, "different", "npy", problem)
    return tally.result(output.path, "npy")


def compare_npz(expected: Path, actual: Path, output: Output) -> OutputComparison:
    with contextlib.ExitStack() as stack:
        left = stack.enter_context(_load_npz(expected, "original"))
        right = stack.enter_context(_load_npz(actual, "replay"))
        problem = _key_set_problem(set(left.files), set(right.files))
        if problem:
            return OutputComparison(output.path, "different", "npz", problem)
        tally = Tally(output.rtol, output.atol, "elements")
        try:
            for key in left.files:  # one pair of arrays in memory at a time
                problem = _tally_arrays(left[key], right[key], key, tally)
                if problem:
                    return OutputComparison(output.path, "different", "npz", f"{key}: {problem}")
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise Unparseable(f"an array in the .npz cannot be read ({clip(str(exc))})") from None
        lead = f"{len(left.files)} arrays: "
    return tally.result(output.path, "npz", lead)


def _load_npy(path: Path, side: str) -> np.ndarray[Any, Any]:
    with path.open("rb") as handle:
        if handle.read(6) != b"\x93NUMPY":
            raise Unparseable(f"the {side}'s copy is not an .npy file (no NUMPY header)")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)  # type: ignore[no-any-return]
    except (ValueError, OSError, EOFError) as exc:
        raise Unparseable(f"the {side}'s .npy cannot be loaded ({clip(str(exc))})") from None


def _load_npz(path: Path, side: str) -> np.lib.npyio.NpzFile:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise Unparseable(f"the {side}'s .npz cannot be loaded ({clip(str(exc))})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise Unparseable(f"the {side}'s copy is not an .npz archive")
    return loaded


def _key_set_problem(expected: set[str], actual: set[str]) -> str | None:
    if expected == actual:
        return None
    parts = [f"only in the original: {', '.join(sorted(expected - actual))}" if expected - actual
             else "", f"only in the replay: {', '.join(sorted(actual - expected))}"
             if actual - expected else ""]
    return "array names differ; " + "; ".join(p for p in parts if p)


def _tally_arrays(expected: np.ndarray[Any, Any], actual: np.ndarray[Any, Any], label: str,
                  tally: Tally) -> str | None:
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
                         locator: _Locator, tally: Tally) -> None:
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
                         locator: _Locator, tally: Tally) -> None:
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
                       locator: _Locator, tally: Tally) -> None:
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
