"""Host side of seeding: the Determinism record, the process env, and reading back the state."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reprobox import manifest, seeding
from reprobox.errors import CaptureError, UsageError
from reprobox.manifest import Manifest

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def test_determinism_sets_every_variable_needed_before_the_interpreter_starts() -> None:
    det = seeding.determinism(1234, threads=2)

    assert (det.seed, det.python_hash_seed, det.threads, det.deterministic) == (
        1234, "1234", 2, True)
    assert dict(det.env) == {
        "PYTHONHASHSEED": "1234", **dict.fromkeys(THREAD_VARS, "2"),
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8", "PYTHONNOUSERSITE": "1",
        "REPROBOX_SEED": "1234", "REPROBOX_DETERMINISTIC": "1", "REPROBOX_WARN_ONLY": "0"}


def test_warn_only_is_recorded_and_passed_to_the_shim() -> None:
    det = seeding.determinism(3, warn_only=True)
    assert (det.warn_only, det.env["REPROBOX_WARN_ONLY"]) == (True, "1")


@pytest.mark.parametrize(("packages", "expected"), [
    ((), {}),
    (("numpy", "torch"), {}),
    (("jax", "jaxlib"), {"XLA_FLAGS": "--xla_gpu_deterministic_ops=true"}),
    (("tensorflow",), {"TF_DETERMINISTIC_OPS": "1", "TF_CUDNN_DETERMINISTIC": "1",
                       "XLA_FLAGS": "--xla_gpu_deterministic_ops=true"}),
])
def test_tensorflow_and_jax_get_their_determinism_switches(
        packages: tuple[str, ...], expected: dict[str, str]) -> None:
    env = seeding.determinism(3, packages=packages).env
    framework_vars = {k: v for k, v in env.items() if k.startswith(("TF_", "XLA_"))}
    assert framework_vars == expected
    assert not any(k.startswith(("TF_", "XLA_"))
                   for k in seeding.determinism(3, deterministic=False, packages=packages).env)


def test_the_users_xla_flags_are_kept_beside_ours() -> None:
    det = seeding.determinism(3, packages=("jax",))
    env = seeding.process_env(det, "/shim", None, {"XLA_FLAGS": "--xla_dump_to=/tmp/x"})
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_gpu_deterministic_ops=true"


@pytest.mark.parametrize(("state", "expected"), [
    ({}, None),
    ({"torch.matmul.allow_tf32": True, "torch.cudnn.allow_tf32": True}, None),
    ({"torch.matmul.allow_tf32": False, "torch.cudnn.allow_tf32": True}, "matmul"),
    ({"torch.matmul.allow_tf32": False, "torch.cudnn.allow_tf32": False}, "matmul,cudnn"),
])
def test_a_replay_turns_tf32_off_where_the_original_had_it_off(
        state: dict[str, bool], expected: str | None) -> None:
    det = dataclasses.replace(seeding.determinism(3), state=state)
    assert seeding.replay_env(det).get("REPROBOX_TF32_OFF") == expected


def test_determinism_can_be_switched_off_but_seeds_stay() -> None:
    det = seeding.determinism(7, deterministic=False)
    assert (det.deterministic, det.env["REPROBOX_DETERMINISTIC"], det.env["REPROBOX_SEED"]) == (
        False, "0", "7")


def test_no_seed_draws_a_fresh_one_in_range() -> None:
    seeds = {seeding.determinism(None).seed for _ in range(3)}
    assert len(seeds) == 3
    assert all(0 <= seed <= 2**32 - 1 for seed in seeds)


@pytest.mark.parametrize(("seed", "threads"), [(-1, 1), (2**32, 1), (True, 1), (1, 0), (1, True)])
def test_out_of_range_seeds_and_thread_counts_are_refused(seed: int, threads: int) -> None:
    with pytest.raises(CaptureError) as caught:
        seeding.determinism(seed, threads=threads)
    assert caught.value.hint


def test_process_env_puts_the_shim_first_and_keeps_the_rest() -> None:
    det = seeding.determinism(5)
    base = {"HOME": "/home/u", "PYTHONHASHSEED": "random", "PYTHONPATH": "/a:/shim:/b",
            "REPROBOX_STATE_DIR": "/stale"}

    env = seeding.process_env(det, "/shim", "/state", base)

    assert env == {"HOME": "/home/u", **det.env, "PYTHONPATH": "/shim:/a:/b",
                   "REPROBOX_STATE_DIR": "/state"}
    assert base["PYTHONPATH"] == "/a:/shim:/b"  # the caller's mapping is left alone


def test_process_env_without_a_state_dir_drops_an_inherited_one() -> None:
    env = seeding.process_env(seeding.determinism(5), seeding.CONTAINER_SHIM_DIR, None,
                              {"REPROBOX_STATE_DIR": "/stale"})
    assert env["PYTHONPATH"] == "/opt/reprobox/shim"
    assert "REPROBOX_STATE_DIR" not in env


def test_shim_dir_holds_the_shim() -> None:
    assert (seeding.SHIM_DIR / "sitecustomize.py").is_file()
    assert (seeding.SHIM_DIR / "reprobox_shim.py").is_file()


def _state(pid: int, ppid: int, started: float, **extra: object) -> dict[str, object]:
    return {"process.pid": pid, "process.ppid": ppid, "process.start_time": started, **extra}


def test_read_state_returns_the_root_process_and_skips_corrupt_files(tmp_path: Path) -> None:
    # the child's clock reads earlier than its parent's: the tree decides, not the clock
    files = {
        "state-100.json": _state(100, 1, 10.0, argv0="train.py"),
        "state-101.json": _state(101, 100, 9.0, argv0="-c"),
        "state-102.json": _state(102, 101, 12.0),
        "state-103.json": "{not json",
        "state-104.json": [1, 2],
        "state-105.json": {"process.pid": 105, "nested": {"no": 1}},
        ".state-106.json.106.tmp": _state(106, 1, 1.0),
    }
    for name, content in files.items():
        text = content if isinstance(content, str) else json.dumps(content)
        (tmp_path / name).write_text(text, encoding="utf-8")

    assert seeding.read_state(tmp_path) == {**_state(100, 1, 10.0, argv0="train.py"),
                                            "processes": 3}


def test_read_state_prefers_the_earliest_start_among_unrelated_processes(tmp_path: Path) -> None:
    for pid, started in ((200, 5.0), (201, 3.0), (202, float("nan"))):
        (tmp_path / f"state-{pid}.json").write_text(json.dumps(_state(pid, 1, started)))
    assert seeding.read_state(tmp_path)["process.pid"] == 201


def test_what_the_ranks_did_on_the_gpus_is_the_runs(tmp_path: Path) -> None:
    # torchrun: the launcher imports torch and never touches CUDA; each rank does
    launcher = {**_state(300, 1, 1.0), "torch.cuda.initialized": False}
    ranks = [{**_state(301 + rank, 300, 2.0), "torch.cuda.initialized": True,
              "torch.cuda.devices_used": f"{rank}:NVIDIA H100 80GB HBM3",
              "torch.nondeterministic_ops": "_histc_cuda with floating point input"}
             for rank in range(2)]
    for state in (launcher, *ranks):
        (tmp_path / f"state-{state['process.pid']}.json").write_text(json.dumps(state))

    merged = seeding.read_state(tmp_path)

    assert merged["process.pid"] == 300 and merged["processes"] == 3
    assert merged["torch.cuda.initialized"] is True
    assert merged["torch.cuda.devices_used"] == (
        "0:NVIDIA H100 80GB HBM3; 1:NVIDIA H100 80GB HBM3")
    assert merged["torch.nondeterministic_ops"] == "_histc_cuda with floating point input"


def test_read_state_with_nothing_written(tmp_path: Path) -> None:
    assert seeding.read_state(tmp_path / "absent") == {"processes": 0}


def test_read_state_after_a_real_run_with_a_child(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import subprocess, sys
        subprocess.run([sys.executable, "-c", "import random; random.random()"], check=True)
        """), encoding="utf-8")
    base = {name: value for name, value in os.environ.items()
            if not name.startswith(("PYTHON", "REPROBOX_"))}
    env = seeding.process_env(seeding.determinism(77), str(seeding.SHIM_DIR),
                              str(tmp_path / "state"), base)

    subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, check=True, timeout=60)

    state = seeding.read_state(tmp_path / "state")
    assert {key: state[key] for key in ("processes", "seed", "process.argv0",
                                        "python.hash_seed", "random.seeded")} == {
        "processes": 2, "seed": 77, "process.argv0": str(script), "python.hash_seed": "77",
        "random.seeded": True}


def test_determinism_and_state_round_trip_through_the_manifest(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    (tmp_path / "state-1.json").write_text(json.dumps(
        {**_state(1, 0, 1.5), "numpy.user_seed": None, "torch.imported": False}))
    det = dataclasses.replace(seeding.determinism(9), state=seeding.read_state(tmp_path))
    original = dataclasses.replace(sample_manifest, determinism=det)

    assert manifest.loads(manifest.dumps(original)) == original


def test_a_seed_sets_the_hash_seed_and_the_shims_seed_only() -> None:
    assert seeding.seed_env(7) == {"PYTHONHASHSEED": "7", "REPROBOX_SEED": "7"}


def test_resolved_seeds_name_the_captured_one_by_none() -> None:
    assert seeding.resolved_seeds((None, 1, seeding.MAX_SEED), captured=3) == [3, 1,
                                                                               seeding.MAX_SEED]


@pytest.mark.parametrize(("seeds", "said"), [
    ((), "no seed"), ((None, 3), "asked for twice"), ((5, 5), "asked for twice"),
    ((-1,), "not an integer"), ((seeding.MAX_SEED + 1,), "not an integer"),
    ((True,), "not an integer"),
])
def test_bad_or_repeated_seeds_are_a_usage_error(seeds: tuple[int | None, ...],
                                                 said: str) -> None:
    with pytest.raises(UsageError, match=said):
        seeding.resolved_seeds(seeds, captured=3)
