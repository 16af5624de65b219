"""sweep: the seed list, a run's final metrics from real files, and their spread across seeds."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reprobox import sweep
from reprobox.errors import UsageError
from reprobox.manifest import Output
from reprobox.seeding import MAX_SEED
from reprobox.sweep import MAX_METRICS_PER_OUTPUT, MAX_SEEDS, metrics_of, parse_seeds, summarize

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "numpy-sgd" / "train.py"


# --- parse_seeds ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seeds"), [
    ("1,2,3", (1, 2, 3)),
    ("1-5", (1, 2, 3, 4, 5)),
    ("1,4-6", (1, 4, 5, 6)),
    (" 9 , 1 - 2 ", (9, 1, 2)),  # the order given, whitespace anywhere
    ("7", (7,)),  # one seed: a replay from another seed
    ("0", (0,)),
    (f"{MAX_SEED - 1}-{MAX_SEED}", (MAX_SEED - 1, MAX_SEED)),
    ("3-3", (3,)),
])
def test_parse_seeds_reads_lists_and_ranges(text: str, seeds: tuple[int, ...]) -> None:
    assert parse_seeds(text) == seeds


def test_parse_seeds_allows_exactly_the_maximum_count() -> None:
    assert parse_seeds(f"1-{MAX_SEEDS}") == tuple(range(1, MAX_SEEDS + 1))


@pytest.mark.parametrize(("text", "says"), [
    ("", "--seeds: the list is empty"),
    ("  ", "--seeds: the list is empty"),
    ("1,,2", "an empty item"),
    ("1,2,", "an empty item"),
    ("-3", "'-3' is negative"),
    ("1--3", "'1--3' is negative"),
    ("-3-1", "'-3-1' is negative"),
    ("1.5", "'1.5' is not a whole number"),
    ("seven", "'seven' is not a whole number"),
    ("1_000", "'1_000' is not a whole number"),
    ("\u0661", "is not a whole number"),  # an Arabic-Indic digit: int() takes it, we do not
    ("1-2-3", "'1-2-3' is not a whole number"),
    ("5-3", "the range '5-3' runs backwards"),
    ("1,2,1", "seed 1 is given twice"),
    ("1-3,2", "seed 2 is given twice"),
    (str(MAX_SEED + 1), f"'{MAX_SEED + 1}' goes above the largest seed"),
    ("0-5000000000", "goes above the largest seed"),
    (f"1-{MAX_SEEDS + 1}", f"asks for {MAX_SEEDS + 1} replays"),
    (f"0-{MAX_SEED}", f"asks for {MAX_SEED + 1} replays"),  # counted, never expanded
])
def test_parse_seeds_refuses_with_the_offending_part(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=None) as caught:
        parse_seeds(text)
    assert says in str(caught.value)
    assert caught.value.exit_code == 2 and caught.value.hint


# --- metrics_of -------------------------------------------------------------------------------


def _output(root: Path, path: str) -> Output:
    file = root / path
    data = file.read_bytes() if file.is_file() else b""
    return Output(path, hashlib.sha256(data).hexdigest(), len(data))


def _write(root: Path, path: str, text: str) -> Output:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text)
    return _output(root, path)


def test_metrics_of_the_numpy_sgd_example(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(EXAMPLE), "--epochs", "3"], cwd=tmp_path, check=True,
                   capture_output=True)
    outputs = [_output(tmp_path, f"out/{name}")
               for name in ("weights.npy", "metrics.json", "loss.csv")]
    metrics = metrics_of(tmp_path, outputs)
    assert list(metrics) == ["out/metrics.json:final_loss", "out/metrics.json:epochs",
                             "out/loss.csv:loss"]
    assert metrics["out/metrics.json:epochs"] == 3.0
    written = json.loads((tmp_path / "out/metrics.json").read_text())
    # the CSV's last row is the same final loss, written with repr: the same float
    assert metrics["out/loss.csv:loss"] == metrics["out/metrics.json:final_loss"] \
        == written["final_loss"]


def test_a_csv_log_gives_each_metric_columns_last_value(tmp_path: Path) -> None:
    log = _write(tmp_path, "loss.csv", "epoch,loss,acc,time\n0,2.0,0.1,1.7e9\n1,1.5,0.4,"
                                       "1.7e9\n2,0.75,0.5,1.7e9\n")
    assert metrics_of(tmp_path, [log]) == {"loss.csv:loss": 0.75, "loss.csv:acc": 0.5}


def test_a_tsv_without_a_step_column_counts_only_metric_names(tmp_path: Path) -> None:
    log = _write(tmp_path, "run.tsv", "id\tloss\theight\n1\t0.5\t3\n2\t0.25\t4\n")
    assert metrics_of(tmp_path, [log]) == {"run.tsv:loss": 0.25}


def test_a_json_lines_log_keeps_the_last_row_holding_each_metric(tmp_path: Path) -> None:
    rows = [{"step": 1, "loss": 2.0, "lr": 1e-3, "_runtime": 3.0},
            {"step": 1, "eval_loss": 2.5},
            {"step": 2, "loss": 1.0, "lr": 5e-4, "_runtime": 6.0},
            {"note": "done"}]
    log = _write(tmp_path, "logs/train.jsonl", "".join(json.dumps(r) + "\n" for r in rows)
                 + "not json\n")
    assert metrics_of(tmp_path, [log]) == {"logs/train.jsonl:loss": 1.0,
                                           "logs/train.jsonl:lr": 5e-4,
                                           "logs/train.jsonl:eval_loss": 2.5}


def test_a_json_record_gives_its_numeric_leaves_flattened(tmp_path: Path) -> None:
    record = {"final_loss": 0.012, "epochs": 5, "eval": {"acc": 0.9, "runtime": 12.0,
                                                         "per_class": {"cat": 0.8}},
              "converged": True, "name": "sgd", "history": [3, 2, 1], "none": None}
    out = _write(tmp_path, "metrics.json", json.dumps(record))
    assert metrics_of(tmp_path, [out]) == {
        "metrics.json:final_loss": 0.012, "metrics.json:epochs": 5.0,
        "metrics.json:eval.acc": 0.9, "metrics.json:eval.per_class.cat": 0.8}


def test_a_json_with_a_table_and_scalars_gives_both(tmp_path: Path) -> None:
    state = {"log_history": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}],
             "best_metric": 0.3}
    out = _write(tmp_path, "trainer_state.json", json.dumps(state))
    assert metrics_of(tmp_path, [out]) == {"trainer_state.json:log_history.loss": 1.5,
                                           "trainer_state.json:best_metric": 0.3}


def test_a_yaml_record_gives_its_numbers(tmp_path: Path) -> None:
    out = _write(tmp_path, "results.yaml", "loss: 1e-3\nacc: 0.5\nsplit: val\n"
                                           "nested:\n  f1: 0.7\n  when: 2026-11-27\n")
    assert metrics_of(tmp_path, [out]) == {"results.yaml:loss": 1e-3, "results.yaml:acc": 0.5,
                                           "results.yaml:nested.f1": 0.7}


def test_a_diverged_loss_is_kept_as_nan(tmp_path: Path) -> None:
    log = _write(tmp_path, "loss.csv", "step,loss\n1,2.0\n2,nan\n")
    out = _write(tmp_path, "m.json", '{"final_loss": NaN, "best": Infinity}')
    metrics = metrics_of(tmp_path, [log, out])
    assert math.isnan(metrics["loss.csv:loss"]) and math.isnan(metrics["m.json:final_loss"])
    assert metrics["m.json:best"] == math.inf


def test_files_without_metrics_are_skipped_silently(tmp_path: Path) -> None:
    np.save(tmp_path / "weights.npy", np.arange(10.0))
    (tmp_path / "garbage.json").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "latin1.csv").write_bytes(b"step,loss\n1,0.5\n\xff\xfe,1\n")
    _write(tmp_path, "list.yaml", "- 1\n- 2\n")
    _write(tmp_path, "two.yaml", "a: 1\n---\nb: 2\n")
    _write(tmp_path, "notes.txt", "loss 0.5\n")
    _write(tmp_path, "preds.csv", "id,label\n1,0\n2,1\n")  # a table, but no metric in it
    names = ["weights.npy", "garbage.json", "latin1.csv", "list.yaml", "two.yaml", "notes.txt",
             "preds.csv", "never-written.json"]
    assert metrics_of(tmp_path, [_output(tmp_path, name) for name in names]) == {}


def test_a_symlinked_output_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.json"
    outside.write_text('{"loss": 1.0}')
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "m.json").symlink_to(outside)
    assert metrics_of(tmp_path / "run", [_output(tmp_path / "run", "m.json")]) == {}


def test_files_over_the_size_limit_are_not_read(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    small = _write(tmp_path, "small.csv", "step,loss\n1,0.5\n")
    large = _write(tmp_path, "large.csv", "step,loss\n" + "".join(f"{i},0.5\n"
                                                                   for i in range(100)))
    monkeypatch.setattr(sweep, "MAX_FILE_BYTES", small.size)
    assert metrics_of(tmp_path, [small, large]) == {"small.csv:loss": 0.5}


def test_a_valid_log_over_64_mib_is_skipped_unread(tmp_path: Path) -> None:
    row = b'{"step": 1, "loss": 0.5}\n'
    (tmp_path / "huge.jsonl").write_bytes(row * (sweep.MAX_FILE_BYTES // len(row) + 1))
    assert metrics_of(tmp_path, [_output(tmp_path, "huge.jsonl")]) == {}


def test_an_alias_bomb_is_walked_within_bounds(tmp_path: Path) -> None:
    # 10 levels of 10 aliases each: 10**10 leaves if walked in full
    lines = ["l0: &l0 {" + ", ".join(f"m{i}: {i}.5" for i in range(10)) + "}"]
    lines += [f"l{n}: &l{n} {{" + ", ".join(f"k{i}: *l{n - 1}" for i in range(10)) + "}"
              for n in range(1, 11)]
    out = _write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n")
    metrics = metrics_of(tmp_path, [out])
    assert len(metrics) == MAX_METRICS_PER_OUTPUT
    assert list(metrics)[:2] == ["bomb.yaml:l0.m0", "bomb.yaml:l0.m1"]


def test_an_alias_bomb_without_numbers_ends(tmp_path: Path) -> None:
    # nothing to stop at: only the walk's own bound ends it before 10**10 leaves
    lines = ["l0: &l0 {" + ", ".join(f"m{i}: text" for i in range(10)) + "}"]
    lines += [f"l{n}: &l{n} {{" + ", ".join(f"k{i}: *l{n - 1}" for i in range(10)) + "}"
              for n in range(1, 11)]
    out = _write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n")
    assert metrics_of(tmp_path, [out]) == {}


def test_a_record_of_many_numbers_keeps_the_first(tmp_path: Path) -> None:
    record = {f"w{i:04d}": float(i) for i in range(1000)}
    out = _write(tmp_path, "config.json", json.dumps(record))
    metrics = metrics_of(tmp_path, [out])
    assert list(metrics) == [f"config.json:w{i:04d}" for i in range(MAX_METRICS_PER_OUTPUT)]


def test_the_original_and_a_replay_read_alike(tmp_path: Path) -> None:
    original, replay = tmp_path / "bundle" / "outputs", tmp_path / "replays" / "r1" / "outputs"
    out = _write(original, "out/metrics.json", '{"final_loss": 0.5}')
    (replay / "out").mkdir(parents=True)
    shutil.copy(original / "out/metrics.json", replay / "out/metrics.json")
    assert metrics_of(original, [out]) == metrics_of(replay, [out]) == {
        "out/metrics.json:final_loss": 0.5}


# --- summarize --------------------------------------------------------------------------------

LOSS = "out/loss.csv:loss"
EPOCHS = "out/metrics.json:epochs"


def test_mean_sample_std_and_range_by_hand() -> None:
    result = summarize({LOSS: 2.5}, {1: {LOSS: 1.0}, 2: {LOSS: 2.0}, 3: {LOSS: 3.0}})
    (loss,) = result.metrics
    assert (loss.name, loss.original, loss.n, loss.non_finite) == (LOSS, 2.5, 3, 0)
    assert (loss.mean, loss.std, loss.min, loss.max) == (2.0, 1.0, 1.0, 3.0)
    assert loss.values == ((1, 1.0), (2, 2.0), (3, 3.0))
    assert loss.judgement == "in range, 0.5σ"
    assert not loss.constant and result.seeds == (1, 2, 3) and result.notes == ()


def test_std_is_the_sample_one() -> None:
    values = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]  # mean 5, squares sum to 32
    (metric,) = summarize({}, {seed: {LOSS: v} for seed, v in enumerate(values)}).metrics
    assert metric.mean == 5.0
    assert metric.std == pytest.approx(math.sqrt(32 / 7), rel=1e-15)


def test_an_original_outside_the_range_is_said_in_sigmas() -> None:
    (loss,) = summarize({LOSS: 5.3}, {1: {LOSS: 1.0}, 2: {LOSS: 2.0}, 3: {LOSS: 3.0}}).metrics
    assert loss.judgement == "OUTSIDE, 3.3σ"
    (low,) = summarize({LOSS: 0.0}, {1: {LOSS: 1.0}, 2: {LOSS: 2.0}, 3: {LOSS: 3.0}}).metrics
    assert low.judgement == "OUTSIDE, 2.0σ"


def test_a_metric_constant_in_every_seed_and_the_original_is_flagged() -> None:
    per_seed = {seed: {LOSS: 0.1 * seed, EPOCHS: 5.0} for seed in (1, 2, 3)}
    result = summarize({LOSS: 0.15, EPOCHS: 5.0}, per_seed)
    epochs = result.metrics[1]
    assert epochs.constant and not result.metrics[0].constant
    assert (epochs.mean, epochs.std, epochs.min, epochs.max) == (5.0, 0.0, 5.0, 5.0)
    assert epochs.judgement == "constant"
    assert not result.seed_independent  # the loss moved with the seed


def test_seeds_that_agree_against_another_original_are_not_noise() -> None:
    (metric,) = summarize({EPOCHS: 10.0}, {1: {EPOCHS: 5.0}, 2: {EPOCHS: 5.0}}).metrics
    assert not metric.constant
    assert metric.judgement == "seeds agree, original differs"


def test_a_metric_in_some_seeds_only_counts_those() -> None:
    result = summarize({LOSS: 1.0}, {1: {LOSS: 1.0, "a:b": 3.0}, 2: {LOSS: 2.0},
                                     3: {LOSS: 3.0, "a:b": 5.0}})
    loss, extra = result.metrics
    assert (extra.name, extra.n, extra.mean, extra.original) == ("a:b", 2, 4.0, None)
    assert extra.judgement == "not in original"
    assert [seed for seed, _ in extra.values] == [1, 3]
    assert loss.n == 3


def test_a_metric_no_seed_produced() -> None:
    (metric,) = summarize({LOSS: 1.0}, {1: {}, 2: {}}).metrics
    assert (metric.n, metric.mean, metric.std, metric.min, metric.max) == (0, None, None, None,
                                                                           None)
    assert metric.judgement == "in no seed"


def test_one_seed_has_no_spread_and_says_so() -> None:
    result = summarize({LOSS: 1.0}, {7: {LOSS: 1.5}})
    (loss,) = result.metrics
    assert (loss.n, loss.mean, loss.std) == (1, 1.5, None)
    assert loss.judgement == "one seed only"
    assert any("one seed" in note for note in result.notes)
    assert not result.seed_independent


def test_one_seed_is_constant_only_beside_an_equal_original() -> None:
    (lone,) = summarize({}, {7: {EPOCHS: 5.0}}).metrics
    assert not lone.constant and lone.judgement == "not in original"
    (paired,) = summarize({EPOCHS: 5.0}, {7: {EPOCHS: 5.0}}).metrics
    assert paired.constant


def test_diverged_seeds_are_counted_apart_from_the_statistics() -> None:
    per_seed = {1: {LOSS: 1.0}, 2: {LOSS: math.nan}, 3: {LOSS: 3.0}, 4: {LOSS: math.inf}}
    (loss,) = summarize({LOSS: 2.0}, per_seed).metrics
    assert (loss.n, loss.non_finite, loss.mean, loss.min, loss.max) == (4, 2, 2.0, 1.0, 3.0)
    assert loss.std == pytest.approx(math.sqrt(2))
    assert loss.judgement == "2/4 nan/inf; in range, 0.0σ"
    (all_nan,) = summarize({LOSS: 2.0}, {1: {LOSS: math.nan}, 2: {LOSS: math.nan}}).metrics
    assert all_nan.judgement == "all nan/inf" and all_nan.mean is None
    (nan_original,) = summarize({LOSS: math.nan}, {1: {LOSS: 1.0}, 2: {LOSS: 2.0}}).metrics
    assert nan_original.judgement == "original is nan"


def test_finite_seeds_equal_to_the_original_beside_a_diverged_one_agree() -> None:
    (loss,) = summarize({LOSS: 2.0}, {1: {LOSS: 2.0}, 2: {LOSS: math.nan}, 3: {LOSS: 2.0}}).metrics
    assert not loss.constant and loss.std == 0.0
    assert loss.judgement == "1/3 nan/inf; rest agree"


def test_a_spread_past_the_float_range_is_judged_without_sigmas() -> None:
    per_seed = {1: {LOSS: 1.7e308}, 2: {LOSS: -1.7e308}}
    (inside,) = summarize({LOSS: 0.0}, per_seed).metrics
    assert inside.std == math.inf and inside.judgement == "in range, 0.0σ"
    (outside,) = summarize({LOSS: -1.79e308}, {1: {LOSS: 1.7e308}, 2: {LOSS: 1.6e308}}).metrics
    assert outside.judgement == "OUTSIDE"  # the distance to the mean overflows: no σ to give
    (minus_inf,) = summarize({LOSS: -math.inf}, per_seed).metrics
    assert minus_inf.judgement == "original is -inf"


def test_the_usual_judgements_fit_a_narrow_table_cell() -> None:
    cases = [({LOSS: 1.5}, {1: {LOSS: 1.0}, 2: {LOSS: 2.0}}),
             ({LOSS: 99.0}, {1: {LOSS: 1.0}, 2: {LOSS: 2.0}}),
             ({LOSS: 1.0}, {1: {LOSS: 1.0}, 2: {LOSS: 1.0}}),
             ({}, {1: {LOSS: 1.0}}), ({LOSS: 1.0}, {1: {}}), ({LOSS: 1.0}, {1: {LOSS: 2.0}}),
             ({LOSS: 1.0}, {1: {LOSS: math.nan}}), ({LOSS: math.nan}, {1: {LOSS: 1.0}})]
    judgements = [summarize(original, per_seed).metrics[0].judgement
                  for original, per_seed in cases]
    assert judgements == ["in range, 0.0σ", "OUTSIDE, 137.9σ", "constant", "not in original",
                          "in no seed", "one seed only", "all nan/inf", "original is nan"]
    assert max(map(len, judgements)) <= 16


def test_failed_seeds_are_left_out_and_named() -> None:
    per_seed = {1: {LOSS: 1.0}, 2: {LOSS: 2.0}, 3: {LOSS: 100.0}}
    result = summarize({LOSS: 1.5}, per_seed, failed={3: "exit code 1", 4: "timed out"})
    assert result.seeds == (1, 2)
    assert result.metrics[0].mean == 1.5 and result.metrics[0].n == 2
    assert result.failed == ((3, "exit code 1"), (4, "timed out"))
    assert result.notes == ("seed 3 not counted: exit code 1", "seed 4 not counted: timed out")


def test_a_sweep_whose_seeds_all_agree_measured_nothing() -> None:
    same = {LOSS: 0.25, EPOCHS: 5.0}
    result = summarize({LOSS: 0.25, EPOCHS: 5.0}, {seed: dict(same) for seed in (1, 2, 3)})
    assert result.seed_independent
    assert "did not depend on the seed" in result.notes[0]
    nan_alike = summarize({}, {1: {LOSS: math.nan}, 2: {LOSS: math.nan}})
    assert nan_alike.seed_independent
    moved = summarize({}, {1: dict(same), 2: {**same, LOSS: 0.26}})
    assert not moved.seed_independent
    fewer = summarize({}, {1: dict(same), 2: {LOSS: 0.25}})
    assert not fewer.seed_independent


def test_metrics_are_in_the_order_first_seen() -> None:
    result = summarize({"b:x": 1.0, "a:y": 1.0}, {1: {"c:z": 1.0, "a:y": 2.0}, 2: {"b:x": 1.0}})
    assert [m.name for m in result.metrics] == ["b:x", "a:y", "c:z"]


def test_nothing_to_summarize_is_said() -> None:
    assert summarize({}, {1: {}, 2: {}}).notes[0].startswith("no metrics found")
    assert summarize({LOSS: 1.0}, {}, failed={1: "exit code 1"}).notes[0].startswith(
        "no seed's replay finished")


def test_to_json_is_strict_json_with_nan_as_text() -> None:
    per_seed = {1: {LOSS: 1.0}, 2: {LOSS: math.nan}, 3: {LOSS: 3.0}}
    result = summarize({LOSS: math.inf}, per_seed, failed={4: "timed out"})
    data = json.loads(result.to_json())
    assert data == result.to_dict()
    (loss,) = data["metrics"]
    assert loss["original"] == "inf" and loss["values"] == {"1": 1.0, "2": "nan", "3": 3.0}
    assert (loss["mean"], loss["std"], loss["n"], loss["non_finite"]) == (2.0, math.sqrt(2), 3, 1)
    assert data["seeds"] == [1, 2, 3] and data["failed"] == [{"seed": 4, "why": "timed out"}]
    assert data["seed_independent"] is False and data["notes"] == ["seed 4 not counted: timed out"]


def test_the_originals_own_seed_is_said_and_kept_apart() -> None:
    per_seed = {1: {LOSS: 1.0}, 2: {LOSS: 2.0}}
    result = summarize({LOSS: 1.5}, per_seed, failed={3: "timed out"},
                       own_seed=(1234, "within_tolerance"))
    assert result.own_seed == (1234, "within_tolerance") and result.seeds == (1, 2)
    assert result.notes == (
        "seed 1234 is the original's own: its replay was within_tolerance, and it is left out "
        "of the spread (it would pull the mean to the original)",
        "seed 3 not counted: timed out")
    data = json.loads(result.to_json())
    assert data["own_seed"] == {"seed": 1234, "verdict": "within_tolerance"}
    assert summarize({LOSS: 1.5}, per_seed).to_dict()["own_seed"] is None


def test_the_own_seed_alone_is_not_nothing_to_summarize() -> None:
    alone = summarize({LOSS: 1.0}, {}, own_seed=(1234, "identical"))
    assert alone.notes == ("seed 1234 is the original's own: its replay was identical, and it "
                           "is left out of the spread (it would pull the mean to the original)",)
    assert summarize({LOSS: 1.0}, {}).notes == (
        "no seed's replay finished: there is nothing to summarize",)
