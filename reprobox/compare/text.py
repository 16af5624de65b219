"""CSV/TSV tables cell by cell, and text line by line (numbers in lines as numbers).

What changes on every run (timestamps, durations, PIDs, paths, hostnames, addresses; see
`masks`) is masked before two differing lines or cells are compared, and so is a column whose
header names such a field (`time`, `elapsed`, `samples_per_second`); the detail counts them.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path
from typing import TextIO

from reprobox.compare.masks import mask_both, volatile_kind, with_masked
from reprobox.compare.result import OutputComparison
from reprobox.compare.tally import Number, Tally, Unparseable, clip
from reprobox.manifest import Output

_NUMBER_IN_TEXT = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
_INTEGER = re.compile(r"\s*[-+]?\d+\s*")
_NUMBER_CELL = re.compile(
    r"\s*[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf|infinity)\s*", re.IGNORECASE)


def compare_csv(expected: Path, actual: Path, output: Output) -> OutputComparison:
    delimiter = "\t" if expected.suffix.lower() == ".tsv" else ","
    tally, masked = Tally.for_output(output, "cells"), Counter[str]()
    try:
        with open_text(expected, "") as left, open_text(actual, "") as right:
            _walk_csv(csv.reader(left, delimiter=delimiter), csv.reader(right, delimiter=delimiter),
                      tally, masked)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise Unparseable(f"not readable as CSV ({clip(str(exc))})") from None
    return with_masked(tally.result(output.path, "csv"), masked)


def _walk_csv(expected: Iterator[list[str]], actual: Iterator[list[str]], tally: Tally,
              masked: Counter[str]) -> None:
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
            name = header[column] if column < len(header) else None
            where = f"row {number}, col {json.dumps(name) if name else column + 1}"
            volatile = volatile_kind(name) if name and number > 1 else None
            _tally_cell(cell, other, where, tally, masked, volatile)


def _tally_cell(expected: str, actual: str, where: str, tally: Tally, masked: Counter[str],
                volatile: str | None) -> None:
    if expected == actual:
        tally.add(1)
    elif volatile:
        masked[volatile] += 1
        tally.add(1)
    elif pair := number_cells(expected, actual):
        tally.add_numbers([pair], where, f"{clip(expected)} vs {clip(actual)}")
    else:
        left, right, counts = mask_both(expected, actual)
        if left == right:
            masked.update(counts)
        tally.add_exact(left == right, where, f"{clip(expected)!r} vs {clip(actual)!r}")


def number_cells(expected: str, actual: str) -> tuple[Number, Number] | None:
    """Two cells (or strings) that both hold just a number, as numbers; else None."""
    if _NUMBER_CELL.fullmatch(expected) and _NUMBER_CELL.fullmatch(actual):
        return _number_pair(expected, actual)
    return None


def compare_text(expected: Path, actual: Path, output: Output) -> OutputComparison:
    tally, masked = Tally.for_output(output, "lines"), Counter[str]()
    try:
        with open_text(expected, None) as left, open_text(actual, None) as right:
            for number, (line, other) in enumerate(zip_longest(left, right), start=1):
                tally_line(line, other, f"line {number}", tally, masked)
    except UnicodeDecodeError:
        raise Unparseable("not valid UTF-8 text") from None
    return with_masked(tally.result(output.path, "text"), masked)


def tally_line(expected: str | None, actual: str | None, where: str, tally: Tally,
               masked: Counter[str]) -> None:
    """Add one pair of lines to `tally` (None: the file has no such line); count what was
    masked in `masked` when the masks made them equal or left only numbers to compare."""
    left, right = (expected or "").rstrip(), (actual or "").rstrip()
    if left == right:
        tally.add(1)  # also a blank line at the end of one file only
        return
    if expected is None or actual is None:
        side = "the replay" if actual is None else "the original"
        tally.add_exact(False, where, f"line missing in {side}")
        return
    reason = f"{clip(left)!r} vs {clip(right)!r}"
    left, right, counts = mask_both(left, right)
    if left == right:
        masked.update(counts)
        tally.add(1)
        return
    pairs = _numbers_in_lines(left, right)
    if pairs is None:
        tally.add_exact(False, where, reason)
    else:
        masked.update(counts)
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


def open_text(path: Path, newline: str | None) -> TextIO:
    return path.open(encoding="utf-8", newline=newline)
