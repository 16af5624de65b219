"""render: the Dockerfile is pure, deterministic, and equal to the checked-in goldens."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from reprobox import manifest as manifest_io
from reprobox import render
from reprobox.manifest import Manifest

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_BASE = "python:3.11.7-slim-bookworm"
EXAMPLES = sorted((ROOT / "tests" / "data" / "manifests").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_dockerfiles_folder_matches_what_the_code_renders(path: Path) -> None:
    """dockerfiles/<example>.Dockerfile is what reprobox writes for that example's capture.

    Regenerate deliberately with REPROBOX_UPDATE_GOLDEN=1.
    """
    rendered = render.dockerfile(manifest_io.read(path), GOLDEN_BASE)
    golden = ROOT / "dockerfiles" / f"{path.stem}.Dockerfile"
    if os.environ.get("REPROBOX_UPDATE_GOLDEN") == "1":
        golden.write_text(rendered)
    assert golden.read_text() == rendered


def test_examples_have_goldens() -> None:
    assert {p.stem for p in EXAMPLES} >= {"numpy-sgd"}


def test_same_manifest_same_bytes(sample_manifest: Manifest) -> None:
    first = render.dockerfile(sample_manifest, "base:1")
    reordered = replace(
        sample_manifest,
        determinism=replace(
            sample_manifest.determinism,
            env=dict(reversed(list(sample_manifest.determinism.env.items()))),
        ),
    )
    assert render.dockerfile(reordered, "base:1") == first


def test_layers_are_ordered_for_the_cache(sample_manifest: Manifest) -> None:
    text = render.dockerfile(sample_manifest, "base:1")
    assert text.index("--require-hashes") < text.index("COPY --chown=1000:1000 source/")
    assert "--no-index --no-deps" in text and "USER 1000:1000" in text
    assert 'CMD ["python", "train.py", "--epochs", "3"]' in text
    assert "PYTHONHASHSEED=1234" in text


def test_env_values_with_spaces_are_quoted(sample_manifest: Manifest) -> None:
    odd = replace(
        sample_manifest,
        determinism=replace(sample_manifest.determinism, env={"XLA_FLAGS": "--a=1 --b=2"}),
    )
    assert 'XLA_FLAGS="--a=1 --b=2"' in render.dockerfile(odd, "base:1")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("python", "t.py"), ("python", "t.py")),
        (("python3.11", "-m", "pkg"), ("python", "-m", "pkg")),
        (("/home/u/.venv/bin/python", "t.py"), ("python", "t.py")),
        (("/opt/env/interp", "t.py"), ("python", "t.py")),
        (("train-model", "--x"), ("train-model", "--x")),
    ],
)
def test_container_argv_maps_the_host_interpreter(
    argv: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    assert render.container_argv(argv, "/opt/env/interp") == expected


def test_workdir_is_under_the_project(sample_manifest: Manifest) -> None:
    sub = replace(sample_manifest, run=replace(sample_manifest.run, workdir="src/exp"))
    assert render.container_workdir(sub) == "/app/src/exp"
    assert render.container_workdir(sample_manifest) == "/app"
