"""PyTorch checkpoints and safetensors files, compared tensor by tensor without torch.

A checkpoint (`.pt`, `.pth`, `.ckpt`) is read in either of torch.save's formats: the zip archive
(`<name>/data.pkl` plus one member per storage, `<name>/data/<key>`, and `<name>/byteorder`) or
the legacy pre-1.6 stream (magic number, protocol, system info, the object pickle, the storage
keys, then each storage as its element count and raw bytes). The pickle is read by
`torchpickle`, which runs nothing. Nested dicts and lists become flat keys (`model.0.weight`,
`optimizer.state.0.exp_avg`, `metrics.history.1`); tensors become array sources read in place
(strided views honoured), other leaves (epoch, learning rate, metrics) are compared as values.

A safetensors file is an 8-byte little-endian header length, a JSON header naming each tensor's
dtype, shape and byte range, then the raw little-endian data; its `__metadata__` is not compared.

bfloat16 is kept exact: its bits are read as uint16 and widened to float32 (exact: bfloat16 is
float32's top half) to compare values, while its ULPs are counted in bfloat16's own units.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from reprobox.compare.arrays import Leaf, tally_mapping
from reprobox.compare.result import OutputComparison
from reprobox.compare.streams import (
    BFLOAT16,
    FLOAT8_E4M3FN,
    FLOAT8_E5M2,
    ArraySource,
    ElementType,
    bits_only,
    element_of,
    file_region,
    in_memory,
    strided,
    zip_member_offset,
    zip_stream,
)
from reprobox.compare.tally import Tally, Unparseable, clip
from reprobox.compare.torchpickle import (
    NumpyArray,
    NumpyDtype,
    Refused,
    StorageRef,
    TensorRef,
    TorchDtype,
    load,
)
from reprobox.manifest import Output

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_DATA_PKL = re.compile(r"([^/]+)/data\.pkl")
_HEADER_LIMIT = 100 << 20  # a safetensors header larger than this is not a header
_ROOT = "tensor"  # the key of a checkpoint that holds one bare tensor

_SAFETENSORS_ELEMENTS: dict[str, ElementType] = {
    **{code: element_of(np.dtype(name)) for code, name in (
        ("F64", "float64"), ("F32", "float32"), ("F16", "float16"), ("I64", "int64"),
        ("I32", "int32"), ("I16", "int16"), ("I8", "int8"), ("U8", "uint8"), ("U16", "uint16"),
        ("U32", "uint32"), ("U64", "uint64"), ("BOOL", "bool"), ("C64", "complex64"))},
    "BF16": BFLOAT16,
    "F8_E4M3": FLOAT8_E4M3FN,
    "F8_E5M2": FLOAT8_E5M2,
    "F8_E8M0": bits_only("float8_e8m0fnu", "u1"),
}


def compare_checkpoint(expected: Path, actual: Path, output: Output) -> OutputComparison:
    left, right = read_checkpoint(expected, "original"), read_checkpoint(actual, "replay")
    tally = Tally.for_output(output, "values")
    tally_mapping(left, right, tally)
    return tally.result(output.path, "pt", _lead(left))


def compare_safetensors(expected: Path, actual: Path, output: Output) -> OutputComparison:
    (left, left_meta), (right, right_meta) = (read_safetensors(expected, "original"),
                                              read_safetensors(actual, "replay"))
    tally = Tally.for_output(output, "values")
    tally_mapping(left, right, tally)
    note = "" if left_meta == right_meta else " (their metadata differs; not compared)"
    return tally.result(output.path, "safetensors", f"{len(left)} tensors{note}: ")


def _lead(leaves: Mapping[str, Leaf]) -> str:
    tensors = sum(isinstance(leaf, ArraySource) for leaf in leaves.values())
    others = len(leaves) - tensors
    return f"{tensors} tensors" + (f", {others} other values" if others else "") + ": "


# --- checkpoints --------------------------------------------------------------------------------


def read_checkpoint(path: Path, side: str) -> dict[str, Leaf]:
    """Every tensor and value of a torch.save file by its flat key, nothing loaded yet."""
    what = f"the {side}'s checkpoint"
    with path.open("rb") as handle:
        head = handle.read(4)
    try:
        if head.startswith(b"PK\x03\x04"):
            tree, sources = _read_zip(path, what)
        elif head[:1] == b"\x80":
            tree, sources = _read_legacy(path, what)
        else:
            raise Unparseable(f"the {side}'s copy is not a PyTorch checkpoint")
        leaves: dict[str, Leaf] = {}
        _flatten(tree, "", sources, leaves)
        return leaves
    except Refused as exc:
        raise Unparseable(f"{what} needs {exc}, which a weights-only load refuses: only "
                          "tensors, containers, numbers and strings are read") from None
    except (pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, EOFError,
            OSError, RecursionError, struct.error, zipfile.BadZipFile, zlib.error) as exc:
        raise Unparseable(f"{what} cannot be read ({clip(str(exc) or type(exc).__name__)})") \
            from None


class _Storages:
    """Where each storage's bytes are, so a tensor can be read from them in place."""

    def __init__(self, path: Path, byte_order: Literal["<", ">"]) -> None:
        self.path = path
        self.byte_order = byte_order  # "<" or ">"
        self.offsets: dict[str, int | None] = {}  # file offset, None for a compressed member
        self.lengths: dict[str, int] = {}  # bytes
        self.members: dict[str, str] = {}  # zip member name

    def source(self, tensor: TensorRef) -> ArraySource:
        key, element = tensor.storage.key, tensor.element
        if key not in self.lengths:
            raise Unparseable(f"{self.path.name}: storage {key} is not in the file")
        itemsize = element.dtype.itemsize
        start = tensor.storage.offset + tensor.offset
        extent = _extent(tensor)
        if (start + extent) * itemsize > self.lengths[key]:
            raise Unparseable(f"{self.path.name}: a tensor reaches past the end of storage {key}")
        file_dtype = element.dtype.newbyteorder(self.byte_order)
        offset = self.offsets[key]
        if offset is None:
            return self._compressed(key, start * itemsize, tensor, file_dtype)
        where = offset + start * itemsize
        if _contiguous(tensor.shape, tensor.strides):
            return file_region(self.path, where, tensor.shape, element, file_dtype)
        return strided(self.path, where, extent, file_dtype, tensor.shape, tensor.strides, element)

    def _compressed(self, key: str, skip: int, tensor: TensorRef,
                    file_dtype: np.dtype[Any]) -> ArraySource:
        member = self.members[key]
        if _contiguous(tensor.shape, tensor.strides):
            return zip_stream(self.path, member, skip, tensor.shape, tensor.element, file_dtype)
        with zipfile.ZipFile(self.path) as archive:  # a strided view of it: inflate it whole
            data = np.frombuffer(archive.read(member)[skip:], file_dtype)
        byte_strides = tuple(s * file_dtype.itemsize for s in tensor.strides)
        view = np.lib.stride_tricks.as_strided(data, tensor.shape, byte_strides, writeable=False)
        return in_memory(view, tensor.element)


def _extent(tensor: TensorRef) -> int:
    """How many storage elements, from the tensor's first, its view spans."""
    if 0 in tensor.shape:
        return 0
    return 1 + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.strides, strict=True))


def _contiguous(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """True when a view with these strides is its elements in C order, one after another."""
    expected = 1
    for size, stride in zip(reversed(shape), reversed(strides), strict=True):
        if size == 0:
            return True
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def _read_zip(path: Path, what: str) -> tuple[Any, _Storages]:
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if _DATA_PKL.fullmatch(n)]
        if len(names) != 1:
            raise Unparseable(f"{what} is a zip without one <name>/data.pkl: not torch.save's")
        prefix = names[0][:-len("/data.pkl")]
        recorded = (archive.read(f"{prefix}/byteorder").strip()
                    if f"{prefix}/byteorder" in archive.namelist() else b"little")
        byte_order: Literal["<", ">"] = "<" if recorded == b"little" else ">"
        with archive.open(names[0]) as stream:
            tree = load(stream)
        storages = _Storages(path, byte_order)
        folder = f"{prefix}/data/"
        for info in archive.infolist():
            if info.filename.startswith(folder):
                key = info.filename[len(folder):]
                storages.offsets[key] = zip_member_offset(path, info)
                storages.lengths[key] = info.file_size
                storages.members[key] = info.filename
    return tree, storages


def _read_legacy(path: Path, what: str) -> tuple[Any, _Storages]:
    """torch.save(..., _use_new_zipfile_serialization=False): pickles, then raw storages."""
    with path.open("rb") as handle:
        if load(handle) != _LEGACY_MAGIC or load(handle) != _LEGACY_PROTOCOL:
            raise Unparseable(f"{what} is a pickle, but not one torch.save wrote")
        system = load(handle)
        little = not isinstance(system, dict) or system.get("little_endian", True)
        referenced: dict[str, StorageRef] = {}
        tree = load(handle)
        _collect_storages(tree, referenced)
        keys = load(handle)
        storages = _Storages(path, "<" if little else ">")
        position = handle.tell()
        for key in keys if isinstance(keys, list) else []:
            if key not in referenced:
                raise Unparseable(f"{what} saves storage {key}, which nothing uses")
            handle.seek(position)
            (count,) = struct.unpack("<q" if little else ">q", handle.read(8))
            storages.offsets[key] = position + 8
            storages.lengths[key] = count * referenced[key].element.dtype.itemsize
            position += 8 + storages.lengths[key]
    return tree, storages


def _collect_storages(tree: Any, found: dict[str, StorageRef]) -> None:
    """The storage of every tensor in the tree, by key (the legacy format needs their sizes)."""
    if isinstance(tree, Mapping):
        for value in tree.values():
            _collect_storages(value, found)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            _collect_storages(value, found)
    elif isinstance(tree, TensorRef):
        found.setdefault(tree.storage.key, tree.storage)
    elif isinstance(tree, StorageRef):
        found.setdefault(tree.key, tree)


def _flatten(tree: Any, key: str, storages: _Storages, leaves: dict[str, Leaf]) -> None:
    """Containers into dotted keys; an empty one is a leaf of its own ("{}" or "[]")."""
    if isinstance(tree, Mapping) and tree:
        for name, value in tree.items():
            _flatten(value, _join(key, name), storages, leaves)
    elif isinstance(tree, (list, tuple)) and tree:
        for index, value in enumerate(tree):
            _flatten(value, _join(key, index), storages, leaves)
    else:
        name = key or _ROOT
        while name in leaves:  # {"a.b": 1, "a": {"b": 2}}: both kept
            name += "'"
        leaves[name] = _leaf(tree, storages)


def _join(key: str, name: Any) -> str:
    text = name if isinstance(name, str) else str(name) if isinstance(name, int) else repr(name)
    return f"{key}.{text}" if key else text


def _leaf(value: Any, storages: _Storages) -> Leaf:
    if isinstance(value, TensorRef):
        return storages.source(value)
    if isinstance(value, StorageRef):  # a bare storage: all of it, as one flat tensor
        return storages.source(TensorRef(value, 0, (value.numel,), (1,), value.element))
    if isinstance(value, NumpyArray) and value.array is not None:
        return in_memory(value.array)
    if isinstance(value, np.generic):
        return in_memory(np.asarray(value))
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, (list, tuple)):
        return "[]"
    if isinstance(value, (TorchDtype, NumpyDtype)):
        return str(value) if isinstance(value, TorchDtype) else f"numpy.{value.dtype}"
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(map(repr, value))) + "}"
    if isinstance(value, bytearray):
        return bytes(value)
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return value
    raise Unparseable(f"holds a {type(value).__name__}, which is not compared")


# --- safetensors --------------------------------------------------------------------------------


def read_safetensors(path: Path, side: str) -> tuple[dict[str, Leaf], dict[str, Any]]:
    """Each tensor by name, read in place, and the header's `__metadata__`."""
    what = f"the {side}'s .safetensors"
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 2 <= length <= min(size - 8, _HEADER_LIMIT):
            raise Unparseable(f"{what} has no header (its first 8 bytes are not its length)")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Unparseable(f"{what} has a header that is not JSON ({clip(str(exc))})") \
                from None
    if not isinstance(header, dict):
        raise Unparseable(f"{what} has a header that is not a JSON object")
    metadata = header.pop("__metadata__", None)
    tensors: dict[str, Leaf] = {name: _safetensor(path, 8 + length, name, entry, what)
                                for name, entry in header.items()}
    return tensors, metadata if isinstance(metadata, dict) else {}


def _safetensor(path: Path, base: int, name: str, entry: Any, what: str) -> ArraySource:
    entry = entry if isinstance(entry, dict) else {}
    element = _SAFETENSORS_ELEMENTS.get(str(entry.get("dtype")))
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if element is None or not _naturals(shape) or not _naturals(offsets) or len(offsets) != 2:
        raise Unparseable(f"{what}: tensor {name!r} has an entry safetensors does not define")
    begin, end = offsets
    if end - begin != math.prod(shape) * element.dtype.itemsize:
        raise Unparseable(f"{what}: tensor {name!r} spans {end - begin} bytes, not its shape's")
    return file_region(path, base + begin, tuple(shape), element,
                       element.dtype.newbyteorder("<"))


def _naturals(values: Any) -> bool:
    return isinstance(values, list) and all(type(v) is int and v >= 0 for v in values)
