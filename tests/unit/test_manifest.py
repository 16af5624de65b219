"""Manifest v1: round trips, quoting, validation that names the field, version refusal."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest
import yaml

from reprobox import manifest as manifest_io
from reprobox.errors import ManifestError
from reprobox.manifest import Manifest


def test_round_trip_is_exact(sample_manifest: Manifest) -> None:
    assert manifest_io.loads(manifest_io.dumps(sample_manifest)) == sample_manifest


@pytest.mark.parametrize("tricky", ["1.10", "NO", "yes", "0123456789", "1e3", "null", "~", ""])
def test_strings_that_yaml_would_retype_survive(sample_manifest: Manifest, tricky: str) -> None:
    manifest = replace(sample_manifest, git=replace(sample_manifest.git, commit=tricky),
                       run=replace(sample_manifest.run, env={tricky or "E": tricky}))
    back = manifest_io.loads(manifest_io.dumps(manifest))
    assert back.git is not None and back.git.commit == tricky
    assert back.run.env == {tricky or "E": tricky}


def test_field_names_stay_readable(sample_manifest: Manifest) -> None:
    text = manifest_io.dumps(sample_manifest)
    assert "\nrun:\n" in text and '  argv:\n  - "python"' in text


def test_manifest_is_frozen(sample_manifest: Manifest) -> None:
    with pytest.raises(FrozenInstanceError):
        sample_manifest.created_by = "x"  # type: ignore[misc]


def _mutated(sample_manifest: Manifest, path: list[str | int], value: object) -> str:
    data = sample_manifest.to_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return yaml.safe_dump(data)


@pytest.mark.parametrize(("path", "value", "message"), [
    (["run", "exit_code"], "zero", "field 'run.exit_code': expected int, got 'zero'"),
    (["run", "argv", 1], 7, "field 'run.argv[1]': expected str, got 7"),
    (["python", "packages", 0, "source"], "ftp", "field 'python.packages[0].source': must be one"),
    (["determinism", "seed"], True, "field 'determinism.seed': expected int, got True"),
    (["run", "bogus"], 1, "unknown field 'run.bogus'"),
    (["git"], "abc", "field 'git': expected a mapping"),
])
def test_invalid_fields_are_named(sample_manifest: Manifest, path: list[str | int],
                                  value: object, message: str) -> None:
    with pytest.raises(ManifestError, match="^m.yaml: ") as error:
        manifest_io.loads(_mutated(sample_manifest, path, value), "m.yaml")
    assert message in str(error.value)


def test_missing_field_is_named(sample_manifest: Manifest) -> None:
    data = sample_manifest.to_dict()
    del data["run"]["argv"]
    with pytest.raises(ManifestError, match="missing field 'run.argv'"):
        manifest_io.loads(yaml.safe_dump(data))


@pytest.mark.parametrize(("text", "message"), [
    ("schema_version: 5\n", "written by a newer reprobox (schema 5"),
    ("created_by: x\n", "missing schema_version"),
    ("schema_version: '1'\n", "schema_version must be a positive integer"),
    ("!!python/object/apply:os.system ['true']\n", "refused YAML"),
    ("schema_version: 1\nschema_version: 1\n", "duplicate key"),
    ("schema_version: 1\nrun: {argv: [\n", "not valid YAML"),
    ("- 1\n- 2\n", "expected a mapping at the top level"),
])
def test_bad_documents_are_refused(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match="^f.yaml: ") as error:
        manifest_io.loads(text, "f.yaml")
    assert message in str(error.value)
    assert error.value.hint or "schema_version" in message or "mapping" in message


def test_newer_version_hint_says_upgrade() -> None:
    with pytest.raises(ManifestError) as error:
        manifest_io.loads("schema_version: 9\n")
    assert "upgrade" in (error.value.hint or "")


def test_truncated_file_is_refused(tmp_path: Path, sample_manifest: Manifest) -> None:
    path = tmp_path / "manifest.yaml"
    manifest_io.write(sample_manifest, path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ManifestError, match=str(path)):
        manifest_io.read(path)


def test_missing_file_has_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such manifest") as error:
        manifest_io.read(tmp_path / "manifest.yaml")
    assert "reprobox capture" in (error.value.hint or "")


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path,
                                                  sample_manifest: Manifest) -> None:
    path = tmp_path / "manifest.yaml"
    manifest_io.write(sample_manifest, path)
    manifest_io.write(replace(sample_manifest, notes=("again",)), path)
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.yaml"]
    assert manifest_io.read(path).notes == ("again",)


def test_a_version_1_manifest_is_migrated_in_memory() -> None:
    path = Path(__file__).resolve().parents[1] / "data" / "manifests" / "numpy-sgd.yaml"
    assert "schema_version: 1\n" in path.read_text()  # a real capture by reprobox 0.1.0
    manifest = manifest_io.read(path)
    assert manifest.schema_version == manifest_io.SCHEMA_VERSION == 4
    assert manifest.gpu is None and manifest.cuda is None  # "not probed", as v1 never did
    assert manifest_io.loads(manifest_io.dumps(manifest)) == manifest


def test_a_version_2_manifest_is_migrated_in_memory() -> None:
    manifests = Path(__file__).resolve().parents[1] / "data" / "manifests"
    path = manifests / "torch-h100-nogpufields.yaml"
    assert "schema_version: 2\n" in path.read_text()  # a real capture on an H100
    manifest = manifest_io.read(path)
    assert manifest.schema_version == 4
    assert manifest.determinism.warn_only is False  # v2 always ran strict
