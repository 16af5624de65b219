"""Arrays: .npy and .npz files, and any two array sources, compared element by element in chunks.

Floats agree when np.isclose(actual, expected, rtol, atol) says so or, with a ULP tolerance,
when they are at most that many units in the last place apart (counted exactly on their bits,
in their own format: a bfloat16 ULP for bfloat16; complex numbers by rtol/atol only).
NaN equals NaN where both have it. A shape or dtype change is named and stops that array's
comparison. Every differing output gets its count, max |Δ|, max relative Δ, max ULPs, where it
first differs and the first values side by side.
"""

from __future__ import annotations

import functools
import math
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np

from reprobox.compare.result import OutputComparison
from reprobox.compare.streams import (
    Array,
    ArraySource,
    ElementType,
    element_of,
    file_region,
    in_memory,
    strided,
    zip_member_offset,
    zip_stream,
)
from reprobox.compare.tally import SAMPLE_LIMIT, Sample, Tally, Unparseable, clip
from reprobox.manifest import Output

_CHUNK_ELEMENTS = 1 << 20  # bounds the temporaries made per step when comparing large arrays
_CHUNK_BYTES = 8 << 20  # and so does this, for wide elements
_UINT64_SPAN = 2.0**64
_NPY_MAGIC = b"\x93NUMPY"

Scalar = None | bool | int | float | complex | str | bytes
Leaf = ArraySource | Scalar  # what a key of an .npz, a checkpoint or a safetensors file holds


def compare_npy(expected: Path, actual: Path, output: Output) -> OutputComparison:
    left, right = npy_source(expected, "original"), npy_source(actual, "replay")
    tally = Tally.for_output(output, "elements")
    tally_arrays(left, right, PurePosixPath(output.path).stem, tally)
    return tally.result(output.path, "npy")


def compare_npz(expected: Path, actual: Path, output: Output) -> OutputComparison:
    left, right = npz_sources(expected, "original"), npz_sources(actual, "replay")
    tally = Tally.for_output(output, "elements")
    tally_mapping(left, right, tally)
    return tally.result(output.path, "npz", f"{len(left)} arrays: ")


# --- reading .npy and .npz ----------------------------------------------------------------------


def npy_source(path: Path, side: str) -> ArraySource:
    """The array of an .npy file, read in place: its header parsed, its data never loaded."""
    with path.open("rb") as handle:
        if handle.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
            raise Unparseable(f"the {side}'s copy is not an .npy file (no NUMPY header)")
        handle.seek(0)
        shape, fortran, dtype = _npy_header(handle, f"the {side}'s .npy")
        offset = handle.tell()
    return _npy_data(path, offset, shape, fortran, dtype)


def npz_sources(path: Path, side: str) -> dict[str, ArraySource]:
    """Each member of an .npz by its key, read from the archive member by member."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            return {_npz_key(info.filename): _npz_member(path, archive, info, side)
                    for info in members}
    except (ValueError, OSError, EOFError, RuntimeError, zipfile.BadZipFile, zlib.error) as exc:
        raise Unparseable(f"the {side}'s .npz cannot be loaded ({clip(str(exc))})") from None


def _npz_key(name: str) -> str:
    return name[:-4] if name.endswith(".npy") else name


def _npz_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo,
                side: str) -> ArraySource:
    """A member read in place when stored, inflated as it is read when compressed; a member
    that is not an .npy is compared as its bytes."""
    what = f"{info.filename} in the {side}'s .npz"
    offset = zip_member_offset(path, info)
    with path.open("rb") if offset is not None else archive.open(info) as handle:
        handle.seek(offset or 0)
        if handle.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
            return _member_bytes(path, info, offset)
        handle.seek(offset or 0)
        shape, fortran, dtype = _npy_header(handle, what)
        header = handle.tell() - (offset or 0)
    if header + math.prod(shape) * dtype.itemsize > info.file_size:
        raise Unparseable(f"{what} is shorter than its header announces")
    if offset is not None:
        return _npy_data(path, offset + header, shape, fortran, dtype)
    if fortran and len(shape) > 1:  # inflated whole: only C order can be read as it streams
        with archive.open(info) as stream:
            stream.seek(header)
            data = np.frombuffer(stream.read(math.prod(shape) * dtype.itemsize), dtype)
        return in_memory(data.reshape(shape, order="F"))
    return zip_stream(path, info.filename, header, shape, element_of(dtype), dtype)


def _member_bytes(path: Path, info: zipfile.ZipInfo, offset: int | None) -> ArraySource:
    raw = np.dtype(np.uint8)
    if offset is None:
        return zip_stream(path, info.filename, 0, (info.file_size,), element_of(raw), raw)
    return file_region(path, offset, (info.file_size,), element_of(raw), raw)


def _npy_header(handle: IO[bytes], what: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """(shape, Fortran order, dtype) from an .npy header; the handle is left at the data."""
    try:
        version = np.lib.format.read_magic(handle)
        # 3.0 differs from 2.0 only in allowing UTF-8 field names; read as 2.0, they keep
        # their bytes, which is all a comparison needs
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(handle)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise Unparseable(f"{what} has a damaged header ({clip(str(exc))})") from None
    if dtype.hasobject:
        raise Unparseable(f"{what} holds Python objects, which are never unpickled")
    return tuple(shape), bool(fortran), dtype


def _npy_data(path: Path, offset: int, shape: tuple[int, ...], fortran: bool,
              dtype: np.dtype[Any]) -> ArraySource:
    if fortran and len(shape) > 1:
        steps = tuple(math.prod(shape[:axis]) for axis in range(len(shape)))
        return strided(path, offset, math.prod(shape), dtype, shape, steps, element_of(dtype))
    return file_region(path, offset, shape, element_of(dtype), dtype)


# --- comparing keyed leaves and arrays ----------------------------------------------------------


def tally_mapping(expected: Mapping[str, Leaf], actual: Mapping[str, Leaf], tally: Tally) -> None:
    """Compare what two files hold key by key: keys only one side has are problems."""
    _tally_key_sets(expected.keys(), actual.keys(), tally)
    for key, left in expected.items():
        if key in actual:
            tally_leaf(left, actual[key], key, tally)


def tally_leaf(expected: Leaf, actual: Leaf, key: str, tally: Tally) -> None:
    """Arrays element by element; numbers with the tolerance; other values exactly."""
    if isinstance(expected, ArraySource) and isinstance(actual, ArraySource):
        tally_arrays(expected, actual, key, tally)
    elif isinstance(expected, ArraySource) or isinstance(actual, ArraySource):
        tally.add_problem(key, f"{key}: {_what(expected)} in the original, "
                               f"{_what(actual)} in the replay")
    elif _is_number(expected) and _is_number(actual):
        tally.add_numbers([(expected, actual)], key,  # type: ignore[list-item]
                          clip(f"{expected!r} vs {actual!r}"), (repr(expected), repr(actual)))
    else:
        equal = expected == actual and type(expected) is type(actual)
        shown = (clip(repr(expected), 40), clip(repr(actual), 40))
        tally.add_exact(equal, key, f"{shown[0]} vs {shown[1]}", shown)


def _tally_key_sets(expected: Iterable[str], actual: Iterable[str], tally: Tally) -> None:
    left, right = list(expected), list(actual)
    left_set, right_set = set(left), set(right)
    for keys, side in (([k for k in left if k not in right_set], "original"),
                       ([k for k in right if k not in left_set], "replay")):
        if keys:
            tally.add_problem(keys[0], clip(f"only in the {side}: {', '.join(keys)}", 200))


def _is_number(value: Leaf) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _what(value: Leaf) -> str:
    if isinstance(value, ArraySource):
        return f"an array of {value.element.name} {value.shape}"
    return clip(repr(value), 40)


def tally_arrays(expected: ArraySource, actual: ArraySource, label: str, tally: Tally) -> None:
    """Add the element comparison to `tally`, chunk by chunk, or the reason it cannot be made."""
    problem = _mismatch(expected, actual)
    if problem:
        tally.add_problem(label, f"{label}: {problem}")
        return
    compare_chunk = _chunk_comparer(expected.element)
    locate = functools.partial(_index, label, expected.shape)
    step = max(1, min(_CHUNK_ELEMENTS, _CHUNK_BYTES // max(1, expected.element.dtype.itemsize)))
    with expected.open() as left, actual.open() as right:
        for offset in range(0, expected.size, step):
            count = min(step, expected.size - offset)
            compare_chunk(left(count), right(count), expected.element,
                          _Locator(locate, offset), tally)


def _mismatch(expected: ArraySource, actual: ArraySource) -> str | None:
    if expected.shape != actual.shape:
        return f"shape {expected.shape} in the original, {actual.shape} in the replay"
    if expected.element.name != actual.element.name:
        return (f"dtype {expected.element.name} in the original, "
                f"{actual.element.name} in the replay")
    return None


ChunkComparer = Callable[[Array, Array, ElementType, "_Locator", Tally], None]


def _chunk_comparer(element: ElementType) -> ChunkComparer:
    kind = element.dtype.kind
    if element.exact:
        return _tally_exact_chunk
    if element.is_float:
        return _tally_float_chunk
    return (_tally_integer_chunk if kind in "iu" else
            _tally_complex_chunk if kind == "c" else _tally_exact_chunk)


@dataclass(frozen=True, slots=True)
class _Locator:
    """Turns an index into a chunk into the element's name: "w[3, 7]"."""

    name_of: Callable[[int], str]
    offset: int

    def samples(self, positions: Array, expected: Array, actual: Array) -> list[Sample]:
        """(where, expected, actual) of the elements at the first few `positions`."""
        return [(self.name_of(self.offset + int(i)), _show(expected[i]), _show(actual[i]))
                for i in positions[:SAMPLE_LIMIT]]


def _show(value: Any) -> str:
    return clip(str(value), 40)


@dataclass(frozen=True, slots=True)
class _Differing:
    """The elements of a chunk that are not equal: their positions, and for each whether it
    is within tolerance and (for numbers) |Δ| and relative Δ. Only these few are measured."""

    positions: Array
    close: Array
    diff: Array | None = None
    relative: Array | None = None
    max_ulps: int | None = None


def _add_chunk(tally: Tally, locator: _Locator, size: int, shown: tuple[Array, Array],
               differing: _Differing) -> None:
    unequal_at = differing.positions
    far_at = unequal_at[~differing.close]
    unequal, far = locator.samples(unequal_at, *shown), locator.samples(far_at, *shown)
    numbers = differing.diff is not None and differing.relative is not None and unequal_at.size
    tally.add(size, int(unequal_at.size), int(far_at.size),
              float(differing.diff.max()) if numbers else 0.0,  # type: ignore[union-attr]
              float(differing.relative.max()) if numbers else 0.0,  # type: ignore[union-attr]
              _first(unequal), _first(far), differing.max_ulps, unequal, far)


def _first(samples: list[Sample]) -> tuple[str, str] | None:
    return (samples[0][0], f"{samples[0][1]} vs {samples[0][2]}") if samples else None


def _tally_integer_chunk(expected: Array, actual: Array, element: ElementType, locator: _Locator,
                         tally: Tally) -> None:
    """Integer arrays exactly: float64 would merge neighbours above 2**53 (2**60, 2**60 + 1)."""
    positions = np.flatnonzero(expected != actual)
    if positions.size:
        left, right = expected[positions], actual[positions]
        diff = _integer_differences(left, right)
        reference = np.abs(left.astype(np.float64))
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = diff / reference
        close = _integer_close(diff, reference, tally.rtol, tally.atol)
        differing = _Differing(positions, close, diff, relative)
        _add_chunk(tally, locator, expected.size, (expected, actual), differing)
    else:
        tally.add(expected.size)


def _integer_differences(expected: Array, actual: Array) -> Array:
    """|actual - expected| as uint64, exact: every true difference fits, and the wrap-around
    subtraction of the two's-complement bit patterns yields it."""
    wide = np.int64 if expected.dtype.kind == "i" else np.uint64
    left = expected.astype(wide).view(np.uint64)
    right = actual.astype(wide).view(np.uint64)
    with np.errstate(over="ignore"):
        return np.where(actual >= expected, right - left, left - right)


def _integer_close(diff: Array, reference: Array, rtol: float, atol: float) -> Array:
    """diff <= atol + rtol * reference, comparing the integer diff with the bound's floor."""
    with np.errstate(invalid="ignore", over="ignore"):
        bound = np.floor(atol + rtol * reference)
        unbounded = bound >= _UINT64_SPAN
        usable = (bound > 0) & ~unbounded  # also False where the bound is NaN
    return unbounded | (diff <= np.where(usable, bound, 0.0).astype(np.uint64))


def _tally_float_chunk(expected_raw: Array, actual_raw: Array, element: ElementType,
                       locator: _Locator, tally: Tally) -> None:
    left_bits, right_bits = _bits(expected_raw, element), _bits(actual_raw, element)
    if np.array_equal(left_bits, right_bits):  # the common case, in one pass
        tally.add(expected_raw.size)
        return
    positions = np.flatnonzero(left_bits != right_bits)
    expected, actual = _values(expected_raw[positions], element), \
        _values(actual_raw[positions], element)
    with np.errstate(all="ignore"):
        unequal = (expected != actual) & ~(np.isnan(expected) & np.isnan(actual))  # not ±0
        positions, expected, actual = positions[unequal], expected[unequal], actual[unequal]
        close = np.isclose(actual, expected, rtol=tally.rtol, atol=tally.atol)
        finite = np.isfinite(expected) & np.isfinite(actual)
        ulps = _ulp_distance(left_bits[positions], right_bits[positions])
        if tally.ulps is not None:
            close |= finite & (ulps <= tally.ulps)
        diff, relative = _differences(expected, actual)
    max_ulps = int(ulps[finite].max()) if finite.any() else None
    shown = (expected_raw, actual_raw) if element.decode is None else \
        (element.decode(expected_raw), element.decode(actual_raw))
    differing = _Differing(positions, close, diff, relative, max_ulps)
    _add_chunk(tally, locator, expected_raw.size, shown, differing)


def _tally_complex_chunk(expected: Array, actual: Array, element: ElementType,
                         locator: _Locator, tally: Tally) -> None:
    with np.errstate(all="ignore"):
        positions = np.flatnonzero((expected != actual) &
                                   ~(np.isnan(expected) & np.isnan(actual)))
        left, right = expected[positions], actual[positions]
        close = np.isclose(right, left, rtol=tally.rtol, atol=tally.atol)
        diff, relative = _differences(left, right)
    differing = _Differing(positions, close, diff, relative)
    _add_chunk(tally, locator, expected.size, (expected, actual), differing)


def _bits(raw: Array, element: ElementType) -> Array:
    """The bit patterns of float elements, as unsigned integers of their width."""
    return raw if element.decode is not None else raw.view(f"u{raw.dtype.itemsize}")


def _values(raw: Array, element: ElementType) -> Array:
    """Float values to compare, at least float32 wide, so tolerances are not rounded away."""
    values = raw if element.decode is None else element.decode(raw)
    return values.astype(np.float32) if values.dtype.itemsize < 4 else values


def _ulp_distance(left_bits: Array, right_bits: Array) -> Array:
    """How many representable values of their format lie between two floats' bit patterns."""
    return _integer_differences(ordered_bits(left_bits), ordered_bits(right_bits))


def ordered_bits(bits: Array) -> Array:
    """Sign-magnitude float bits as int64 in the floats' order: -0 and +0 are both 0, and
    neighbouring floats are neighbouring integers."""
    unsigned = bits.astype(np.uint64)
    sign = np.uint64(1 << (bits.dtype.itemsize * 8 - 1))
    magnitude = (unsigned & (sign - np.uint64(1))).astype(np.int64)
    ordered: Array = np.where((unsigned & sign) != 0, -magnitude, magnitude)
    return ordered


def _differences(expected: Array, actual: Array) -> tuple[Array, Array]:
    """|Δ| and |Δ|/|expected| of unequal numbers: inf where a NaN or inf is involved."""
    wide = np.complex128 if expected.dtype.kind == "c" else np.float64
    reference = np.abs(expected.astype(wide))
    diff = np.abs(actual.astype(wide) - expected.astype(wide))
    diff[~np.isfinite(diff) | ~np.isfinite(reference)] = np.inf
    relative = diff / reference
    relative[np.isnan(relative)] = np.inf
    return diff, relative


def _tally_exact_chunk(expected: Array, actual: Array, element: ElementType, locator: _Locator,
                       tally: Tally) -> None:
    if expected.dtype.kind == "V" or element.exact:  # records or bit patterns: their bytes
        width = expected.dtype.itemsize
        left = np.ascontiguousarray(expected).view(np.uint8).reshape(-1, width)
        right = np.ascontiguousarray(actual).view(np.uint8).reshape(-1, width)
        unequal = (left != right).any(axis=1)
    elif expected.dtype.kind in "mM":  # NaT == NaT, as NaN == NaN: compare the ticks
        unequal = np.asarray(expected.view(np.int64) != actual.view(np.int64))
    else:
        unequal = np.asarray(expected != actual)
    positions = np.flatnonzero(unequal)
    differing = _Differing(positions, np.zeros(positions.size, bool))
    _add_chunk(tally, locator, expected.size, (expected, actual), differing)


def _index(label: str, shape: tuple[int, ...], flat: int) -> str:
    index = np.unravel_index(flat, shape) if shape else ()
    return f"{label}[{', '.join(str(int(i)) for i in index)}]" if index else label
