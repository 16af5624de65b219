"""Structured records: JSON, YAML and JSON-lines, compared value by value along their paths.

Paths read `$.metrics.loss`, `$.history[2]`, and `line 12: $.loss` in a JSON-lines log. Fields
that record when, how long, how fast or where (`time`, `_runtime`, `samples_per_second`,
`hostname`) and strings that differ only in masked spans (see `masks`) compare equal; the
detail line counts them.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

import yaml

from reprobox.compare.masks import mask_both, volatile_kind, with_masked
from reprobox.compare.result import OutputComparison
from reprobox.compare.tally import Tally, Unparseable, clip
from reprobox.compare.text import open_text, tally_line
from reprobox.manifest import Output


class _YamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader (libyaml's when present), reading plain `1e-5` as the float it is:
    YAML 1.1 wants a dot in a float, so PyYAML alone reads it as a string."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))
_YAML_VALUES_PER_BYTE = 8  # far above what plain YAML holds; aliases can expand beyond it


@dataclass(slots=True)
class _Walk:
    """One output's walk: the tally, what was masked, and what the format needs."""

    tally: Tally
    masked: Counter[str] = field(default_factory=Counter)
    budget: int | None = None  # values left to visit: YAML aliases can expand exponentially

    def visit(self) -> None:
        if self.budget is not None:
            self.budget -= 1
            if self.budget < 0:
                raise Unparseable("the YAML expands to too many values to walk "
                                  "(anchors and aliases repeated many times?)")


def compare_json(expected: Path, actual: Path, output: Output) -> OutputComparison:
    left, right = load_json(expected, "original"), load_json(actual, "replay")
    walk = _Walk(Tally.for_output(output, "values"))
    _walk_document(left, right, "$", walk, "JSON")
    return with_masked(walk.tally.result(output.path, "json"), walk.masked)


def compare_yaml(expected: Path, actual: Path, output: Output) -> OutputComparison:
    left, right = load_yaml(expected, "original"), load_yaml(actual, "replay")
    budget = _YAML_VALUES_PER_BYTE * (expected.stat().st_size + actual.stat().st_size) + 1000
    walk = _Walk(Tally.for_output(output, "values"), budget=budget)
    if len(left) == 1 and len(right) == 1:
        _walk_document(left[0], right[0], "$", walk, "YAML")
    else:
        for number, (doc, other) in enumerate(zip_longest(left, right), start=1):
            _walk_document(doc, other, f"document {number}: $", walk, "YAML")
    return with_masked(walk.tally.result(output.path, "yaml"), walk.masked)


def compare_jsonl(expected: Path, actual: Path, output: Output) -> OutputComparison:
    """Record by record; a line that is not JSON (a log line, a cut last line) as text."""
    walk = _Walk(Tally.for_output(output, "values"))
    records = 0
    try:
        with open_text(expected, None) as left, open_text(actual, None) as right:
            for number, (line, other) in enumerate(zip_longest(left, right), start=1):
                records += _tally_record(line, other, f"line {number}", walk)
    except UnicodeDecodeError:
        raise Unparseable("not valid UTF-8 text") from None
    return with_masked(walk.tally.result(output.path, "jsonl", f"{records} records: "),
                       walk.masked)


def _tally_record(line: str | None, other: str | None, where: str, walk: _Walk) -> int:
    """Compare one line of each side; returns 1 when it held a record, else 0."""
    if not (line or "").strip() and not (other or "").strip():
        return 0
    left, right = _json_line(line), _json_line(other)
    if left is _NOT_JSON or right is _NOT_JSON:
        tally_line(line, other, where, walk.tally, walk.masked)
    else:
        _walk_document(left, right, f"{where}: $", walk, "JSON")
    return 1


_NOT_JSON = object()


def _json_line(line: str | None) -> Any:
    if line is None or not line.strip():
        return _NOT_JSON
    try:
        return json.loads(line, parse_float=_json_float)
    except (ValueError, RecursionError):
        return _NOT_JSON


# --- loading ----------------------------------------------------------------------------------


def load_json(path: Path, side: str) -> Any:
    """The JSON document in `path`; numbers past the float range stay their literal text."""
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle, parse_float=_json_float)
    except json.JSONDecodeError as exc:
        raise Unparseable(f"the {side}'s copy is not valid JSON ({exc.msg} at line "
                          f"{exc.lineno})") from None
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise Unparseable(f"the {side}'s copy is not readable JSON ({clip(str(exc))})") from None


def load_yaml(path: Path, side: str) -> list[Any]:
    """Every document in `path`, read with the safe loader (plain data, no tags that run code)."""
    try:
        with path.open(encoding="utf-8") as handle:
            return list(yaml.load_all(handle, Loader=_YamlLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or type(exc).__name__
        at = f" at line {mark.line + 1}" if mark else ""
        raise Unparseable(f"the {side}'s copy is not valid YAML ({problem}{at})") from None
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise Unparseable(f"the {side}'s copy is not readable YAML ({clip(str(exc))})") from None


def read_jsonl(path: Path) -> Iterator[Any]:
    """The records of a JSON-lines file, skipping lines that are not JSON."""
    with open_text(path, None) as handle:
        for line in handle:
            record = _json_line(line)
            if record is not _NOT_JSON:
                yield record


class _OverflowedLiteral(str):
    """A JSON number such as 1e400 that a float can only hold as inf: compared by its text."""


def _json_float(text: str) -> float | _OverflowedLiteral:
    value = float(text)
    return _OverflowedLiteral(text) if math.isinf(value) else value


# --- the walk ---------------------------------------------------------------------------------


def _walk_document(expected: Any, actual: Any, where: str, walk: _Walk, name: str) -> None:
    try:
        _walk(expected, actual, where, walk)
    except RecursionError:
        raise Unparseable(f"the {name} is nested too deeply to walk") from None


def _walk(expected: Any, actual: Any, where: str, walk: _Walk, key: Any = None) -> None:
    walk.visit()
    if isinstance(expected, dict) and isinstance(actual, dict):
        _walk_object(expected, actual, where, walk)
    elif isinstance(expected, list) and isinstance(actual, list):
        for i, (left, right) in enumerate(zip(expected, actual, strict=False)):
            _walk(left, right, f"{where}[{i}]", walk)
        if len(expected) != len(actual):
            walk.tally.add_exact(False, where, f"{len(expected)} items vs {len(actual)}")
    elif _same(expected, actual):
        walk.tally.add(1)
    elif (kind := _volatile(expected, actual, key)) is not None:
        walk.masked[kind] += 1
        walk.tally.add(1)
    elif _is_number(expected) and _is_number(actual):
        walk.tally.add_numbers([(expected, actual)], where, clip(f"{expected!r} vs {actual!r}"))
    elif isinstance(expected, str) and isinstance(actual, str):
        _walk_strings(expected, actual, where, walk)
    else:
        walk.tally.add_exact(False, where, f"{_short(expected)} vs {_short(actual)}")


def _walk_object(expected: dict[Any, Any], actual: dict[Any, Any], where: str,
                 walk: _Walk) -> None:
    for key, value in expected.items():
        if key in actual:
            _walk(value, actual[key], _path(where, key), walk, key)
        else:
            walk.tally.add_exact(False, _path(where, key), "missing in the replay")
    for key in actual.keys() - expected.keys():
        walk.tally.add_exact(False, _path(where, key), "only in the replay")


def _walk_strings(expected: str, actual: str, where: str, walk: _Walk) -> None:
    left, right, counts = mask_both(expected, actual)
    if left == right:
        walk.masked.update(counts)
    walk.tally.add_exact(left == right, where, f"{_short(expected)} vs {_short(actual)}")


def _same(expected: Any, actual: Any) -> bool:
    if _is_number(expected) and _is_number(actual):
        return bool(expected == actual) or _both_nan(expected, actual)
    return bool(expected == actual) and type(expected) is type(actual)


def _volatile(expected: Any, actual: Any, key: Any) -> str | None:
    """The mask kind when two unequal scalars are a field that always changes, else None."""
    if isinstance(expected, (dict, list)) or isinstance(actual, (dict, list)):
        return None
    if isinstance(expected, datetime.date) and isinstance(actual, datetime.date):
        return "timestamp"  # YAML reads `2026-11-27 22:01:57` as a datetime
    return volatile_kind(key) if isinstance(key, str) else None


def _both_nan(expected: Any, actual: Any) -> bool:
    return (isinstance(expected, float) and isinstance(actual, float)
            and math.isnan(expected) and math.isnan(actual))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _path(where: str, key: Any) -> str:
    if isinstance(key, str) and key.isidentifier():
        return f"{where}.{key}"
    return f"{where}[{_short(key)}]"


def _short(value: Any) -> str:
    if isinstance(value, _OverflowedLiteral):
        return str(value)
    if isinstance(value, (dict, list)) and not _small(value):
        # rendering it whole to show 60 characters could take long (YAML aliases: forever)
        return f"a mapping of {len(value)} keys" if isinstance(value, dict) else \
            f"a list of {len(value)} items"
    try:
        return clip(json.dumps(value, allow_nan=True, sort_keys=True, default=str))
    except (TypeError, ValueError):  # YAML mappings may mix key types, which cannot be sorted
        return clip(repr(value))


def _small(value: Any, room: int = 32) -> bool:
    """True when `value` holds at most `room` values, counted without walking all of it."""
    pending = [value]
    while pending:
        room -= 1
        if room < 0:
            return False
        item = pending.pop()
        if isinstance(item, dict):
            pending += item.values()
        elif isinstance(item, list):
            pending += item
    return True
