"""Render comparisons and manifests as rich renderables or JSON; the CLI does the printing."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from reprobox.compare import (
    Comparison,
    CurveComparison,
    EnvironmentDifference,
    OutputComparison,
)
from reprobox.manifest import FileRecord, Git, Manifest, Output, Package, Python, System

if TYPE_CHECKING:
    from reprobox.doctor import Finding
    from reprobox.sweep import MetricSpread, Sweep
    from reprobox.variation import Variation

_VERDICT_STYLE = {
    "identical": "bold green",
    "equivalent": "green",
    "within_tolerance": "yellow",
    "different": "bold red",
    "missing": "bold red",
    "extra": "magenta",
}
_LIKELIHOOD = {3: "likely", 2: "possible", 1: "unlikely"}
_LIKELIHOOD_STYLE = {"likely": "bold red", "possible": "yellow", "unlikely": "dim"}
# (column title, OutputComparison field) of the measures shown per output when any output has one
# max rel Δ and the kind are in each output's detail line: the table must fit 80 columns
_MEASURES = (("max |Δ|", "max_abs_diff"), ("max ULPs", "max_ulps"), ("Where", "where"))
MAX_SAMPLES = 5  # differing values shown side by side under an output
_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}
_MAX_LISTED = 8  # files or packages shown per section before "… and N more"
_LABEL_WIDTH = 14  # so the fields of the run, Python, system and git sections line up


def comparison_table(comparison: Comparison) -> RenderableType:
    """The outputs table, the details of each output that is not identical (with its first
    differing values side by side), the metric curves, the ranked environment differences,
    the notes, then the overall verdict line."""
    parts: list[RenderableType] = []
    if comparison.outputs:
        parts.append(_outputs_table(comparison.outputs))
        parts += _details_section(comparison.outputs)
    parts += _curves_section(comparison.curves)
    parts += _environment_section(comparison.environment)
    parts += _bullets("Notes", comparison.notes)
    parts.append(_overall_line(comparison))
    return Group(*parts)


def comparison_json(comparison: Comparison) -> str:
    """The comparison as stable, indented JSON (what `compare --json` prints and replays store)."""
    return comparison.to_json()


def manifest_summary(manifest: Manifest) -> RenderableType:
    """What `reprobox show` prints: the run, its determinism, Python, system, git, files, notes."""
    parts: list[RenderableType] = [
        Text.assemble(("Run ", "bold"), (manifest.run.project, "bold cyan"),
                      f"  (captured by {manifest.created_by}, schema {manifest.schema_version})"),
        _fields(_run_rows(manifest), label_width=_LABEL_WIDTH),
        *_section("Python", _python_rows(manifest.python)),
        *_section("System", _system_rows(manifest.system)),
        *_section("GPU", _gpu_rows(manifest)),
    ]
    if manifest.git is not None:
        parts += _section("Git", _git_rows(manifest.git))
    parts += _section(f"Inputs ({len(manifest.inputs)})", _file_rows(manifest.inputs))
    parts += _section(f"Outputs ({len(manifest.outputs)})", _output_rows(manifest.outputs))
    parts += _bullets("Notes", manifest.notes)
    return Group(*parts)


def findings_table(findings: Sequence[Finding], subject: str) -> RenderableType:
    """What `reprobox doctor` prints: one row per hazard (severity, what, fix), then a summary."""
    heading = Text.assemble(("Doctor: ", "bold"), (subject, "bold cyan"))
    if not findings:
        return Group(heading, Text("no determinism hazards found", style="bold green"))
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    table.add_column("Severity", no_wrap=True)
    table.add_column("Hazard", overflow="fold", ratio=3)
    table.add_column("Fix", overflow="fold", ratio=2)
    for finding in findings:
        table.add_row(Text(finding.severity, style=_SEVERITY_STYLE.get(finding.severity, "")),
                      Text.assemble((finding.code, "bold"), "\n", finding.message),
                      Text(finding.fix))
    return Group(heading, table, _findings_summary(findings))


def findings_json(findings: Sequence[Finding]) -> str:
    """The findings as an indented JSON list of {code, severity, message, fix}."""
    return json.dumps([dataclasses.asdict(finding) for finding in findings], indent=2)


# --- doctor pieces ------------------------------------------------------------------------------


def _findings_summary(findings: Sequence[Finding]) -> Text:
    counts = {level: sum(f.severity == level for f in findings)
              for level in ("error", "warning", "info")}
    parts = [f"{counts[level]} {name}{'' if counts[level] == 1 else 's'}"
             for level, name in (("error", "error"), ("warning", "warning"), ("info", "note"))
             if counts[level]]
    if counts["error"] or counts["warning"]:
        return Text.assemble(("NOT READY", "bold red"), f" ({', '.join(parts)}): a replay may "
                             "not match the original until the fixes above are made")
    return Text.assemble(("READY", "bold green"), f" ({', '.join(parts)})")


# --- comparison pieces --------------------------------------------------------------------------


def headline(comparison: Comparison) -> tuple[str, str]:
    """The verdict in two words and why: ("NOT REPRODUCED", "different: 1 of 3 outputs")."""
    return ("REPRODUCED" if comparison.reproduced else "NOT REPRODUCED",
            _overall_reason(comparison))


def figure(value: float | None) -> str:
    """A number for a table cell: three significant digits; ULP counts exact up to a million."""
    if value is None:
        return ""
    if isinstance(value, int) and abs(value) < 1_000_000:
        return str(value)
    return f"{value:.3g}"


def step_text(step: float | None) -> str:
    """A step as the log numbers it: 120, not 120.0; "never" when the curves never part."""
    if step is None:
        return "never"
    if math.isfinite(step) and step.is_integer() and abs(step) < 1e15:
        return str(int(step))
    return f"{step:g}"


def likelihood(weight: int) -> str:
    """How likely an environment difference explains the outputs' difference, in a word."""
    return _LIKELIHOOD.get(weight, "likely" if weight > 3 else "unlikely")


def ranked(differences: Sequence[EnvironmentDifference]) -> list[EnvironmentDifference]:
    """Most likely cause first; ties keep their order."""
    return sorted(differences, key=lambda d: -d.weight)


def split_at_difference(original: str, replay: str) -> tuple[str, str, str]:
    """The common prefix of two printed values and what follows it in each, so a reader sees
    at once which digits differ: ("0.12345", "678", "679")."""
    common = os.path.commonprefix([original, replay])
    return common, original[len(common):], replay[len(common):]


def _outputs_table(outputs: Sequence[OutputComparison]) -> Table:
    # Columns no output fills (a run of identical files) are left out rather than shown empty;
    # the details go below the table, so it stays readable in 80 columns.
    measures = [(title, name) for title, name in _MEASURES
                if any(getattr(output, name) is not None for output in outputs)]
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    table.add_column("Output", overflow="fold", ratio=3)
    table.add_column("Verdict", no_wrap=True)
    for title, name in measures:
        table.add_column(title, overflow="fold", justify="left" if name == "where" else "right",
                         ratio=2 if name == "where" else None, no_wrap=name != "where")
    for output in outputs:
        table.add_row(Text(output.path), _verdict_text(output.verdict),
                      *(_measure(output, name) for _, name in measures))
    return table


def _details_section(outputs: Sequence[OutputComparison]) -> list[RenderableType]:
    """Each output that is not identical: its detail line, then its first differing values,
    original vs replay at their place, the digits that differ in bold."""
    lines: list[RenderableType] = []
    for output in outputs:
        if output.verdict == "identical":
            continue
        lines.append(Text.assemble((output.path, "bold"), f" ({output.kind}): ", output.detail))
        lines += _sample_lines(output)
    return [Text("Details", style="bold"), *lines] if lines else []


def _measure(output: OutputComparison, name: str) -> Text:
    value = getattr(output, name)
    return Text(value if isinstance(value, str) else figure(value))


def _sample_lines(output: OutputComparison) -> list[Text]:
    lines = []
    for where, original, replay in output.samples[:MAX_SAMPLES]:
        common, left, right = split_at_difference(original, replay)
        lines.append(Text.assemble("    ", (where, "dim"), ": ", common, (left, "bold"), " vs ",
                                   common, (right, "bold red")))
    more = len(output.samples) - MAX_SAMPLES
    if more > 0:
        lines.append(Text(f"    … and {more} more", style="dim"))
    return lines


def _curves_section(curves: Sequence[CurveComparison]) -> list[RenderableType]:
    if not curves:
        return []
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    table.add_column("Metric curve", overflow="fold", ratio=3)
    table.add_column("Points", justify="right", no_wrap=True)
    table.add_column("Parted at step", justify="right", no_wrap=True)
    table.add_column("End gap", justify="right", no_wrap=True)
    for curve in curves:
        parted = Text(step_text(curve.parted_at),
                      style="green" if curve.parted_at is None else "bold red")
        table.add_row(Text(f"{curve.metric} ({curve.path})"), Text(str(len(curve.steps))),
                      parted, Text(figure(curve.end_gap)))
    return [Text("Metric curves", style="bold"), table]


def _environment_section(differences: Sequence[EnvironmentDifference]) -> list[RenderableType]:
    """One line per difference, most likely cause first: lines, not a table, so they read in
    80 columns as well as in 200."""
    if not differences:
        return []
    lines: list[RenderableType] = [
        Text("Environment differences (most likely cause first)", style="bold")]
    for difference in ranked(differences):
        word = likelihood(difference.weight)
        lines.append(Text.assemble(
            "  ", (f"{word:<9}", _LIKELIHOOD_STYLE.get(word, "")), (difference.what, "bold"),
            f": {difference.original} → {difference.replay}", (f" ({difference.why})", "dim")))
    return lines


def _verdict_text(verdict: str) -> Text:
    return Text(verdict.replace("_", " "), style=_VERDICT_STYLE.get(verdict, ""))


def _overall_line(comparison: Comparison) -> Text:
    words, reason = headline(comparison)
    style = "bold green" if comparison.reproduced else "bold red"
    return Text.assemble((words, style), f" ({reason})")


def _overall_reason(comparison: Comparison) -> str:
    compared = [o for o in comparison.outputs if o.verdict != "extra"]
    extra = len(comparison.outputs) - len(compared)
    label = comparison.verdict.replace("_", " ")
    if not compared:
        reason = "nothing to compare: no outputs were recorded"
    elif comparison.verdict == "identical":
        reason = label
    elif not _count_at_verdict(compared, comparison.verdict):
        reason = f"{label}: the outputs match, but the run did not end the same way (see notes)"
    else:
        reason = f"{label}: {_count_at_verdict(compared, comparison.verdict)} of {len(compared)} "
        reason += "output" if len(compared) == 1 else "outputs"
        missing = sum(o.verdict == "missing" for o in compared)
        reason += f", {missing} missing" if missing else ""
    if extra:
        reason += f"; {extra} extra file" + ("s" if extra > 1 else "")
    return reason


def _count_at_verdict(outputs: Sequence[OutputComparison], verdict: str) -> int:
    return sum(("different" if o.verdict == "missing" else o.verdict) == verdict for o in outputs)


# --- manifest pieces ----------------------------------------------------------------------------


def _run_rows(manifest: Manifest) -> list[tuple[str, str]]:
    run, determinism = manifest.run, manifest.determinism
    ended = "succeeded" if manifest.succeeded else "FAILED"
    rows = [
        ("command", shlex.join(run.argv)),
        ("workdir", run.workdir),
        ("started", f"{run.started}, took {_duration(run.duration_s)}, "
                    f"exit code {run.exit_code} ({ended})"),
        ("seed", f"{determinism.seed}, PYTHONHASHSEED={determinism.python_hash_seed}, "
                 f"threads={determinism.threads}, "
                 f"deterministic={'on' if determinism.deterministic else 'off'}"),
    ]
    if determinism.env:
        rows.append(("injected env", _pairs(determinism.env)))
    rows.append(("state at end", _pairs(determinism.state) or "not recorded"))
    rows.append(("environment", _environment(manifest)))
    return rows


def _environment(manifest: Manifest) -> str:
    run = manifest.run
    parts = [_pairs(run.env) or "no variables captured"]
    if run.env_redacted:
        parts.append(f"redacted: {', '.join(run.env_redacted)}")
    if run.env_not_captured:
        parts.append(f"{run.env_not_captured} others not captured")
    return "; ".join(parts)


def _python_rows(python: Python) -> list[tuple[str, str]]:
    from_index = sum(p.source == "index" for p in python.packages)
    rows = [
        ("interpreter", f"{python.implementation} {python.version} ({python.abi_tag}, "
                        f"{python.platform_tag}) {python.executable}"),
        ("packages", f"{len(python.packages)} installed, {from_index} from the package index"),
    ]
    others = [p for p in python.packages if p.source != "index"]
    rows += [("", _package(p)) for p in others[:_MAX_LISTED]]
    if len(others) > _MAX_LISTED:
        rows.append(("", f"… and {len(others) - _MAX_LISTED} more not from the index"))
    return rows


def _package(package: Package) -> str:
    text = f"{package.name} {package.version} ({package.source}"
    text += f": {package.url}" if package.url else ""
    text += f" @ {package.commit[:12]}" if package.commit else ""
    text += f", subdirectory {package.subdirectory}" if package.subdirectory else ""
    return text + ")"


def _system_rows(system: System) -> list[tuple[str, str]]:
    rows = [
        ("os", f"{system.os_name}, {system.arch}, kernel {system.kernel}, {system.libc}"),
        ("cpu", f"{system.cpu_model}, {system.cpu_count} CPUs, {len(system.cpu_flags)} flags"),
    ]
    for blas in system.blas:
        facts = [blas.threading, f"{blas.num_threads} threads" if blas.num_threads else None,
                 f"via {blas.provider}" if blas.provider else None]
        shown = ", ".join(f for f in facts if f)
        rows.append(("blas", f"{blas.name} {blas.version or '(version unknown)'}"
                             + (f" ({shown})" if shown else "")))
    return rows


def _gpu_rows(manifest: Manifest) -> list[tuple[str, str]]:
    gpus, stack, state = manifest.gpu, manifest.cuda, manifest.determinism.state
    rows = [("gpus", gpus.describe() + f" (via {gpus.source})" if gpus else "not probed")]
    if gpus and gpus.visible_devices is not None:
        rows.append(("visible", f"CUDA_VISIBLE_DEVICES={gpus.visible_devices}"))
    if state.get("torch.cuda.devices_used"):
        rows.append(("used", str(state["torch.cuda.devices_used"])))
    if stack and stack.torch_version:
        cudnn = state.get("torch.cudnn.version")
        rows.append(("torch", stack.torch_version
                     + (f", CUDA {stack.torch_cuda}" if stack.torch_cuda else ", CPU build")
                     + (f", cuDNN {cudnn}" if cudnn else "")))
    if stack and stack.frameworks:
        rows.append(("built for", _pairs(stack.frameworks)))
    if stack and stack.libraries:
        rows.append(("cuda wheels", ", ".join(f"{n} {v}" for n, v in stack.libraries.items())))
    return rows


def _git_rows(git: Git) -> list[tuple[str, str]]:
    state = f"dirty, diff in {git.diff_file}" if git.dirty and git.diff_file else (
        "dirty" if git.dirty else "clean")
    rows = [("commit", f"{git.commit[:12]} on {git.branch or '(detached)'} ({state})")]
    if git.remote:
        rows.append(("remote", git.remote))
    return rows


def _file_rows(files: Sequence[FileRecord]) -> list[tuple[str, str]]:
    rows = [(f.path, f"{_size(f.size)}, sha256 {f.sha256[:12]}") for f in files[:_MAX_LISTED]]
    return rows + _more(len(files))


def _output_rows(outputs: Sequence[Output]) -> list[tuple[str, str]]:
    rows = []
    for output in outputs[:_MAX_LISTED]:
        stored = "" if output.stored else ", not stored (over the size cap)"
        rows.append((output.path, f"{_size(output.size)}, sha256 {output.sha256[:12]}, "
                                  f"rtol={output.rtol:g}, atol={output.atol:g}{stored}"))
    return rows + _more(len(outputs))


def _more(count: int) -> list[tuple[str, str]]:
    return [("", f"… and {count - _MAX_LISTED} more")] if count > _MAX_LISTED else []


# --- layout helpers -----------------------------------------------------------------------------


def _section(title: str, rows: list[tuple[str, str]],
             label_width: int = _LABEL_WIDTH) -> list[RenderableType]:
    heading = Text(title, style="bold")
    return [heading, _fields(rows, label_width)] if rows else [heading]


def _fields(rows: list[tuple[str, str]], label_width: int = _LABEL_WIDTH) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="cyan", min_width=label_width, max_width=40, overflow="fold")
    grid.add_column(overflow="fold")
    for label, value in rows:
        grid.add_row(Text("  " + label), Text(value))
    return grid


def _bullets(title: str, lines: Sequence[str]) -> list[RenderableType]:
    if not lines:
        return []
    return [Text(title, style="bold"), *(Text(f"  - {line}") for line in lines)]


def _pairs(mapping: Mapping[str, object]) -> str:
    return " ".join(f"{key}={value}" for key, value in sorted(mapping.items()))


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    amount, unit = size / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if amount < 1024:
            break
        amount, unit = amount / 1024, bigger
    return f"{amount:.1f} {unit}"


def variation_table(measured: Variation) -> Table:
    """`--repeat N`: the replays against each other, one row per output, the run-to-run spread."""
    count = len(measured.replays)
    agree = ("all identical to each other" if measured.identical_to_each_other else
             f"{len(measured.groups)} different results "
             f"({' + '.join(str(len(group)) for group in measured.groups)} replays)")
    table = Table(title=f"run-to-run variation over {count} replays in one image: {agree}; "
                  f"{measured.identical_to_original} of {count} identical to the original, "
                  f"{measured.reproduced} of {count} reproduced", title_justify="left")
    for column in ("output", "distinct results", "max |Δ| between replays", "worst verdict"):
        table.add_column(column)
    for spread in measured.outputs:
        largest = "—" if spread.max_abs_diff is None else f"{spread.max_abs_diff:.3g}"
        table.add_row(escape(spread.path), str(spread.distinct), largest, spread.verdict)
    return table


_SWEEP_SEEDS_SHOWN = 8  # seeds named in the sweep table's title before "…"
_SWEEP_HEADERS = ("metric", "original", "mean ± std", "range", "n", "vs original")
_SWEEP_NUMBERS = range(1, 5)  # the columns of figures, right-aligned
# (column, narrowest) shrunk in turn when a row is too wide: a judgement wraps at a space and
# stays readable, a metric name folds mid-word. Only rare judgements are over 14 wide; before a
# name folds, the two spaces between columns become one.
_SWEEP_SHRINK = ((5, 14), (0, 10), (5, len(_SWEEP_HEADERS[5])))


def sweep_table(sweep: Sweep) -> RenderableType:
    """`--seeds`: per output, its path as a bold heading line, then one row per metric: the
    original beside the seeds' mean ± std, range and count, and the judgement; metrics constant
    across the seeds last, dimmed. The notes (above all, a sweep that measured nothing) follow.
    Every output's rows share one set of column widths, fitted to the console."""
    shown = ", ".join(map(str, sweep.seeds[:_SWEEP_SEEDS_SHOWN]))
    shown += ", …" if len(sweep.seeds) > _SWEEP_SEEDS_SHOWN else ""
    count = f"{len(sweep.seeds)} seed" + ("" if len(sweep.seeds) == 1 else "s")
    blocks = tuple((output, tuple(_sweep_row(metric, output) for metric
                                  in sorted(metrics, key=lambda m: m.constant)))
                   for output, metrics in _metrics_by_output(sweep.metrics).items())
    title = f"seed sweep over {count} ({shown})" if sweep.seeds else "seed sweep"
    return _SweepTable(title, blocks, _sweep_caption(sweep))


@dataclasses.dataclass(frozen=True)
class _SweepTable:
    """The sweep's title, column header, per output a heading line and its rows, and notes."""

    title: str
    blocks: tuple[tuple[str, tuple[tuple[Text, ...], ...]], ...]  # (output, its rows' cells)
    notes: Text | None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        gap, widths = _sweep_widths([row for _, rows in self.blocks for row in rows],
                                    options.max_width)
        yield Text(self.title, style="table.title")
        if self.blocks:
            yield _sweep_grid(gap, widths, (), show_header=True)
        for output, rows in self.blocks:
            yield Text(output, style="bold", overflow="fold")  # whole, however long
            yield _sweep_grid(gap, widths, rows, show_header=False)
        if self.notes is not None:
            yield self.notes


def _sweep_row(metric: MetricSpread, output: str) -> tuple[Text, ...]:
    style = "dim" if metric.constant else ""
    figures = (_sweep_figure(metric.original), _mean_std(metric), _sweep_range(metric),
               str(metric.n))
    return (Text("  " + metric.name[len(output) + 1:], style=style),
            *(Text(cell, style=style) for cell in figures),
            Text(metric.judgement, style=style or _judgement_style(metric.judgement)))


def _sweep_widths(rows: Sequence[tuple[Text, ...]], max_width: int) -> tuple[int, list[int]]:
    """The gap between columns, and each column as wide as its widest cell, narrowed as
    _SWEEP_SHRINK says until a row fits `max_width`."""
    natural = [max([len(title), *(row[column].cell_len for row in rows)])
               for column, title in enumerate(_SWEEP_HEADERS)]
    gaps = len(natural) - 1
    widths = _narrowed(natural, max_width - 2 * gaps, _SWEEP_SHRINK[:1])
    if sum(widths) + 2 * gaps <= max_width:
        return 2, widths
    return 1, _narrowed(natural, max_width - gaps, _SWEEP_SHRINK)


def _narrowed(widths: Sequence[int], room: int,
              steps: Sequence[tuple[int, int]]) -> list[int]:
    """`widths` with each step's column cut, down to its narrowest, until they sum to `room`."""
    narrowed = list(widths)
    for column, narrowest in steps:
        narrowed[column] -= max(0, min(sum(narrowed) - room, narrowed[column] - narrowest))
    return narrowed


def _sweep_grid(gap: int, widths: Sequence[int], rows: Sequence[tuple[Text, ...]],
                show_header: bool) -> Table:
    """One block of the sweep table; numbers fold (never crop) on a console too narrow."""
    table = Table(box=None, header_style="bold underline", pad_edge=False,
                  padding=(0, gap, 0, 0), show_header=show_header)
    for column, (title, width) in enumerate(zip(_SWEEP_HEADERS, widths, strict=True)):
        table.add_column(title, width=width, overflow="fold",
                         justify="right" if column in _SWEEP_NUMBERS else "left")
    for cells in rows:
        table.add_row(*cells)
    return table


def _metrics_by_output(metrics: Sequence[MetricSpread]) -> dict[str, list[MetricSpread]]:
    """Metrics grouped by the output they came from (the part of `<path>:<metric>` before ":")."""
    grouped: dict[str, list[MetricSpread]] = {}
    for metric in metrics:
        grouped.setdefault(metric.name.partition(":")[0], []).append(metric)
    return grouped


def _sweep_caption(sweep: Sweep) -> Text | None:
    if not sweep.notes:
        return None
    lines = [Text(note, style="bold red" if sweep.seed_independent and number == 0 else "")
             for number, note in enumerate(sweep.notes)]
    return Text("\n", style="table.caption").join(lines)


def _sweep_figure(value: float | None) -> str:
    return "—" if value is None else figure(value)


def _mean_std(metric: MetricSpread) -> str:
    if metric.std is None:
        return _sweep_figure(metric.mean)
    return f"{figure(metric.mean)} ± {figure(metric.std)}"


def _sweep_range(metric: MetricSpread) -> str:
    """min–max in one cell; one figure when every finite seed gave the same value."""
    if metric.min is None or metric.max is None:
        return "—"
    if metric.min == metric.max:
        return figure(metric.min)
    return f"{figure(metric.min)}–{figure(metric.max)}"


def _judgement_style(judgement: str) -> str:
    return "yellow" if "OUTSIDE" in judgement or "original differs" in judgement else ""
