"""Arrays read in order, a chunk at a time, from memory, a region of a file or a zip member.

An `ArraySource` names an array's shape and element type and opens a reader that hands out its
elements in C order, `count` at a time, in native byte order. Whatever the array's size, a reader
holds one chunk: a contiguous region of a file is read with `readinto` into one reused buffer
(no memory map, so the pages read are not counted against the process), a compressed zip member
is inflated as it is read, and only a strided view (a Fortran-ordered .npy, a non-contiguous
tensor) is read through a memory map of the file. Element types numpy lacks (bfloat16, float8)
are held as their bit patterns and decoded to float32, exactly, when compared.
"""

from __future__ import annotations

import contextlib
import io
import math
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from reprobox.compare.tally import Unparseable

Array = np.ndarray[Any, Any]
Reader = Callable[[int], Array]  # the next `count` elements, flat, C order, native byte order
Decoder = Callable[[Array], Array]

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... name length, extra length
_LOCAL_SIGNATURE = b"PK\x03\x04"
_SKIP_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ElementType:
    """What one element is: its name ("float32", "bfloat16") and how chunks hold it.

    `dtype` is the native-order numpy dtype of the chunks; for formats numpy lacks it is the
    unsigned integer of their bits, and `decode` turns those bits into float32 exactly.
    `exact` marks bit patterns that can only be compared for equality (an unknown float8).
    """

    name: str
    dtype: np.dtype[Any]
    decode: Decoder | None = None
    exact: bool = False

    @property
    def is_float(self) -> bool:
        return self.decode is not None or self.dtype.kind == "f"


def element_of(dtype: np.dtype[Any]) -> ElementType:
    """The element type of a numpy dtype, named as numpy names it in native byte order."""
    native = dtype.newbyteorder("=")
    return ElementType(str(native), native)


def _bfloat16(bits: Array) -> Array:
    return (bits.astype(np.uint32) << 16).view(np.float32)  # bfloat16 is float32's top half


def _float8_e5m2(bits: Array) -> Array:
    return (bits.astype(np.uint16) << 8).view(np.float16).astype(np.float32)  # float16's top


def _float8_e4m3fn_table() -> Array:
    """float32 value of each of the 256 float8_e4m3fn bit patterns (bias 7, no infinities)."""
    values = np.empty(256, np.float32)
    for bits in range(256):
        exponent, mantissa = (bits >> 3) & 0xF, bits & 0x7
        if exponent == 0xF and mantissa == 0x7:
            magnitude = math.nan
        elif exponent == 0:
            magnitude = mantissa / 8 * 2.0**-6
        else:
            magnitude = (1 + mantissa / 8) * 2.0 ** (exponent - 7)
        values[bits] = -magnitude if bits & 0x80 else magnitude
    return values


_E4M3FN = _float8_e4m3fn_table()

BFLOAT16 = ElementType("bfloat16", np.dtype(np.uint16), _bfloat16)
FLOAT8_E5M2 = ElementType("float8_e5m2", np.dtype(np.uint8), _float8_e5m2)
FLOAT8_E4M3FN = ElementType("float8_e4m3fn", np.dtype(np.uint8), lambda bits: _E4M3FN[bits])


def bits_only(name: str, dtype: str) -> ElementType:
    """A format compared bit for bit only: no tolerance can be applied to its patterns."""
    return ElementType(name, np.dtype(dtype), exact=True)


@dataclass(frozen=True, slots=True)
class ArraySource:
    """An array that can be read, chunk by chunk, as often as needed."""

    shape: tuple[int, ...]
    element: ElementType
    open: Callable[[], contextlib.AbstractContextManager[Reader]]

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def in_memory(array: Array, element: ElementType | None = None) -> ArraySource:
    """An array numpy already holds (or maps): read through flat slices of it."""
    element = element or element_of(array.dtype)
    return ArraySource(array.shape, element, lambda: _array_reader(array, element.dtype))


def file_region(path: Path, offset: int, shape: tuple[int, ...], element: ElementType,
                file_dtype: np.dtype[Any]) -> ArraySource:
    """C-ordered elements of `file_dtype` stored raw in `path` from byte `offset` on."""
    _check_fits(path, offset, math.prod(shape) * file_dtype.itemsize)
    return ArraySource(shape, element,
                       lambda: _file_reader(path, offset, file_dtype, element.dtype))


def zip_stream(archive: Path, member: str, skip: int, shape: tuple[int, ...],
               element: ElementType, file_dtype: np.dtype[Any]) -> ArraySource:
    """C-ordered elements inside a (compressed) zip member, after its first `skip` bytes."""
    return ArraySource(shape, element,
                       lambda: _zip_reader(archive, member, skip, file_dtype, element.dtype))


def strided(path: Path, offset: int, extent: int, file_dtype: np.dtype[Any],
            shape: tuple[int, ...], strides: tuple[int, ...], element: ElementType) -> ArraySource:
    """A strided view (`strides` in elements) of `extent` elements stored raw from `offset`."""
    _check_fits(path, offset, extent * file_dtype.itemsize)

    def view() -> Array:
        base: Array = np.memmap(path, file_dtype, "r", offset, (extent,)) if extent else \
            np.empty(0, file_dtype)
        byte_strides = tuple(s * file_dtype.itemsize for s in strides)
        return np.lib.stride_tricks.as_strided(base, shape, byte_strides, writeable=False)

    return ArraySource(shape, element, lambda: _array_reader(view(), element.dtype))


def zip_member_offset(archive: Path, info: zipfile.ZipInfo) -> int | None:
    """Where a stored (uncompressed, unencrypted) member's bytes start in the archive file,
    so they can be read in place; None for a member that must be inflated."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    with archive.open("rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size:
        raise Unparseable(f"{archive.name}: a zip entry's header is cut short")
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    if signature != _LOCAL_SIGNATURE:
        raise Unparseable(f"{archive.name}: a zip entry's header is damaged")
    return int(info.header_offset + _LOCAL_HEADER.size + name_length + extra_length)


def skip_bytes(stream: IO[bytes], count: int) -> None:
    """Read past `count` bytes of a stream that cannot seek cheaply (an inflating member)."""
    while count > 0:
        data = stream.read(min(count, _SKIP_BYTES))
        if not data:
            raise Unparseable("a zip member ends before the data it announces")
        count -= len(data)


def _check_fits(path: Path, offset: int, length: int) -> None:
    size = path.stat().st_size
    if offset < 0 or offset + length > size:
        raise Unparseable(f"{path.name} ends before the data it announces "
                          f"({length} bytes at offset {offset}, file of {size})")


@contextlib.contextmanager
def _array_reader(array: Array, native: np.dtype[Any]) -> Iterator[Reader]:
    flat = array.reshape(-1) if array.flags.c_contiguous else None
    position = 0

    def read(count: int) -> Array:
        nonlocal position
        stop = position + count
        part = flat[position:stop] if flat is not None else array.flat[position:stop]
        position = stop
        return part.astype(native, copy=False)

    yield read


@contextlib.contextmanager
def _file_reader(path: Path, offset: int, file_dtype: np.dtype[Any],
                 native: np.dtype[Any]) -> Iterator[Reader]:
    buffer = np.empty(0, file_dtype)  # reused: each chunk is compared before the next is read
    with path.open("rb", buffering=0) as handle:
        handle.seek(offset)

        def read(count: int) -> Array:
            nonlocal buffer
            if buffer.size < count:
                buffer = np.empty(count, file_dtype)
            part = buffer[:count]
            _fill(handle, part.view(np.uint8).data, path)
            return part.astype(native, copy=False)

        yield read


def _fill(handle: io.FileIO, target: memoryview, path: Path) -> None:
    """Read exactly len(target) bytes (a read may return fewer than asked before the end)."""
    done = 0
    while done < len(target):
        got = handle.readinto(target[done:])
        if not got:
            raise Unparseable(f"{path.name} ends before the data it announces")
        done += got


@contextlib.contextmanager
def _zip_reader(archive: Path, member: str, skip: int, file_dtype: np.dtype[Any],
                native: np.dtype[Any]) -> Iterator[Reader]:
    with contextlib.ExitStack() as stack:
        with _zip_errors(archive, member):
            stream = stack.enter_context(stack.enter_context(zipfile.ZipFile(archive)).open(member))
            skip_bytes(stream, skip)

        def read(count: int) -> Array:
            with _zip_errors(archive, member):
                data = stream.read(count * file_dtype.itemsize)
            if len(data) != count * file_dtype.itemsize:
                raise Unparseable(f"{archive.name}: {member} ends before its data")
            return np.frombuffer(data, file_dtype).astype(native, copy=False)

        yield read


@contextlib.contextmanager
def _zip_errors(archive: Path, member: str) -> Iterator[None]:
    """Damaged archives and inflate errors as Unparseable, naming the member."""
    try:
        yield
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise Unparseable(f"{archive.name}: {member} cannot be read ({exc})") from None
