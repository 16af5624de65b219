"""html_report: the self-contained page, its SVG charts, escaping, the atomic write, `--html`."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from reprobox import manifest as manifest_io
from reprobox.cli import main
from reprobox.compare import Comparison, CurveComparison, OutputComparison
from reprobox.errors import ReproboxError
from reprobox.fileio import sha256_file
from reprobox.html_report import comparison_html, curve_chart, verdict_counts, write_html
from reprobox.manifest import Manifest, Output
from reprobox.replay import ReplayResult
from tests.report_samples import (
    PARTED_AT,
    SVG_NAMESPACE,
    Page,
    loss_curve,
    sample_comparison,
)


def _points(points: str | None) -> list[tuple[float, float]]:
    assert points is not None
    return [(float(x), float(y)) for x, y in (pair.split(",") for pair in points.split())]


def test_the_page_shows_verdict_outputs_samples_curves_environment_and_notes() -> None:
    page = Page(comparison_html(sample_comparison(), "run r1, replay p1"))
    text = page.text
    assert text.startswith("NOT REPRODUCED different: 2 of 4 outputs, 1 missing; 1 extra file "
                           "run r1, replay p1 Outputs 5 outputs: 1 identical, 1 within "
                           "tolerance, 1 different, 1 missing, 1 extra")
    for path in ("out/config.json", "ckpt/model.pt", "out/predictions.npy",
                 "out/weights.safetensors", "debug.log"):
        assert path in text, path
    for shown in ("812 of 10,000", "0.0312", "0.0844", "2.83e+06", "3 of 1,048,576",
                  "5.96e-08", "fc.weight[3, 7]", "… and 2 more",
                  "loss from logs/metrics.jsonl: parted at step 120; they end 0.158 apart",
                  "accuracy from logs/eval.csv: the curves never part",
                  "Python 3.11.7 in the original, 3.11.9 in the replay"):
        assert shown in text, shown
    assert text.index("torch") < text.index("GPU model") < text.index("OMP_NUM_THREADS") \
        < text.index("hostname")
    assert text.endswith("This page loads nothing from the network and runs no script.")


def test_samples_mark_the_digits_that_differ() -> None:
    html = comparison_html(sample_comparison())
    assert '<td class="mono">0.7<mark>421875</mark></td><td class="mono">0.7<mark>265625</mark>' \
        in html
    assert '<td class="mono">0.5<mark>0000006</mark></td><td class="mono">0.5</td>' in html


def test_everything_from_files_is_escaped() -> None:
    hostile = OutputComparison('<img src=x onerror="alert(1)">.npy', "different", "npy",
                               "first at <b>w</b> & more", where="<i>w</i>",
                               samples=(("<script>", "</td>1", "&amp;"),))
    curve = CurveComparison("<svg onload=x>", "</text><script>", (0.0, 1.0), (1.0, 2.0),
                            (1.0, 3.0), parted_at=1.0)
    html = comparison_html(Comparison("different", (hostile,), notes=("<!-- note -->",),
                                      curves=(curve,)), subject="<b>run</b>")
    for raw in ("<img", "<script", "<svg onload", "<b>", "<i>", "<!-- note", "</td>1"):
        assert raw not in html, raw
    for escaped in ("&lt;img src=x onerror=&#34;alert(1)&#34;&gt;.npy", "first at &lt;b&gt;w"
                    "&lt;/b&gt; &amp; more", "&amp;amp;", "&lt;script&gt;", "&lt;b&gt;run"):
        assert escaped in html, escaped


def test_the_page_fetches_nothing_and_runs_nothing() -> None:
    html = comparison_html(sample_comparison())
    urls = set(re.findall(r"[a-z]+://[^\s\"'<>)]*", html))
    assert urls == {SVG_NAMESPACE}
    for tag in ("<script", "<link", "<img", "<iframe", "<object", "<embed", "@import", "url(",
                "src=", "href="):
        assert tag not in html, tag
    page = Page(html)
    policy = page.all("meta", http_equiv="Content-Security-Policy")[0]["content"]
    assert policy is not None and policy.startswith("default-src 'none';")


def test_each_curve_is_an_svg_with_original_over_replay_and_the_parted_step_marked() -> None:
    page = Page(comparison_html(sample_comparison()))
    assert len(page.all("svg")) == 2
    original, replay = page.all("polyline", class_="original"), page.all("polyline",
                                                                          class_="replay")
    assert len(original) == len(replay) == 2
    # replay first, so the thin original line is drawn over the thick replay line
    order = [a.get("class") for t, a in page.elements if t == "polyline"]
    assert order == ["replay", "original", "replay", "original"]
    marker = page.all("line", class_="parted")
    assert len(marker) == 1
    chart = curve_chart(loss_curve())
    expected_x = chart.left + PARTED_AT / 199 * (chart.right - chart.left)
    assert float(marker[0]["x1"] or "nan") == pytest.approx(expected_x, abs=0.05)
    assert "parted at step 120" in page.text


def test_the_lines_agree_before_the_parted_step_and_split_after_it() -> None:
    chart = curve_chart(loss_curve())
    (original,), (replay,) = chart.original, chart.replay
    first, second = _points(original), _points(replay)
    assert len(first) == len(second) == 200
    assert first[:PARTED_AT] == second[:PARTED_AT]
    assert first[-1][1] > second[-1][1] + 10  # the replay ends higher: a smaller y in pixels
    for x, y in first + second:
        assert chart.left <= x <= chart.right and chart.top <= y <= chart.bottom


def test_a_nan_breaks_the_line_and_is_counted() -> None:
    steps = tuple(float(s) for s in range(10))
    actual = (1.0, 0.9, 0.8, math.nan, math.inf, 0.5, 0.4, 0.3, 0.2, 0.1)
    curve = CurveComparison("log.jsonl", "loss", steps, tuple(1 - s / 10 for s in range(10)),
                            actual, parted_at=3.0)
    chart = curve_chart(curve)
    assert len(chart.original) == 1 and len(chart.replay) == 2
    assert [len(_points(p)) for p in chart.replay] == [3, 5]
    assert chart.not_drawn == 2
    assert "2 values not drawn: not finite" in Page(comparison_html(
        Comparison("different", (), curves=(curve,)))).text


def test_a_loss_spanning_decades_gets_a_log_axis_with_decade_ticks() -> None:
    steps = tuple(float(s) for s in range(0, 1000, 10))
    values = tuple(10 * 0.93 ** (s / 10) for s in steps)
    chart = curve_chart(CurveComparison("log.csv", "loss", steps, values, values))
    assert chart.log_y
    assert values[-1] == pytest.approx(0.0076, abs=1e-4)
    assert [label for _, label in chart.y_ticks] == ["0.001", "0.01", "0.1", "1", "10"]
    assert [label for _, label in chart.x_ticks] == ["0", "200", "400", "600", "800"]
    assert chart.parted_x is None


def test_long_curves_are_thinned_but_keep_their_spikes() -> None:
    steps = tuple(float(s) for s in range(100_000))
    values = [0.5] * 100_000
    values[71_234] = 9.0  # one spike, as a loss has when a batch goes bad
    chart = curve_chart(CurveComparison("log.csv", "loss", steps, tuple(values), tuple(values)))
    points = _points(chart.original[0])
    assert len(points) <= 1000
    assert min(y for _, y in points) == pytest.approx(chart.top + 0.05 * (chart.bottom
                                                                          - chart.top) / 1.1,
                                                      abs=0.1)


def test_flat_and_single_point_curves_draw_without_dividing_by_zero() -> None:
    flat = curve_chart(CurveComparison("m.csv", "acc", (0.0, 1.0), (0.5, 0.5), (0.5, 0.5)))
    assert [label for _, label in flat.y_ticks][0] == "0.45"
    lone = curve_chart(CurveComparison("m.csv", "acc", (7.0,), (0.5,), (0.5,)))
    assert _points(lone.original[0]) == [_points(lone.original[0])[0]] * 2  # a dot
    empty = curve_chart(CurveComparison("m.csv", "acc", (), (), ()))
    assert empty.original == () and empty.replay == ()


def test_a_reproduced_run_shows_a_green_banner_and_no_empty_sections() -> None:
    same = OutputComparison("out/w.npy", "identical", "npy", "sha256 matches the record")
    html = comparison_html(Comparison("identical", (same,)))
    page = Page(html)
    assert page.all("header", class_="reproduced")
    assert page.text.startswith("REPRODUCED identical Outputs 1 output: 1 identical")
    for absent in ("max |Δ|", "Metric curves", "Environment differences", "Notes", "<svg"):
        assert absent not in html, absent


def test_verdict_counts() -> None:
    assert verdict_counts(()) == "0 outputs"
    assert verdict_counts(sample_comparison().outputs[:1]) == "1 output: 1 identical"


def test_write_html_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "comparison.html"
    write_html(target, Comparison("identical", ()))
    write_html(target, sample_comparison(), "run r1")
    assert target.read_text(encoding="utf-8") == comparison_html(sample_comparison(), "run r1")
    assert sorted(p.name for p in target.parent.iterdir()) == ["comparison.html"]


def test_write_html_to_a_folder_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(ReproboxError) as caught:
        write_html(tmp_path / "taken", sample_comparison())
    assert str(caught.value).startswith(f"{tmp_path / 'taken'}: cannot write the HTML report")
    assert caught.value.hint and "--html" in caught.value.hint
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


# --- `reprobox compare --html FILE` on a bundle laid out on disk ---------------------------------


@pytest.fixture
def project(tmp_path: Path, sample_manifest: Manifest, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One captured run with out/weights.npy, and one replay that wrote other weights."""
    monkeypatch.chdir(tmp_path)
    bundle = tmp_path / ".reprobox" / "runs" / "20261127T200000Z-aaaaaa"
    replay = bundle / "replays" / "20261127T210000Z-bbbbbb"
    for folder, weights in ((bundle, [0.0, 1.0, 2.0, 3.0]), (replay, [0.0, 1.0, 2.5, 3.0])):
        (folder / "outputs" / "out").mkdir(parents=True)
        np.save(folder / "outputs" / "out" / "weights.npy", np.array(weights))
    saved = bundle / "outputs" / "out" / "weights.npy"
    output = Output("out/weights.npy", sha256_file(saved), saved.stat().st_size)
    manifest_io.write(replace(sample_manifest, outputs=(output,)), bundle / "manifest.yaml")
    result = ReplayResult("20261127T210000Z-bbbbbb", "img", 0, False, 1.0, "now", {})
    (replay / "replay.json").write_text(result.to_json())
    return tmp_path


def test_compare_html_writes_the_report_and_keeps_json_on_stdout(project: Path, capsys) -> None:
    assert main(["compare", "--json", "--html", "report.html"]) == 3
    captured = capsys.readouterr()
    assert captured.out.lstrip().startswith("{")  # only the JSON on stdout
    assert "HTML report -> report.html" in captured.err
    text = Page((project / "report.html").read_text(encoding="utf-8")).text
    assert text.startswith("NOT REPRODUCED different: 1 of 1 output run 20261127T200000Z-aaaaaa, "
                           "replay 20261127T210000Z-bbbbbb")
    assert "out/weights.npy" in text


def test_compare_html_to_a_folder_fails_after_the_verdict(project: Path, capsys) -> None:
    (project / "taken").mkdir()
    assert main(["compare", "--html", "taken"]) == 1
    captured = capsys.readouterr()
    assert "NOT REPRODUCED" in captured.out
    assert "cannot write the HTML report" in captured.err and "hint:" in captured.err


def test_run_takes_html_too() -> None:
    with pytest.raises(SystemExit):
        main(["run", "--html"])  # FILE is required: argparse says so and exits 2


def test_two_runs_that_are_not_an_original_and_its_replay_are_named_as_such() -> None:
    page = comparison_html(sample_comparison(), "A vs B", ("A (replay x1)", "B (replay x2)"))
    assert "<th>A (replay x1)</th><th>B (replay x2)</th>" in page
    assert "<th>original</th>" not in page
