"""report: comparisons and manifests rendered to plain text, as a user would read them."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path

import jsonschema
import numpy as np
from rich.console import Console, RenderableType

from reprobox.compare import (
    Comparison,
    CurveComparison,
    EnvironmentDifference,
    OutputComparison,
    compare,
)
from reprobox.fileio import sha256_file
from reprobox.manifest import Blas, FileRecord, Git, Manifest, Output, Package
from reprobox.report import (
    comparison_json,
    comparison_table,
    figure,
    likelihood,
    manifest_summary,
    split_at_difference,
    step_text,
)
from tests.report_samples import sample_comparison


def _render(renderable: RenderableType, **console: object) -> str:
    options: dict[str, object] = {"width": 100, "color_system": None, **console}
    out = Console(file=io.StringIO(), **options)  # type: ignore[arg-type]
    out.print(renderable)
    return out.file.getvalue()  # type: ignore[attr-defined, no-any-return]


IDENTICAL = OutputComparison("out/weights.npy", "identical", "npy", "sha256 matches the record")
CLOSE = OutputComparison("metrics.json", "within_tolerance", "json",
                         "1 of 4 values differ, all within rtol=1e-06, atol=0; first at "
                         "$.metrics.loss: 0.25 vs 0.25000001", 1e-8, 4e-8, "$.metrics.loss", 1, 4)
DIFFERENT = OutputComparison("curve.csv", "different", "csv",
                             '1 of 12 cells outside rtol=1e-07, atol=0; first at row 3, col '
                             '"loss": 0.25 vs 0.3', 0.05, 0.2, 'row 3, col "loss"', 1, 12)
MISSING = OutputComparison("model.bin", "missing", "bytes", "the replay did not write this file")
EXTRA = OutputComparison("debug.log", "extra", "text",
                         "written by the replay but not a recorded output (12 bytes)")


def test_identical_table_lists_outputs_and_says_reproduced() -> None:
    text = _render(comparison_table(Comparison("identical", (IDENTICAL,))))
    assert "Output" in text and "Verdict" in text and "out/weights.npy" in text
    assert "Details" not in text  # nothing to explain about an identical file
    assert text.rstrip().splitlines()[-1] == "REPRODUCED (identical)"


def test_within_tolerance_is_reproduced_and_counted() -> None:
    text = _render(comparison_table(Comparison("within_tolerance", (IDENTICAL, CLOSE))))
    assert "within tolerance" in text
    assert "$.metrics.loss" in text
    assert text.rstrip().splitlines()[-1] == "REPRODUCED (within tolerance: 1 of 2 outputs)"


def test_different_counts_missing_outputs_and_extra_files() -> None:
    comparison = Comparison("different", (IDENTICAL, DIFFERENT, MISSING, EXTRA),
                            notes=("numpy 2.1.3 in the original, 2.0.0 in the replay",))
    text = _render(comparison_table(comparison), width=200)  # wide enough not to fold details
    lines = text.rstrip().splitlines()
    assert lines[-1] == "NOT REPRODUCED (different: 2 of 3 outputs, 1 missing; 1 extra file)"
    assert lines[-3:-1] == ["Notes", "  - numpy 2.1.3 in the original, 2.0.0 in the replay"]
    for word in ("different", "missing", "extra", '"loss": 0.25 vs 0.3', "debug.log"):
        assert word in text


def test_nothing_recorded_says_so() -> None:
    text = _render(comparison_table(Comparison("identical", ())))
    assert text.strip() == "REPRODUCED (nothing to compare: no outputs were recorded)"


def test_paths_and_details_are_not_read_as_markup() -> None:
    odd = OutputComparison("out/[bold]w[/bold].npy", "different", "npy",
                           "first at w[3, 7]: [red]1 vs 2")
    text = _render(comparison_table(Comparison("different", (odd,))))
    assert "out/[bold]w[/bold].npy" in text
    assert "first at w[3, 7]: [red]1 vs 2" in text


def test_verdicts_are_coloured_when_the_terminal_has_colour() -> None:
    text = _render(comparison_table(Comparison("different", (IDENTICAL, DIFFERENT))),
                   color_system="standard", force_terminal=True)
    assert "\x1b[1;32midentical" in text
    assert "\x1b[1;31mdifferent" in text


def test_comparison_json_is_sorted_and_round_trips() -> None:
    comparison = Comparison("different", (DIFFERENT, MISSING), notes=("a note",))
    text = comparison_json(comparison)
    assert json.loads(text) == comparison.to_dict()
    assert text.startswith('{\n  "curves": [],\n  "environment": [],\n  "notes": [\n')
    assert '"reproduced": false' in text


def test_manifest_summary_shows_the_run(sample_manifest: Manifest) -> None:
    text = _render(manifest_summary(sample_manifest))
    for expected in (
        "Run numpy-sgd", "python train.py --epochs 3", "exit code 0 (succeeded)", "1.25 s",
        "1234, PYTHONHASHSEED=1234, threads=1, deterministic=on",
        "numpy.version=2.1.3 random.seeded=True", "redacted: HF_TOKEN", "42 others not captured",
        "cpython 3.11.7 (cp311, linux_x86_64)", "2 installed, 2 from the package index",
        "Debian GNU/Linux 12 (bookworm), x86_64, kernel 6.1.0, glibc 2.36",
        "Test CPU, 2 CPUs, 2 flags", "0123456789 on main (clean)", "https://example.org/x.git",
        "data/train.csv", "100 B, sha256 abababababab", "out/weights.npy", "rtol=1e-07",
    ):
        assert expected in text, expected
    assert "Notes" not in text
    assert len(text.splitlines()) <= 40


def test_manifest_summary_shows_what_needs_attention(sample_manifest: Manifest) -> None:
    python = dataclasses.replace(sample_manifest.python, packages=(
        *sample_manifest.python.packages,
        Package("mylib", "0.1.0", "editable", url="/home/me/mylib"),
        Package("tool", "1.2", "vcs", url="https://example.org/tool.git", commit="f" * 40),
    ))
    system = dataclasses.replace(sample_manifest.system,
                                 blas=(Blas("openblas", "0.3.27", "pthreads", 2, "numpy"),))
    manifest = dataclasses.replace(
        sample_manifest, python=python, system=system,
        run=dataclasses.replace(sample_manifest.run, exit_code=2, duration_s=3725.0),
        git=Git("abcdef0123456789", None, None, dirty=True, diff_file="git.diff"),
        inputs=tuple(FileRecord(f"data/part-{i}.csv", "ab" * 32, 3 * 1024**2) for i in range(11)),
        outputs=(Output("ckpt.npz", "cd" * 32, 5 * 1024**3, stored=False),),
        notes=("gpu: nvidia-smi not found",))
    text = _render(manifest_summary(manifest))
    for expected in (
        "exit code 2 (FAILED)", "1 h 2 min", "4 installed, 2 from the package index",
        "mylib 0.1.0 (editable: /home/me/mylib)",
        "tool 1.2 (vcs: https://example.org/tool.git @ ffffffffffff)",
        "openblas 0.3.27 (pthreads, 2 threads, via numpy)",
        "abcdef012345 on (detached) (dirty, diff in git.diff)", "Inputs (11)", "3.0 MiB",
        "… and 3 more", "5.0 GiB", "not stored (over the size cap)",
        "Notes", "  - gpu: nvidia-smi not found",
    ):
        assert expected in text, expected
    assert "data/part-8.csv" not in text
    assert len(text.splitlines()) <= 40


def test_manifest_summary_without_git(sample_manifest: Manifest) -> None:
    text = _render(manifest_summary(dataclasses.replace(sample_manifest, git=None)))
    assert "Git" not in text
    assert "Outputs (1)" in text


def test_manifest_summary_shows_the_gpus_and_the_cuda_stack() -> None:
    from pathlib import Path

    from reprobox import manifest as manifest_io

    data = Path(__file__).resolve().parents[1] / "data" / "manifests"
    text = _render(manifest_summary(manifest_io.read(data / "torch-h100.yaml")))
    assert "1× NVIDIA H100 80GB HBM3 (9.0), driver 580.159.04, CUDA 13.0 (via nvml)" in text
    assert "2.11.0+cu130, CUDA 13.0, cuDNN 91900" in text
    assert "not probed" in _render(manifest_summary(manifest_io.read(data / "numpy-sgd.yaml")))


# --- measures, samples, curves and environment in the terminal ---------------------------------


def test_measure_columns_appear_only_when_some_output_has_them() -> None:
    plain = _render(comparison_table(Comparison("identical", (IDENTICAL,))))
    assert "max |Δ|" not in plain and "Where" not in plain
    text = _render(comparison_table(sample_comparison()), width=200)
    header = text.splitlines()[0]
    for title in ("Output", "Verdict", "max |Δ|", "max ULPs", "Where"):
        assert title in header, title
    row = next(line for line in text.splitlines() if line.startswith("out/predictions.npy "))
    assert [cell.strip() for cell in row.split("│")[2:5]] == ["0.0312", "2.83e+06", "[17]"]
    row = next(line for line in text.splitlines() if line.startswith("ckpt/model.pt "))
    assert [cell.strip() for cell in row.split("│")[2:5]] == ["5.96e-08", "1", "fc.weight[3, 7]"]


def test_samples_sit_under_their_output_original_vs_replay_at_their_place() -> None:
    lines = _render(comparison_table(sample_comparison()), width=200).splitlines()
    head = "out/predictions.npy (npy): "
    start = next(i for i, line in enumerate(lines) if line.startswith(head))
    assert "812 of 10,000 elements" in lines[start]
    assert [line.strip() for line in lines[start + 1:start + 7]] == [
        "[17]: 0.36962891 vs 0.40087891", "[18]: 0.7421875 vs 0.7265625", "[40]: nan vs 0.0",
        "[41]: 1.0 vs 1.0078125", "[55]: -0.25 vs -0.2578125", "… and 2 more"]
    assert "<script>" not in "\n".join(lines)  # the 7th sample is past the first five


def test_the_table_reads_in_80_columns() -> None:
    text = _render(comparison_table(sample_comparison()), width=80)
    row = next(line for line in text.splitlines() if line.startswith("out/predictions"))
    assert "different" in row and "0.0312" in row  # one line per output, not folded to bits
    assert "    [17]: 0.36962891 vs 0.40087891" in text


def test_sample_digits_that_differ_are_highlighted() -> None:
    text = _render(comparison_table(sample_comparison()), width=200, color_system="standard",
                   force_terminal=True)
    assert "0.7\x1b[1m421875\x1b[0m vs 0.7\x1b[1;31m265625\x1b[0m" in text


def test_samples_name_their_place_when_no_output_has_a_where() -> None:
    output = OutputComparison("log.txt", "different", "text", "2 of 9 lines differ",
                              samples=(("line 4", "loss 0.25", "loss 0.26"),))
    text = _render(comparison_table(Comparison("different", (output,))), width=200)
    assert "line 4: loss 0.25 vs loss 0.26" in text


def test_metric_curves_say_where_they_part_and_how_far_apart_they_end() -> None:
    text = _render(comparison_table(sample_comparison()), width=200)
    lines = text.splitlines()
    start = lines.index("Metric curves")
    rows = [[cell.strip() for cell in line.split("│")] for line in lines[start + 3:start + 5]]
    assert rows == [["loss (logs/metrics.jsonl)", "200", "120", "0.158"],
                    ["accuracy (logs/eval.csv)", "21", "never", "0"]]


def test_environment_differences_are_ranked_most_likely_first_with_why() -> None:
    text = _render(comparison_table(sample_comparison()), width=200)
    lines = text.splitlines()
    start = lines.index("Environment differences (most likely cause first)")
    rows = [line.split()[:2] for line in lines[start + 1:start + 5]]
    assert rows == [["likely", "torch:"], ["likely", "GPU"], ["possible", "OMP_NUM_THREADS:"],
                    ["unlikely", "hostname:"]]
    assert lines[start + 1] == ("  likely   torch: 2.3.1+cu121 → 2.4.0+cu121 (kernels and their "
                                "defaults change between releases)")
    assert lines[-1].startswith("NOT REPRODUCED")


def test_sections_are_left_out_when_empty() -> None:
    text = _render(comparison_table(Comparison("different", (DIFFERENT,))))
    assert "Metric curves" not in text and "Environment" not in text


def test_figures_steps_and_likelihoods_read_as_a_person_writes_them() -> None:
    assert [figure(v) for v in (None, 1, 999_999, 2_831_155, 5.96e-08, 0.0312, math.inf,
                                math.nan)] == ["", "1", "999999", "2.83e+06", "5.96e-08",
                                               "0.0312", "inf", "nan"]
    assert [step_text(v) for v in (None, 120.0, 0.5, 1e20, -math.inf)] == [
        "never", "120", "0.5", "1e+20", "-inf"]
    assert [likelihood(w) for w in (3, 2, 1, 5, 0)] == [
        "likely", "possible", "unlikely", "likely", "unlikely"]
    assert split_at_difference("0.12345678", "0.12345679") == ("0.1234567", "8", "9")
    assert split_at_difference("nan", "0.0") == ("", "nan", "0.0")


# --- compare --json against docs/comparison.schema.json -----------------------------------------

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "comparison.schema.json")
                    .read_text())


def _schema_errors(document: object) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def _real_comparison(tmp_path: Path) -> Comparison:
    """compare() on real files of each kind it reads: arrays, JSON, a CSV, a metric log, a
    missing output and an extra file."""
    original, replay = tmp_path / "original", tmp_path / "replay"
    for folder, drift in ((original, 0.0), (replay, 1e-3)):
        (folder / "out").mkdir(parents=True)
        np.save(folder / "out" / "w.npy", np.linspace(0, 1, 64, dtype=np.float32) + drift)
        (folder / "out" / "metrics.json").write_text(json.dumps({"acc": 0.9 + drift}))
        (folder / "out" / "table.csv").write_text(f"step,loss\n0,1.0\n1,{0.5 + drift}\n")
        (folder / "out" / "log.jsonl").write_text("".join(
            json.dumps({"step": s, "loss": 1 / (s + 1) + (drift if s > 5 else 0)}) + "\n"
            for s in range(10)))
    (original / "out" / "gone.txt").write_text("only in the original\n")
    (replay / "out" / "new.txt").write_text("only in the replay\n")
    records = [Output(f"out/{name}", sha256_file(original / "out" / name),
                      (original / "out" / name).stat().st_size)
               for name in ("w.npy", "metrics.json", "table.csv", "log.jsonl", "gone.txt")]
    return compare(original, replay, records, ["a note"])


def test_the_schema_is_valid_draft_2020_12() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_real_comparisons_match_the_schema(tmp_path: Path) -> None:
    real = _real_comparison(tmp_path)
    assert {o.verdict for o in real.outputs} >= {"different", "missing", "extra"}
    # compare fills the newer parts itself: samples, ULPs and the curve of the metric log
    assert any(o.samples for o in real.outputs) and any(o.max_ulps for o in real.outputs)
    assert "out/log.jsonl" in {curve.path for curve in real.curves}
    for comparison in (real, sample_comparison(), Comparison("identical", ())):
        assert _schema_errors(json.loads(comparison_json(comparison))) == []


def test_non_finite_floats_match_the_schema_as_strings() -> None:
    output = OutputComparison("w.npy", "different", "npy", "nan in the replay", math.inf,
                              math.nan, "[0]", 1, 1)
    curve = CurveComparison("log.jsonl", "loss", (0.0, 1.0), (1.0, 0.5), (1.0, math.nan),
                            parted_at=1.0, end_gap=math.nan)
    document = json.loads(comparison_json(Comparison("different", (output,), curves=(curve,))))
    assert document["outputs"][0]["max_abs_diff"] == "inf"
    assert _schema_errors(document) == []


def test_the_schema_rejects_what_reprobox_never_writes() -> None:
    good = json.loads(comparison_json(sample_comparison()))
    broken = [
        {**good, "verdict": "close"},
        {**good, "surprise": 1},
        {key: value for key, value in good.items() if key != "curves"},
        {**good, "outputs": [{**good["outputs"][0], "max_ulps": -1}]},
        {**good, "outputs": [{**good["outputs"][2], "samples": [["[17]", "0.1"]]}]},
        {**good, "curves": [{**good["curves"][0], "parted_at": "soon"}]},
        {**good, "environment": [{**good["environment"][0], "weight": 7}]},
    ]
    for document in broken:
        assert _schema_errors(document), document


def test_the_schema_names_every_field_of_the_result() -> None:
    defs = SCHEMA["$defs"]
    for record, name in ((OutputComparison, "output"), (CurveComparison, "curve"),
                         (EnvironmentDifference, "environment_difference")):
        fields = {f.name for f in dataclasses.fields(record)}
        assert set(defs[name]["properties"]) == fields == set(defs[name]["required"]), name
    assert set(SCHEMA["required"]) == set(Comparison("identical", ()).to_dict())


# --- sweep_table ---------------------------------------------------------------------------------

LOSSES = {3: 0.0107, 11: 0.00947, 12: 0.0101, 13: 0.0105}  # a real 4-seed sweep's final losses
LONG_PATH = "experiments/2024-06-resnet50-imagenet/outputs/eval/metrics.json"  # 63 characters


def _sweep_text(original: dict[str, float], per_seed: dict[int, dict[str, float]],
                failed: dict[int, str] | None = None, width: int = 80,
                styles: bool = False) -> list[str]:
    from reprobox.report import sweep_table
    from reprobox.sweep import summarize

    console = Console(record=True, width=width, file=io.StringIO())
    console.print(sweep_table(summarize(original, per_seed, failed)))
    return console.export_text(styles=styles).splitlines()


def _row(lines: list[str], metric: str) -> str:
    """The one line of `metric`'s row."""
    (row,) = [line for line in lines if line.startswith(f"  {metric} ")]
    return row


def _judgement(lines: list[str], metric: str) -> str:
    """The judgement cell of `metric`'s row: from the "vs original" header to the line's end."""
    return _row(lines, metric)[lines[1].index("vs original"):].strip()


def _assert_one_line_each(lines: list[str], blocks: dict[str, list[str]],
                          notes: tuple[str, ...] = (), width: int = 80) -> None:
    """Title, header, then per output its whole path on one line and one line per metric, then
    the notes (wrapped at spaces)."""
    expected = ["title", "header"]
    for output, metrics in blocks.items():
        expected += [output, *(f"  {metric} " for metric in metrics)]
    for line, start in zip(lines[2:len(expected)], expected[2:], strict=True):
        assert line.rstrip() == start if start in blocks else line.startswith(start), line
    assert " ".join(line.strip() for line in lines[len(expected):]) == " ".join(notes)
    assert all(len(line) <= width for line in lines)


def test_sweep_table_shows_each_metric_beside_the_seeds_in_80_columns() -> None:
    per_seed = {seed: {"out/metrics.json:final_loss": float(seed),
                       "out/metrics.json:epochs": 5.0,
                       "out/loss.csv:loss": 0.01 * seed} for seed in (1, 2, 3)}
    lines = _sweep_text({"out/metrics.json:final_loss": 2.5, "out/metrics.json:epochs": 5.0,
                         "out/loss.csv:loss": 0.1}, per_seed, {4: "exit code 1"})
    # grouped by output, the constant metric after the one that moved with the seed
    _assert_one_line_each(lines, {"out/metrics.json": ["final_loss", "epochs"],
                                  "out/loss.csv": ["loss"]},
                          notes=("seed 4 not counted: exit code 1",))
    assert lines[0].startswith("seed sweep over 3 seeds (1, 2, 3)")
    assert lines[1].split() == ["metric", "original", "mean", "±", "std", "range", "n", "vs",
                                "original"]
    assert _row(lines, "final_loss").split()[1:6] == ["2.5", "2", "±", "1", "1–3"]
    assert _judgement(lines, "final_loss") == "in range, 0.5σ"
    assert _row(lines, "loss").split()[1:6] == ["0.1", "0.02", "±", "0.01", "0.01–0.03"]
    assert _judgement(lines, "loss") == "OUTSIDE, 8.0σ"
    assert _row(lines, "epochs").split()[1:] == ["5", "5", "±", "0", "5", "3", "constant"]
    assert lines[-1] == "seed 4 not counted: exit code 1".ljust(len(lines[-1]))


def test_sweep_table_keeps_long_paths_and_names_on_one_line_at_80_columns() -> None:
    per_seed = {seed: {"out/loss.csv:loss": loss, "out/metrics.json:final_loss": loss,
                       "out/metrics.json:eval.accuracy": 0.91 + 0.001 * (seed % 4),
                       "out/metrics.json:epochs": 5.0,
                       f"{LONG_PATH}:validation_top5_acc": 0.95 + 0.002 * (seed % 3)}
                for seed, loss in LOSSES.items()}
    original = {"out/loss.csv:loss": 0.0107, "out/metrics.json:final_loss": 0.0107,
                "out/metrics.json:eval.accuracy": 0.93, "out/metrics.json:epochs": 5.0,
                f"{LONG_PATH}:validation_top5_acc": 0.951}
    lines = _sweep_text(original, per_seed)
    _assert_one_line_each(lines, {"out/loss.csv": ["loss"],
                                  "out/metrics.json": ["final_loss", "eval.accuracy", "epochs"],
                                  LONG_PATH: ["validation_top5_acc"]})
    assert _row(lines, "loss").split()[1:6] == ["0.0107", "0.0102", "±", "0.000542",
                                                "0.00947–0.0107"]
    assert _judgement(lines, "loss") == _judgement(lines, "final_loss") == "in range, 0.9σ"
    assert _judgement(lines, "eval.accuracy") == "OUTSIDE, 12.2σ"
    assert _judgement(lines, "validation_top5_acc") == "in range, 0.3σ"
    # every output's rows share the columns: the judgements start in the same place
    starts = {line.index(judgement) for line in lines[2:]
              for judgement in ("in range", "OUTSIDE", "constant") if judgement in line}
    assert starts == {lines[1].index("vs original")}


def test_sweep_table_leaves_two_spaces_between_columns_where_they_fit() -> None:
    per_seed = {seed: {"out/loss.csv:loss": loss, "out/loss.csv:grad_norm": 1.0 + seed / 100}
                for seed, loss in LOSSES.items()}
    per_seed[11]["out/loss.csv:grad_norm"] = math.nan
    lines = _sweep_text({"out/loss.csv:loss": 0.0107, "out/loss.csv:grad_norm": 1.12}, per_seed,
                        width=120)
    _assert_one_line_each(lines, {"out/loss.csv": ["loss", "grad_norm"]}, width=120)
    assert "0.0107  0.0102 ± 0.000542  0.00947–0.0107  4  in range, 0.9σ" in _row(lines, "loss")
    # seeds 1.03, 1.12, 1.13 and a nan: (1.12 - 1.0933) / 0.0551 = 0.48 σ
    assert _judgement(lines, "grad_norm") == "1/4 nan/inf; in range, 0.5σ"


def test_sweep_table_dims_constant_metrics_and_marks_an_original_outside() -> None:
    per_seed = {seed: {"a.json:loss": 0.1 * seed, "a.json:epochs": 5.0} for seed in (1, 2, 3)}
    plain = _sweep_text({"a.json:loss": 0.5, "a.json:epochs": 5.0}, per_seed)
    styled = _sweep_text({"a.json:loss": 0.5, "a.json:epochs": 5.0}, per_seed, styles=True)
    epochs, loss = (styled[plain.index(_row(plain, name))] for name in ("epochs", "loss"))
    assert "\x1b[2m" in epochs and "\x1b[2m" not in loss  # dim
    assert "\x1b[33mOUTSIDE, 3.0σ" in loss  # yellow
    assert "\x1b[1ma.json" in styled[plain.index("a.json".ljust(len(plain[2])))]  # bold


def test_sweep_table_says_loudly_when_the_seed_changed_nothing() -> None:
    same = {"out/metrics.json:final_loss": 0.25}
    lines = _sweep_text(dict(same), {1: dict(same), 2: dict(same)})
    caption = " ".join(line.strip() for line in lines if "seed" in line and "±" not in line)
    assert "every seed gave exactly the same metrics" in caption
    assert "did not depend on the seed" in caption


def test_sweep_table_shows_missing_values_as_dashes() -> None:
    lines = _sweep_text({"a.json:x": 1.0}, {7: {"a.json:y": 2.0}})
    _assert_one_line_each(lines, {"a.json": ["x", "y"]}, notes=(
        "one seed: a replay from another seed, not a measure of noise (a standard deviation "
        "needs at least two)",))
    assert _row(lines, "x").split() == ["x", "1", "—", "—", "0", "in", "no", "seed"]
    assert _row(lines, "y").split() == ["y", "—", "2", "2", "1", "not", "in", "original"]
    assert lines[0].startswith("seed sweep over 1 seed (7)")
