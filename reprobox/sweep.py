"""Seed sweeps: each run's final metrics, and their spread across seeds beside the original's.

`--seeds 1,2,3` replays a run once per seed. This module parses that list, reads the final value
of every metric in a run's outputs, and summarizes them per metric: the original's value, the
seeds' mean, sample standard deviation (ddof=1) and range, and whether the original lies inside
that spread, in plain words. That is the honest answer to "is this difference noise?".

The judgement is short enough for one table cell, and the JSON carries the same text. In it σ is
the seeds' sample standard deviation and "in range" means between the seeds' min and max
(inclusive): "in range, 0.9σ" and "OUTSIDE, 3.8σ" say where the original lies and how many σ it
is from the seeds' mean. The others: "constant" (every seed, and the original, gave the same
value), "not in original", "original is nan", "in no seed", "one seed only" (no spread to judge
by), "all nan/inf", "seeds agree, original differs" (not seed noise), and "rest agree" (the finite
seeds and the original are equal). "2/4 nan/inf; " in front counts the seeds whose value was NaN
or inf, left out of the statistics.

One seed is allowed: it is a replay from another seed, not a measure of noise (a standard
deviation needs two seeds, and means little under five).

A metric comes from two kinds of output. A metric log (CSV/TSV with a header, JSON lines, JSON
tables: read as `compare.curves` reads them) gives each metric column's last value, named
`<path>:<column>` (`out/loss.csv:loss`; a table one level down in a JSON document gives
`<path>:<table>.<column>`). A JSON or YAML record gives each numeric leaf of its dicts, nested
keys joined with dots (`out/metrics.json:final_loss`, `all_results.json:eval.acc`); lists are not
entered, bools are not numbers, and fields that record time or speed (`train_runtime`) are not
metrics. NaN and inf are kept: a seed whose loss diverged is a finding, counted apart from the
statistics. Files that are missing, over 64 MiB, binary or unreadable have no metrics.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
import statistics
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from reprobox.compare.curves import LOG_SUFFIXES, Table, metric_names, read_tables, tables_in
from reprobox.compare.masks import volatile_kind
from reprobox.compare.records import load_json, load_yaml
from reprobox.compare.result import json_safe
from reprobox.compare.tally import Unparseable
from reprobox.errors import UsageError
from reprobox.manifest import Output
from reprobox.seeding import MAX_SEED

MAX_SEEDS = 1000  # replays one sweep may ask for
MAX_FILE_BYTES = 64 << 20  # a metric log or record is small; a larger file is data
MAX_METRICS_PER_OUTPUT = 64  # the first ones in the file; a config dump is not 10,000 metrics
_MAX_VALUES = 100_000  # dict entries walked per record: YAML aliases can expand exponentially
_SEEDS_HINT = "give seeds and ranges separated by commas: --seeds 1,2,3 or 1-5 or 1,4-6"
_PART = re.compile(r"([0-9]+)(?:\s*-\s*([0-9]+))?", re.ASCII)
_NEGATIVE = re.compile(r"(?:^|-)\s*-\s*[0-9]", re.ASCII)  # "-3", "1--3", "-3-1"
_YAML_SUFFIXES = (".yaml", ".yml")
_UNREADABLE = (Unparseable, OSError, UnicodeDecodeError, ValueError, RecursionError, csv.Error)


# --- the seed list ----------------------------------------------------------------------------


def parse_seeds(text: str) -> tuple[int, ...]:
    """The seeds of `--seeds`: "1,2,3", "1-5" (inclusive) or both, "1,4-6"; in the order given.

    One seed is allowed (a replay from another seed). Refused with a UsageError naming the part:
    an empty list or item, a negative or non-integer seed, one above seeding.MAX_SEED, a range
    that runs backwards, a seed given twice, more than MAX_SEEDS seeds.
    """
    if not text.strip():
        raise UsageError("--seeds: the list is empty", hint=_SEEDS_HINT)
    ranges = [_seed_range(part.strip()) for part in text.split(",")]
    count = sum(len(seeds) for seeds in ranges)  # before expanding: "0-4294967295" is a range
    if count > MAX_SEEDS:
        raise UsageError(f"--seeds: {text.strip()!r} asks for {count} replays; at most "
                         f"{MAX_SEEDS}", hint="sweep fewer seeds: 5 to 20 tell noise apart")
    seen: dict[int, None] = {}
    for seed in (seed for seeds in ranges for seed in seeds):
        if seed in seen:
            raise UsageError(f"--seeds: seed {seed} is given twice",
                             hint="each seed is replayed once; list it once")
        seen[seed] = None
    return tuple(seen)


def _seed_range(part: str) -> range:
    match = _PART.fullmatch(part)
    if match is None:
        raise UsageError(f"--seeds: {_describe_bad(part)}", hint=_SEEDS_HINT)
    first = int(match[1])
    last = first if match[2] is None else int(match[2])
    if max(first, last) > MAX_SEED:
        raise UsageError(f"--seeds: {part!r} goes above the largest seed, {MAX_SEED}",
                         hint="PYTHONHASHSEED and numpy accept seeds 0..2**32-1 only")
    if last < first:
        raise UsageError(f"--seeds: the range {part!r} runs backwards",
                         hint=f"write the smaller seed first: {last}-{first}")
    return range(first, last + 1)


def _describe_bad(part: str) -> str:
    if not part:
        return "an empty item (two commas in a row, or one at an end?)"
    if _NEGATIVE.search(part):
        return f"{part!r} is negative; seeds are 0 or more"
    return f"{part!r} is not a whole number or a range of them"


# --- one run's metrics ------------------------------------------------------------------------


def metrics_of(outputs_dir: Path, outputs: Sequence[Output]) -> dict[str, float]:
    """The final value of every metric in a run's outputs, by `<output path>:<metric>`.

    `outputs_dir` holds the files at their manifest paths (`bundle.outputs_dir` for the
    original, `<replay>/outputs` for a replay). Never raises for a file: one that is missing,
    too large or unreadable has no metrics.
    """
    found: dict[str, float] = {}
    for output in outputs:
        for name, value in _output_metrics(outputs_dir / output.path):
            found[f"{output.path}:{name}"] = value
    return found


def _output_metrics(path: Path) -> list[tuple[str, float]]:
    suffix = path.suffix.lower()
    if (suffix not in LOG_SUFFIXES and suffix not in _YAML_SUFFIXES) or not _small_file(path):
        return []
    try:
        return list(itertools.islice(_read_metrics(path, suffix), MAX_METRICS_PER_OUTPUT))
    except _UNREADABLE:
        return []


def _small_file(path: Path) -> bool:
    try:
        return (not path.is_symlink() and path.is_file()
                and path.stat().st_size <= MAX_FILE_BYTES)
    except OSError:
        return False


def _read_metrics(path: Path, suffix: str) -> Iterator[tuple[str, float]]:
    if suffix in _YAML_SUFFIXES:
        documents = load_yaml(path, "run")
        if len(documents) == 1:
            yield from _record_metrics(documents[0])
    elif suffix == ".json":
        document = load_json(path, "run")
        yield from _log_metrics(tables_in(document))
        yield from _record_metrics(document)
    else:
        yield from _log_metrics(read_tables(path))


def _log_metrics(tables: Mapping[str, Table]) -> Iterator[tuple[str, float]]:
    """Each metric column's last value (the last row that has it: the final loss)."""
    for table_name, table in tables.items():
        for column in metric_names(table):
            last = next(row[column] for row in reversed(table) if column in row)
            yield (f"{table_name}.{column}" if table_name else column), last


def _record_metrics(document: Any) -> Iterator[tuple[str, float]]:
    """The numeric leaves of a dict and the dicts in it, depth first, in document order."""
    pending: list[tuple[str, Any]] = [("", document)] if isinstance(document, dict) else []
    room = _MAX_VALUES  # entries the walk may still take in: an alias is taken in each time
    while pending:
        name, value = pending.pop()
        if isinstance(value, dict):
            entries = list(itertools.islice(value.items(), room))
            room -= len(entries)
            pending += reversed([(f"{name}.{key}" if name else str(key), item)
                                 for key, item in entries])
        elif (number := _leaf_number(name, value)) is not None:
            yield name, number


def _leaf_number(name: str, value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if volatile_kind(name.rsplit(".", 1)[-1]) is not None:
        return None  # a runtime or a rate differs on every run: timing, not seed noise
    try:
        return float(value)
    except OverflowError:  # an integer past the float range
        return None


# --- the summary ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricSpread:
    """One metric across the seeds, beside the original's value."""

    name: str  # "out/loss.csv:loss"
    original: float | None  # None: the original's outputs do not hold it
    values: tuple[tuple[int, float], ...]  # (seed, final value) of each seed that produced it
    n: int  # seeds that produced it, NaN and inf included
    non_finite: int  # of those, seeds whose value is NaN or inf (not in the statistics)
    mean: float | None  # over the finite values; None when there are none
    std: float | None  # sample standard deviation (ddof=1); None under two finite values
    min: float | None
    max: float | None
    constant: bool  # every seed gave the same value, and the original too where it has one
    # (two values at least: a lone seed with no original is not constant)
    judgement: str  # the original against the seeds, in plain words

    def to_dict(self) -> dict[str, Any]:
        plain = {f.name: json_safe(getattr(self, f.name)) for f in fields(self)}
        plain["values"] = {str(seed): json_safe(value) for seed, value in self.values}
        return plain


@dataclass(frozen=True, slots=True)
class Sweep:
    """A run replayed from several seeds: every metric's spread, and what to make of it."""

    seeds: tuple[int, ...]  # the seeds whose replays count, in the order given
    metrics: tuple[MetricSpread, ...]  # in the order first seen: the original's, then new ones
    failed: tuple[tuple[int, str], ...] = ()  # (seed, why) of replays that failed: not counted
    seed_independent: bool = False  # two or more seeds, and all gave exactly the same metrics
    # the original's own seed, replayed too, and its verdict: left out of the spread, which it
    # would pull towards the original
    own_seed: tuple[int, str] | None = None

    @property
    def notes(self) -> tuple[str, ...]:
        """What a reader must know before trusting the table, most important first."""
        notes = []
        if self.seed_independent:
            notes.append("every seed gave exactly the same metrics: the outputs did not depend "
                         "on the seed (does the script set its own?), so this sweep measured "
                         "no noise at all")
        if self.own_seed is not None:
            seed, verdict = self.own_seed
            notes.append(f"seed {seed} is the original's own: its replay was {verdict}, and it "
                         "is left out of the spread (it would pull the mean to the original)")
        if not self.seeds and self.own_seed is None:
            notes.append("no seed's replay finished: there is nothing to summarize")
        elif len(self.seeds) == 1:
            notes.append("one seed: a replay from another seed, not a measure of noise "
                         "(a standard deviation needs at least two)")
        if self.seeds and not self.metrics:
            notes.append("no metrics found: no output is a metric log (CSV/TSV, JSON lines, "
                         "JSON) or a JSON/YAML record of numbers")
        notes += [f"seed {seed} not counted: {why}" for seed, why in self.failed]
        return tuple(notes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; NaN and inf as the strings "nan", "inf", "-inf"."""
        return {"seeds": list(self.seeds),
                "failed": [{"seed": seed, "why": why} for seed, why in self.failed],
                "seed_independent": self.seed_independent, "notes": list(self.notes),
                "own_seed": None if self.own_seed is None else
                {"seed": self.own_seed[0], "verdict": self.own_seed[1]},
                "metrics": [metric.to_dict() for metric in self.metrics]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False)


def summarize(original: Mapping[str, float], per_seed: Mapping[int, Mapping[str, float]],
              failed: Mapping[int, str] | None = None,
              own_seed: tuple[int, str] | None = None) -> Sweep:
    """Each metric of `original` and `per_seed` (from `metrics_of`) across the seeds.

    `failed` maps the seeds whose replay failed or timed out to why ("exit code 1"): their
    metrics, from whatever they wrote before stopping, are left out even when given.
    `own_seed` is the original's seed and its replay's verdict, when it was replayed too; the
    caller leaves it out of `per_seed`.
    """
    failed = dict(failed or {})
    counted = {seed: metrics for seed, metrics in per_seed.items() if seed not in failed}
    names = dict.fromkeys([*original, *(name for m in counted.values() for name in m)])
    spreads = tuple(_spread(name, original.get(name), [(seed, metrics[name]) for seed, metrics
                                                       in counted.items() if name in metrics])
                    for name in names)
    return Sweep(seeds=tuple(counted), metrics=spreads, failed=tuple(failed.items()),
                 seed_independent=_all_alike(list(counted.values())), own_seed=own_seed)


def _spread(name: str, original: float | None, values: list[tuple[int, float]]) -> MetricSpread:
    finite = [value for _, value in values if math.isfinite(value)]
    # two values at least must agree: one seed alone is not constant, one seed and the original is
    constant = len(values) + (original is not None) >= 2 and bool(values) and all(
        _same(value, values[0][1]) for _, value in values) and (
        original is None or _same(original, values[0][1]))
    spread = MetricSpread(
        name=name, original=original, values=tuple(values), n=len(values),
        non_finite=len(values) - len(finite),
        mean=statistics.mean(finite) if finite else None, std=_std(finite),
        min=min(finite, default=None), max=max(finite, default=None), constant=constant,
        judgement="")
    return replace(spread, judgement=_judgement(spread))


def _std(finite: list[float]) -> float | None:
    if len(finite) < 2:
        return None
    try:
        return statistics.stdev(finite)  # exact arithmetic: equal values give exactly 0
    except OverflowError:  # values near the float limit spread beyond it
        return math.inf


def _judgement(spread: MetricSpread) -> str:
    finite = spread.n - spread.non_finite
    diverged = f"{spread.non_finite}/{spread.n} nan/inf; "
    return (diverged if spread.non_finite and finite else "") + _verdict(spread, finite)


def _verdict(spread: MetricSpread, finite: int) -> str:
    original = spread.original
    if not spread.n:
        return "in no seed"
    if not finite:
        return "all nan/inf"
    if spread.constant:
        return "constant"
    if original is None:
        return "not in original"
    if not math.isfinite(original):
        return f"original is {original}"
    if finite == 1:
        return "one seed only"
    if spread.std == 0:  # the finite values agree; a NaN or inf kept it from being constant
        return "rest agree" if original == spread.mean else "seeds agree, original differs"
    return _against_spread(original, spread)


def _against_spread(original: float, spread: MetricSpread) -> str:
    assert spread.mean is not None and spread.min is not None and spread.max is not None
    sigmas = abs(original - spread.mean) / spread.std if spread.std else math.nan
    distance = f", {sigmas:.1f}σ" if math.isfinite(sigmas) else ""
    return ("in range" if spread.min <= original <= spread.max else "OUTSIDE") + distance


def _all_alike(runs: list[Mapping[str, float]]) -> bool:
    """Two or more runs with metrics, all with the same names and exactly the same values."""
    if len(runs) < 2 or not runs[0]:
        return False
    first = runs[0]
    return all(run.keys() == first.keys() and all(_same(run[k], first[k]) for k in first)
               for run in runs[1:])


def _same(left: float, right: float) -> bool:
    return left == right or (math.isnan(left) and math.isnan(right))
