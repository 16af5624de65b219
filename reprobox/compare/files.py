"""Compare output files: which comparer reads each, and the byte-level fallbacks."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np

from reprobox.compare import tolerances as tolerance_rules
from reprobox.compare.arrays import compare_npy, compare_npz
from reprobox.compare.curves import curves_for
from reprobox.compare.records import compare_json, compare_jsonl, compare_yaml
from reprobox.compare.result import Comparison, CurveComparison, OutputComparison, combine
from reprobox.compare.tally import Unparseable, byte_count
from reprobox.compare.tensors import compare_checkpoint, compare_safetensors
from reprobox.compare.text import compare_csv, compare_text
from reprobox.errors import BundleError, ManifestError
from reprobox.fileio import sha256_file
from reprobox.manifest import Output

_CHUNK_BYTES = 1 << 20
_TEXT_SUFFIXES = frozenset({
    ".txt", ".log", ".md", ".rst", ".out", ".err", ".yaml", ".yml", ".toml", ".ini", ".cfg",
    ".jsonl", ".ndjson", ".html", ".xml", ".tex", ".py", ".sh",
})
_KIND_BY_SUFFIX = {".npy": "npy", ".npz": "npz", ".json": "json", ".csv": "csv", ".tsv": "csv"}
_KIND_BY_SUFFIX |= {".yaml": "yaml", ".yml": "yaml", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_KIND_BY_SUFFIX |= {".pt": "pt", ".pth": "pt", ".ckpt": "pt", ".safetensors": "safetensors"}


def compare(expected_dir: Path, actual_dir: Path, outputs: Sequence[Output],
            notes: Sequence[str] = (),
            tolerances: Sequence[tolerance_rules.Tolerance] = ()) -> Comparison:
    """Compare every recorded output, then list files in `actual_dir` nobody recorded.
    `tolerances` (globs) replace the recorded tolerances of the outputs they match."""
    outputs = tolerance_rules.apply(outputs, tolerances)
    results = [compare_file(expected_dir / _relative(o.path), actual_dir / _relative(o.path), o)
               for o in outputs]
    curves = _curves(expected_dir, actual_dir, outputs, results)
    declared = {_relative(o.path).as_posix() for o in outputs}
    results += [_extra(actual_dir, name) for name in _files_under(actual_dir)
                if name not in declared]
    return replace(combine(results, notes), curves=curves)


def _curves(expected_dir: Path, actual_dir: Path, outputs: Sequence[Output],
            results: Sequence[OutputComparison]) -> tuple[CurveComparison, ...]:
    return tuple(curve for output, result in zip(outputs, results, strict=True)
                 for curve in curves_for(expected_dir / _relative(output.path),
                                         actual_dir / _relative(output.path), output,
                                         result.verdict))


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
        # Against the stored copy, a byte-by-byte read that stops at the first difference:
        # cheaper than hashing both when they differ. SHA-256 is for the record (fixity).
        if expected.is_file() and _first_byte_difference(expected, actual) is None:
            return OutputComparison(output.path, "identical", kind,
                                    "same bytes as the original's stored copy")
        if not expected.is_file():
            if sha256_file(actual) == output.sha256:
                return OutputComparison(output.path, "identical", kind,
                                        "sha256 matches the record")
            return _unstored(output, kind)
    except OSError as exc:
        raise BundleError(f"{exc.filename}: cannot read output ({exc.strerror})",
                          hint="check that the file exists and is readable") from None
    return _compare_content(expected, actual, output, kind)


# --- dispatch and fallbacks -------------------------------------------------------------------


def _compare_content(expected: Path, actual: Path, output: Output,
                     kind: str) -> OutputComparison:
    comparer = _COMPARERS.get(kind)
    suffix_claims_format = comparer is not None
    if comparer is None and _looks_like_text(expected, actual):
        comparer = compare_text
    if comparer is None:
        return _bytes_result(expected, actual, output)
    try:
        return comparer(expected, actual, output)
    except Unparseable as exc:
        note = f"{exc}; compared as bytes: " if suffix_claims_format else ""
        return _bytes_result(expected, actual, output, note)
    except TypeError as exc:  # a dtype numpy cannot do arithmetic or views on (float128 bits)
        return _bytes_result(expected, actual, output,
                             f"values of this type cannot be compared ({exc}); compared as bytes: ")


def _bytes_result(expected: Path, actual: Path, output: Output,
                  note: str = "") -> OutputComparison:
    offset = _first_byte_difference(expected, actual)
    sizes = (f"{byte_count(expected.stat().st_size)} in the original, "
             f"{byte_count(actual.stat().st_size)} in the replay")
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
                            f"written by the replay but not a recorded output ({byte_count(size)})")


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


_COMPARERS: dict[str, Callable[[Path, Path, Output], OutputComparison]] = {
    "npy": compare_npy,
    "npz": compare_npz,
    "pt": compare_checkpoint,
    "safetensors": compare_safetensors,
    "json": compare_json,
    "yaml": compare_yaml,
    "jsonl": compare_jsonl,
    "csv": compare_csv,
    "text": compare_text,
}
