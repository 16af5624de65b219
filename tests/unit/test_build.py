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


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([("numpy", "2.1.2"), ("PyYAML", "6.0.2")], "numpy 2.1.2 (locked 2.1.3)"),
        ([("PyYAML", "6.0.2")], "numpy missing (locked 2.1.3)"),
        ([("numpy", "2.1.3"), ("PyYAML", "6.0.2"), ("requests", "2.0")], "requests 2.0 (not in"),
    ],
)
def test_a_mismatch_is_named(
    sample_manifest: Manifest, pairs: list[tuple[str, str]], message: str
) -> None:
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


BASE_LABELS = {"reprobox.python.version": "3.11.7", "reprobox.base.suite": "bookworm"}


def _project_bundle(tmp_path: Path, sample_manifest: Manifest) -> tuple:
    """A bundle on disk with its source snapshot, and a wheel cache that needs no network."""
    from reprobox import manifest as manifest_io
    from reprobox.bundle import Bundle

    bundle = Bundle(tmp_path / "proj" / ".reprobox" / "runs" / "r1")
    (bundle.source_dir).mkdir(parents=True)
    (bundle.source_dir / "train.py").write_text("print(1)\n")
    manifest_io.write(sample_manifest, bundle.manifest_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in (
        "numpy-2.1.3-cp311-cp311-manylinux_2_17_x86_64.whl",
        "PyYAML-6.0.2-cp311-cp311-manylinux_2_17_x86_64.whl",
    ):
        (cache / name).write_bytes(name.encode())
    return bundle, cache


def _engine(installed: list[tuple[str, str]]) -> FakeEngine:
    engine = _installed(installed)
    engine.images.add("base:1")
    engine.labels["base:1"] = BASE_LABELS
    return engine


def test_build_tags_only_after_the_check_and_then_reuses(
    tmp_path: Path, sample_manifest: Manifest
) -> None:
    bundle, cache = _project_bundle(tmp_path, sample_manifest)
    engine = _engine([("numpy", "2.1.3"), ("PyYAML", "6.0.2")])
    built = build_module.build(bundle, engine, print, base_image="base:1", cache=cache)
    assert not built.reused and built.tag in engine.images and len(engine.builds) == 1
    assert lock.is_hashed(bundle.lock_path.read_text(), sample_manifest)
    assert "FROM base:1" in bundle.dockerfile_path.read_text()
    again = build_module.build(bundle, engine, print, base_image="base:1", cache=cache)
    assert again.reused and again.tag == built.tag and len(engine.builds) == 1
    assert build_module.read_built(bundle) == again


def test_an_image_that_fails_the_check_is_removed_untagged(
    tmp_path: Path, sample_manifest: Manifest
) -> None:
    bundle, cache = _project_bundle(tmp_path, sample_manifest)
    engine = _engine([("numpy", "2.0.0"), ("PyYAML", "6.0.2")])
    with pytest.raises(BuildVerificationError, match="numpy 2.0.0 \\(locked 2.1.3\\)"):
        build_module.build(bundle, engine, print, base_image="base:1", cache=cache)
    assert engine.removed == ["sha256:feed"]
    assert engine.images == {"base:1"} and not bundle.build_record_path.exists()


def test_a_remade_base_gives_another_tag(tmp_path: Path, sample_manifest: Manifest) -> None:
    bundle, cache = _project_bundle(tmp_path, sample_manifest)
    engine = _engine([("numpy", "2.1.3"), ("PyYAML", "6.0.2")])
    first = build_module.build(bundle, engine, print, base_image="base:1", cache=cache)
    engine.image_id = lambda ref: "sha256:other"  # type: ignore[method-assign]
    second = build_module.build(bundle, engine, print, base_image="base:1", cache=cache)
    assert second.tag != first.tag and not second.reused
