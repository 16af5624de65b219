"""Tolerances per output, by glob: from `compare --tolerance` and the bundle's settings.yaml.

```
reprobox compare --tolerance 'out/*.npy:rtol=1e-5,atol=0,ulps=4' --tolerance '*.jsonl:atol=1e-6'

# <bundle>/settings.yaml
tolerances:
  - {glob: "out/*.npy", rtol: 1e-5, atol: 0, ulps: 4}
  - {glob: "**/*.jsonl", atol: 1e-6}
```

The last rule whose glob matches an output decides its tolerance (the settings file's rules come
before the command line's); the values that rule names replace the captured ones, the others
stay as captured. Globs match the output's path in the project: `*` any characters but `/`,
`**` any number of folders, `?` one character, `[abc]` one of a set; a glob without `/`
matches the file name in any folder.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from reprobox.errors import BundleError, UsageError
from reprobox.manifest import Output

SETTINGS_FILE = "settings.yaml"
KEYS = ("rtol", "atol", "ulps")
_MAX_SETTINGS_BYTES = 1 << 20  # read before parsing: a YAML alias bomb is cheap to write
_OPTION_HINT = ("write GLOB:KEY=VALUE[,KEY=VALUE...] with keys rtol, atol, ulps, "
                "e.g. --tolerance 'out/*.npy:rtol=1e-5,atol=0,ulps=4'")
_SETTINGS_HINT = ("settings.yaml holds `tolerances:`, a list of {glob, rtol, atol, ulps}, "
                  "e.g. `- {glob: \"out/*.npy\", rtol: 1e-5, ulps: 4}` (see README, Tolerances)")
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Invalid(ValueError):
    """One bad value; the caller names the option or file it came from."""


@dataclass(frozen=True, slots=True)
class Tolerance:
    """A tolerance for the outputs whose path matches `glob`; None leaves the captured value."""

    glob: str
    rtol: float | None = None
    atol: float | None = None
    ulps: int | None = None

    def matches(self, path: str) -> bool:
        return _glob_regex(self.glob).fullmatch(path.lstrip("/")) is not None

    def applied(self, output: Output) -> Output:
        given = {key: getattr(self, key) for key in KEYS if getattr(self, key) is not None}
        return replace(output, **given)


def apply(outputs: Sequence[Output], rules: Sequence[Tolerance]) -> tuple[Output, ...]:
    """Each output with the tolerance of the last rule that matches it, if any does."""
    return tuple(_last_match(output, rules) for output in outputs)


def _last_match(output: Output, rules: Sequence[Tolerance]) -> Output:
    matching = [rule for rule in rules if rule.matches(output.path)]
    return matching[-1].applied(output) if matching else output


# --- the command line -------------------------------------------------------------------------


def parse_option(text: str) -> Tolerance:
    """A `--tolerance GLOB:rtol=R,atol=A,ulps=N` value; UsageError naming it when malformed."""
    glob, colon, settings = text.rpartition(":")
    try:
        if not colon or not glob.strip():
            raise _Invalid("expected GLOB:KEY=VALUE,... (a glob, a colon, then tolerances)")
        return _tolerance(glob.strip(), _pairs(settings))
    except _Invalid as exc:
        raise UsageError(f"--tolerance {text!r}: {exc}", hint=_OPTION_HINT) from None


def _pairs(settings: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in settings.split(","):
        key, equals, value = (part.strip() for part in item.partition("="))
        if not equals or not key:
            raise _Invalid(f"{item.strip()!r} is not KEY=VALUE")
        if key in pairs:
            raise _Invalid(f"{key} is given twice")
        pairs[key] = value
    return pairs


# --- the settings file ------------------------------------------------------------------------


def bundle_tolerances(bundle_dir: Path) -> tuple[Tolerance, ...]:
    """The rules in `<bundle>/settings.yaml`; none when there is no such file."""
    return read_settings(bundle_dir / SETTINGS_FILE)


def read_settings(path: Path) -> tuple[Tolerance, ...]:
    """The tolerance rules of a settings file; BundleError naming the file when invalid."""
    if not path.is_file():
        return ()
    try:
        return _rules(_load(path))
    except _Invalid as exc:
        raise BundleError(f"{path}: {exc}", hint=_SETTINGS_HINT) from None


def _load(path: Path) -> Mapping[str, Any]:
    try:
        if path.stat().st_size > _MAX_SETTINGS_BYTES:
            raise _Invalid(f"larger than {_MAX_SETTINGS_BYTES // 1024} KiB; is it settings?")
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YamlLoader)  # noqa: S506
    except (OSError, UnicodeDecodeError) as exc:
        raise _Invalid(f"cannot be read ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise _Invalid(f"not valid YAML ({getattr(exc, 'problem', None) or exc}{at})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _Invalid("expected a mapping at the top level")
    unknown = sorted(str(key) for key in data if key != "tolerances")
    if unknown:
        raise _Invalid(f"unknown setting {unknown[0]!r} (known: tolerances)")
    return data


def _rules(settings: Mapping[str, Any]) -> tuple[Tolerance, ...]:
    entries = settings.get("tolerances")
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise _Invalid("tolerances must be a list of {glob, rtol, atol, ulps}")
    return tuple(_rule(entry, f"tolerances[{i}]") for i, entry in enumerate(entries))


def _rule(entry: Any, where: str) -> Tolerance:
    if not isinstance(entry, dict):
        raise _Invalid(f"{where} must be a mapping such as {{glob: \"out/*.npy\", rtol: 1e-5}}")
    glob = entry.get("glob")
    if not isinstance(glob, str) or not glob.strip():
        raise _Invalid(f"{where} needs a glob (a non-empty string)")
    values = {str(key): value for key, value in entry.items() if key != "glob"}
    try:
        return _tolerance(glob.strip(), values)
    except _Invalid as exc:
        raise _Invalid(f"{where}: {exc}") from None


# --- values and globs -------------------------------------------------------------------------


def _tolerance(glob: str, values: Mapping[str, Any]) -> Tolerance:
    unknown = [key for key in values if key not in KEYS]
    if unknown:
        raise _Invalid(f"unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    if not values:
        raise _Invalid("names no tolerance (rtol, atol or ulps)")
    _glob_regex(glob)
    return Tolerance(glob, rtol=_bound(values, "rtol"), atol=_bound(values, "atol"),
                     ulps=_ulps(values.get("ulps")))


def _bound(values: Mapping[str, Any], key: str) -> float | None:
    """A finite number ≥ 0; text too, since YAML 1.1 reads `1e-5` as a string."""
    value = values.get(key)
    if value is None:
        return None
    number: float | None = None
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            number = None
    if number is None or not math.isfinite(number) or number < 0:
        raise _Invalid(f"{key} must be a number ≥ 0, got {value!r}")
    return number


def _ulps(value: Any) -> int | None:
    if value is None:
        return None
    text = str(value).strip() if not isinstance(value, bool) else ""
    if not re.fullmatch(r"\+?\d{1,18}", text):
        raise _Invalid(f"ulps must be a whole number ≥ 0, got {value!r}")
    return int(text)


def _as_written_by_people(glob: str) -> str:
    """`./out/*.npy` is `out/*.npy`; a folder `out/` stands for everything under it."""
    while glob.startswith("./"):
        glob = glob[2:]
    glob = glob.lstrip("/")
    return glob + "**" if glob.endswith("/") else glob


@functools.lru_cache(maxsize=256)
def _glob_regex(glob: str) -> re.Pattern[str]:
    """`glob` as a regex over POSIX paths; one without `/` matches a name in any folder."""
    glob = _as_written_by_people(glob)
    body = "".join(_glob_part(part) for part in re.split(r"(\*\*/|\*\*|\*|\?|\[!?\]?[^\]]*\])",
                                                          glob) if part)
    prefix = "(?:.*/)?" if "/" not in glob else ""
    try:
        return re.compile(prefix + body)
    except re.error as exc:
        raise _Invalid(f"glob {glob!r} cannot be read ({exc})") from None


def _glob_part(part: str) -> str:
    if part == "**/":
        return "(?:.*/)?"
    if part == "**":
        return ".*"
    if part == "*":
        return "[^/]*"
    if part == "?":
        return "[^/]"
    if part.startswith("[") and part.endswith("]") and len(part) > 2:
        inner = part[1:-1]
        negated = inner.startswith("!")
        inner = inner[1:] if negated else inner
        return f"[{'^/' if negated else ''}{inner.replace(chr(92), chr(92) * 2)}]"
    return re.escape(part)
