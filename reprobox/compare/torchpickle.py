"""Unpickle a PyTorch checkpoint's object tree as torch.load(weights_only=True) would: data only.

Only the globals a state dict needs are ever looked up, and each resolves to a function of ours
that builds plain records: `torch._utils._rebuild_tensor_v2` gives a `TensorRef` (storage, offset,
shape, strides), never a tensor; the storage types (`torch.FloatStorage`, `torch.BFloat16Storage`
...) give element types; `collections.OrderedDict`, `torch.Size`, sets, bytes, torch dtypes and
numpy scalars and arrays of plain dtypes give plain values. Any other global (`os.system`,
`builtins.eval`, a model class, an `argparse.Namespace`) is refused before anything runs, and
nothing in the file is ever called: torch itself is not needed, nor imported.
"""

from __future__ import annotations

import io
import math
import pickle
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from reprobox.compare.streams import (
    BFLOAT16,
    FLOAT8_E4M3FN,
    FLOAT8_E5M2,
    ElementType,
    bits_only,
    element_of,
)


class Refused(pickle.UnpicklingError):
    """The pickle asks for something a weights-only load does not allow; the message says what."""


@dataclass(frozen=True, slots=True)
class StorageRef:
    """A storage saved beside the pickle: its key (its file name) and what it holds."""

    key: str
    element: ElementType  # uint8 for an untyped storage
    numel: int  # in elements of `element`
    offset: int = 0  # elements into the saved storage (a view, in the legacy format only)


@dataclass(frozen=True, slots=True)
class TensorRef:
    """A tensor: a strided view of a storage, its elements of type `element`."""

    storage: StorageRef
    offset: int  # elements into the storage
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements
    element: ElementType


@dataclass(frozen=True, slots=True)
class TorchDtype:
    """A torch dtype saved as a value (`torch.float32`): compared by its name."""

    name: str

    def __str__(self) -> str:
        return f"torch.{self.name}"


def load(stream: IO[bytes]) -> Any:
    """Unpickle the next object of `stream`, storages as `StorageRef`s, tensors as `TensorRef`s.

    Raises Refused for a global outside the allowlist, pickle.UnpicklingError (or another
    error of malformed data) when the pickle is damaged.
    """
    return _Unpickler(stream).load()


def loads(data: bytes) -> Any:
    return load(io.BytesIO(data))


_STORAGE_ELEMENTS: dict[str, ElementType] = {
    "DoubleStorage": element_of(np.dtype(np.float64)),
    "FloatStorage": element_of(np.dtype(np.float32)),
    "HalfStorage": element_of(np.dtype(np.float16)),
    "BFloat16Storage": BFLOAT16,
    "LongStorage": element_of(np.dtype(np.int64)),
    "IntStorage": element_of(np.dtype(np.int32)),
    "ShortStorage": element_of(np.dtype(np.int16)),
    "CharStorage": element_of(np.dtype(np.int8)),
    "ByteStorage": element_of(np.dtype(np.uint8)),
    "BoolStorage": element_of(np.dtype(np.bool_)),
    "ComplexFloatStorage": element_of(np.dtype(np.complex64)),
    "ComplexDoubleStorage": element_of(np.dtype(np.complex128)),
    "UntypedStorage": element_of(np.dtype(np.uint8)),
}

_DTYPE_ELEMENTS: dict[str, ElementType] = {
    **{name: element_of(np.dtype(name)) for name in (
        "float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "uint16",
        "uint32", "uint64", "complex64", "complex128")},
    "bool": element_of(np.dtype(np.bool_)),
    "bfloat16": BFLOAT16,
    "float8_e4m3fn": FLOAT8_E4M3FN,
    "float8_e5m2": FLOAT8_E5M2,
    "float8_e4m3fnuz": bits_only("float8_e4m3fnuz", "u1"),
    "float8_e5m2fnuz": bits_only("float8_e5m2fnuz", "u1"),
    "float8_e8m0fnu": bits_only("float8_e8m0fnu", "u1"),
    "complex32": bits_only("complex32", "u4"),
}


@dataclass(frozen=True, slots=True)
class _StorageType:
    """What `torch.FloatStorage` stands for in a pickle: the element type of a storage."""

    element: ElementType


@dataclass(frozen=True, slots=True)
class _Marker:
    """A class named in the pickle only to be passed along (torch.Tensor, numpy.ndarray)."""

    name: str


_TENSOR_TYPES = (_Marker("torch.Tensor"), _Marker("torch.nn.parameter.Parameter"))
_NDARRAY = _Marker("numpy.ndarray")


# --- what the allowed globals build -------------------------------------------------------------


def _rebuild_tensor(storage: Any, offset: Any, shape: Any, strides: Any, *_: Any) -> TensorRef:
    """torch._utils._rebuild_tensor and _v2: (storage, offset, size, stride, ...)."""
    return _tensor(storage, offset, shape, strides, None)


def _rebuild_tensor_v3(storage: Any, offset: Any, shape: Any, strides: Any, _grad: Any,
                       _hooks: Any, dtype: Any, *_: Any) -> TensorRef:
    """For dtypes without a storage class (float8, uint16...): an untyped storage and a dtype."""
    if not isinstance(dtype, TorchDtype):
        raise pickle.UnpicklingError("_rebuild_tensor_v3 without a dtype")
    return _tensor(storage, offset, shape, strides, _DTYPE_ELEMENTS[dtype.name])


def _tensor(storage: Any, offset: Any, shape: Any, strides: Any,
            element: ElementType | None) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise pickle.UnpicklingError("a tensor whose storage is not a saved storage")
    dims = _integers(shape) + _integers(strides) + _integers((offset,))
    if len(shape) != len(strides) or any(d < 0 for d in dims):
        raise pickle.UnpicklingError(f"a tensor with shape {shape} and strides {strides}")
    if element is None:
        return TensorRef(storage, offset, tuple(shape), tuple(strides), storage.element)
    if storage.element.dtype.itemsize != 1:
        raise pickle.UnpicklingError("_rebuild_tensor_v3 on a typed storage")
    return TensorRef(StorageRef(storage.key, element, storage.numel // element.dtype.itemsize,
                                storage.offset), offset, tuple(shape), tuple(strides), element)


def _integers(values: Any) -> list[int]:
    if not isinstance(values, (tuple, list)) or not all(type(v) is int for v in values):
        raise pickle.UnpicklingError(f"expected integers, found {values!r:.60}")
    return list(values)


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    """nn.Parameter(data): the tensor is what matters."""
    return data


def _rebuild_from_type_v2(function: Any, new_type: Any, args: Any, _state: Any) -> Any:
    """A tensor subclass (Parameter, or a tensor with attributes): rebuilt as its tensor."""
    if function not in _TENSOR_BUILDERS or new_type not in _TENSOR_TYPES:
        raise Refused(f"a tensor rebuilt by {function!r:.40} as {new_type!r:.40}")
    return function(*args)


def _size(values: Any = ()) -> tuple[int, ...]:
    return tuple(_integers(tuple(values)))


def _device(kind: Any, index: Any = None) -> str:
    return str(kind) if index is None else f"{kind}:{index}"


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """_codecs.encode, which protocol 2 uses to carry bytes: only on text."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise pickle.UnpicklingError("_codecs.encode on something other than text")
    return text.encode(encoding)


def _bytearray(data: Any = b"", *args: Any) -> bytearray:
    if isinstance(data, int):  # bytearray(10**12) would allocate it
        raise pickle.UnpicklingError("bytearray of a length")
    return bytearray(data, *args)


_TENSOR_BUILDERS: tuple[Callable[..., Any], ...] = (
    _rebuild_tensor, _rebuild_tensor_v3, _rebuild_parameter)


# --- numpy values: built from their bytes, never through numpy's own unpickling -----------------


class NumpyDtype:
    """numpy.dtype(code), as pickled: a plain numeric, boolean or string dtype only."""

    def __init__(self, code: Any, _align: Any = False, _copy: Any = False) -> None:
        dtype = np.dtype(code) if isinstance(code, str) else None
        if dtype is None or dtype.kind not in "biufcSU" or dtype.names is not None:
            raise Refused(f"numpy dtype {code!r:.40}")
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        """(version, byte order, subarray, names, fields, ...): only the byte order is read."""
        if not isinstance(state, tuple) or len(state) < 5 or any(state[2:5]):
            raise Refused("a numpy dtype with fields or subarrays")
        if state[1] in ("<", ">", "|", "="):
            self.dtype = self.dtype.newbyteorder(state[1])


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, NumpyDtype) or not isinstance(data, bytes) or \
            len(data) != dtype.dtype.itemsize:
        raise Refused("a numpy scalar other than a number or a string")
    return np.frombuffer(data, dtype.dtype)[0]


class NumpyArray:
    """numpy.core.multiarray._reconstruct(ndarray, ...) then its state: an array of plain
    dtype from its raw bytes. `array` is None until the state is set."""

    def __init__(self, subtype: Any, *_: Any) -> None:
        if subtype != _NDARRAY:
            raise Refused(f"a numpy array of type {subtype!r:.40}")
        self.array: np.ndarray[Any, Any] | None = None

    def __setstate__(self, state: Any) -> None:
        """(version, shape, dtype, Fortran order, raw bytes)."""
        if not isinstance(state, tuple) or len(state) != 5 or \
                not isinstance(state[2], NumpyDtype) or not isinstance(state[4], bytes):
            raise Refused("a numpy array other than one of numbers or strings")
        shape, dtype, data = tuple(_integers(state[1])), state[2].dtype, state[4]
        if len(data) != math.prod(shape) * dtype.itemsize:
            raise pickle.UnpicklingError("a numpy array whose bytes do not match its shape")
        self.array = np.frombuffer(data, dtype).reshape(shape, order="F" if state[3] else "C")


# --- the allowlist and the unpickler ------------------------------------------------------------


def _allowed() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("collections", "Counter"): Counter,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("builtins", "bytearray"): _bytearray,
        ("_codecs", "encode"): _encode,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._utils", "_rebuild_device_tensor_from_cpu_tensor"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        ("torch", "Tensor"): _TENSOR_TYPES[0],
        ("torch.nn.parameter", "Parameter"): _TENSOR_TYPES[1],
        ("torch", "Size"): _size,
        ("torch", "device"): _device,
        ("numpy", "dtype"): NumpyDtype,
        ("numpy", "ndarray"): _NDARRAY,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[module, "scalar"] = _numpy_scalar
        table[module, "_reconstruct"] = NumpyArray
    for module in ("torch", "torch.cuda"):
        table.update({(module, name): _StorageType(element)
                      for name, element in _STORAGE_ELEMENTS.items()})
    # float8 and uint16/32/64 tensors are saved with their storage named by its full path
    table["torch.storage", "UntypedStorage"] = table["torch", "UntypedStorage"]
    table.update({("torch", name): TorchDtype(name) for name in _DTYPE_ELEMENTS})
    return table


_ALLOWED = _allowed()
_PYTHON2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _Unpickler(pickle.Unpickler):
    """pickle's own machine with every global looked up in `_ALLOWED` (as the Python docs'
    "Restricting Globals" does): nothing outside it can be reached, so nothing else can run."""

    def find_class(self, module: str, name: str) -> Any:
        module = _PYTHON2_MODULES.get(module, module)
        try:
            return _ALLOWED[module, name]
        except KeyError:
            raise Refused(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> StorageRef:
        """('storage', storage type, key, location, numel[, legacy view])."""
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage" or \
                not isinstance(pid[1], _StorageType) or type(pid[4]) is not int:
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.60}")
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return StorageRef(str(pid[2]), pid[1].element, pid[4])
        if not isinstance(view, tuple) or len(view) != 3:  # (view key, offset, size)
            raise pickle.UnpicklingError(f"unknown storage view {view!r:.60}")
        offset, _size = _integers(view[1:])
        return StorageRef(str(pid[2]), pid[1].element, pid[4], offset)
