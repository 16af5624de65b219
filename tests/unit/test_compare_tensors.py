"""compare: PyTorch checkpoints and safetensors without torch, ULP tolerances, samples, and
large arrays read a chunk at a time.

The checkpoints in tests/data/checkpoints/ were written by torch 2.11 (see its README); the
hand-made ones come from tests/torch_format.py, which writes torch.save's formats by the book.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import struct
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from reprobox.compare import OutputComparison, compare
from reprobox.compare import arrays as arrays_module
from reprobox.compare.streams import FLOAT8_E4M3FN, FLOAT8_E5M2
from reprobox.compare.tally import Tally, Unparseable
from reprobox.compare.tensors import (
    compare_checkpoint,
    compare_safetensors,
    read_checkpoint,
    read_safetensors,
)
from reprobox.manifest import Output

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from torch_format import (  # noqa: E402
    Global,
    Tensor,
    bfloat16,
    rewrite_zip,
    save_legacy,
    save_zip,
    tensor,
    with_dtype,
)

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "checkpoints"


def _output(name: str = "model.pt", **tolerance: float) -> Output:
    return Output(name, "0" * 64, 1, **tolerance)  # type: ignore[arg-type]


def _checkpoints(expected: Path, actual: Path, **tolerance: float) -> OutputComparison:
    return compare_checkpoint(expected, actual, _output(**tolerance))


def _values(path: Path, key: str) -> np.ndarray:  # type: ignore[type-arg]
    source = read_checkpoint(path, "original")[key]
    assert not isinstance(source, (str, int, float, bytes, type(None)))
    with source.open() as read:  # type: ignore[union-attr]
        chunk = read(source.size)  # type: ignore[union-attr]
    decode = source.element.decode  # type: ignore[union-attr]
    return (decode(chunk) if decode else chunk).reshape(source.shape)  # type: ignore[union-attr]


def _through_compare(tmp_path: Path, name: str, expected: Path, actual: Path,
                     **tolerance: float) -> OutputComparison:
    """Both copies under one output name, compared as `reprobox compare` would."""
    for side, source in (("original", expected), ("replay", actual)):
        (tmp_path / side / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, tmp_path / side / name)
    digest = hashlib.sha256(expected.read_bytes()).hexdigest()
    output = Output(name, digest, expected.stat().st_size, **tolerance)  # type: ignore[arg-type]
    return compare(tmp_path / "original", tmp_path / "replay", [output]).outputs[0]


# --- real checkpoints written by torch ----------------------------------------------------------


def test_the_same_checkpoint_saved_under_two_names_is_equivalent(tmp_path: Path) -> None:
    assert (FIXTURES / "run.pt").read_bytes() != (FIXTURES / "copy_of_run.ckpt").read_bytes()
    result = _through_compare(tmp_path, "ckpt/run.pt", FIXTURES / "run.pt",
                              FIXTURES / "copy_of_run.ckpt", rtol=0.0)
    assert (result.verdict, result.kind, result.n_different) == ("equivalent", "pt", 0)
    assert result.detail.startswith("16 tensors, 21 other values: same 94 values")


def test_the_legacy_format_reads_as_the_zip_format_does() -> None:
    result = _checkpoints(FIXTURES / "run.pt", FIXTURES / "legacy.pth", rtol=0.0)
    assert result.verdict == "equivalent"
    assert read_checkpoint(FIXTURES / "legacy.pth", "replay").keys() == \
        read_checkpoint(FIXTURES / "run.pt", "original").keys()


def test_nested_state_is_flattened_to_dotted_keys() -> None:
    leaves = read_checkpoint(FIXTURES / "run.pt", "original")
    assert {"model.0.weight", "model.2.bias", "optimizer.state.0.exp_avg",
            "optimizer.state.3.step", "optimizer.param_groups.0.betas.1",
            "optimizer.param_groups.0.params.3", "epoch", "metrics.history.2"} <= leaves.keys()
    assert (leaves["epoch"], leaves["metrics.loss"]) == (3, 0.25)
    assert leaves["optimizer.param_groups.0.foreach"] is None
    assert _values(FIXTURES / "run.pt", "optimizer.state.0.step").shape == ()


@pytest.mark.parametrize("tolerance, verdict", [
    ({"rtol": 0.0}, "different"),
    ({"rtol": 0.0, "ulps": 1}, "within_tolerance"),
    ({"rtol": 1e-6}, "within_tolerance"),
    ({"rtol": 0.0, "ulps": 0}, "different"),
])
def test_one_ulp_apart_is_within_tolerance_only_when_allowed(tolerance: dict[str, float],
                                                             verdict: str) -> None:
    result = _checkpoints(FIXTURES / "weights.pt", FIXTURES / "one_ulp.pt", **tolerance)
    assert (result.verdict, result.where, result.max_ulps) == (verdict, "0.weight[1, 2]", 1)
    assert (result.n_different, result.n_total) == (1, 23)
    (where, original, replay), = result.samples
    assert where == "0.weight[1, 2]"
    assert np.nextafter(np.float32(original), np.float32(10)) == np.float32(replay)


def test_a_far_weight_is_different_and_located() -> None:
    result = _checkpoints(FIXTURES / "weights.pt", FIXTURES / "far.pt", ulps=4)
    assert (result.verdict, result.where, result.n_different) == ("different", "2.bias[0]", 1)
    assert result.max_abs_diff == pytest.approx(0.5)
    assert result.max_ulps is not None and result.max_ulps > 1_000_000
    assert "ulps=4" in result.detail and "(4.35% of them)" in result.detail


def test_a_shape_change_is_named() -> None:
    result = _checkpoints(FIXTURES / "weights.pt", FIXTURES / "other_shape.pt", rtol=1.0)
    assert (result.verdict, result.where) == ("different", "2.bias")
    assert result.detail == ("2.bias: shape (2,) in the original, (3,) in the replay; "
                             "the other 21 values are the same")


def test_dtypes_are_read_exactly() -> None:
    path = FIXTURES / "dtypes.pt"
    leaves = read_checkpoint(path, "original")
    assert {k: v.element.name for k, v in leaves.items()} == {  # type: ignore[union-attr]
        "h": "bfloat16", "f16": "float16", "i64": "int64", "b": "bool", "view": "float32"}
    assert _values(path, "h").tolist() == [[0, 1, 2], [3, 4, 5]]
    assert _values(path, "h").dtype == np.float32
    assert np.isnan(_values(path, "f16")[1]) and _values(path, "f16")[2] == -2.5
    assert _values(path, "i64").tolist() == [2**60, 2**60 + 1]
    assert _values(path, "b").tolist() == [True, False]
    assert _values(path, "view").tolist() == [2.0, 4.0, 6.0]  # arange(10.)[2:8:2]


def test_nan_equals_nan_and_big_integers_stay_exact(tmp_path: Path) -> None:
    renamed = rewrite_zip(FIXTURES / "dtypes.pt", tmp_path / "renamed.pt", "renamed")
    assert _checkpoints(FIXTURES / "dtypes.pt", renamed, rtol=0.0).verdict == "equivalent"
    bumped = np.array([2**60, 2**60 + 2], np.int64).tobytes()
    changed = rewrite_zip(FIXTURES / "dtypes.pt", tmp_path / "changed.pt", "changed",
                          {"data/2": bumped})
    result = _checkpoints(FIXTURES / "dtypes.pt", changed, rtol=0.0, atol=0.0)
    assert (result.verdict, result.where, result.max_abs_diff) == ("different", "i64[1]", 1.0)
    assert result.samples == (("i64[1]", str(2**60 + 1), str(2**60 + 2)),)


def test_bfloat16_ulps_are_counted_in_bfloat16_units(tmp_path: Path) -> None:
    with zipfile.ZipFile(FIXTURES / "dtypes.pt") as archive:
        bits = np.frombuffer(archive.read("dtypes/data/0"), "<u2").copy()
    bits[5] += 2  # 5.0 -> two bfloat16 steps up: 5.0625
    changed = rewrite_zip(FIXTURES / "dtypes.pt", tmp_path / "b.pt", "b",
                          {"data/0": bits.tobytes()})
    strict = _checkpoints(FIXTURES / "dtypes.pt", changed, rtol=0.0)
    assert (strict.verdict, strict.where, strict.max_ulps) == ("different", "h[1, 2]", 2)
    assert strict.samples == (("h[1, 2]", "5.0", "5.0625"),)
    assert strict.max_abs_diff == 0.0625
    assert _checkpoints(FIXTURES / "dtypes.pt", changed, rtol=0.0, ulps=2).verdict == \
        "within_tolerance"


def test_safetensors_one_ulp_apart(tmp_path: Path) -> None:
    left, right = FIXTURES / "weights.safetensors", FIXTURES / "one_ulp.safetensors"
    result = compare_safetensors(left, right, _output("w.safetensors", rtol=0.0, ulps=1))
    assert (result.verdict, result.kind, result.where) == \
        ("within_tolerance", "safetensors", "0.weight[1, 2]")
    assert "metadata differs" in result.detail
    dispatched = _through_compare(tmp_path, "w.safetensors", left, right, rtol=0.0)
    assert (dispatched.verdict, dispatched.kind, dispatched.max_ulps) == \
        ("different", "safetensors", 1)


def test_safetensors_and_the_checkpoint_hold_the_same_weights() -> None:
    tensors, metadata = read_safetensors(FIXTURES / "weights.safetensors", "original")
    assert metadata == {"format": "pt"}
    for key, source in tensors.items():
        with source.open() as read:  # type: ignore[union-attr]
            values = read(source.size).reshape(source.shape)  # type: ignore[union-attr]
        assert np.array_equal(values, _values(FIXTURES / "weights.pt", key))


# --- hand-made checkpoints: what a small real model does not reach ------------------------------


W = np.arange(12, dtype=np.float32).reshape(3, 4) / 7


def _state(**changes: object) -> dict[str, object]:
    return {"model": {"w": tensor(W), "b": tensor(np.zeros(4, np.float32))}, "epoch": 3,
            "lr": 0.1, "name": "sgd", **changes}


def test_strided_views_compressed_members_and_big_endian_are_read_in_place(
        tmp_path: Path) -> None:
    storage = tensor(W.T.copy()).storage  # W stored transposed: W is a strided view of it
    view = Tensor(storage, (3, 4), (1, 3))
    tail = Tensor(storage, (2,), (1,), offset=10)  # a view into the middle of a storage
    plain = save_zip(tmp_path / "plain.pt", {"w": tensor(W), "tail": tensor(W.T.ravel()[10:])})
    for name, options in (("stored", {}), ("deflated", {"compress": True}),
                          ("big", {"big_endian": True, "compress": True}),
                          ("big_stored", {"big_endian": True})):
        other = save_zip(tmp_path / f"{name}.pt", {"w": view, "tail": tail}, **options)
        assert _checkpoints(plain, other, rtol=0.0).verdict == "equivalent", name


def test_a_legacy_checkpoint_with_a_difference(tmp_path: Path) -> None:
    changed = W.copy()
    changed[2, 1] += 1
    result = _checkpoints(save_legacy(tmp_path / "a.pth", _state()),
                          save_legacy(tmp_path / "b.pth", _state(model={"w": tensor(changed),
                                      "b": tensor(np.zeros(4, np.float32))})))
    assert (result.verdict, result.where) == ("different", "model.w[2, 1]")
    assert result.max_abs_diff == pytest.approx(1.0)


def test_values_beside_tensors_are_compared_as_values(tmp_path: Path) -> None:
    base = save_zip(tmp_path / "a.pt", _state())
    later = save_zip(tmp_path / "b.pt", _state(epoch=4))
    result = _checkpoints(base, later, rtol=0.1)
    assert (result.verdict, result.where, result.samples) == ("different", "epoch",
                                                              (("epoch", "3", "4"),))
    close = _checkpoints(base, save_zip(tmp_path / "c.pt", _state(lr=0.1000001)), rtol=1e-5)
    assert (close.verdict, close.where) == ("within_tolerance", "lr")
    renamed = _checkpoints(base, save_zip(tmp_path / "d.pt", _state(name="adam")), rtol=1.0)
    assert renamed.samples == (("name", "'sgd'", "'adam'"),)


def test_structure_changes_are_named(tmp_path: Path) -> None:
    base = save_zip(tmp_path / "a.pt", _state())
    grown = save_zip(tmp_path / "b.pt", _state(ema={"w": tensor(W)}, epoch=tensor(np.int64(3))))
    result = _checkpoints(base, grown)
    assert result.verdict == "different"
    assert "epoch: 3 in the original, an array of int64 () in the replay" in result.detail
    assert "only in the replay: ema.w" in result.detail
    retyped = save_zip(tmp_path / "c.pt", _state(model={"w": tensor(W.astype(np.float64)),
                                                        "b": bfloat16(np.zeros(4))}))
    detail = _checkpoints(base, retyped, rtol=1.0).detail
    assert "model.w: dtype float32 in the original, float64 in the replay" in detail
    assert "model.b: dtype float32 in the original, bfloat16 in the replay" in detail


def test_a_parameter_and_a_tensor_subclass_read_as_their_tensor(tmp_path: Path) -> None:
    weight = tensor(W)
    weight.parameter = True
    as_parameter = save_zip(tmp_path / "p.pt", {"w": weight})
    assert _checkpoints(save_zip(tmp_path / "t.pt", {"w": tensor(W)}), as_parameter).verdict == \
        "equivalent"


def test_float8_values_follow_the_ocp_formats() -> None:
    e4m3 = FLOAT8_E4M3FN.decode(np.array([0x38, 0x7E, 0x01, 0xB8, 0x7F], np.uint8))  # type: ignore[misc]
    assert e4m3[:4].tolist() == [1.0, 448.0, 2.0**-9, -1.0] and np.isnan(e4m3[4])
    e5m2 = FLOAT8_E5M2.decode(np.array([0x3C, 0x7B, 0x7C, 0x01], np.uint8))  # type: ignore[misc]
    assert e5m2.tolist() == [1.0, 57344.0, np.inf, 2.0**-16]


def test_float8_tensors_saved_with_a_dtype(tmp_path: Path) -> None:
    bits = np.array([0x38, 0x39, 0x7F], np.uint8)  # 1.0, 1.125, NaN
    nudged = np.array([0x39, 0x39, 0x7F], np.uint8)
    result = _checkpoints(save_zip(tmp_path / "a.pt", {"q": with_dtype(bits, "float8_e4m3fn")}),
                          save_zip(tmp_path / "b.pt", {"q": with_dtype(nudged, "float8_e4m3fn")}),
                          rtol=0.0, ulps=1)
    assert (result.verdict, result.max_ulps, result.samples) == \
        ("within_tolerance", 1, (("q[0]", "1.0", "1.125"),))


def test_numpy_values_in_a_checkpoint_are_read_without_numpy_unpickling(tmp_path: Path) -> None:
    rng_state = np.random.RandomState(3).get_state()  # ('MT19937', uint32 array, pos, ...)
    tree = {"rng": rng_state, "best": np.float64(0.5), "w": tensor(W)}
    later = {"rng": np.random.RandomState(4).get_state(), "best": np.float64(0.5), "w": tensor(W)}
    result = _checkpoints(save_zip(tmp_path / "a.pt", tree), save_zip(tmp_path / "b.pt", later))
    assert result.verdict == "different"
    assert result.where is not None and result.where.startswith("rng.1[")
    assert read_checkpoint(tmp_path / "a.pt", "x")["rng.0"] == "MT19937"


# --- hostile and broken files -------------------------------------------------------------------


class _Evil:
    """Unpickling this runs a shell command (what a weights-only load must never do)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, ...]:
        return os.system, (self.command,)


def test_a_pickle_that_would_run_a_command_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"w": _Evil(f"touch {marker}")}, protocol=2)
    zipped = save_zip(tmp_path / "zip.pt", {}, pickle_bytes=lambda _: evil)
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(evil)
    newer = tmp_path / "protocol5.pt"  # STACK_GLOBAL instead of GLOBAL
    newer.write_bytes(pickle.dumps(_Evil(f"touch {marker}"), protocol=5))
    for path in (zipped, legacy, newer):
        with pytest.raises(Unparseable, match=r"needs (posix|os)\.system, which a weights-only"):
            read_checkpoint(path, "replay")
    result = _through_compare(tmp_path, "model.pt", FIXTURES / "weights.pt", zipped)
    assert (result.verdict, result.kind) == ("different", "bytes")
    assert "refuses" in result.detail
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    pickle.dumps(Global("builtins", "eval"), protocol=2),
    b"\x80\x02c__builtin__\neval\nX\x04\x00\x00\x001+1q\x00\x85R.",  # eval("1+1")
    b"\x80\x02c__builtin__\nbytearray\nJ\x00\x00\x00\x40\x85R.",  # bytearray(2**30)
    b"\x80\x02ctorch._utils\n_rebuild_qtensor\n.",
    b"\x80\x02cnumpy\ndtype\nX\x01\x00\x00\x00O\x89\x88\x87R.",  # an object dtype
    b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\ncbuiltins\nprint\n.",
])
def test_other_globals_and_hostile_arguments_are_refused(tmp_path: Path, payload: bytes) -> None:
    path = save_zip(tmp_path / "x.pt", {}, pickle_bytes=lambda _: payload)
    with pytest.raises(Unparseable, match="checkpoint"):
        read_checkpoint(path, "original")


@pytest.mark.parametrize("damage", ["text", "truncated", "no data.pkl", "storage missing"])
def test_damaged_checkpoints_fall_back_to_bytes(tmp_path: Path, damage: str) -> None:
    good = save_zip(tmp_path / "good.pt", _state())
    bad = tmp_path / "bad.pt"
    if damage == "text":
        bad.write_text("not a checkpoint")
    elif damage == "truncated":
        rewrite_zip(good, bad, "bad", {"data/0": b"\0" * 8})
    else:
        with zipfile.ZipFile(good) as old, zipfile.ZipFile(bad, "w") as new:
            for info in old.infolist():
                if not info.filename.endswith("data.pkl" if damage == "no data.pkl" else "/0"):
                    new.writestr(info, old.read(info))
    result = _through_compare(tmp_path, "model.pt", good, bad)
    assert (result.verdict, result.kind) == ("different", "bytes")
    assert "compared as bytes" in result.detail


def test_a_safetensors_file_with_a_bad_header_falls_back_to_bytes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    header = b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}'
    bad.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 12)
    with pytest.raises(Unparseable, match="spans 12 bytes"):
        read_safetensors(bad, "replay")
    result = _through_compare(tmp_path, "w.safetensors", FIXTURES / "weights.safetensors", bad)
    assert result.kind == "bytes"


# --- array semantics: ULPs, samples, shares -----------------------------------------------------


def _arrays(tmp_path: Path, expected: np.ndarray, actual: np.ndarray,  # type: ignore[type-arg]
            **tolerance: float) -> OutputComparison:
    left, right = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(left, expected)
    np.save(right, actual)
    return arrays_module.compare_npy(left, right, _output("x.npy", **tolerance))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_ulp_distance_is_exact_and_crosses_zero(tmp_path: Path, dtype: type) -> None:
    tiny = np.nextafter(dtype(0), dtype(1))
    expected = np.array([1.0, -tiny, 0.0, 1e-3], dtype)
    actual = expected.copy()
    actual[0] = np.nextafter(np.nextafter(np.nextafter(expected[0], 2), 2), 2)  # 3 ULPs up
    actual[1] = tiny  # -tiny to +tiny: 2 ULPs
    actual[2] = -0.0  # equal
    three = _arrays(tmp_path, expected, actual, rtol=0.0, ulps=3)
    assert (three.verdict, three.max_ulps, three.n_different) == ("within_tolerance", 3, 2)
    two = _arrays(tmp_path, expected, actual, rtol=0.0, ulps=2)
    assert (two.verdict, two.where, two.n_different) == ("different", "x[0]", 1)


def test_ulps_between_the_largest_floats_do_not_overflow(tmp_path: Path) -> None:
    big = np.finfo(np.float64).max
    result = _arrays(tmp_path, np.array([-big]), np.array([big]), rtol=0.0)
    (bits,) = struct.unpack("<q", struct.pack("<d", big))
    assert result.max_ulps == 2 * bits
    assert result.max_abs_diff == np.inf


def test_ulps_never_excuse_nan_or_infinity(tmp_path: Path) -> None:
    big = np.finfo(np.float32).max
    result = _arrays(tmp_path, np.array([big, 1.0], np.float32),
                     np.array([np.inf, np.nan], np.float32), ulps=10**9)
    assert (result.verdict, result.n_different, result.max_ulps) == ("different", 2, None)


def test_samples_show_the_first_five_differences_side_by_side(tmp_path: Path) -> None:
    expected = np.zeros((4, 4))
    actual = expected.copy()
    actual[0, 1], actual[1, :] = 1e-9, 2.0
    actual[3, 3] = np.nan
    result = _arrays(tmp_path, expected, actual, atol=1e-6)
    assert result.verdict == "different"
    assert result.samples == (("x[1, 0]", "0.0", "2.0"), ("x[1, 1]", "0.0", "2.0"),
                              ("x[1, 2]", "0.0", "2.0"), ("x[1, 3]", "0.0", "2.0"),
                              ("x[3, 3]", "0.0", "nan"))
    assert "5 of 16 elements outside rtol=1e-07, atol=1e-06 (31.2% of them)" in result.detail
    within = _arrays(tmp_path, expected, np.where(actual > 1, 1e-7, 0.0), atol=1e-6)
    assert within.verdict == "within_tolerance"
    assert within.samples[0] == ("x[1, 0]", "0.0", "1e-07")


def test_a_tiny_share_is_not_shown_as_zero(tmp_path: Path) -> None:
    expected = np.zeros(200_000, np.float32)
    actual = expected.copy()
    actual[123_456] = 1
    result = _arrays(tmp_path, expected, actual)
    assert "1 of 200,000 elements outside" in result.detail and "(<0.01% of them)" in result.detail


def test_an_object_array_is_never_unpickled(tmp_path: Path) -> None:
    left, right = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(left, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(right, np.array([{"a": 2}], dtype=object), allow_pickle=True)
    with pytest.raises(Unparseable, match="Python objects"):
        arrays_module.compare_npy(left, right, _output("x.npy"))


# --- .npz members read as they stream --------------------------------------------------------


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_members_are_chunked_and_located(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             save: object) -> None:
    monkeypatch.setattr(arrays_module, "_CHUNK_ELEMENTS", 7)
    w = np.arange(60.0).reshape(6, 10)
    changed = w.copy()
    changed[4, 3] += 1
    changed[5, 9] += 2
    save(tmp_path / "a.npz", w=w, f=np.asfortranarray(w), raw=np.arange(3))  # type: ignore[operator]
    save(tmp_path / "b.npz", w=changed, f=w, raw=np.arange(3))  # type: ignore[operator]
    result = arrays_module.compare_npz(tmp_path / "a.npz", tmp_path / "b.npz", _output("s.npz"))
    assert (result.verdict, result.where, result.n_different) == ("different", "w[4, 3]", 2)
    assert result.samples == (("w[4, 3]", "43.0", "44.0"), ("w[5, 9]", "59.0", "61.0"))


def test_an_npz_member_shorter_than_its_header_says_is_unparseable(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", w=np.arange(10.0))
    with zipfile.ZipFile(tmp_path / "a.npz") as archive:
        member = archive.read("w.npy")
    with zipfile.ZipFile(tmp_path / "b.npz", "w") as archive:
        archive.writestr("w.npy", member[:-8])
    with pytest.raises(Unparseable, match="shorter than its header"):
        arrays_module.compare_npz(tmp_path / "a.npz", tmp_path / "b.npz", _output("s.npz"))


@pytest.mark.parametrize("kind", ["npz", "npz_compressed", "pt"])
def test_memory_is_bounded_by_a_chunk_not_the_file(tmp_path: Path, kind: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arrays_module, "_CHUNK_ELEMENTS", 1 << 16)  # 256 KiB of float32
    size = 8 << 20  # 8M float32: 32 MiB a side
    values = np.zeros(size, np.float32)
    changed = values.copy()
    changed[size - 3] = 1.0
    if kind == "pt":
        left = save_zip(tmp_path / "a.pt", {"w": tensor(values)})
        right = save_zip(tmp_path / "b.pt", {"w": tensor(changed)})
    else:
        save = np.savez if kind == "npz" else np.savez_compressed
        save(tmp_path / "a.npz", w=values)  # type: ignore[operator]
        save(tmp_path / "b.npz", w=changed)  # type: ignore[operator]
        left, right = tmp_path / "a.npz", tmp_path / "b.npz"
    del values, changed
    comparer = compare_checkpoint if kind == "pt" else arrays_module.compare_npz
    tracemalloc.start()
    try:
        result = comparer(left, right, _output(f"w.{kind}"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (result.verdict, result.where) == ("different", f"w[{size - 3}]")
    assert peak < 4 << 20, f"peak {peak / 2**20:.1f} MiB for two 32 MiB arrays"


# --- the tally: ULPs and samples for single values (JSON, CSV, checkpoint leaves) ---------------


def test_single_floats_use_the_ulp_tolerance_too() -> None:
    nudged = float(np.nextafter(0.1, 1.0))
    strict = Tally(0.0, 0.0, "values")
    strict.add_numbers([(0.1, nudged)], "$.lr", f"0.1 vs {nudged!r}")
    assert (strict.n_far, strict.max_ulps) == (1, 1)
    lenient = Tally(0.0, 0.0, "values", ulps=1)
    lenient.add_numbers([(0.1, nudged)], "$.lr", f"0.1 vs {nudged!r}")
    lenient.add_numbers([(2**60, 2**60 + 1)], "$.n", "big")  # integers: no ULPs, exact
    result = lenient.result("m.json", "json")
    assert (result.verdict, result.where, result.max_ulps) == ("different", "$.n", 1)
    assert result.samples == ()  # "big" is not a pair of values


def test_samples_are_read_from_reasons_or_given() -> None:
    tally = Tally(0.0, 0.0, "lines")
    tally.add_exact(False, "line 3", "'done' vs 'failed'")
    tally.add_exact(False, "line 4", "line missing in the replay")
    tally.add_exact(False, "line 5", "x vs y vs z", ("x", "y vs z"))
    assert tally.result("log", "text").samples == (("line 3", "'done'", "'failed'"),
                                                   ("line 5", "x", "y vs z"))


def test_a_checkpoint_value_one_ulp_apart(tmp_path: Path) -> None:
    result = _checkpoints(save_zip(tmp_path / "a.pt", _state()),
                          save_zip(tmp_path / "b.pt", _state(lr=float(np.nextafter(0.1, 1)))),
                          rtol=0.0, ulps=1)
    assert (result.verdict, result.where, result.max_ulps) == ("within_tolerance", "lr", 1)


def test_an_npz_member_that_is_not_an_array_is_compared_as_bytes(tmp_path: Path) -> None:
    for name, note in (("a.npz", b"seed=1"), ("b.npz", b"seed=2")):
        np.savez(tmp_path / name, w=np.arange(3))
        with zipfile.ZipFile(tmp_path / name, "a") as archive:
            archive.writestr("notes.txt", note)
    result = arrays_module.compare_npz(tmp_path / "a.npz", tmp_path / "b.npz", _output("s.npz"))
    assert (result.verdict, result.where, result.n_total) == ("different", "notes.txt[5]", 9)


def test_complex_arrays_nan_equal_and_tolerance(tmp_path: Path) -> None:
    expected = np.array([1 + 1j, complex(np.nan, 0)])
    result = _arrays(tmp_path, expected, expected + np.array([1e-9j, 0]), rtol=1e-6)
    assert (result.verdict, result.where, result.max_ulps) == ("within_tolerance", "x[0]", None)
