"""JSON documents, compared value by value along their paths."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from reprobox.compare.result import OutputComparison
from reprobox.compare.tally import Tally, Unparseable, clip
from reprobox.manifest import Output


def compare_json(expected: Path, actual: Path, output: Output) -> OutputComparison:
    left, right = _load_json(expected, "original"), _load_json(actual, "replay")
    tally = Tally(output.rtol, output.atol, "values")
    try:
        _walk_json(left, right, "$", tally)
    except RecursionError:
        raise Unparseable("the JSON is nested too deeply to walk") from None
    return tally.result(output.path, "json")


def _load_json(path: Path, side: str) -> Any:
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle, parse_float=_json_float)
    except json.JSONDecodeError as exc:
        raise Unparseable(f"the {side}'s copy is not valid JSON ({exc.msg} at line "
                           f"{exc.lineno})") from None
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise Unparseable(f"the {side}'s copy is not readable JSON ({clip(str(exc))})") from None


class _OverflowedLiteral(str):
    """A JSON number such as 1e400 that a float can only hold as inf: compared by its text."""


def _json_float(text: str) -> float | _OverflowedLiteral:
    value = float(text)
    return _OverflowedLiteral(text) if math.isinf(value) else value


def _walk_json(expected: Any, actual: Any, where: str, tally: Tally) -> None:
    if isinstance(expected, dict) and isinstance(actual, dict):
        _walk_json_object(expected, actual, where, tally)
    elif isinstance(expected, list) and isinstance(actual, list):
        for i, (left, right) in enumerate(zip(expected, actual, strict=False)):
            _walk_json(left, right, f"{where}[{i}]", tally)
        if len(expected) != len(actual):
            tally.add_exact(False, where, f"{len(expected)} items vs {len(actual)}")
    elif _is_json_number(expected) and _is_json_number(actual) and expected != actual:
        tally.add_numbers([(expected, actual)], where, clip(f"{expected!r} vs {actual!r}"))
    else:
        equal = expected == actual and type(expected) is type(actual) or (
            _is_json_number(expected) and _is_json_number(actual) and expected == actual)
        tally.add_exact(equal, where, f"{_short_json(expected)} vs {_short_json(actual)}")


def _walk_json_object(expected: dict[str, Any], actual: dict[str, Any], where: str,
                      tally: Tally) -> None:
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
    return clip(json.dumps(value, allow_nan=True, sort_keys=True))
