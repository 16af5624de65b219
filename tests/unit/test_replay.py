"""replay: the hardened, seeded container spec; inputs checked before any container starts."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from reprobox import replay as replay_module
from reprobox.build import BuiltImage
from reprobox.bundle import Bundle
from reprobox.errors import BundleError, PreflightError, ReplayError, UsageError
from reprobox.fileio import sha256_file
from reprobox.manifest import CudaStack, FileRecord, Gpu, Gpus, Manifest, Output
from tests.unit.fakes import FakeEngine
from tests.unit.scripted import STATE, ScriptedEngine, bundle_with_outputs, npy

BUILT = BuiltImage("reprobox/numpy-sgd:0123", "base:1", "3.11.2", "3.11.7")


def test_spec_is_hardened_and_seeded(sample_manifest: Manifest) -> None:
    spec = replay_module.container_spec(sample_manifest, BUILT, (), 60.0)
    assert spec.image == BUILT.tag and spec.argv == ("python", "train.py", "--epochs", "3")
    assert spec.network is False and spec.read_only_root and spec.user == "1000:1000"
    assert spec.writable_dir == "/app" and spec.workdir == "/app" and spec.timeout_s == 60.0
    assert spec.env["PYTHONHASHSEED"] == "1234" and spec.env["REPROBOX_SEED"] == "1234"
    assert spec.env["PYTHONPATH"].split(":")[0] == "/opt/reprobox/shim"
    assert spec.env["OMP_NUM_THREADS"] == "1"  # captured env, passed on


@pytest.mark.parametrize(
    ("workdir", "container_path", "local"),
    [
        ("/app", "/app/out/w.npy", "out/w.npy"),
        ("/app/sub", "/app/sub/w.npy", "w.npy"),
        ("/app/sub", "/app/out/w.npy", "app/out/w.npy"),
    ],
)
def test_fetched_paths_follow_the_engine_layout(
    workdir: str, container_path: str, local: str
) -> None:
    assert replay_module._local(Path("/r"), workdir, container_path) == Path("/r") / local


def _bundle_with_input(tmp_path: Path, sample_manifest: Manifest, data: bytes) -> tuple:
    project = tmp_path / "proj"
    bundle = Bundle(project / ".reprobox" / "runs" / "r1")
    bundle.path.mkdir(parents=True)
    (project / "data").mkdir()
    (project / "data" / "train.csv").write_bytes(data)
    record = FileRecord("data/train.csv", sha256_file(project / "data" / "train.csv"), len(data))
    return bundle, replace(sample_manifest, inputs=(record,)), project


def test_inputs_are_mounted_read_only(tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle, manifest, project = _bundle_with_input(tmp_path, sample_manifest, b"a,b\n1,2\n")
    (mount,) = replay_module.input_mounts(bundle, manifest)
    assert mount.read_only and mount.target == "/app/data/train.csv"
    assert mount.source == str(project / "data" / "train.csv")


def test_a_changed_input_is_refused(tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle, manifest, project = _bundle_with_input(tmp_path, sample_manifest, b"a,b\n1,2\n")
    (project / "data" / "train.csv").write_bytes(b"a,b\n1,3\n")
    with pytest.raises(ReplayError, match="train.csv changed since capture"):
        replay_module.input_mounts(bundle, manifest)
    (project / "data" / "train.csv").unlink()
    with pytest.raises(ReplayError, match="train.csv is missing"):
        replay_module.input_mounts(bundle, manifest)


def test_project_root_needs_the_runs_layout(tmp_path: Path) -> None:
    assert replay_module.project_root(Bundle(tmp_path / ".reprobox" / "runs" / "r")) == tmp_path
    with pytest.raises(BundleError, match="not inside a project's .reprobox/runs/"):
        replay_module.project_root(Bundle(tmp_path / "elsewhere"))


def test_state_differences_are_explained() -> None:
    original = {"numpy.version": "2.1.3", "numpy.state_sha256": "aa", "random.state_sha256": "bb"}
    replayed = {"numpy.version": "2.2.0", "numpy.state_sha256": "cc", "random.state_sha256": "bb"}
    notes = replay_module._state_notes(original, replayed)
    assert notes == [
        "numpy.version differs: original 2.1.3, replay 2.2.0",
        "numpy's global RNG ended in another state: the run drew other random numbers",
    ]
    assert replay_module._state_notes(original, dict(original)) == []


def test_an_input_the_container_user_cannot_read_is_refused(
    tmp_path: Path, sample_manifest: Manifest
) -> None:
    bundle, manifest, project = _bundle_with_input(tmp_path, sample_manifest, b"a\n")
    (project / "data" / "train.csv").chmod(0o600)
    with pytest.raises(ReplayError, match="not readable by the replay's user") as err:
        replay_module.input_mounts(bundle, manifest)
    assert "chmod o+r" in (err.value.hint or "")


def _printed_only(tmp_path: Path, sample_manifest: Manifest, printed: bytes) -> Bundle:
    from reprobox import manifest as manifest_io
    from reprobox.replay import ReplayResult

    bundle = Bundle(tmp_path / ".reprobox" / "runs" / "r1")
    (bundle.logs_dir).mkdir(parents=True)
    manifest_io.write(replace(sample_manifest, outputs=()), bundle.manifest_path)
    (bundle.logs_dir / "stdout.log").write_bytes(b"epoch 0: loss 0.5\nepoch 1: loss 0.25\n")
    replay_dir = bundle.replays_dir / "x1"
    (replay_dir / "logs").mkdir(parents=True)
    (replay_dir / "logs" / "stdout.log").write_bytes(printed)
    result = ReplayResult("x1", "img", 0, False, 1.0, "now", {})
    (replay_dir / "replay.json").write_text(result.to_json())
    return bundle


def test_a_run_without_output_files_is_judged_by_what_it_printed(
    tmp_path: Path, sample_manifest: Manifest
) -> None:
    same = _printed_only(
        tmp_path / "a", sample_manifest, b"epoch 0: loss 0.5\nepoch 1: loss 0.25\n"
    )
    _, comparison = replay_module.compare_replay(same)
    assert comparison.verdict == "identical" and comparison.outputs[0].path == "stdout"
    assert any("compared what it printed" in note for note in comparison.notes)
    other = _printed_only(
        tmp_path / "b", sample_manifest, b"epoch 0: loss 0.5\nepoch 1: loss 0.3\n"
    )
    assert replay_module.compare_replay(other)[1].verdict == "different"


@pytest.mark.parametrize(("exit_code", "timed_out"), [(1, False), (0, True)])
def test_a_replay_that_ended_otherwise_did_not_reproduce(
    tmp_path: Path, sample_manifest: Manifest, exit_code: int, timed_out: bool
) -> None:
    from reprobox.replay import ReplayResult

    printed = b"epoch 0: loss 0.5\nepoch 1: loss 0.25\n"
    bundle = _printed_only(tmp_path, sample_manifest, printed)
    replay_dir = bundle.replays()[-1]
    result = ReplayResult("x1", "img", exit_code, timed_out, 1.0, "now", {})
    (replay_dir / "replay.json").write_text(result.to_json())
    _, comparison = replay_module.compare_replay(bundle)
    assert comparison.verdict == "different" and not comparison.reproduced
    assert comparison.outputs[0].verdict == "identical"  # the files alone would have passed


def test_a_command_with_a_masked_secret_is_not_replayed(sample_manifest: Manifest) -> None:
    masked = replace(
        sample_manifest,
        run=replace(sample_manifest.run, argv=("python", "train.py", "--api-key", "***")),
    )
    with pytest.raises(ReplayError, match="argument 3 of the recorded command held a secret"):
        replay_module.container_spec(masked, BUILT, (), 60.0)


def test_memory_limit_is_passed_on(sample_manifest: Manifest) -> None:
    assert replay_module.container_spec(sample_manifest, BUILT, (), 1.0, "8g").memory == "8g"


def test_the_table_says_why_when_only_the_ending_differs(
    tmp_path: Path, sample_manifest: Manifest
) -> None:
    import io

    from rich.console import Console

    from reprobox import report
    from reprobox.replay import ReplayResult

    bundle = _printed_only(tmp_path, sample_manifest, b"epoch 0: loss 0.5\nepoch 1: loss 0.25\n")
    result = ReplayResult("x1", "img", 1, False, 1.0, "now", {})
    (bundle.replays()[-1] / "replay.json").write_text(result.to_json())
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(report.comparison_table(replay_module.compare_replay(bundle)[1]))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "NOT REPRODUCED (different: the outputs match, but the run did not end" in text
    assert "exit code differs: original 0, replay 1" in text


# --- GPUs ----------------------------------------------------------------------------------------

H100 = Gpu(0, "NVIDIA H100 80GB HBM3", "GPU-ff35ffd0-a8cf-06e7-f065-0d19afd675e6", 81559, "9.0")
H100_HOST = Gpus("nvml", "580.159.04", "13.0", (H100,))


def _gpu_bundle(tmp_path: Path, sample_manifest: Manifest) -> tuple[Bundle, FakeEngine]:
    import json

    from reprobox import manifest as manifest_io

    state = {"torch.cuda.initialized": True, "torch.cuda.devices_used": "0:NVIDIA H100 80GB HBM3",
             "torch.matmul.allow_tf32": False}
    manifest = replace(sample_manifest, gpu=H100_HOST, outputs=(), inputs=(),
                       cuda=CudaStack("2.11.0+cu130", "13.0", {}, {"torch": "13.0"}),
                       determinism=replace(sample_manifest.determinism, state=state))
    bundle = Bundle(tmp_path / ".reprobox" / "runs" / "r1")
    bundle.path.mkdir(parents=True)
    manifest_io.write(manifest, bundle.manifest_path)
    bundle.build_record_path.write_text(json.dumps(asdict(BUILT)))
    return bundle, FakeEngine(images={BUILT.tag}, runtimes=("nvidia",))


def test_a_gpu_run_gets_the_hosts_gpus_and_tf32_as_the_original_had_it(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle, engine = _gpu_bundle(tmp_path, sample_manifest)
    folder = replay_module.replay(bundle, engine, lambda chunk: None, host_gpus=H100_HOST)
    probe, spec = engine.runs  # the environment probe runs first, given the same GPUs
    assert (probe.gpu_count, spec.gpu_count, spec.gpu_ids) == (1, 1, ())
    assert spec.env["REPROBOX_TF32_OFF"] == "matmul"
    assert spec.env["CUDA_VISIBLE_DEVICES"] == "0"
    result = replay_module.read_result(folder)
    assert (result.gpus, result.expect_tolerance, result.notes) == (True, False, [])


def test_a_gpu_run_on_a_host_without_gpus_is_refused_before_anything_runs(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle, engine = _gpu_bundle(tmp_path, sample_manifest)
    with pytest.raises(PreflightError, match="this host has no NVIDIA GPU"):
        replay_module.replay(bundle, engine, lambda chunk: None)
    assert engine.runs == [] and not bundle.replays_dir.exists()


def test_cpu_replays_hide_the_gpus_and_are_judged_by_tolerance(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle, engine = _gpu_bundle(tmp_path, sample_manifest)
    folder = replay_module.replay(bundle, engine, lambda chunk: None, cpu=True)
    probe, spec = engine.runs  # the environment probe runs first, without GPUs too
    assert probe.gpu_count == 0
    assert spec.gpu_count == 0 and spec.env["CUDA_VISIBLE_DEVICES"] == ""
    result = replay_module.read_result(folder)
    assert result.expect_tolerance and "replayed on the CPU (--cpu)" in result.notes[0]


def test_tolerance_is_widened_and_said_when_equality_is_not_expected(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    import numpy as np

    from reprobox import manifest as manifest_io
    from reprobox.replay import ReplayResult

    bundle = Bundle(tmp_path / ".reprobox" / "runs" / "r1")
    (bundle.outputs_dir / "out").mkdir(parents=True)
    weights = np.linspace(0, 1, 100, dtype=np.float32)
    np.save(bundle.outputs_dir / "out" / "w.npy", weights)
    record = Output("out/w.npy", sha256_file(bundle.outputs_dir / "out" / "w.npy"),
                    (bundle.outputs_dir / "out" / "w.npy").stat().st_size)
    manifest_io.write(replace(sample_manifest, outputs=(record,)), bundle.manifest_path)
    replay_dir = bundle.replays_dir / "x1"
    (replay_dir / "outputs" / "out").mkdir(parents=True)
    np.save(replay_dir / "outputs" / "out" / "w.npy", weights * np.float32(1 + 2e-6))
    for expect_tolerance, verdict in ((False, "different"), (True, "within_tolerance")):
        result = ReplayResult("x1", "img", 0, False, 1.0, "now", {},
                              expect_tolerance=expect_tolerance)
        (replay_dir / "replay.json").write_text(result.to_json())
        comparison = replay_module.compare_replay(bundle)[1]
        assert comparison.verdict == verdict
    assert any("judged within rtol=0.0001" in note for note in comparison.notes)


# --- the replay's own environment, repeats, and any two runs compared --------------------------


def _scripted(tmp_path: Path, sample_manifest: Manifest, *writes: bytes,
              **engine_options: object) -> tuple[Bundle, ScriptedEngine]:
    bundle = bundle_with_outputs(tmp_path, sample_manifest, {"out/w.npy": npy([1.0, 2.0])})
    engine = ScriptedEngine(images={BUILT.tag}, writes=[{"out/w.npy": w} for w in writes],
                            **engine_options)  # type: ignore[arg-type]
    return bundle, engine


def test_a_replay_records_its_environment_from_a_probe_container(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    import platform

    from reprobox.envdiff import PROBE_SCRIPTS, Environment

    bundle, engine = _scripted(tmp_path, sample_manifest, npy([1.0, 2.0]))
    folder = replay_module.replay(bundle, engine, lambda chunk: None)
    (probe,), (spec,) = engine.probes, engine.runs
    assert probe.argv[:3] == ("python", "-I", "/opt/reprobox/probe/container_probe.py")
    assert {(m.source, m.read_only) for m in probe.mounts} == {
        (str(path), True) for path in PROBE_SCRIPTS}
    assert (probe.image, probe.env, probe.user, probe.network) == (
        spec.image, spec.env, "1000:1000", False)
    assert probe.writable_dir is None and probe.read_only_root and probe.workdir == "/tmp"
    environment = Environment.from_json((folder / "environment.json").read_text(), "env")
    assert environment.python is not None
    assert environment.python.version == platform.python_version()
    assert environment.state == replay_module.read_result(folder).state == STATE
    comparison = replay_module.compare_replay(bundle)[1]
    assert comparison.verdict == "identical"
    cpu_model = next(d for d in comparison.environment if d.what == "CPU model")
    assert cpu_model.original == "Test CPU" and cpu_model.weight == 2
    weights = [d.weight for d in comparison.environment]
    assert weights == sorted(weights, reverse=True)


def test_a_failed_probe_is_a_note_and_the_replay_goes_on(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle, engine = _scripted(tmp_path, sample_manifest, npy([1.0, 2.0]), probe_fails=True)
    folder = replay_module.replay(bundle, engine, lambda chunk: None)
    recorded = json.loads((folder / "environment.json").read_text())
    assert recorded["notes"] == ["the environment probe failed (exit 1): Traceback: boom"]
    comparison = replay_module.compare_replay(bundle)[1]
    assert comparison.verdict == "identical" and comparison.environment == ()
    assert "the environment probe failed (exit 1): Traceback: boom" in comparison.notes


def test_an_older_replay_without_environment_json_still_compares(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle, engine = _scripted(tmp_path, sample_manifest, npy([1.0, 2.0]))
    folder = replay_module.replay(bundle, engine, lambda chunk: None)
    (folder / "environment.json").unlink()
    comparison = replay_module.compare_replay(bundle)[1]
    assert comparison.verdict == "identical"
    assert "the replay recorded no environment.json" in comparison.notes


def test_repeat_replays_in_order_and_probes_once(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle, engine = _scripted(tmp_path, sample_manifest, *[npy([1.0, 2.0])] * 3)
    folders = replay_module.replay_many(bundle, engine, lambda chunk: None, 3)
    assert bundle.replays() == folders and len(set(folders)) == 3
    assert len(engine.probes) == 1 and len(engine.runs) == 3
    assert all((folder / "environment.json").is_file() for folder in folders)
    with pytest.raises(UsageError, match="at least 1"):
        replay_module.replay_many(bundle, engine, lambda chunk: None, 0)


def test_any_two_runs_compare_either_way_and_write_nothing(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle, engine = _scripted(tmp_path, sample_manifest, npy([1.0, 2.0]), npy([1.0, 2.5]))
    first, second = replay_module.replay_many(bundle, engine, lambda chunk: None, 2)
    original = replay_module.original_run(bundle)
    one, two = (replay_module.replay_run(bundle, folder) for folder in (first, second))
    assert replay_module.compare_runs(one, two).outputs[0].max_abs_diff == 0.5
    assert replay_module.compare_runs(two, one).outputs[0].verdict == "different"
    assert replay_module.compare_runs(one, original).verdict == "identical"  # by its bytes
    assert replay_module.compare_runs(two, original).outputs[0].max_abs_diff == 0.5
    assert replay_module.compare_runs(original, two).verdict == "different"
    assert not list(tmp_path.rglob("comparison.json"))


def test_two_replays_name_each_other_in_the_notes(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle, engine = _scripted(tmp_path, sample_manifest, npy([1.0, 2.0]), npy([1.0, 2.0]),
                               exit_codes=[0, 1])
    first, second = replay_module.replay_many(bundle, engine, lambda chunk: None, 2)
    comparison = replay_module.compare_runs(replay_module.replay_run(bundle, first),
                                            replay_module.replay_run(bundle, second))
    assert comparison.verdict == "different"
    assert f"exit code differs: replay {first.name} 0, replay {second.name} 1" in comparison.notes


def test_runs_are_opened_from_what_the_command_line_names(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle, engine = _scripted(tmp_path, sample_manifest, npy([1.0, 2.0]))
    folder = replay_module.replay(bundle, engine, lambda chunk: None)
    assert replay_module.open_run(str(bundle.path)).replay_dir is None
    assert replay_module.open_run("r1", cwd=tmp_path).bundle.path == bundle.path
    opened = replay_module.open_run(str(folder))
    assert (opened.replay_dir, opened.bundle.path) == (folder, bundle.path)
    with pytest.raises(BundleError, match="nosuch: neither a bundle nor a replay folder"):
        replay_module.open_run("nosuch", cwd=tmp_path)
    stray = tmp_path / "elsewhere"
    shutil.copytree(folder, stray)
    with pytest.raises(BundleError, match="a replay folder outside its bundle"):
        replay_module.open_run(str(stray))


def test_replays_made_alike_are_held_to_bits_against_each_other(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    from reprobox.replay import ReplayResult

    bundle, engine = _scripted(tmp_path, sample_manifest, npy([1.0, 2.0]),
                               npy([1.0, 2.0 * (1 + 2e-6)]))
    folders = replay_module.replay_many(bundle, engine, lambda chunk: None, 2)
    for folder in folders:  # both replayed on the CPU, say
        result = replace(replay_module.read_result(folder), expect_tolerance=True)
        (folder / "replay.json").write_text(ReplayResult.to_json(result))
    one, two = (replay_module.replay_run(bundle, folder) for folder in folders)
    assert replay_module.compare_runs(one, two).verdict == "different"
    original = replay_module.original_run(bundle)
    assert replay_module.compare_runs(original, two).verdict == "within_tolerance"


def test_variation_groups_identical_replays_and_measures_the_spread(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    from reprobox import variation

    same, other = npy([1.0, 2.0]), npy([1.0, 2.25])
    bundle, engine = _scripted(tmp_path, sample_manifest, same, other, same)
    folders = replay_module.replay_many(bundle, engine, lambda chunk: None, 3)
    measured = variation.measure(bundle, folders)
    assert measured.groups == ((folders[0].name, folders[2].name), (folders[1].name,))
    assert measured.verdicts == ("identical", "different", "identical")
    assert (measured.identical_to_original, measured.reproduced) == (2, 2)
    (spread,) = measured.outputs
    assert (spread.path, spread.distinct, spread.verdict, spread.max_abs_diff) == (
        "out/w.npy", 2, "different", 0.25)
    assert all((folder / "comparison.json").is_file() for folder in folders)
    assert json.loads(measured.to_json())["verdicts"][folders[1].name] == "different"


def test_variation_of_identical_replays(tmp_path: Path, sample_manifest: Manifest) -> None:
    from reprobox import variation

    bundle, engine = _scripted(tmp_path, sample_manifest, *[npy([1.0, 2.0])] * 2)
    measured = variation.measure(
        bundle, replay_module.replay_many(bundle, engine, lambda chunk: None, 2))
    assert measured.identical_to_each_other and measured.identical_to_original == 2
    assert [(o.distinct, o.verdict, o.max_abs_diff) for o in measured.outputs] == [
        (1, "identical", 0.0)]


def test_a_reference_replay_that_wrote_less_did_not_match(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle, engine = _scripted(tmp_path, sample_manifest, npy([1.0, 2.0]))
    engine.writes.insert(0, {})  # the first replay wrote nothing
    first, second = replay_module.replay_many(bundle, engine, lambda chunk: None, 2)
    comparison = replay_module.compare_runs(replay_module.replay_run(bundle, first),
                                            replay_module.replay_run(bundle, second))
    assert comparison.verdict == "different"
    assert (f"the replay {first.name} did not write out/w.npy; the replay {second.name} did"
            in comparison.notes)


def test_tolerances_reach_a_run_judged_by_what_it_printed(
    tmp_path: Path, sample_manifest: Manifest
) -> None:
    from reprobox.compare.tolerances import Tolerance

    bundle = _printed_only(tmp_path, sample_manifest, b"epoch 0: loss 0.5\nepoch 1: loss 0.26\n")
    assert replay_module.compare_replay(bundle)[1].verdict == "different"
    loose = (Tolerance("stdout", atol=0.1),)
    assert replay_module.compare_replay(bundle, tolerances=loose)[1].verdict == "within_tolerance"


def test_a_replay_compared_with_an_original_that_kept_only_a_digest(
    tmp_path: Path, sample_manifest: Manifest
) -> None:
    from reprobox import manifest as manifest_io
    from reprobox.replay import ReplayResult

    data = b"\x00" * 64
    record = Output("big.bin", hashlib.sha256(data).hexdigest(), len(data), stored=False)
    bundle = Bundle(tmp_path / ".reprobox" / "runs" / "r1")
    bundle.path.mkdir(parents=True)
    manifest_io.write(replace(sample_manifest, outputs=(record,)), bundle.manifest_path)
    replay_dir = bundle.replays_dir / "x1"
    (replay_dir / "outputs").mkdir(parents=True)
    (replay_dir / "outputs" / "big.bin").write_bytes(data)
    (replay_dir / "replay.json").write_text(ReplayResult("x1", "img", 0, False, 1.0, "now",
                                                         {}).to_json())
    # the replay as the reference, the original (digest only) as the other side
    comparison = replay_module.compare_runs(replay_module.replay_run(bundle, replay_dir),
                                            replay_module.original_run(bundle))
    (result,) = comparison.outputs
    assert (result.verdict, result.detail) == ("identical", "sha256 matches the record")
    assert json.loads(comparison.to_json())["verdict"] == "identical"
