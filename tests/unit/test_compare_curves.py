"""compare: metric curves from JSON, JSON lines and CSV/TSV logs that part at known steps."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from reprobox.compare import Comparison, CurveComparison, compare
from reprobox.compare.curves import CHART_POINTS
from reprobox.manifest import Output


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    expected, actual = tmp_path / "original", tmp_path / "replay"
    expected.mkdir()
    actual.mkdir()
    return expected, actual


def _compare(dirs: tuple[Path, Path], name: str, original: str, replay: str | None,
             **tolerance: float) -> Comparison:
    expected_dir, actual_dir = dirs
    (expected_dir / name).write_text(original, newline="")
    if replay is not None:
        (actual_dir / name).write_text(replay, newline="")
    data = original.encode()
    output = Output(name, hashlib.sha256(data).hexdigest(), len(data), **tolerance)  # type: ignore[arg-type]
    return compare(expected_dir, actual_dir, [output])


def _curves(dirs: tuple[Path, Path], name: str, original: str, replay: str | None,
            **tolerance: float) -> dict[str, CurveComparison]:
    comparison = _compare(dirs, name, original, replay, **tolerance)
    return {curve.metric: curve for curve in comparison.curves}


def _loss(step: int) -> float:
    return 2.0 * math.exp(-step / 80) + 0.1


def _jsonl(rows: list[dict[str, float]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def _training_log(steps: int, parts_at: int | None = None, drift: float = 1e-3,
                  stop_at: int | None = None) -> str:
    """loss and lr per step; from `parts_at` on the loss drifts by `drift` per step more."""
    rows = []
    for step in range(1, (stop_at or steps) + 1):
        off = drift * (step - parts_at + 1) if parts_at is not None and step >= parts_at else 0.0
        rows.append({"step": step, "loss": _loss(step) + off, "lr": 1e-3, "time": 1.7e9 + step})
    return _jsonl(rows)


# --- where curves part --------------------------------------------------------------------------


def test_jsonl_log_parts_at_the_known_step(dirs: tuple[Path, Path]) -> None:
    curves = _curves(dirs, "metrics.jsonl", _training_log(300), _training_log(300, parts_at=120),
                     rtol=1e-6)
    assert set(curves) == {"loss", "lr"}  # `time` is a timestamp, `step` the axis
    loss = curves["loss"]
    assert (loss.path, loss.parted_at) == ("metrics.jsonl", 120.0)
    assert loss.end_gap == pytest.approx(1e-3 * 181)
    assert loss.steps == tuple(float(s) for s in range(1, 301))
    assert loss.expected[0] == pytest.approx(_loss(1))
    assert (curves["lr"].parted_at, curves["lr"].end_gap) == (None, 0.0)


def test_differences_inside_the_tolerance_do_not_part(dirs: tuple[Path, Path]) -> None:
    curves = _curves(dirs, "metrics.jsonl", _training_log(50),
                     _training_log(50, parts_at=1, drift=1e-12), rtol=1e-6)
    assert curves["loss"].parted_at is None
    assert curves["loss"].end_gap == pytest.approx(50e-12)


def test_the_tolerance_decides_where_they_part(dirs: tuple[Path, Path]) -> None:
    # the drift grows by 1e-3 a step from step 10: beyond atol=0.0105 from step 20 on
    curves = _curves(dirs, "metrics.jsonl", _training_log(60),
                     _training_log(60, parts_at=10), rtol=0.0, atol=0.0105)
    assert curves["loss"].parted_at == 20.0


def test_a_replay_that_stopped_early_ends_at_its_last_step(dirs: tuple[Path, Path]) -> None:
    curves = _curves(dirs, "metrics.jsonl", _training_log(300),
                     _training_log(300, parts_at=100, stop_at=200))
    loss = curves["loss"]
    assert (loss.parted_at, loss.steps[-1]) == (100.0, 200.0)
    assert loss.end_gap == pytest.approx(1e-3 * 101)


def test_long_curves_are_thinned_for_charts_but_judged_on_every_point(
        dirs: tuple[Path, Path]) -> None:
    curves = _curves(dirs, "metrics.jsonl", _training_log(5000),
                     _training_log(5000, parts_at=1234, drift=1e-9), rtol=0.0, atol=0.0)
    loss = curves["loss"]
    assert len(loss.steps) <= CHART_POINTS
    assert len(loss.steps) == len(loss.expected) == len(loss.actual)
    assert loss.parted_at == 1234.0
    assert 1234.0 in loss.steps  # the chart shows where they part
    assert loss.steps[0] == 1.0 and loss.steps[-1] == 5000.0
    assert list(loss.steps) == sorted(loss.steps)
    assert loss.end_gap == pytest.approx(1e-9 * (5000 - 1234 + 1))


def test_nan_in_the_replay_parts_and_ends_infinitely_apart(dirs: tuple[Path, Path]) -> None:
    original = _jsonl([{"step": s, "loss": 1.0 / s} for s in range(1, 11)])
    replay = _jsonl([{"step": s, "loss": 1.0 / s if s < 7 else math.nan} for s in range(1, 11)])
    loss = _curves(dirs, "m.jsonl", original, replay)["loss"]
    assert (loss.parted_at, loss.end_gap) == (7.0, math.inf)
    assert math.isnan(loss.actual[-1])


def test_nan_on_both_sides_does_not_part(dirs: tuple[Path, Path]) -> None:
    log = _jsonl([{"step": s, "loss": math.nan if s > 3 else 1.0} for s in range(1, 6)])
    loss = _curves(dirs, "m.jsonl", log, log.replace('"step"', '"step" ') + "\n")["loss"]
    assert (loss.parted_at, loss.end_gap) == (None, 0.0)


@pytest.mark.parametrize("ulps, parted_at", [(None, 2.0), (1, None)])
def test_values_one_ulp_apart_part_only_without_a_ulp_tolerance(
        dirs: tuple[Path, Path], ulps: int | None, parted_at: float | None) -> None:
    values = [0.5, 0.1 + 0.2, 1.0 / 3]
    nudged = [values[0], float(np.nextafter(values[1], 1.0)), values[2]]
    tolerance = {} if ulps is None else {"ulps": ulps}
    original, replay = ([{"step": i + 1, "loss": v} for i, v in enumerate(side)]
                        for side in (values, nudged))
    loss = _curves(dirs, "m.jsonl", _jsonl(original), _jsonl(replay), rtol=0.0, atol=0.0,
                   **tolerance)["loss"]
    assert loss.parted_at == parted_at


# --- formats ------------------------------------------------------------------------------------


def _trainer_state(parts_at: int | None) -> str:
    """The shape of transformers' trainer_state.json: train and eval records, then a summary."""
    history: list[dict[str, float]] = []
    for step in range(10, 201, 10):
        off = 0.05 if parts_at is not None and step >= parts_at else 0.0
        history.append({"epoch": step / 100, "grad_norm": 1.5, "learning_rate": 5e-5 * (1 - step
                        / 200), "loss": _loss(step) + off, "step": step})
        if step % 50 == 0:
            history.append({"epoch": step / 100, "eval_loss": _loss(step) + 0.2 + off,
                            "eval_runtime": 1.3 + off, "eval_samples_per_second": 700.0,
                            "step": step})
    history.append({"epoch": 2.0, "step": 200, "total_flos": 1.2e12, "train_loss": 0.6,
                    "train_runtime": 63.2, "train_samples_per_second": 151.9})
    return json.dumps({"best_metric": None, "global_step": 200, "log_history": history}, indent=2)


def test_transformers_trainer_state_gives_train_and_eval_curves(dirs: tuple[Path, Path]) -> None:
    curves = _curves(dirs, "trainer_state.json", _trainer_state(None), _trainer_state(130),
                     rtol=1e-6)
    assert set(curves) == {"log_history.grad_norm", "log_history.learning_rate",
                           "log_history.loss", "log_history.eval_loss"}
    assert curves["log_history.loss"].parted_at == 130.0
    assert curves["log_history.eval_loss"].steps == (50.0, 100.0, 150.0, 200.0)
    assert curves["log_history.eval_loss"].parted_at == 150.0
    assert curves["log_history.learning_rate"].parted_at is None


def test_keras_history_dict_of_lists_uses_row_numbers(dirs: tuple[Path, Path]) -> None:
    original = {"loss": [0.9, 0.6, 0.4, 0.3], "accuracy": [0.5, 0.7, 0.8, 0.85],
                "val_loss": [1.0, 0.7, 0.5, 0.45]}
    replay = {**original, "val_loss": [1.0, 0.7, 0.52, 0.47]}
    curves = _curves(dirs, "history.json", json.dumps(original), json.dumps(replay), rtol=1e-6)
    assert set(curves) == {"loss", "accuracy", "val_loss"}
    assert curves["val_loss"].steps == (1.0, 2.0, 3.0, 4.0)
    assert curves["val_loss"].parted_at == 3.0
    assert curves["val_loss"].end_gap == pytest.approx(0.02)


def _lightning_csv(parts_at: int | None) -> str:
    """The shape of Lightning's CSVLogger metrics.csv: train and val rows, empty cells."""
    lines = ["epoch,step,train_loss,val_loss,val_acc"]
    for epoch in range(5):
        step = 50 * epoch + 49
        off = 0.01 if parts_at is not None and step >= parts_at else 0.0
        lines.append(f"{epoch},{step},{_loss(step) + off:.6f},,")
        lines.append(f"{epoch},{step},,{_loss(step) + 0.1:.6f},{0.6 + epoch / 20 - off:.4f}")
    return "\n".join(lines) + "\n"


def test_lightning_csv_log_parts_at_the_known_step(dirs: tuple[Path, Path]) -> None:
    curves = _curves(dirs, "metrics.csv", _lightning_csv(None), _lightning_csv(149), rtol=1e-6)
    assert set(curves) == {"train_loss", "val_loss", "val_acc"}
    assert curves["train_loss"].steps == (49.0, 99.0, 149.0, 199.0, 249.0)
    assert (curves["train_loss"].parted_at, curves["val_acc"].parted_at) == (149.0, 149.0)
    assert curves["val_loss"].parted_at is None
    assert curves["train_loss"].end_gap == pytest.approx(0.01, rel=1e-3)


def test_tsv_log(dirs: tuple[Path, Path]) -> None:
    original = "iter\tloss\n" + "".join(f"{i}\t{1 / i:.6f}\n" for i in range(1, 30))
    replay = original.replace(f"\t{1 / 17:.6f}", "\t0.1")
    loss = _curves(dirs, "log.tsv", original, replay, rtol=1e-6)["loss"]
    assert (loss.parted_at, loss.end_gap) == (17.0, 0.0)


def test_jsonl_nested_metrics_are_flattened(dirs: tuple[Path, Path]) -> None:
    original = _jsonl([{"global_step": s, "train": {"loss": 1.0 / s}} for s in range(1, 5)])
    replay = original.replace('"loss": 0.25', '"loss": 0.3')
    loss = _curves(dirs, "m.jsonl", original, replay, rtol=1e-6)["train.loss"]
    assert loss.parted_at == 4.0


def test_identical_logs_still_give_curves_that_never_part(dirs: tuple[Path, Path]) -> None:
    log = _training_log(20)
    curves = _curves(dirs, "metrics.jsonl", log, log)
    assert (curves["loss"].parted_at, curves["loss"].end_gap) == (None, 0.0)
    assert curves["loss"].expected == curves["loss"].actual


@pytest.mark.parametrize("name, content", [
    ("predictions.csv", "id,label,prob\n1,cat,0.9\n2,dog,0.8\n3,cat,0.7\n"),
    ("metrics.json", json.dumps({"loss": 0.25, "acc": 0.9})),
    ("weights.json", json.dumps({"w": [0.1, 0.2, 0.3]})),
    ("plain.csv", "1,2\n3,4\n"),
    ("notes.txt", "step 1 loss 0.5\nstep 2 loss 0.4\n"),
])
def test_files_that_are_not_metric_logs_give_no_curves(dirs: tuple[Path, Path], name: str,
                                                      content: str) -> None:
    assert _compare(dirs, name, content, content + "\n").curves == ()


def test_missing_or_unreadable_outputs_give_no_curves(dirs: tuple[Path, Path]) -> None:
    log = _training_log(10)
    assert _compare(dirs, "metrics.jsonl", log, None).curves == ()
    assert _compare(dirs, "m.json", json.dumps({"loss": [1, 2]}), "{not json").curves == ()


def test_curves_are_in_the_json_report(dirs: tuple[Path, Path]) -> None:
    original = _jsonl([{"step": s, "loss": 1.0 / s} for s in range(1, 4)])
    replay = _jsonl([{"step": s, "loss": 1.0 / s if s < 3 else math.inf} for s in range(1, 4)])
    report = json.loads(_compare(dirs, "m.jsonl", original, replay).to_json())
    (curve,) = report["curves"]
    assert (curve["metric"], curve["parted_at"], curve["end_gap"]) == ("loss", 3.0, "inf")
    assert curve["actual"][-1] == "inf" and curve["steps"] == [1.0, 2.0, 3.0]


def test_csv_written_by_the_csv_module_with_crlf(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)  # writes \r\n line endings
        writer.writerow(["step", "loss"])
        writer.writerows([[s, 1 / s] for s in range(1, 6)])
    original = path.read_bytes().decode()
    assert "\r\n" in original
    loss = _curves(dirs, "w.csv", original, original.replace("0.25", "0.3"))["loss"]
    assert loss.parted_at == 4.0
