"""Masks for what changes from run to run in any log: times, durations, PIDs, paths, hosts.

A masked span is replaced by a placeholder such as `<time>`, so two lines that differ only in
masked spans compare equal. Masks apply only to lines (and strings) that already differ, and
each is narrow on purpose: a mask that swallowed a real number would hide a failed replay.
The replay's project folder (/app) and home (/tmp) are among the masked path roots, so a path
printed by the original and the same path printed in the container compare equal.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from reprobox.compare.result import OutputComparison

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*"
_WEEKDAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*"
_CLOCK = r"\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?"
_ZONE = r"(?:(?:Z|[+-]\d{2}:?\d{2})\b|\s(?:UTC|GMT)\b)?"  # no space before an offset: "-1234"
_ISO = rf"\b\d{{4}}[-/]\d{{2}}[-/]\d{{2}}(?:[T ]\d{{2}}:\d{{2}}(?::\d{{2}}(?:[.,]\d+)?)?{_ZONE})?"
_CTIME = (rf"\b(?:{_WEEKDAY},?\s+)?(?:{_MONTH}\s+\d{{1,2}}|\d{{1,2}}\s+{_MONTH})"
          rf"(?:\s+\d{{4}})?\s+{_CLOCK}{_ZONE}(?:\s+\d{{4}}\b)?")
_TQDM = r"\b\d{1,3}:\d{2}<(?:\d{1,3}:\d{2}\b|\?)"  # tqdm's "[00:01<00:05" and "[00:00<?"
# Words may follow a space ("12 ms"); short units only touch the number ("1.23s"), so the
# "min" of "mean=0.52 min=0.10" or the "h" of "12.5 h=4" are never read as durations.
_UNIT_WORD = r"(?:ms|us|µs|ns|secs?|seconds?|minutes?|hrs?|hours?)"
_UNIT_SHORT = r"(?:s|mins?|h)"
_DURATION = (rf"(?<![\w.])\d+(?:\.\d+)?(?:\s?{_UNIT_WORD}|{_UNIT_SHORT}"
             r"|h(?:\d+m)?\d+(?:\.\d+)?s|h\d+m|m\d+(?:\.\d+)?s)\b(?!\s*[=:])")
_RATE_UNIT = r"(?:it|its|samples?|tokens?|tok|img|images?|examples?|steps?|batch(?:es)?)"
_PID_BRACKET = (r"(?<=[A-Za-z_.-])(?P<pid_bracket>\[)\d{2,7}(?=\]:)"
                r"|(?:^|(?<=\s))(?P<pid_alone>\[)\d{3,7}(?=\]\s+\[)")
_PATH_ROOT = r"(?P<root>/tmp|/var/tmp|/var/folders|/private/var/folders|/home|/Users|/root|/app)"
_PATH_CHAR = r"[^\s'\"`(),;:<>\[\]{}=]"
_PROJECT_ROOT = "/app"  # reprobox.render.PROJECT_DIR: where the replay runs the project

Replacer = Callable[[re.Match[str]], str]


def _placeholder(text: str) -> Replacer:
    return lambda _match: text


def _after_key(text: str, *keys: str) -> Replacer:
    """Keep the key, mask its value: `host=gpu-07` → `host=<host>`."""
    return lambda match: next(match.group(k) for k in keys if match.group(k)) + text


def _mask_path(match: re.Match[str]) -> str:
    """Mask where a file lives, keep its name, so a renamed output still shows: a folder
    right under a tmp or home root is itself a random or personal name, masked whole."""
    root = match.group("root") or match.group("tilde")
    below = [part for part in match.group(0)[len(root):].split("/") if part]
    keep = len(below) >= 2 or (below and root == _PROJECT_ROOT)
    return "<path>/" + below[-1] if keep else "<path>"


@dataclass(frozen=True, slots=True)
class _Rule:
    kind: str  # what the detail line counts: "timestamp", "duration", ...
    pattern: str
    replace: Replacer
    needs: tuple[str, ...] = ()  # it can match only where one of these is in the lowered text
    digit_first: bool = False  # every match starts with a digit


def _volatile_field(match: re.Match[str]) -> str:
    """`'train_runtime': 12.34` or `elapsed=123.4`: the value masked when the key names a time,
    a duration, a rate, a host or a PID; any other `key: number` is left as it is."""
    kind = volatile_kind(match.group("field_name"))
    return match.group("field_key") + f"<{kind}>" if kind else match.group(0)


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# Tried in this order at each position, so a date-time is masked whole before its clock alone.
_RULES: tuple[_Rule, ...] = (
    _Rule("timing field",
          r"(?P<field_key>(?<![\w.])['\"]?(?P<field_name>[A-Za-z_][\w./-]*)['\"]?\s*[:=]\s*)"
          r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])", _volatile_field, (":", "=")),
    _Rule("timestamp", _ISO, _placeholder("<time>"), ("-", "/"), True),
    _Rule("timestamp", _CTIME, _placeholder("<time>"), _MONTHS),
    _Rule("duration", _TQDM, _placeholder("<duration>"), ("<",), True),
    _Rule("timestamp", rf"\b\d{{2}}:\d{{2}}:\d{{2}}(?:[.,]\d+)?\b{_ZONE}", _placeholder("<time>"),
          (":",), True),
    _Rule("duration", r"\b\d:\d{2}:\d{2}(?:[.,]\d+)?\b", _placeholder("<duration>"),  # 0:01:05
          (":",), True),
    _Rule("rate", rf"(?<![\w.])\d+(?:\.\d+)?\s?(?:{_RATE_UNIT}/s(?:ec)?|s/it)\b",
          _placeholder("<rate>"), ("/s", "s/it"), True),
    _Rule("duration", _DURATION, _placeholder("<duration>"), (), True),
    _Rule("PID", r"(?P<pid_key>\b(?i:pid|process id)\b\s*[=:#]?\s*)\d+",
          _after_key("<pid>", "pid_key"), ("pid", "process id")),
    _Rule("PID", _PID_BRACKET, _after_key("<pid>", "pid_bracket", "pid_alone"), ("[",)),
    _Rule("hostname", r"(?P<host_key>\b(?i:host|hostname|nodename)\b\s*[=:]\s*['\"]?)[\w.-]+",
          _after_key("<host>", "host_key"), ("host", "nodename")),
    _Rule("path", rf"(?<![\w/.~]){_PATH_ROOT}(?![\w.-])(?:/{_PATH_CHAR}*)*", _mask_path, ("/",)),
    _Rule("path", rf"(?<![\w/.])(?P<tilde>~)/{_PATH_CHAR}+", _mask_path, ("~/",)),
    # only where Python prints an object's address: a bare 0x... may be a checksum
    _Rule("address", r"(?<=\bat )0x[0-9a-fA-F]{6,16}\b", _placeholder("<addr>"), ("at 0x",),
          True),
)
_KINDS = tuple(dict.fromkeys(rule.kind for rule in _RULES))
_NEEDS = tuple(sorted({need for rule in _RULES for need in rule.needs}))


def _possible(text: str) -> tuple[int, ...]:
    """The rules that can match somewhere in `text`: a few substring tests spare the regex
    engine from trying every rule at every position."""
    lowered = text.lower()
    return _rules_for(frozenset(need for need in _NEEDS if need in lowered))


@functools.lru_cache(maxsize=256)
def _rules_for(present: frozenset[str]) -> tuple[int, ...]:
    return tuple(i for i, rule in enumerate(_RULES)
                 if not rule.needs or present.intersection(rule.needs))


@functools.lru_cache(maxsize=256)
def _pattern(rules: tuple[int, ...]) -> re.Pattern[str]:
    """One pattern for these rules, each a named group `r<i>`: the text is scanned once, and
    a run of rules that start with a digit is skipped in one step where there is none."""
    parts: list[str] = []
    run: list[str] = []
    for i in rules:
        named = f"(?P<r{i}>{_RULES[i].pattern})"
        if _RULES[i].digit_first:
            run.append(named)
            continue
        parts += [f"(?=\\d)(?:{'|'.join(run)})"] if run else []
        run = []
        parts.append(named)
    parts += [f"(?=\\d)(?:{'|'.join(run)})"] if run else []
    return re.compile("|".join(parts))


_PLURALS = {"address": "addresses"}


def mask(text: str) -> tuple[str, Counter[str]]:
    """`text` with every volatile span replaced by a placeholder, and how many of each kind."""
    counts: Counter[str] = Counter()

    def substitute(match: re.Match[str]) -> str:
        rule = _RULES[int(_rule_group(match)[1:])]
        replaced = rule.replace(match)
        if replaced != match.group(0):
            counts[rule.kind] += 1
        return replaced

    rules = _possible(text)
    return (_pattern(rules).sub(substitute, text) if rules else text), counts


def _rule_group(match: re.Match[str]) -> str:
    """The `r<i>` group that matched (lastgroup may name a group nested inside it)."""
    return next(name for name, value in match.groupdict().items()
                if value is not None and name[0] == "r" and name[1:].isdigit())


def mask_both(expected: str, actual: str) -> tuple[str, str, Counter[str]]:
    """Both texts masked, and the spans masked (the larger count of the two, kind by kind)."""
    left, left_counts = mask(expected)
    right, right_counts = mask(actual)
    return left, right, left_counts | right_counts


def describe(counts: Mapping[str, int]) -> str:
    """"masked 12 timestamps, 1 PID" (kinds in a fixed order), or "" when nothing was masked."""
    order = [kind for kind in _KINDS if counts.get(kind)]
    if not order:
        return ""
    words = [f"{counts[k]} {k if counts[k] == 1 else _PLURALS.get(k, k + 's')}" for k in order]
    return "masked " + ", ".join(words)


_TIME_SUFFIX = r"(?:_?(?:s|ms|sec|secs|seconds))?"  # not on host or pid: num_hosts is a count
_VOLATILE_KEY = re.compile(
    rf"(?:^|[^a-z])(?:(?P<timestamp>time|timestamp|date|datetime|created(?:_at)?){_TIME_SUFFIX}"
    rf"|(?P<duration>runtime|elapsed|duration|uptime|wall_?time){_TIME_SUFFIX}"
    r"|(?P<hostname>host|hostname)|(?P<PID>pid))(?:$|[^a-z])"
    r"|(?P<rate>per_?sec(?:ond)?$|/s$|throughput)")
_STEP_COUNTER = re.compile(r"time_?steps?")  # RL's step counter, not a time


def volatile_kind(key: str) -> str | None:
    """What a field named `key` records when it records when, how long, how fast or where
    ("timestamp", "duration", "rate", "hostname", "PID"), or None for any other field."""
    lowered = key.lower()
    match = _VOLATILE_KEY.search(lowered)
    if match is None or _STEP_COUNTER.search(lowered):
        return None
    return match.lastgroup


def with_masked(result: OutputComparison, counts: Mapping[str, int]) -> OutputComparison:
    """`result` with "; masked 3 timestamps" added to its detail when anything was masked."""
    said = describe(counts)
    return replace(result, detail=f"{result.detail}; {said}") if said else result
