"""compare: YAML, JSON lines, masked text logs and per-output tolerances, on real files."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from reprobox import manifest as manifest_io
from reprobox.cli import main
from reprobox.compare import OutputComparison, compare
from reprobox.compare.masks import describe, mask, volatile_kind
from reprobox.compare.tolerances import Tolerance, apply, parse_option, read_settings
from reprobox.errors import BundleError, UsageError
from reprobox.fileio import sha256_file
from reprobox.manifest import Manifest, Output
from reprobox.replay import ReplayResult


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    expected, actual = tmp_path / "original", tmp_path / "replay"
    expected.mkdir()
    actual.mkdir()
    return expected, actual


def _one(dirs: tuple[Path, Path], name: str, original: str, replay: str,
         **tolerance: float) -> OutputComparison:
    """Write both copies of one output as text, compare them, return the single result."""
    expected_dir, actual_dir = dirs
    (expected_dir / name).write_text(original)
    (actual_dir / name).write_text(replay)
    data = original.encode()
    output = Output(name, hashlib.sha256(data).hexdigest(), len(data), **tolerance)  # type: ignore[arg-type]
    comparison = compare(expected_dir, actual_dir, [output])
    assert len(comparison.outputs) == 1
    return comparison.outputs[0]


# --- YAML ---------------------------------------------------------------------------------------

CONFIG = """\
model:
  layers: 4
  dropout: 0.1
optimizer: {name: adam, lr: 1.0e-3}
history: [1.0, 0.5, 0.25]
"""
REORDERED = """\
history:
  - 1.0
  - 0.50
  - 0.25
optimizer:
  lr: 0.001
  name: adam
model: {dropout: 0.1, layers: 4}
"""


def test_yaml_with_other_formatting_and_key_order_is_equivalent(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "config.yaml", CONFIG, REORDERED)
    assert (result.verdict, result.kind, result.n_total) == ("equivalent", "yaml", 7)


def test_yaml_number_outside_tolerance_names_its_path(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "config.yml", CONFIG, CONFIG.replace("0.25", "0.3"), rtol=1e-6)
    assert (result.verdict, result.where) == ("different", "$.history[2]")
    assert result.max_abs_diff == pytest.approx(0.05)


def test_yaml_number_within_tolerance(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "config.yaml", CONFIG, CONFIG.replace("0.1\n", "0.1000001\n"), rtol=1e-5)
    assert (result.verdict, result.where) == ("within_tolerance", "$.model.dropout")


def test_yaml_1_1_exponent_strings_compare_as_numbers(dirs: tuple[Path, Path]) -> None:
    # YAML 1.1 reads `1e-3` (no dot) as a string; it is still the number 0.001
    result = _one(dirs, "c.yaml", "lr: 1e-3\n", "lr: 1.0e-3\n")
    assert result.verdict == "equivalent"


def test_yaml_text_change_is_different(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "config.yaml", CONFIG, CONFIG.replace("adam", "sgd"), rtol=1.0)
    assert (result.verdict, result.where) == ("different", "$.optimizer.name")


def test_yaml_timestamps_are_masked(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "run.yaml", "started: 2026-11-27 22:01:57\nloss: 0.5\n",
                  "started: 2026-11-28 09:14:03\nloss: 0.5\n")
    assert result.verdict == "equivalent"
    assert result.detail.endswith("masked 1 timestamp")


def test_yaml_unsafe_tag_falls_back_to_bytes(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "c.yaml", "a: 1\n", "a: !!python/object/apply:os.system ['true']\n")
    assert (result.verdict, result.kind) == ("different", "bytes")
    assert "not valid YAML" in result.detail


def test_yaml_alias_bomb_is_refused_not_walked(dirs: tuple[Path, Path]) -> None:
    levels = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = "\n".join(levels) + "\n"
    result = _one(dirs, "c.yaml", bomb, bomb.replace("[1, 1,", "[2, 1,"))
    assert (result.verdict, result.kind) == ("different", "bytes")
    assert "too many values" in result.detail


def test_yaml_documents_are_compared_in_order(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "c.yaml", "a: 1\n---\nb: 2\n", "a: 1\n---\nb: 3\n")
    assert (result.verdict, result.where) == ("different", "document 2: $.b")


# --- JSON lines ---------------------------------------------------------------------------------

LOG = "".join(json.dumps({"step": i, "loss": 1.0 / i, "acc": 0.5 + i / 100}) + "\n"
              for i in range(1, 21))


def test_jsonl_reformatted_records_are_equivalent(dirs: tuple[Path, Path]) -> None:
    reformatted = "".join(json.dumps(json.loads(line), indent=None, separators=(", ", " : "),
                                     sort_keys=True) + "\n" for line in LOG.splitlines())
    result = _one(dirs, "metrics.jsonl", LOG, reformatted)
    assert (result.verdict, result.kind, result.n_total) == ("equivalent", "jsonl", 60)
    assert result.detail.startswith("20 records: ")


def test_jsonl_changed_value_names_line_and_path(dirs: tuple[Path, Path]) -> None:
    lines = LOG.splitlines()
    lines[11] = json.dumps({"step": 12, "loss": 0.09, "acc": 0.62})
    result = _one(dirs, "metrics.ndjson", LOG, "\n".join(lines) + "\n", rtol=1e-6)
    assert (result.verdict, result.kind, result.where) == ("different", "jsonl", "line 12: $.loss")
    assert result.n_different == 1


def test_jsonl_within_tolerance(dirs: tuple[Path, Path]) -> None:
    changed = LOG.replace('"loss": 0.5,', '"loss": 0.50000001,')
    result = _one(dirs, "metrics.jsonl", LOG, changed, rtol=1e-6)
    assert (result.verdict, result.where) == ("within_tolerance", "line 2: $.loss")


def test_jsonl_time_fields_are_masked(dirs: tuple[Path, Path]) -> None:
    original = '{"step": 1, "loss": 0.5, "time": 1732712345.1, "_runtime": 3.2}\n'
    replay = '{"step": 1, "loss": 0.5, "time": 1732799999.7, "_runtime": 4.9}\n'
    result = _one(dirs, "m.jsonl", original, replay)
    assert result.verdict == "equivalent"
    assert "masked 1 timestamp, 1 duration" in result.detail


def test_jsonl_a_cut_last_line_is_compared_as_text(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "m.jsonl", LOG, LOG + '{"step": 21, "lo')
    assert (result.verdict, result.where) == ("different", "line 21")


def test_jsonl_missing_record_is_different(dirs: tuple[Path, Path]) -> None:
    shorter = "".join(LOG.splitlines(keepends=True)[:-1])
    result = _one(dirs, "m.jsonl", LOG, shorter)
    assert (result.verdict, result.where) == ("different", "line 20")


# --- TSV metric logs ----------------------------------------------------------------------------

TSV = "step\tloss\twall_time\n1\t0.5\t12.5\n2\t0.25\t25.1\n"


def test_tsv_log_compares_cells_with_tolerance(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "log.tsv", TSV, TSV.replace("0.25", "0.2500001"), rtol=1e-5)
    assert (result.verdict, result.where) == ("within_tolerance", 'row 3, col "loss"')


def test_tsv_time_column_is_masked(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "log.tsv", TSV, TSV.replace("12.5", "13.9").replace("25.1", "27.0"))
    assert result.verdict == "equivalent"
    assert result.detail.endswith("masked 2 durations")


def test_csv_timestamp_cells_are_masked(dirs: tuple[Path, Path]) -> None:
    original = "when,loss\n2026-11-27T22:01:57Z,0.5\n"
    result = _one(dirs, "log.csv", original, original.replace("22:01:57", "23:40:02"))
    assert result.verdict == "equivalent"


# --- text logs with masks -----------------------------------------------------------------------

ORIGINAL_LOG = """\
2026-11-27 22:01:57,123 INFO worker[4121]: starting on host=gpu-07 pid 4121
Fri Nov 27 22:01:57 2026 data at /home/alice/proj/data/train.bin
epoch 1 loss 0.500000 took 1.23s (12.3it/s)
epoch 2 loss 0.250000 took 1.19s, elapsed 0:00:02.42
model <Net object at 0x7f3a2b1c9d00> saved to /home/alice/proj/out/model.pt
done in 65.09s
"""
REPLAY_LOG = """\
2026-11-28 09:14:03,871 INFO worker[17]: starting on host=3f2a9b1c4d5e pid 17
Sat Nov 28 09:14:03 2026 data at /app/data/train.bin
epoch 1 loss 0.500000 took 2.01s (7.9it/s)
epoch 2 loss 0.250000 took 1.87s, elapsed 0:00:03.88
model <Net object at 0x7f0011223344> saved to /app/out/model.pt
done in 71.5s
"""


def test_text_log_differing_only_in_masked_spans_is_equivalent(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "train.log", ORIGINAL_LOG, REPLAY_LOG)
    assert (result.verdict, result.kind) == ("equivalent", "text")
    assert result.detail.endswith("masked 2 timestamps, 4 durations, 1 rate, 2 PIDs, "
                                  "1 hostname, 2 paths, 1 address")


def test_masks_do_not_hide_a_changed_number(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "train.log", ORIGINAL_LOG, REPLAY_LOG.replace("0.250000", "0.26"))
    assert (result.verdict, result.where) == ("different", "line 4")
    assert result.max_abs_diff == pytest.approx(0.01)


def test_masks_keep_numbers_in_lines_tolerance(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "train.log", "12:03:04.123 loss 0.25\n", "12:03:09.002 loss 0.2500001\n",
                  rtol=1e-5)
    assert (result.verdict, result.where) == ("within_tolerance", "line 1")
    assert result.detail.endswith("masked 1 timestamp")


def test_masks_keep_the_file_name_of_a_path(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "run.log", "saved /home/a/p/out/model_3.pt\n",
                  "saved /app/out/model_4.pt\n")
    assert (result.verdict, result.where) == ("different", "line 1")


def test_unknown_binary_format_still_falls_back_to_bytes(dirs: tuple[Path, Path]) -> None:
    expected_dir, actual_dir = dirs
    (expected_dir / "blob.bin").write_bytes(b"\x00\x01 2026-11-27 22:01:57")
    (actual_dir / "blob.bin").write_bytes(b"\x00\x01 2026-11-28 22:01:57")
    data = (expected_dir / "blob.bin").read_bytes()
    output = Output("blob.bin", hashlib.sha256(data).hexdigest(), len(data))
    result = compare(expected_dir, actual_dir, [output]).outputs[0]
    assert (result.verdict, result.kind, result.where) == ("different", "bytes", "byte 12")


@pytest.mark.parametrize("line, masked", [
    ("2026-11-27T22:01:57.123+00:00 start", "<time> start"),
    ("Fri Nov 27 22:01:57 2026 begin", "<time> begin"),
    ("at 12:03:04.123 go", "at <time> go"),
    ("elapsed 0:01:05", "elapsed <duration>"),
    ("done in 65.09s", "done in <duration>"),
    ("pid 1234 up", "pid <pid> up"),
    ("[12345] [INFO] up", "[<pid>] [INFO] up"),
    ("saved /tmp/tmpab12cd", "saved <path>"),
    ("hostname: node-3.cluster ok", "hostname: <host> ok"),
    ("x at 0x7f3a2b1c9d00", "x at <addr>"),
])
def test_each_mask(line: str, masked: str) -> None:
    assert mask(line)[0] == masked


@pytest.mark.parametrize("line", [
    "torch.Size([128]) shape [128]", "epoch 3 steps 10 loss 0.25", "lr 1e-3 step 5",
    "process 3 of 8, node=0", "w[3]: 0.5", "/application/x", "flag 0x10",
])
def test_masks_leave_what_may_matter(line: str) -> None:
    assert mask(line) == (line, {})


@pytest.mark.parametrize("key, kind", [
    ("time", "timestamp"), ("_timestamp", "timestamp"), ("train_runtime", "duration"),
    ("train_samples_per_second", "rate"), ("hostname", "hostname"), ("pid", "PID"),
    ("timesteps", None), ("update", None), ("loss", None), ("rapid", None),
])
def test_volatile_fields(key: str, kind: str | None) -> None:
    assert volatile_kind(key) == kind


def test_describe_orders_and_pluralises() -> None:
    assert describe({"address": 2, "timestamp": 1}) == "masked 1 timestamp, 2 addresses"
    assert describe({}) == ""


# --- tolerances ---------------------------------------------------------------------------------


def test_parse_option() -> None:
    rule = parse_option("out/*.npy:rtol=1e-5,atol=0,ulps=4")
    assert rule == Tolerance("out/*.npy", rtol=1e-5, atol=0.0, ulps=4)
    assert parse_option("*.json: atol = 0.5") == Tolerance("*.json", atol=0.5)


@pytest.mark.parametrize("text, says", [
    ("out/*.npy", "expected GLOB:KEY=VALUE"),
    (":rtol=1", "expected GLOB:KEY=VALUE"),
    ("a.npy:rol=1", "unknown key 'rol' (known: rtol, atol, ulps)"),
    ("a.npy:rtol=abc", "rtol must be a number ≥ 0, got 'abc'"),
    ("a.npy:atol=-1", "atol must be a number ≥ 0"),
    ("a.npy:rtol=nan", "rtol must be a number ≥ 0"),
    ("a.npy:ulps=1.5", "ulps must be a whole number ≥ 0"),
    ("a.npy:rtol=1,rtol=2", "rtol is given twice"),
    ("a.npy:rtol", "'rtol' is not KEY=VALUE"),
])
def test_bad_options_name_themselves_with_a_hint(text: str, says: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_option(text)
    assert str(caught.value).startswith(f"--tolerance {text!r}: ")
    assert says in str(caught.value)
    assert caught.value.hint and "GLOB:KEY=VALUE" in caught.value.hint


@pytest.mark.parametrize("glob, path, matches", [
    ("out/*.npy", "out/w.npy", True),
    ("out/*.npy", "out/sub/w.npy", False),
    ("out/**/*.npy", "out/sub/deep/w.npy", True),
    ("out/**/*.npy", "out/w.npy", True),
    ("*.npy", "out/sub/w.npy", True),
    ("w?.npy", "out/w1.npy", True),
    ("w[!0-4].npy", "w7.npy", True),
    ("w[!0-4].npy", "w3.npy", False),
    ("metrics.json", "metrics.jsonl", False),
])
def test_globs(glob: str, path: str, matches: bool) -> None:
    assert Tolerance(glob, rtol=1.0).matches(path) is matches


def test_last_matching_rule_wins_and_keeps_what_it_does_not_name() -> None:
    outputs = [Output("out/w.npy", "0" * 64, 1, rtol=1e-7, atol=0.0, ulps=2),
               Output("log.txt", "0" * 64, 1)]
    rules = [Tolerance("*.npy", rtol=1e-3, atol=1e-3), Tolerance("out/*.npy", rtol=1e-5)]
    weights, log = apply(outputs, rules)
    assert (weights.rtol, weights.atol, weights.ulps) == (1e-5, 0.0, 2)
    assert log == outputs[1]


def test_compare_applies_tolerances_before_judging(dirs: tuple[Path, Path]) -> None:
    expected_dir, actual_dir = dirs
    np.save(expected_dir / "w.npy", np.array([1.0, 2.0]))
    np.save(actual_dir / "w.npy", np.array([1.0, 2.001]))
    output = Output("w.npy", sha256_file(expected_dir / "w.npy"), 1)
    assert compare(expected_dir, actual_dir, [output]).verdict == "different"
    loosened = compare(expected_dir, actual_dir, [output], tolerances=[Tolerance("*", rtol=1e-3)])
    assert loosened.verdict == "within_tolerance"


def test_settings_file(tmp_path: Path) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text('tolerances:\n  - {glob: "out/*.npy", rtol: 1e-5, atol: 0, ulps: 4}\n'
                        '  - glob: "*.jsonl"\n    atol: 1.0e-6\n')
    assert read_settings(settings) == (Tolerance("out/*.npy", 1e-5, 0.0, 4),
                                       Tolerance("*.jsonl", atol=1e-6))
    assert read_settings(tmp_path / "absent.yaml") == ()


@pytest.mark.parametrize("text, says", [
    ("tolerances: [{glob: a, rtoll: 1}]", "tolerances[0]: unknown key 'rtoll'"),
    ("tolerances: [{rtol: 1}]", "tolerances[0] needs a glob"),
    ("tolerances: [{glob: a}]", "tolerances[0]: names no tolerance"),
    ("tolerances: [{glob: a, ulps: -1}]", "tolerances[0]: ulps must be a whole number ≥ 0"),
    ("tolerances: {glob: a}", "tolerances must be a list"),
    ("tolerance: []", "unknown setting 'tolerance' (known: tolerances)"),
    ("- a\n- b\n", "expected a mapping at the top level"),
    ("tolerances: [\n", "not valid YAML"),
    ("tolerances: [{glob: a, rtol: !!python/name:os.system }]", "not valid YAML"),
])
def test_bad_settings_name_the_file_and_entry(tmp_path: Path, text: str, says: str) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text(text)
    with pytest.raises(BundleError) as caught:
        read_settings(settings)
    assert str(caught.value).startswith(f"{settings}: ")
    assert says in str(caught.value)
    assert caught.value.hint and "tolerances" in caught.value.hint


# --- the command line ---------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, sample_manifest: Manifest, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A captured run with out/weights.npy, and a replay that wrote it 1e-4 apart."""
    monkeypatch.chdir(tmp_path)
    bundle = tmp_path / ".reprobox" / "runs" / "20261127T200000Z-aaaaaa"
    weights = bundle / "outputs" / "out" / "weights.npy"
    weights.parent.mkdir(parents=True)
    np.save(weights, np.arange(1.0, 5.0))
    output = Output("out/weights.npy", sha256_file(weights), weights.stat().st_size)
    manifest_io.write(replace(sample_manifest, outputs=(output,)), bundle / "manifest.yaml")
    folder = bundle / "replays" / "20261127T210000Z-bbbbbb"
    (folder / "outputs" / "out").mkdir(parents=True)
    np.save(folder / "outputs" / "out" / "weights.npy", np.arange(1.0, 5.0) * (1 + 1e-4))
    result = ReplayResult("20261127T210000Z-bbbbbb", "img", 0, False, 1.0, "now", {})
    (folder / "replay.json").write_text(result.to_json())
    return bundle


def test_cli_tolerance_option_loosens_one_output(project: Path, capsys) -> None:
    assert main(["compare", "--json"]) == 3
    capsys.readouterr()
    assert main(["compare", "--json", "--tolerance", "out/*.npy:rtol=1e-3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outputs"][0]["verdict"] == "within_tolerance"


def test_cli_reads_the_bundle_settings_and_the_option_wins(project: Path, capsys) -> None:
    (project / "settings.yaml").write_text('tolerances: [{glob: "*.npy", rtol: 1e-3}]\n')
    assert main(["compare", "--json"]) == 0
    assert main(["compare", "--json", "--tolerance", "*.npy:rtol=0"]) == 3
    capsys.readouterr()


def test_cli_bad_tolerance_is_a_usage_error(project: Path, capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["compare", "--tolerance", "out/*.npy:rol=1"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "argument --tolerance: 'out/*.npy:rol=1': unknown key 'rol'" in err
    assert "hint: write GLOB:KEY=VALUE" in err


def test_cli_bad_settings_file_is_one_line_with_a_hint(project: Path, capsys) -> None:
    (project / "settings.yaml").write_text("tolerances: [{glob: a, rtol: lots}]\n")
    assert main(["compare"]) == 1
    err = capsys.readouterr().err
    assert "settings.yaml: tolerances[0]: rtol must be a number ≥ 0, got 'lots'" in err
    assert "hint:" in err and "Traceback" not in err


def test_yaml_alias_bomb_against_another_type_is_named_without_expanding_it(
        dirs: tuple[Path, Path]) -> None:
    items = ["  - &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    items += [f"  - &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    result = _one(dirs, "c.yaml", "x:\n" + "\n".join(items) + "\n", "x: {}\n")
    assert (result.verdict, result.where) == ("different", "$.x")
    assert "a list of 9 items vs {}" in result.detail


@pytest.mark.usefixtures("isolated_git")
def test_capture_records_the_ulps_default_on_every_output(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "train.py").write_text("open('out.txt', 'w').write('0.5\\n')\n")
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "first"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    monkeypatch.chdir(root)
    assert main(["capture", "--seed", "1", "--ulps", "4", "--", sys.executable, "train.py"]) == 0
    (run,) = (root / ".reprobox" / "runs").iterdir()
    (output,) = manifest_io.read(run / "manifest.yaml").outputs
    assert (output.path, output.ulps) == ("out.txt", 4)


def test_capture_refuses_a_negative_ulps(capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["capture", "--ulps", "-1", "--", "true"])
    assert caught.value.code == 2
    assert "--ulps: expected a whole number ≥ 0, got '-1'" in capsys.readouterr().err


# --- what masks must never hide (found in review) -------------------------------------------


@pytest.mark.parametrize(("original", "replay"), [
    ("loss: mean=0.52 min=0.10 max=0.90", "loss: mean=0.61 min=0.10 max=0.90"),
    ("reward mean 12.5 min 3.0", "reward mean 14.5 min 3.0"),
    ("perplexity 12.5 h=4", "perplexity 13.5 h=4"),
    ("weights checksum 0xdeadbeef", "weights checksum 0xfeedface"),
])
def test_a_changed_metric_next_to_a_unit_like_word_is_not_masked(original: str,
                                                                 replay: str) -> None:
    left, right = mask(original)[0], mask(replay)[0]
    assert left != right


@pytest.mark.parametrize("key", ["num_hosts", "n_pids", "hosts"])
def test_counts_of_hosts_and_pids_are_not_volatile(key: str) -> None:
    assert volatile_kind(key) is None


@pytest.mark.parametrize(("glob", "path", "matches"), [
    ("./out/*.npy", "out/w.npy", True), ("out/", "out/sub/w.npy", True),
    ("out/", "other/w.npy", False),
])
def test_globs_as_people_write_them(glob: str, path: str, matches: bool) -> None:
    assert Tolerance(glob).matches(path) is matches


def test_timings_printed_as_key_value_pairs_are_masked_the_metrics_beside_them_are_not() -> None:
    # the last line HF's Trainer prints: the runtime and rates change on every run
    original = "{'train_runtime': 12.34, 'train_samples_per_second': 40.5, 'train_loss': 0.6}"
    faster = "{'train_runtime': 11.02, 'train_samples_per_second': 45.3, 'train_loss': 0.6}"
    worse = "{'train_runtime': 12.34, 'train_samples_per_second': 40.5, 'train_loss': 0.7}"
    assert mask(original)[0] == mask(faster)[0]
    assert mask(original)[0] != mask(worse)[0]
    assert mask("step 3 elapsed=123.4 loss=0.5")[0] == mask("step 3 elapsed=99.1 loss=0.5")[0]
