"""Unit tests of baseimage.py: the choice of base image, apt mirror parsing, the suite table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from reprobox import baseimage
from reprobox.baseimage import BaseImage, choose, debian_mirror, local_ref, official_ref
from reprobox.cuda import CudaBase
from reprobox.errors import BaseImageError
from tests.unit import fakes


def _engine(present: Sequence[str] = (), pullable: Sequence[str] = (),
            labels: dict[str, dict[str, str]] | None = None) -> fakes.FakeEngine:
    """The shared fake, answering "3.12.4" to any Python asked its version."""
    return fakes.FakeEngine(images=set(present), pullable=set(pullable), labels=labels or {},
                            run_output=b"3.12.4\n")


LOCAL = local_ref("3.11", "bookworm")


def test_refs() -> None:
    assert official_ref("3.11.7") == "python:3.11.7-slim-bookworm"
    assert official_ref("3.9.2", "bullseye") == "python:3.9.2-slim-bullseye"
    assert LOCAL == "reprobox/python:3.11-bookworm"


def test_suite_table() -> None:
    assert baseimage.suite_table() == {"3.9": "bullseye", "3.11": "bookworm", "3.13": "trixie"}
    assert baseimage.suite_for("3.13") == "trixie"


def test_unsupported_version_names_it_and_the_supported_ones() -> None:
    with pytest.raises(BaseImageError) as caught:
        baseimage.suite_for("3.10")
    assert "Python 3.10" in str(caught.value) and "3.9, 3.11, 3.13" in str(caught.value)
    assert "--base-image" in caught.value.hint


def test_suite_and_version_must_agree() -> None:
    assert baseimage._resolve_target(None, "trixie") == ("3.13", "trixie")
    assert baseimage._resolve_target("3.9", None) == ("3.9", "bullseye")
    with pytest.raises(BaseImageError, match="does not ship Python 3.11"):
        baseimage._resolve_target("3.11", "trixie")


def test_choose_explicit_image_present_asks_its_python() -> None:
    engine = _engine(present=["my/img:1"])
    chosen = choose(engine, "3.11.7", "my/img:1", print)
    assert chosen == BaseImage("my/img:1", "3.12.4", "user")
    assert engine.runs[0].argv[0] == "python3" and engine.runs[0].network is False
    assert engine.pulled == []


def test_choose_explicit_image_absent() -> None:
    with pytest.raises(BaseImageError, match="image my/img:1 is not present locally") as caught:
        choose(_engine(), "3.11.7", "my/img:1", print)
    assert "docker load" in caught.value.hint


def test_choose_official_present_locally_needs_no_pull() -> None:
    engine = _engine(present=[official_ref("3.11.7")])
    assert choose(engine, "3.11.7", None, print).origin == "official"
    assert engine.pulled == []


def test_choose_pulls_official() -> None:
    engine = _engine(pullable=[official_ref("3.11.7")])
    chosen = choose(engine, "3.11.7", None, print)
    assert chosen == BaseImage(official_ref("3.11.7"), "3.11.7", "official")
    assert engine.pulled == [official_ref("3.11.7")]


def test_a_base_a_registry_served_is_pinned_by_its_digest() -> None:
    ref, digest = official_ref("3.11.7"), "sha256:" + "ab" * 32
    engine = _engine(pullable=[ref])
    engine.digests[ref] = f"python@{digest}"
    chosen = choose(engine, "3.11.7", None, print)
    assert chosen.digest == digest and chosen.pinned == f"{ref}@{digest}"
    assert BaseImage(LOCAL, "3.11.2", "local").pinned == LOCAL  # imported here: no digest


def test_choose_falls_back_to_local_base_with_a_note() -> None:
    engine = _engine(present=[LOCAL], labels={LOCAL: {baseimage.LABEL_PYTHON: "3.11.2"}})
    notes: list[str] = []
    chosen = choose(engine, "3.11.7", None, notes.append)
    assert chosen == BaseImage(LOCAL, "3.11.2", "local")
    assert len(notes) == 1
    assert "no registry answered" in notes[0] and LOCAL in notes[0]
    assert "3.11.2" in notes[0] and "3.11.7" in notes[0]


def test_choose_without_registry_or_local_base() -> None:
    with pytest.raises(BaseImageError) as caught:
        choose(_engine(), "3.11.7", None, print)
    assert str(caught.value) == "no registry answers and no local base image for Python 3.11"
    assert "reprobox base --python 3.11" in caught.value.hint
    assert "--base-image" in caught.value.hint


def test_choose_for_a_version_no_suite_ships() -> None:
    with pytest.raises(BaseImageError, match="no local base image for Python 3.10"):
        choose(_engine(), "3.10.4", None, print)


def write_apt(tmp_path: Path, sources_list: str = "", parts: dict[str, str] | None = None) -> Path:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(sources_list)
    for name, text in (parts or {}).items():
        (tmp_path / "sources.list.d" / name).write_text(text)
    return tmp_path


DEB822 = """\
Types: deb
# a comment line inside the stanza
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb deb-src
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
"""


def test_mirror_from_deb822(tmp_path: Path) -> None:
    nodesource = "Types: deb\nURIs: https://nodes.example/node_20.x\nSuites: nodistro\n"
    apt = write_apt(
        tmp_path,
        "deb https://cloud.example/apt cloud-sdk-bookworm main\n",
        {"debian.sources": DEB822, "node.sources": nodesource},
    )
    assert debian_mirror(apt) == "http://mirror.example/debian"


def test_disabled_deb822_stanza_is_skipped(tmp_path: Path) -> None:
    disabled = "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n"
    apt = write_apt(tmp_path, parts={"a.sources": disabled, "b.sources": DEB822})
    assert debian_mirror(apt) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources(tmp_path: Path) -> None:
    apt = write_apt(
        tmp_path,
        "# deb http://old.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bullseye main\n",
    )
    assert debian_mirror(apt) == "http://one.example/debian"


def test_no_debian_mirror(tmp_path: Path) -> None:
    apt = write_apt(tmp_path, "deb http://archive.example/ubuntu jammy main\n")
    with pytest.raises(BaseImageError, match="no Debian mirror found") as caught:
        debian_mirror(apt)
    assert "--mirror" in caught.value.hint


def test_exact_python_version_from_dpkg_status(tmp_path: Path) -> None:
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "Package: python3.11-minimal\nStatus: install ok installed\nVersion: 3.11.2-6\n\n"
        "Package: python3.11\nStatus: install ok installed\nVersion: 3.11.2-6+deb12u6\n"
    )
    assert baseimage._dpkg_python_version(tmp_path, "3.11") == "3.11.2"
    with pytest.raises(BaseImageError, match="no python3.13 package"):
        baseimage._dpkg_python_version(tmp_path, "3.13")


def test_make_without_debootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(baseimage.shutil, "which", lambda name, path=None: None)
    with pytest.raises(BaseImageError, match="debootstrap is not installed") as caught:
        baseimage.make(_engine(), "3.11", None, "http://m.example/debian", print)  # type: ignore[arg-type]
    assert "--base-image" in caught.value.hint


def test_make_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(baseimage.shutil, "which", lambda name, path=None: "/usr/sbin/x")
    monkeypatch.setattr(baseimage.os, "geteuid", lambda: 1000)
    with pytest.raises(BaseImageError, match="needs root"):
        baseimage.make(_engine(), "3.11", None, "http://m.example/debian", print)  # type: ignore[arg-type]


def test_make_refuses_unsupported_version_before_anything_else() -> None:
    with pytest.raises(BaseImageError, match="Python 3.12"):
        baseimage.make(_engine(), "3.12", None, None, print)  # type: ignore[arg-type]


def test_make_keeps_an_image_already_made(monkeypatch: pytest.MonkeyPatch) -> None:
    class Present:
        def has_image(self, ref: str) -> bool:
            return ref == "reprobox/python:3.11-bookworm"

    monkeypatch.setattr(baseimage, "python_version_in", lambda engine, ref: "3.11.2")
    made = baseimage.make(Present(), "3.11", None, None, print)  # type: ignore[arg-type]
    assert made == baseimage.BaseImage("reprobox/python:3.11-bookworm", "3.11.2", "local")


def test_glibc_comes_from_the_suite_without_running_anything() -> None:
    engine = _engine(labels={LOCAL: {baseimage.LABEL_SUITE: "bookworm"}})
    assert baseimage.glibc_in(engine, LOCAL) == "2.36"  # type: ignore[arg-type]
    assert baseimage.glibc_in(engine, "python:3.9.2-slim-bullseye") == "2.31"  # type: ignore[arg-type]
    assert engine.runs == []


def test_glibc_of_an_unknown_image_is_asked_of_it() -> None:
    engine = fakes.FakeEngine(images={"my/img:1"}, run_output=b"2.35\n")
    assert baseimage.glibc_in(engine, "my/img:1") == "2.35"  # type: ignore[arg-type]
    assert "libc_ver" in engine.runs[0].argv[-1]


CUDA_BASE = CudaBase(image="nvidia/cuda:12.2.2-runtime-ubuntu22.04", cuda="12.2.2", cudnn=None,
                     ubuntu="22.04", python="3.10",
                     reason="cupy-cuda12x 13.3.0 for CUDA 12 without the nvidia-cuda-runtime-cu12 "
                     "wheels")


def test_choose_the_cuda_base_present_locally() -> None:
    engine = _engine(present=[CUDA_BASE.image])
    notes: list[str] = []
    chosen = choose(engine, "3.10.12", None, notes.append, CUDA_BASE)
    assert chosen == BaseImage(CUDA_BASE.image, "3.12.4", "cuda")
    assert engine.pulled == [] and engine.runs[0].argv[0] == "python3"
    assert notes == [f"using the CUDA base image {CUDA_BASE.image}: {CUDA_BASE.reason}"]


def test_choose_pulls_the_cuda_base_rather_than_the_official_one() -> None:
    engine = _engine(pullable=[CUDA_BASE.image, official_ref("3.10.12")])
    assert choose(engine, "3.10.12", None, print, CUDA_BASE).ref == CUDA_BASE.image
    assert engine.pulled == [CUDA_BASE.image]


def test_an_explicit_base_wins_over_the_cuda_one() -> None:
    engine = _engine(present=["my/cuda-py:1"])
    assert choose(engine, "3.10.12", "my/cuda-py:1", print, CUDA_BASE).origin == "user"
    assert engine.pulled == []


def test_an_absent_cuda_base_names_the_image_and_what_it_must_carry() -> None:
    with pytest.raises(BaseImageError) as caught:
        choose(_engine(), "3.10.12", None, print, CUDA_BASE)
    message, hint = str(caught.value), caught.value.hint or ""
    assert message.startswith(f"image {CUDA_BASE.image} is not present locally and no registry")
    assert "needs the system CUDA toolkit (cupy-cuda12x 13.3.0" in message
    assert "python3 and venv" in message
    assert f"FROM {CUDA_BASE.image}" in hint and "python3-venv" in hint
    assert "docker load" in hint and "--base-image" in hint


def test_a_cuda_base_without_python_is_refused() -> None:
    engine = _engine(present=[CUDA_BASE.image])
    engine.run_exit_code = 127  # as `python3` in a bare nvidia/cuda image: not found
    with pytest.raises(BaseImageError, match="has no python3; a CUDA base must carry python3"):
        choose(engine, "3.10.12", None, print, CUDA_BASE)
