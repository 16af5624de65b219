"""The system probe against os-release, cpuinfo and ldd output recorded from real machines."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path

import pytest

from reprobox.capture import system
from reprobox.capture.runner import RunOutput, subprocess_runner
from reprobox.errors import ProbeUnavailable

DATA = Path(__file__).parent.parent / "data" / "system"


class LddRunner:
    """Answers `ldd --version` with recorded output; anything else is unexpected."""

    def __init__(self, recorded: Path | None) -> None:
        self.recorded = recorded

    def __call__(self, argv: Sequence[str], cwd: Path | None = None,
                 timeout: float = 30) -> RunOutput:
        assert list(argv) == ["ldd", "--version"]
        if self.recorded is None:
            raise ProbeUnavailable("ldd: command not found")
        # glibc prints to stdout and exits 0; musl prints to stderr and exits 1.
        text = self.recorded.read_text()
        return RunOutput(0, text, "") if "GLIBC" in text else RunOutput(1, "", text)


def test_recorded_debian_host() -> None:
    root = DATA / "debian12"
    found = system.probe(LddRunner(root / "ldd-version.txt"), root=root)
    assert (found.os_id, found.os_version) == ("debian", "12")
    assert found.os_name == "Debian GNU/Linux 12 (bookworm)"
    assert found.kernel == (root / "proc/sys/kernel/osrelease").read_text().strip()
    assert found.cpu_model == "AMD EPYC"
    assert {"avx2", "avx512f", "sse4_2", "fma"} <= set(found.cpu_flags)
    assert list(found.cpu_flags) == sorted(set(found.cpu_flags))
    assert found.cpu_count >= 1 and found.arch == platform.machine()
    assert found.blas == ()


def test_ubuntu_os_release_only_under_usr_lib() -> None:
    release = system.os_release(DATA / "ubuntu2204")
    assert release["ID"] == "ubuntu" and release["VERSION_ID"] == "22.04"
    assert release["PRETTY_NAME"] == "Ubuntu 22.04.4 LTS"
    assert release["VERSION"] == "22.04.4 LTS (Jammy Jellyfish)"
    assert release["ID_LIKE"] == "debian"


def test_alpine_unquoted_values_and_missing_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    root = DATA / "alpine319"
    found = system.probe(LddRunner(root / "ldd-version.txt"), root=root)
    assert (found.os_id, found.os_version, found.os_name) == (
        "alpine", "3.19.1", "Alpine Linux v3.19")
    assert found.libc == "musl 1.2.4_git20230717"
    assert found.cpu_flags == ()
    assert found.kernel == platform.release()  # no proc/ in this tree: the running kernel


def test_libc_from_ldd_when_libc_ver_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert system.libc_version(LddRunner(DATA / "debian12" / "ldd-version.txt")) == "glibc 2.36"
    assert system.libc_version(LddRunner(None)) == "unknown"
    assert system.parse_ldd_version("something else entirely") == "unknown"


def test_empty_tree_falls_back_to_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda: ("glibc", "2.99"))
    found = system.probe(LddRunner(None), root=tmp_path)
    assert found.os_version == "unknown" and found.os_id == platform.system().lower()
    assert found.libc == "glibc 2.99"
    assert found.cpu_model  # from platform.processor() or "unknown", never empty


def test_os_release_quoting(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "os-release").write_text(
        '# comment\nNAME=\'Single Quoted\'\nPRETTY_NAME="Escaped \\"q\\" x"\n'
        'BROKEN="unbalanced\n\nID=x\n')
    release = system.os_release(tmp_path)
    assert release == {"NAME": "Single Quoted", "PRETTY_NAME": 'Escaped "q" x',
                       "BROKEN": "unbalanced", "ID": "x"}


def test_real_host_matches_os() -> None:
    found = system.probe(subprocess_runner)
    assert found.kernel == os.uname().release
    assert found.libc.startswith(("glibc ", "musl"))
    assert found.cpu_count == len(os.sched_getaffinity(0))
