"""build: deterministic contexts and tags, the package check, the Python check (fake engine)."""

from __future__ import annotations

import json
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from reprobox import build as build_module
from reprobox import lock
from reprobox.baseimage import BaseImage
from reprobox.errors import BuildVerificationError, BundleError, RenderError
from reprobox.manifest import Manifest
from tests.unit.fakes import FakeEngine


def _context(root: Path) -> Path:
    (root / "source" / "pkg").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM x\n")
    (root / "source" / "pkg" / "a.py").write_text("print(1)\n")
    (root / "source" / "run.sh").write_text("#!/bin/sh\n")
    (root / "source" / "run.sh").chmod(0o775)
    return root


def test_context_tar_is_byte_identical_and_normalised(tmp_path: Path) -> None:
    first, second = _context(tmp_path / "a"), _context(tmp_path / "b")
    (second / "source" / "pkg" / "a.py").touch()  # another mtime must not matter
    build_module.write_context_tar(first, tmp_path / "a.tar")
    build_module.write_context_tar(second, tmp_path / "b.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert list(members) == sorted(members)
    assert members["source/run.sh"].mode == 0o755 and members["Dockerfile"].mode == 0o644
    assert {m.mtime for m in members.values()} == {0}
    assert {(m.uid, m.gid) for m in members.values()} == {(0, 0)}


def test_tag_names_the_project_and_hashes_content(sample_manifest: Manifest) -> None:
    tag = build_module.image_tag(sample_manifest, "ab" * 32)
    assert tag == "reprobox/numpy-sgd:" + "ab" * 8
    odd = replace(sample_manifest, run=replace(sample_manifest.run, project="My Project!"))
    assert build_module.image_tag(odd, "0" * 64).startswith("reprobox/my-project:")


def _lock(sample_manifest: Manifest) -> str:
    return lock.dumps(sample_manifest, {"numpy": ["a" * 64], "pyyaml": ["b" * 64]})


def _installed(pairs: list[tuple[str, str]]) -> FakeEngine:
    return FakeEngine(run_output=json.dumps(pairs).encode() + b"\n")


def test_installed_packages_matching_the_lock_pass(sample_manifest: Manifest) -> None:
    engine = _installed([("numpy", "2.1.3"), ("PyYAML", "6.0.2"), ("pip", "24.0")])
    build_module.verify_packages(engine, "sha256:feed", _lock(sample_manifest))
    (spec,) = engine.runs
    assert spec.network is False and spec.argv[:2] == ("python", "-I")


@pytest.mark.parametrize(("pairs", "message"), [
    ([("numpy", "2.1.2"), ("PyYAML", "6.0.2")], "numpy 2.1.2 (locked 2.1.3)"),
    ([("PyYAML", "6.0.2")], "numpy missing (locked 2.1.3)"),
    ([("numpy", "2.1.3"), ("PyYAML", "6.0.2"), ("requests", "2.0")], "requests 2.0 (not in"),
])
def test_a_mismatch_is_named(sample_manifest: Manifest, pairs: list[tuple[str, str]],
                             message: str) -> None:
    with pytest.raises(BuildVerificationError, match="does not match requirements.lock") as err:
        build_module.verify_packages(_installed(pairs), "sha256:feed", _lock(sample_manifest))
    assert message in str(err.value)


def test_unlistable_image_is_an_error(sample_manifest: Manifest) -> None:
    engine = FakeEngine(run_output=b"boom\n", run_exit_code=1)
    with pytest.raises(BuildVerificationError, match="could not list"):
        build_module.verify_packages(engine, "sha256:feed", _lock(sample_manifest))


def test_other_python_minor_is_refused_patch_is_noted(sample_manifest: Manifest) -> None:
    with pytest.raises(RenderError, match="has Python 3.12.1, the run used 3.11.7") as err:
        build_module._check_python(sample_manifest, BaseImage("b:1", "3.12.1", "local"))
    assert "reprobox base --python 3.11" in (err.value.hint or "")
    build_module._check_python(sample_manifest, BaseImage("b:1", "3.11.2", "local"))
    built = build_module.BuiltImage("t", "b:1", "3.11.2", "3.11.7")
    assert built.python_note == "Python differs: captured 3.11.7, image b:1 has 3.11.2"
    assert replace(built, base_python="3.11.7").python_note is None


def test_read_built_without_a_build_says_what_to_do(tmp_path: Path) -> None:
    from reprobox.bundle import Bundle

    with pytest.raises(BundleError, match="no image built yet") as err:
        build_module.read_built(Bundle(tmp_path))
    assert "reprobox build" in (err.value.hint or "")
