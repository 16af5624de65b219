"""compare: real files in tmp_path for every verdict and every format."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from reprobox.compare import Comparison, OutputComparison, compare, compare_file
from reprobox.compare import arrays as arrays_module
from reprobox.compare import files as files_module
from reprobox.errors import BundleError, ManifestError
from reprobox.manifest import Output

Writer = Callable[[Path], object]


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    expected, actual = tmp_path / "original", tmp_path / "replay"
    expected.mkdir()
    actual.mkdir()
    return expected, actual


def _record(path: Path, name: str, **tolerance: float) -> Output:
    data = path.read_bytes()
    return Output(name, hashlib.sha256(data).hexdigest(), len(data), **tolerance)  # type: ignore[arg-type]


def _one(dirs: tuple[Path, Path], name: str, write_expected: Writer, write_actual: Writer,
         **tolerance: float) -> OutputComparison:
    """Write both copies of one output, compare them, and return the single result."""
    expected_dir, actual_dir = dirs
    for folder, write in ((expected_dir, write_expected), (actual_dir, write_actual)):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        write(folder / name)
    output = _record(expected_dir / name, name, **tolerance)
    comparison = compare(expected_dir, actual_dir, [output])
    assert len(comparison.outputs) == 1
    return comparison.outputs[0]


def _npy(array: np.ndarray) -> Writer:  # type: ignore[type-arg]
    return lambda path: np.save(path, array)


def _text(content: str) -> Writer:
    return lambda path: path.write_bytes(content.encode())


def _json(value: object, **dumps: object) -> Writer:
    return lambda path: path.write_text(json.dumps(value, **dumps))  # type: ignore[arg-type]


WEIGHTS = np.random.default_rng(7).standard_normal((20, 8))


def _one_ulp_apart() -> np.ndarray:  # type: ignore[type-arg]
    changed = WEIGHTS.copy()
    changed[12, 3] = np.nextafter(changed[12, 3], np.inf)
    return changed


# --- identical and the overall verdict ----------------------------------------------------------


def test_same_bytes_are_identical(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "out/weights.npy", _npy(WEIGHTS), _npy(WEIGHTS))
    assert (result.verdict, result.kind) == ("identical", "npy")


def test_same_bytes_as_stored_copy_are_identical_when_the_record_is_stale(
        dirs: tuple[Path, Path]) -> None:
    expected_dir, actual_dir = dirs
    for folder in dirs:
        (folder / "a.bin").write_bytes(b"\x00\x01\x02")
    stale = Output("a.bin", "0" * 64, 3)
    result = compare_file(expected_dir / "a.bin", actual_dir / "a.bin", stale)
    assert result.verdict == "identical"
    assert "stored copy" in result.detail


def test_overall_verdict_is_the_worst_and_extra_alone_does_not_change_it(
        dirs: tuple[Path, Path]) -> None:
    expected_dir, actual_dir = dirs
    np.save(expected_dir / "w.npy", WEIGHTS)
    np.save(actual_dir / "w.npy", _one_ulp_apart())
    (expected_dir / "log.txt").write_text("done\n")
    (actual_dir / "log.txt").write_text("done\n")
    (actual_dir / "debug.txt").write_text("extra\n")
    outputs = [_record(expected_dir / "log.txt", "log.txt"),
               _record(expected_dir / "w.npy", "w.npy", rtol=1e-9)]
    comparison = compare(expected_dir, actual_dir, outputs, notes=["numpy differs"])
    assert [o.verdict for o in comparison.outputs] == ["identical", "within_tolerance", "extra"]
    assert comparison.verdict == "within_tolerance"
    assert comparison.reproduced
    assert comparison.notes == ("numpy differs",)


def test_no_outputs_is_identical(dirs: tuple[Path, Path]) -> None:
    comparison = compare(*dirs, [])
    assert comparison == Comparison("identical", ())
    assert comparison.reproduced


def test_missing_output_makes_the_whole_run_different(dirs: tuple[Path, Path]) -> None:
    expected_dir, actual_dir = dirs
    (expected_dir / "metrics.json").write_text("{}")
    comparison = compare(expected_dir, actual_dir, [_record(expected_dir / "metrics.json",
                                                            "metrics.json")])
    assert comparison.outputs[0].verdict == "missing"
    assert comparison.outputs[0].kind == "json"
    assert comparison.verdict == "different"
    assert not comparison.reproduced


def test_a_folder_where_the_output_should_be_is_missing(dirs: tuple[Path, Path]) -> None:
    expected_dir, actual_dir = dirs
    (expected_dir / "out").write_text("x")
    (actual_dir / "out").mkdir()
    result = compare(expected_dir, actual_dir, [_record(expected_dir / "out", "out")]).outputs[0]
    assert result.verdict == "missing"
    assert "folder" in result.detail


def test_a_symlink_written_by_the_replay_is_not_followed(dirs: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    expected_dir, actual_dir = dirs
    secret = tmp_path / "secret.txt"
    secret.write_text("password\n")
    (expected_dir / "out.txt").write_text("result\n")
    (actual_dir / "out.txt").symlink_to(secret)
    result = compare(expected_dir, actual_dir,
                     [_record(expected_dir / "out.txt", "out.txt")]).outputs[0]
    assert result.verdict == "different"
    assert "symbolic link" in result.detail
    assert "password" not in result.detail


def test_extra_files_are_listed_and_hidden_ones_ignored(dirs: tuple[Path, Path]) -> None:
    expected_dir, actual_dir = dirs
    (expected_dir / "a.txt").write_text("a")
    (actual_dir / "a.txt").write_text("a")
    (actual_dir / "sub" / ".cache").mkdir(parents=True)
    (actual_dir / "sub" / ".cache" / "blob").write_text("x")
    (actual_dir / ".hidden").write_text("x")
    (actual_dir / "sub" / "new.npy").write_bytes(b"123")
    comparison = compare(expected_dir, actual_dir, [_record(expected_dir / "a.txt", "./a.txt")])
    extras = [o for o in comparison.outputs if o.verdict == "extra"]
    assert [(o.path, o.kind) for o in extras] == [("sub/new.npy", "npy")]
    assert "3 bytes" in extras[0].detail
    assert comparison.verdict == "identical"


def test_unstored_output_with_another_digest_is_different(dirs: tuple[Path, Path]) -> None:
    expected_dir, actual_dir = dirs
    (actual_dir / "huge.bin").write_bytes(b"replayed")
    output = Output("huge.bin", "ab" * 32, 10**10, stored=False)
    result = compare(expected_dir, actual_dir, [output]).outputs[0]
    assert result.verdict == "different"
    assert "not stored" in result.detail


def test_unstored_output_with_the_recorded_digest_is_identical(dirs: tuple[Path, Path]) -> None:
    expected_dir, actual_dir = dirs
    (actual_dir / "huge.bin").write_bytes(b"replayed")
    output = _record(actual_dir / "huge.bin", "huge.bin")
    assert compare(expected_dir, actual_dir, [output]).outputs[0].verdict == "identical"


@pytest.mark.parametrize("path", ["../escape.txt", "/etc/passwd", "a/../../b"])
def test_output_paths_outside_the_folder_are_refused(dirs: tuple[Path, Path], path: str) -> None:
    with pytest.raises(ManifestError, match="not inside the project"):
        compare(*dirs, [Output(path, "0" * 64, 1)])


def test_an_unreadable_output_is_a_bundle_error(dirs: tuple[Path, Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    expected_dir, actual_dir = dirs
    (expected_dir / "a.txt").write_text("a")
    (actual_dir / "a.txt").write_text("b")

    def refuse(path: Path) -> str:  # chmod cannot stop root, so refuse the read itself
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(files_module, "_first_byte_difference", lambda a, b: refuse(b))
    with pytest.raises(BundleError, match="a.txt: cannot read output"):
        compare(expected_dir, actual_dir, [_record(expected_dir / "a.txt", "a.txt")])


def test_to_dict_is_json_ready_with_infinite_differences(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "w.npy", _npy(np.array([1.0, 2.0])), _npy(np.array([1.0, np.nan])))
    assert result.max_abs_diff == math.inf
    data = Comparison("different", (result,), ("a note",)).to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["reproduced"] is False
    assert data["outputs"][0]["max_abs_diff"] == "inf"
    assert data["outputs"][0]["where"] == "w[1]"
    assert data["notes"] == ["a note"]


# --- .npy ---------------------------------------------------------------------------------------


def test_one_ulp_apart_is_different_at_zero_tolerance(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "weights.npy", _npy(WEIGHTS), _npy(_one_ulp_apart()), rtol=0.0)
    assert result.verdict == "different"
    assert result.where == "weights[12, 3]"
    assert (result.n_different, result.n_total) == (1, WEIGHTS.size)
    ulp = abs(np.spacing(WEIGHTS[12, 3]))
    assert result.max_abs_diff == pytest.approx(ulp)
    assert "1 of 160 elements outside" in result.detail
    assert "weights[12, 3]" in result.detail


def test_one_ulp_apart_is_within_a_loose_tolerance(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "weights.npy", _npy(WEIGHTS), _npy(_one_ulp_apart()), rtol=1e-12)
    assert result.verdict == "within_tolerance"
    assert (result.where, result.n_different) == ("weights[12, 3]", 1)
    assert result.max_rel_diff is not None and 0 < result.max_rel_diff < 1e-12


def test_fortran_order_with_nans_in_both_is_equivalent(dirs: tuple[Path, Path]) -> None:
    with_nans = WEIGHTS.copy()
    with_nans[0, :3] = np.nan
    result = _one(dirs, "w.npy", _npy(with_nans), _npy(np.asfortranarray(with_nans)))
    assert (result.verdict, result.n_total) == ("equivalent", WEIGHTS.size)


def test_nan_on_one_side_only_is_different(dirs: tuple[Path, Path]) -> None:
    changed = WEIGHTS.copy()
    changed[2, 5] = np.nan
    result = _one(dirs, "w.npy", _npy(WEIGHTS), _npy(changed), rtol=1.0, atol=1.0)
    assert (result.verdict, result.where, result.n_different) == ("different", "w[2, 5]", 1)


def test_shape_change_is_different_and_named(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "w.npy", _npy(np.zeros(3)), _npy(np.zeros(4)))
    assert result.verdict == "different"
    assert "shape (3,) in the original, (4,) in the replay" in result.detail


def test_dtype_change_is_different_and_named(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "w.npy", _npy(WEIGHTS), _npy(WEIGHTS.astype(np.float32)), rtol=1.0)
    assert result.verdict == "different"
    assert "dtype float64 in the original, float32 in the replay" in result.detail


def test_byte_order_alone_is_equivalent(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "w.npy", _npy(WEIGHTS.astype("<f8")), _npy(WEIGHTS.astype(">f8")))
    assert result.verdict == "equivalent"


def test_unsigned_differences_do_not_wrap_around(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "c.npy", _npy(np.array([3, 7], np.uint8)),
                  _npy(np.array([250, 7], np.uint8)))
    assert (result.verdict, result.max_abs_diff, result.where) == ("different", 247.0, "c[0]")


@pytest.mark.parametrize("left, right", [
    (np.array([True, False]), np.array([True, True])),
    (np.array(["cat", "dog"]), np.array(["cat", "cow"])),
    (np.array([(1, 2.0), (3, 4.0)], dtype="i4,f8"), np.array([(1, 2.0), (3, 5.0)], dtype="i4,f8")),
])
def test_non_numeric_arrays_compare_exactly(dirs: tuple[Path, Path], left: np.ndarray,  # type: ignore[type-arg]
                                            right: np.ndarray) -> None:  # type: ignore[type-arg]
    result = _one(dirs, "x.npy", _npy(left), _npy(right), rtol=1.0, atol=1.0)
    assert (result.verdict, result.where, result.n_different) == ("different", "x[1]", 1)
    assert result.max_abs_diff is None


def test_zero_dimensional_arrays(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "loss.npy", _npy(np.float64(0.5)), _npy(np.float64(0.75)))
    assert (result.verdict, result.where, result.max_abs_diff) == ("different", "loss", 0.25)


def test_chunks_are_located_in_the_whole_array(dirs: tuple[Path, Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arrays_module, "_CHUNK_ELEMENTS", 16)  # 2 rows of 8 per chunk
    changed = WEIGHTS.copy()
    changed[17, 6] += 1.0
    changed[19, 0] += 3.0
    result = _one(dirs, "w.npy", _npy(WEIGHTS), _npy(changed))
    assert (result.where, result.n_different) == ("w[17, 6]", 2)
    assert result.max_abs_diff == pytest.approx(3.0)


def test_a_file_that_is_not_npy_is_compared_as_bytes(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "w.npy", _npy(WEIGHTS), _text("not an array"))
    assert (result.verdict, result.kind) == ("different", "bytes")
    assert "not an .npy file" in result.detail
    assert "first differing byte at offset 0" in result.detail


# --- .npz ---------------------------------------------------------------------------------------


def test_npz_written_in_another_key_order_is_equivalent(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "state.npz",
                  lambda p: np.savez(p, w=WEIGHTS, b=np.arange(4)),
                  lambda p: np.savez(p, b=np.arange(4), w=WEIGHTS))
    assert (result.verdict, result.kind, result.n_total) == ("equivalent", "npz", 164)


def test_npz_with_other_keys_names_them(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "state.npz",
                  lambda p: np.savez(p, w=WEIGHTS, b=np.arange(4)),
                  lambda p: np.savez(p, w=WEIGHTS, bias=np.arange(4)))
    assert result.verdict == "different"
    assert "only in the original: b" in result.detail
    assert "only in the replay: bias" in result.detail


def test_npz_value_change_names_key_and_index(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "state.npz",
                  lambda p: np.savez_compressed(p, w=WEIGHTS, b=np.arange(4.0)),
                  lambda p: np.savez_compressed(p, w=WEIGHTS, b=np.array([0.0, 1.5, 2, 3])))
    assert (result.verdict, result.where, result.max_abs_diff) == ("different", "b[1]", 0.5)


def test_npz_shape_change_names_the_key(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "state.npz",
                  lambda p: np.savez(p, w=WEIGHTS), lambda p: np.savez(p, w=WEIGHTS.T))
    assert result.verdict == "different"
    assert result.detail.startswith("w: shape (20, 8)")


# --- JSON ---------------------------------------------------------------------------------------


METRICS = {"metrics": {"loss": 0.25, "acc": 0.9}, "history": [1.0, 0.5], "name": "sgd", "ok": True}


def test_reformatted_json_is_equivalent(dirs: tuple[Path, Path]) -> None:
    reordered = {"ok": True, "name": "sgd", "history": [1, 0.5],
                 "metrics": {"acc": 0.9, "loss": 0.25}}
    result = _one(dirs, "m.json", _json(METRICS), _json(reordered, indent=4))
    assert (result.verdict, result.kind) == ("equivalent", "json")


def test_json_number_within_tolerance(dirs: tuple[Path, Path]) -> None:
    changed = json.loads(json.dumps(METRICS))
    changed["metrics"]["loss"] = 0.25000001
    result = _one(dirs, "m.json", _json(METRICS), _json(changed), rtol=1e-6)
    assert (result.verdict, result.where) == ("within_tolerance", "$.metrics.loss")


def test_json_number_outside_tolerance(dirs: tuple[Path, Path]) -> None:
    changed = json.loads(json.dumps(METRICS))
    changed["history"][1] = 0.6
    result = _one(dirs, "m.json", _json(METRICS), _json(changed), rtol=1e-6)
    assert (result.verdict, result.where) == ("different", "$.history[1]")
    assert result.max_abs_diff == pytest.approx(0.1)


@pytest.mark.parametrize("change, where", [
    ({"name": "adam"}, "$.name"),
    ({"ok": 1}, "$.ok"),
    ({"metrics": [0.25, 0.9]}, "$.metrics"),
    ({"extra key": 1}, '$["extra key"]'),
])
def test_json_structure_and_text_changes_are_different(dirs: tuple[Path, Path],
                                                       change: dict[str, object],
                                                       where: str) -> None:
    result = _one(dirs, "m.json", _json(METRICS), _json({**METRICS, **change}), rtol=1.0)
    assert (result.verdict, result.where, result.max_abs_diff) == ("different", where, None)


def test_json_missing_key_is_different(dirs: tuple[Path, Path]) -> None:
    changed = {k: v for k, v in METRICS.items() if k != "name"}
    result = _one(dirs, "m.json", _json(METRICS), _json(changed))
    assert (result.verdict, result.where) == ("different", "$.name")
    assert "missing in the replay" in result.detail


def test_json_nan_in_both_is_equal(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "m.json", _json({"loss": math.nan}), _json({"loss": math.nan}, indent=1))
    assert result.verdict == "equivalent"


def test_unparseable_json_falls_back_to_bytes(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "m.json", _json(METRICS), _text('{"metrics": '))
    assert (result.verdict, result.kind) == ("different", "bytes")
    assert "replay's copy is not valid JSON" in result.detail
    assert "first differing byte at offset" in result.detail


# --- CSV ----------------------------------------------------------------------------------------


CURVE = "step,loss,phase\n1,0.5,warmup\n2,0.25,train\n3,0.125,train\n"


def test_csv_with_a_changed_cell_names_row_and_column(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "curve.csv", _text(CURVE), _text(CURVE.replace("0.25", "0.3")))
    assert (result.verdict, result.kind, result.where) == ("different", "csv", 'row 3, col "loss"')
    assert (result.n_different, result.n_total) == (1, 12)


def test_csv_with_a_changed_text_cell(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "curve.csv", _text(CURVE), _text(CURVE.replace("warmup", "train")),
                  rtol=1.0)
    assert (result.verdict, result.where) == ("different", 'row 2, col "phase"')


def test_csv_number_formatting_and_line_endings_are_equivalent(dirs: tuple[Path, Path]) -> None:
    reformatted = CURVE.replace("0.5,", "0.50,").replace("\n", "\r\n")
    result = _one(dirs, "curve.csv", _text(CURVE), _text(reformatted))
    assert result.verdict == "equivalent"


def test_csv_within_tolerance(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "curve.csv", _text(CURVE), _text(CURVE.replace("0.125", "0.1250001")),
                  rtol=1e-5)
    assert (result.verdict, result.where) == ("within_tolerance", 'row 4, col "loss"')


def test_csv_missing_row_is_different(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "curve.csv", _text(CURVE), _text(CURVE.rsplit("3,", 1)[0]))
    assert (result.verdict, result.where) == ("different", "row 4")
    assert "row missing in the replay" in result.detail


def test_tsv_without_header_uses_column_numbers(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "curve.tsv", _text("1\t0.5\n2\t0.25\n"), _text("1\t0.5\n2\t0.2\n"))
    assert (result.verdict, result.where) == ("different", "row 2, col 2")


# --- text and bytes -----------------------------------------------------------------------------


LOG = "epoch 1 loss 0.500000\nepoch 2 loss 0.250000\ndone\n"


def test_text_with_a_changed_line_reports_its_number(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "train.log", _text(LOG), _text(LOG.replace("done", "failed")))
    assert (result.verdict, result.kind, result.where) == ("different", "text", "line 3")
    assert "'done' vs 'failed'" in result.detail


def test_text_trailing_whitespace_and_crlf_are_equivalent(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "train.log", _text(LOG), _text(LOG.replace("\n", "  \r\n") + "\n"))
    assert result.verdict == "equivalent"


def test_text_numbers_within_tolerance(dirs: tuple[Path, Path]) -> None:
    changed = LOG.replace("0.250000", "0.2500001")
    assert _one(dirs, "train.log", _text(LOG), _text(changed), rtol=1e-5).verdict == \
        "within_tolerance"


def test_text_numbers_outside_tolerance(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "train.log", _text(LOG), _text(LOG.replace("0.250000", "0.26")))
    assert (result.verdict, result.where) == ("different", "line 2")
    assert result.max_abs_diff == pytest.approx(0.01)


def test_text_with_a_missing_line(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "train.log", _text(LOG), _text(LOG.replace("done\n", "")))
    assert (result.verdict, result.where) == ("different", "line 3")


def test_a_utf8_file_without_a_known_suffix_is_compared_as_text(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "RESULT", _text("acc 0.9\n"), _text("acc 0.9   \n"))
    assert (result.verdict, result.kind) == ("equivalent", "text")


def test_binary_files_report_the_first_differing_byte(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "model.bin", lambda p: p.write_bytes(b"\x00\x01\x02\x03\xff"),
                  lambda p: p.write_bytes(b"\x00\x01\x02\x04\xff\x00"))
    assert (result.verdict, result.kind, result.where) == ("different", "bytes", "byte 3")
    assert "5 bytes in the original, 6 bytes in the replay" in result.detail


def test_a_text_suffix_on_binary_content_falls_back_to_bytes(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "out.txt", lambda p: p.write_bytes(b"\xff\xfe"),
                  lambda p: p.write_bytes(b"\xff\xfd"))
    assert (result.verdict, result.kind) == ("different", "bytes")
    assert "not valid UTF-8" in result.detail


# --- integers stay exact, overflowing literals stay text ----------------------------------------

BIG = 2**60  # above 2**53: BIG and BIG + 1 are the same float64


def test_json_big_integers_differ_at_zero_tolerance(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "m.json", _json({"n": BIG}), _json({"n": BIG + 1}), rtol=0.0, atol=0.0)
    assert (result.verdict, result.where, result.max_abs_diff) == ("different", "$.n", 1.0)


def test_json_big_integers_use_an_exact_tolerance(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "m.json", _json({"n": BIG}), _json({"n": BIG + 3}), rtol=0.0, atol=2.0)
    assert (result.verdict, result.max_abs_diff) == ("different", 3.0)


@pytest.mark.parametrize("atol, verdict", [(0.0, "different"), (1.0, "within_tolerance")])
def test_npy_int64_is_compared_exactly(dirs: tuple[Path, Path], atol: float, verdict: str) -> None:
    result = _one(dirs, "steps.npy", _npy(np.array([7, BIG], np.int64)),
                  _npy(np.array([7, BIG + 1], np.int64)), rtol=0.0, atol=atol)
    assert (result.verdict, result.where, result.max_abs_diff) == (verdict, "steps[1]", 1.0)
    assert "max |Δ| 1" in result.detail


def test_npy_int64_extremes_do_not_overflow(dirs: tuple[Path, Path]) -> None:
    info = np.iinfo(np.int64)
    result = _one(dirs, "x.npy", _npy(np.array([info.min, info.max], np.int64)),
                  _npy(np.array([info.max, info.max - 1], np.int64)), rtol=0.0, atol=0.0)
    assert (result.verdict, result.where, result.n_different) == ("different", "x[0]", 2)
    assert result.max_abs_diff == float(2**64 - 1)


def test_csv_big_integers_differ_at_zero_tolerance(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "c.csv", _text(f"step,n\n1,{BIG}\n"), _text(f"step,n\n1,{BIG + 1}\n"),
                  rtol=0.0, atol=0.0)
    assert (result.verdict, result.where) == ("different", 'row 2, col "n"')
    assert result.max_abs_diff == 1.0


def test_text_big_integers_differ_at_zero_tolerance(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "run.log", _text(f"seen {BIG} tokens\n"), _text(f"seen {BIG + 1} tokens\n"),
                  rtol=0.0, atol=0.0)
    assert (result.verdict, result.where, result.max_abs_diff) == ("different", "line 1", 1.0)


@pytest.mark.parametrize("name, left, right", [
    ("c.csv", "x\n1e400\n", "x\n1e500\n"),
    ("run.log", "norm 1e400\n", "norm 1e500\n"),
    ("c.csv", "x\n1e400\n", "x\ninf\n"),
    ("m.json", '{"x": 1e400}', '{"x": 1e500}'),
])
def test_numbers_that_overflow_to_inf_are_compared_as_text(dirs: tuple[Path, Path], name: str,
                                                            left: str, right: str) -> None:
    result = _one(dirs, name, _text(left), _text(right), rtol=1.0, atol=1.0)
    assert (result.verdict, result.max_abs_diff) == ("different", None)


def test_overflowing_literals_written_alike_are_equal(dirs: tuple[Path, Path]) -> None:
    result = _one(dirs, "m.json", _text('{"x": 1e400, "y": 1}'), _text('{"y": 1, "x": 1e400}'))
    assert result.verdict == "equivalent"


def test_nat_equals_nat_as_nan_equals_nan(dirs: tuple[Path, Path]) -> None:
    expected_dir, actual_dir = dirs
    times = np.array(["2026-11-27", "NaT"], dtype="datetime64[D]")
    np.savez(expected_dir / "t.npz", a=times, b=np.arange(3))
    np.savez(actual_dir / "t.npz", b=np.arange(3), a=times)  # other member order: other bytes
    result = compare_file(expected_dir / "t.npz", actual_dir / "t.npz",
                          _record(expected_dir / "t.npz", "t.npz"))
    assert result.verdict == "equivalent"


def test_a_dtype_numpy_cannot_reason_about_is_compared_as_bytes(dirs: tuple[Path, Path]) -> None:
    expected_dir, actual_dir = dirs
    np.save(expected_dir / "x.npy", np.array([1.0, 2.0], dtype=np.longdouble))
    np.save(actual_dir / "x.npy", np.array([1.0, 2.5], dtype=np.longdouble))
    result = compare_file(expected_dir / "x.npy", actual_dir / "x.npy",
                          _record(expected_dir / "x.npy", "x.npy"))
    assert (result.verdict, result.kind) == ("different", "bytes")
    assert "compared as bytes" in result.detail
