"""wheelhouse: which cached wheel serves a pin, and refusals that name the package."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reprobox import wheelhouse
from reprobox.errors import WheelError
from reprobox.manifest import Package

TARGET = wheelhouse.Target("3.11", "cp311")


@pytest.mark.parametrize(
    ("filename", "ok"),
    [
        ("numpy-2.1.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),
        ("numpy-2.1.3-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", False),
        ("numpy-2.1.3-cp311-cp311-musllinux_1_1_x86_64.whl", False),
        ("numpy-2.1.3-cp311-cp311-macosx_11_0_arm64.whl", False),
        ("numpy-2.1.3-cp311-cp311-manylinux_2_39_x86_64.whl", False),  # newer glibc than bookworm
        ("six-1.16.0-py2.py3-none-any.whl", True),
        ("cryptography-43.0.0-cp39-abi3-manylinux_2_28_x86_64.whl", True),
    ],
)
def test_compatibility_with_the_image(filename: str, ok: bool) -> None:
    assert wheelhouse._compatible(filename[:-4].split("-")[-3:], TARGET) is ok


def test_cached_wheel_is_found_by_normalised_name_and_version(tmp_path: Path) -> None:
    wheel = tmp_path / "PyYAML-6.0.2-cp311-cp311-manylinux_2_17_x86_64.whl"
    wheel.write_bytes(b"zip")
    assert wheelhouse._find(tmp_path, Package("pyyaml", "6.0.2"), TARGET) == wheel
    assert wheelhouse._find(tmp_path, Package("pyyaml", "6.0.1"), TARGET) is None
    local = tmp_path / "torch-2.3.0+cpu-cp311-cp311-linux_x86_64.whl"
    local.write_bytes(b"zip")
    assert wheelhouse._find(tmp_path, Package("torch", "2.3.0+cpu"), TARGET) == local


def test_fetch_uses_the_cache_without_the_network(tmp_path: Path) -> None:
    wheel = tmp_path / "six-1.16.0-py2.py3-none-any.whl"
    wheel.write_bytes(b"zip")
    wheels = wheelhouse.fetch([Package("six", "1.16.0")], TARGET, tmp_path, print)
    assert wheels["six"].path == wheel and len(wheels["six"].sha256) == 64


def test_a_vanished_local_source_is_named(tmp_path: Path) -> None:
    gone = Package("mylib", "0.1", source="editable", url=f"file://{tmp_path}/gone")
    with pytest.raises(WheelError, match="mylib: source folder .*gone no longer exists"):
        wheelhouse.fetch([gone], TARGET, tmp_path / "cache", print)


def _local_source(tmp_path: Path, source: str) -> tuple[Path, Package]:
    """A real buildable project folder, recorded as a `source` package."""
    src = tmp_path / "mylib"
    (src / "mylib").mkdir(parents=True)
    (src / "mylib" / "__init__.py").write_text("VALUE = 1\n")
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
        '[project]\nname = "mylib"\nversion = "0.1"\n'
    )
    return src, Package("mylib", "0.1", source=source, url=f"file://{src}")  # type: ignore[arg-type]


def test_a_local_source_is_built_to_a_wheel(tmp_path: Path) -> None:
    _, package = _local_source(tmp_path, "local")
    wheels = wheelhouse.fetch([package], TARGET, tmp_path / "cache", print)
    assert wheels["mylib"].path.name.startswith("mylib-0.1-py")
    again = wheelhouse.fetch([package], TARGET, tmp_path / "cache", print)
    assert again["mylib"].sha256 == wheels["mylib"].sha256  # cached: the lock's hash holds


def test_an_edited_local_source_is_rebuilt_not_reused(tmp_path: Path) -> None:
    src, package = _local_source(tmp_path, "editable")
    first = wheelhouse.fetch([package], TARGET, tmp_path / "cache", print)["mylib"]
    (src / "mylib" / "__init__.py").write_text("VALUE = 2  # edited, same version\n")
    second = wheelhouse.fetch([package], TARGET, tmp_path / "cache", print)["mylib"]
    assert second.path != first.path and second.sha256 != first.sha256


def test_an_unreachable_index_is_said_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real pip pointed at a closed local port: the network failure, not "no wheel".
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_RETRIES", "1")  # pip names the network error only when it retries
    with pytest.raises(WheelError, match="cannot reach the package index") as err:
        wheelhouse.fetch([Package("six", "1.16.0")], TARGET, tmp_path, print)
    assert "pip config list" in (err.value.hint or "")


def test_wheels_must_fit_the_image_glibc_not_the_host() -> None:
    bullseye = wheelhouse.Target("3.9", "cp39", glibc="2.31")
    tags = "numpy-2.0.0-cp39-cp39-manylinux_2_34_x86_64.whl"[:-4].split("-")[-3:]
    assert not wheelhouse._compatible(tags, bullseye)
    assert wheelhouse._compatible(tags, wheelhouse.Target("3.9", "cp39", glibc="2.41"))


def test_pins_from_pytorchs_index_name_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPROBOX_TORCH_INDEX_URL", raising=False)
    packages = [Package("torch", "2.3.1+cu121"), Package("torchvision", "0.18.1+cu121"),
                Package("torchaudio", "2.3.1+cpu"), Package("numpy", "1.26.4")]
    assert wheelhouse._indexes(packages) == [
        "https://download.pytorch.org/whl/cpu", "https://download.pytorch.org/whl/cu121"]


def test_an_unreachable_extra_index_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real pip: the default index is an empty local folder (it answers), PyTorch's a closed port.
    (tmp_path / "simple").mkdir()
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "simple").as_uri())
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_RETRIES", "1")
    monkeypatch.setenv("REPROBOX_TORCH_INDEX_URL", "http://alice:s3cret@127.0.0.1:9/whl")
    with pytest.raises(WheelError) as err:
        wheelhouse.fetch([Package("torch", "2.3.1+cu121")], TARGET, tmp_path / "cache", print)
    assert str(err.value).startswith(
        "cannot reach the package index http://127.0.0.1:9/whl/cu121 to fetch 1 wheels")
    assert "file:" not in str(err.value) and "s3cret" not in str(err.value)


# pip 23.2.1's words when PyPI answered and PyTorch's cu121 index did not (recorded here).
PIP_OUTPUT = (
    "Looking in indexes: https://pypi.org/simple, http://127.0.0.1:9/whl/cu121\n",
    "WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after "
    "connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPConnection "
    "object at 0x7f49fb580b90>: Failed to establish a new connection: [Errno 111] Connection "
    "refused')': /whl/cu121/torch/\n"
    "ERROR: No matching distribution found for torch==2.3.1+cu121\n",
)


def test_the_index_that_did_not_answer_is_told_from_the_one_that_did() -> None:
    batch = subprocess.CompletedProcess([], 1, *PIP_OUTPUT)
    assert wheelhouse._unreachable(batch, []) == "http://127.0.0.1:9/whl/cu121"
    silent = subprocess.CompletedProcess([], 1, "", "Connection refused\n")
    assert wheelhouse._unreachable(silent, ["http://x/whl/cu121"]) == (
        "(one of https://pypi.org/simple, http://x/whl/cu121)")
