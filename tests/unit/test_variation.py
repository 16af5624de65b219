"""variation.measure_sweep: real replay folders (from replay_many with a scripted engine) read
back as a seed sweep. `measure`'s own tests live beside the replays in test_replay.py."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from reprobox import replay as replay_module
from reprobox.bundle import Bundle
from reprobox.manifest import Manifest
from reprobox.variation import measure_sweep
from tests.unit.scripted import BUILT, ScriptedEngine, bundle_with_outputs

OWN = 1234  # sample_manifest's captured seed
LOSS = "out/metrics.json:loss"


def _metrics(loss: float) -> bytes:
    return json.dumps({"loss": loss}).encode()


def _swept(tmp_path: Path, manifest: Manifest, seeds: Sequence[int], losses: Sequence[float],
           exit_codes: Sequence[int] = ()) -> tuple[Bundle, list[Path]]:
    """A bundle whose original's loss was 0.5, replayed once per seed with the given losses."""
    bundle = bundle_with_outputs(tmp_path, manifest, {"out/metrics.json": _metrics(0.5)})
    engine = ScriptedEngine(images={BUILT.tag},
                            writes=[{"out/metrics.json": _metrics(loss)} for loss in losses],
                            exit_codes=list(exit_codes))
    folders = replay_module.replay_many(bundle, engine, lambda chunk: None, 1, seeds=seeds)
    return bundle, folders


def test_the_originals_own_seed_is_left_out_of_the_spread(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    # Seed 1234 replays the original itself: counted, it would pull the mean towards it and
    # shrink the spread that the other seeds measure.
    bundle, folders = _swept(tmp_path, sample_manifest, (1, OWN, 2), (0.25, 0.5, 0.75))
    sweep = measure_sweep(bundle, folders)
    assert sweep.seeds == (1, 2) and sweep.failed == ()
    assert sweep.own_seed == (OWN, "identical")
    (loss,) = sweep.metrics
    assert (loss.name, loss.n, loss.mean, loss.original) == (LOSS, 2, 0.5, 0.5)
    assert dict(loss.values) == {1: 0.25, 2: 0.75}
    assert (loss.min, loss.max) == (0.25, 0.75)
    assert sweep.notes == (f"seed {OWN} is the original's own: its replay was identical, and it "
                           "is left out of the spread (it would pull the mean to the original)",)
    assert sweep.to_dict()["own_seed"] == {"seed": OWN, "verdict": "identical"}
    assert all((folder / "comparison.json").is_file() for folder in folders)


def test_the_own_seeds_verdict_is_its_comparison_with_the_original(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle, folders = _swept(tmp_path, sample_manifest, (OWN, 7), (0.5000001, 0.4))
    sweep = measure_sweep(bundle, folders)
    assert sweep.own_seed == (OWN, "different")
    assert sweep.seeds == (7,) and sweep.metrics[0].n == 1
    recorded = json.loads((folders[0] / "comparison.json").read_text())
    assert recorded["verdict"] == "different"


def test_an_own_seed_whose_replay_failed_is_a_failed_seed(
        tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle, folders = _swept(tmp_path, sample_manifest, (OWN, 1, 2), (0.5, 0.25, 0.75),
                             exit_codes=[1, 0, 0])
    sweep = measure_sweep(bundle, folders)
    assert sweep.own_seed is None and sweep.seeds == (1, 2)
    assert sweep.failed == ((OWN, "exit code 1, the original's 0"),)


def test_seeds_whose_task_never_ran_count_as_failed(tmp_path: Path,
                                                    sample_manifest: Manifest) -> None:
    bundle, folders = _swept(tmp_path, sample_manifest, (1, 2), (0.25, 0.75), exit_codes=[0, 2])
    lost = {3: "Slurm job 77 task 2 could not replay: docker is not on PATH on node2"}
    sweep = measure_sweep(bundle, folders, lost=lost)
    assert sweep.seeds == (1,)
    assert sweep.failed == ((3, lost[3]), (2, "exit code 2, the original's 0"))
    assert f"seed 3 not counted: {lost[3]}" in sweep.notes
    assert sweep.to_dict()["failed"][0] == {"seed": 3, "why": lost[3]}
    assert lost == {3: "Slurm job 77 task 2 could not replay: docker is not on PATH on node2"}


def test_a_sweep_of_the_own_seed_alone_says_so(tmp_path: Path,
                                               sample_manifest: Manifest) -> None:
    bundle, folders = _swept(tmp_path, sample_manifest, (OWN,), (0.5,))
    sweep = measure_sweep(bundle, folders)
    assert sweep.seeds == () and sweep.own_seed == (OWN, "identical")
    assert not any("no seed's replay finished" in note for note in sweep.notes)
    assert sweep.notes[0].startswith(f"seed {OWN} is the original's own")


def test_every_seed_lost_leaves_nothing_to_summarize(tmp_path: Path,
                                                     sample_manifest: Manifest) -> None:
    bundle = bundle_with_outputs(tmp_path, sample_manifest, {"out/metrics.json": _metrics(0.5)})
    sweep = measure_sweep(bundle, [], lost={1: "lost", 2: "lost too"})
    assert sweep.seeds == () and sweep.own_seed is None
    assert sweep.notes == ("no seed's replay finished: there is nothing to summarize",
                           "seed 1 not counted: lost", "seed 2 not counted: lost too")
