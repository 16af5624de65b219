"""Each replay records its environment from inside its container; `--repeat N` replays N times.

One capture of examples/numpy-sgd, one build, `reprobox run --repeat 2`: the two replays must
agree with each other and with the original bit for bit, and each must have described the image
it ran in (its Python, its packages, the host's CPU as the container sees it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reprobox.baseimage import BaseImage
from reprobox.bundle import Bundle
from reprobox.capture.system import cpu_fields

from .helpers import (
    EXAMPLES,
    NUMPY_PIN,
    CliResult,
    ImageTracker,
    make_project,
    numpy_venv,
    only_bundle,
    reprobox,
    venv_env,
)

pytestmark = pytest.mark.docker


@dataclass(frozen=True)
class Repeated:
    """numpy-sgd captured, then taken through `reprobox run --repeat 2 --json`."""

    project: Path
    bundle: Bundle
    run: CliResult

    def environment(self, replay: Path) -> dict[str, Any]:
        return dict(json.loads((replay / "environment.json").read_text()))


@pytest.fixture(scope="module")
def repeated(base_image: BaseImage, images: ImageTracker,
             tmp_path_factory: pytest.TempPathFactory) -> Repeated:
    env = venv_env(numpy_venv(tmp_path_factory))
    project = images.track(make_project(tmp_path_factory.mktemp("repeat"), "repeat",
                                        copy_from=EXAMPLES / "numpy-sgd"))
    captured = reprobox(["capture", "--seed", "3", "--", "python", "train.py"], project, env)
    assert captured.code == 0, captured
    bundle = only_bundle(project)
    return Repeated(project, bundle,
                    reprobox(["run", "--repeat", "2", "--json", str(bundle.path)], project))


def test_two_replays_agree_with_each_other_and_the_original(repeated: Repeated) -> None:
    assert repeated.run.code == 0, repeated.run
    document = json.loads(repeated.run.out)
    variation = document["variation"]
    assert len(variation["replays"]) == 2 and variation["identical_to_each_other"] is True
    assert variation["identical_to_original"] == 2 and variation["reproduced"] == 2
    assert {(o["path"], o["distinct"], o["verdict"], o["max_abs_diff"])
            for o in variation["outputs"]} == {
        (path, 1, "identical", 0.0)
        for path in ("out/loss.csv", "out/metrics.json", "out/weights.npy")}
    assert document["verdict"] == "identical"  # the newest replay against the original
    assert [p.name for p in repeated.bundle.replays()] == variation["replays"]


def test_each_replay_described_its_container(repeated: Repeated, base_image: BaseImage) -> None:
    for replay in repeated.bundle.replays():
        environment = repeated.environment(replay)
        assert environment["notes"] == [], environment["notes"]
        assert environment["python"]["version"] == base_image.python_version
        assert environment["python"]["executable"] == "/opt/reprobox/env/bin/python"
        packages = {p["name"]: p["version"] for p in environment["python"]["packages"]}
        assert packages["numpy"] == NUMPY_PIN.split("==")[1] and "pytest" not in packages
        system = environment["system"]
        assert system["os_id"] == "debian"
        host_flags = sorted(set(cpu_fields(Path("/")).get("flags", "").split()))
        assert system["cpu_flags"] == host_flags  # /proc/cpuinfo in a container is the host's
        assert [b["num_threads"] for b in system["blas"]] == [1]  # OPENBLAS_NUM_THREADS=1
        assert environment["gpu"]["source"] == "none" and environment["gpu_used"] is False
        state = json.loads((replay / "replay.json").read_text())["state"]
        assert environment["state"] == state and state["processes"] >= 1


def test_compare_a_b_on_the_two_replays(repeated: Repeated) -> None:
    first, second = repeated.bundle.replays()
    result = reprobox(["compare", "--json", str(first), str(second)], repeated.project)
    assert result.code == 0, result
    comparison = json.loads(result.out)
    assert comparison["verdict"] == "identical"
    assert comparison["environment"] == []  # same image, same host, same state


def test_the_original_against_a_replay_names_what_differs(repeated: Repeated) -> None:
    replay = repeated.bundle.replays()[-1]
    comparison = json.loads((replay / "comparison.json").read_text())
    captured = repeated.bundle.manifest().python.version
    replayed = repeated.environment(replay)["python"]["version"]
    rows = {row["what"]: row for row in comparison["environment"]}
    assert ("Python" in rows) == (captured != replayed)
    if captured != replayed:
        assert (rows["Python"]["original"], rows["Python"]["replay"]) == (captured, replayed)
    assert "numpy" not in rows and "BLAS" not in rows and "seeding shim" not in rows
