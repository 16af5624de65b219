"""Write files in torch.save's two formats without torch, for the tests and the benchmark.

The real fixtures in tests/data/checkpoints/ come from torch itself; these hand-made ones reach
what a small real model does not: strided views, compressed members, big-endian storages,
float8, shared storages, hostile pickles. They follow torch/serialization.py: protocol 2, a
persistent id ('storage', <type>, key, location, numel) per storage, tensors rebuilt by
torch._utils._rebuild_tensor_v2 (or _v3 with a dtype for types without a storage class).
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@dataclass(frozen=True)
class Global:
    """A global written into the pickle by name, never imported (torch is not installed)."""

    module: str
    name: str

    def __call__(self, *args: Any) -> Any:  # pickle wants a callable to reduce with
        raise NotImplementedError(f"{self.module}.{self.name} is only written, never called")


@dataclass(eq=False)
class Storage:
    """A storage: flat elements (bfloat16 and float8 as their bits) and torch's type name."""

    data: np.ndarray  # type: ignore[type-arg]
    type_name: str  # "FloatStorage", or "UntypedStorage" for a tensor with a dtype
    module: str = "torch"  # torch names an untyped storage `torch.storage.UntypedStorage`

    @property
    def numel(self) -> int:
        return self.data.nbytes if self.type_name == "UntypedStorage" else self.data.size


@dataclass(eq=False)
class Tensor:
    storage: Storage
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int = 0
    dtype: str | None = None  # set for _rebuild_tensor_v3
    parameter: bool = False  # wrapped as torch.nn.Parameter


_STORAGE_NAMES = {"float64": "DoubleStorage", "float32": "FloatStorage", "float16": "HalfStorage",
                  "int64": "LongStorage", "int32": "IntStorage", "int16": "ShortStorage",
                  "int8": "CharStorage", "uint8": "ByteStorage", "bool": "BoolStorage"}


def tensor(array: np.ndarray, type_name: str | None = None) -> Tensor:  # type: ignore[type-arg]
    """A contiguous tensor holding `array` (its storage named after its dtype unless given)."""
    array = np.array(array, order="C")  # (ascontiguousarray makes a 0-d array 1-d)
    strides = tuple(s // array.itemsize for s in array.strides)
    name = type_name or _STORAGE_NAMES[str(array.dtype)]
    return Tensor(Storage(array.reshape(-1), name), array.shape, strides)


def bfloat16(values: np.ndarray) -> Tensor:  # type: ignore[type-arg]
    """A bfloat16 tensor of float32 values that bfloat16 holds exactly."""
    bits = (np.asarray(values, np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return tensor(bits, "BFloat16Storage")


def with_dtype(bits: np.ndarray, dtype: str) -> Tensor:  # type: ignore[type-arg]
    """A tensor of a dtype without a storage class (float8...): an untyped storage + dtype."""
    bits = np.array(bits, order="C")
    raw = Storage(bits.reshape(-1).view(np.uint8), "UntypedStorage", "torch.storage")
    return Tensor(raw, bits.shape, tuple(s // bits.itemsize for s in bits.strides), dtype=dtype)


class _TorchPickler(pickle._Pickler):  # the Python pickler: its dispatch table can be extended
    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def __init__(self, file: io.BytesIO, legacy: bool) -> None:
        super().__init__(file, protocol=2)
        self.legacy = legacy
        self.storages: dict[int, tuple[str, Storage]] = {}

    def save_named_global(self, obj: Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())  # type: ignore[attr-defined]
        self.memoize(obj)  # type: ignore[attr-defined]

    dispatch[Global] = save_named_global

    def persistent_id(self, obj: Any) -> Any:
        if not isinstance(obj, Storage):
            return None
        key, _ = self.storages.setdefault(id(obj), (str(len(self.storages)), obj))
        pid = ("storage", Global(obj.module, obj.type_name), key, "cpu", obj.numel)
        return (*pid, None) if self.legacy else pid

    def reducer_override(self, obj: Any) -> Any:
        if not isinstance(obj, Tensor):
            return NotImplemented
        args: tuple[Any, ...] = (obj.storage, obj.offset, obj.shape, obj.strides, False,
                                 OrderedDict())
        rebuild = Global("torch._utils", "_rebuild_tensor_v2")
        if obj.dtype is not None:
            args = (*args, Global("torch", obj.dtype))
            rebuild = Global("torch._utils", "_rebuild_tensor_v3")
        if obj.parameter:
            inner = Tensor(obj.storage, obj.shape, obj.strides, obj.offset, obj.dtype)
            return Global("torch._utils", "_rebuild_parameter"), (inner, True, OrderedDict())
        return rebuild, args


def pickled(tree: Any, legacy: bool = False) -> tuple[bytes, dict[str, Storage]]:
    """The protocol-2 pickle of `tree` and its storages by key."""
    buffer = io.BytesIO()
    pickler = _TorchPickler(buffer, legacy)
    pickler.dump(tree)
    return buffer.getvalue(), dict(pickler.storages.values())


def save_zip(path: Path, tree: Any, prefix: str = "archive", compress: bool = False,
             big_endian: bool = False,
             pickle_bytes: Callable[[bytes], bytes] = lambda data: data) -> Path:
    """torch.save's zip format; `pickle_bytes` may rewrite data.pkl (for hostile files)."""
    data, storages = pickled(tree)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{prefix}/data.pkl", pickle_bytes(data))
        archive.writestr(f"{prefix}/byteorder", "big" if big_endian else "little")
        for key, storage in storages.items():
            raw = storage.data.astype(storage.data.dtype.newbyteorder(">" if big_endian else "<"))
            archive.writestr(f"{prefix}/data/{key}", raw.tobytes(), compress_type=method)
        archive.writestr(f"{prefix}/version", "3\n")
    return path


def save_legacy(path: Path, tree: Any) -> Path:
    """The pre-1.6 format: magic, protocol, system info, the tree, the keys, then storages."""
    data, storages = pickled(tree, legacy=True)
    header = [LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                                   "type_sizes": {"short": 2, "int": 4, "long": 8}}]
    with path.open("wb") as handle:
        for value in header:
            handle.write(pickle.dumps(value, protocol=2))
        handle.write(data)
        handle.write(pickle.dumps(sorted(storages), protocol=2))
        for key in sorted(storages):
            storage = storages[key]
            handle.write(struct.pack("<q", storage.data.size))
            handle.write(storage.data.astype(storage.data.dtype.newbyteorder("<")).tobytes())
    return path


def rewrite_zip(source: Path, target: Path, prefix: str,
                replace: dict[str, bytes] | None = None) -> Path:
    """A copy of a torch zip under another folder name (as torch.save names it after the
    file), with some members' bytes replaced: same tensors, other bytes."""
    replace = replace or {}
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            _, rest = info.filename.split("/", 1)
            new.writestr(f"{prefix}/{rest}", replace.get(rest, old.read(info)))
    return target
