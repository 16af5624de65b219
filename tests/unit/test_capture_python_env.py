"""Interpreter resolution and the package probe, against real interpreters and real venvs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

import pytest

from reprobox.capture import python_env
from reprobox.capture.runner import RunOutput, subprocess_runner
from reprobox.errors import ProbeUnavailable
from reprobox.manifest import Package

WORK_PYTHON = "/work/venv/bin/python"


def _dist(site: Path, name: str, version: str, direct_url: str | None = None) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if direct_url is not None:
        (info / "direct_url.json").write_text(direct_url)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real venv holding fake dist-infos for every PEP 610 case."""
    root = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    (site,) = root.glob("lib/python*/site-packages")
    commit = "0123456789abcdef0123456789abcdef01234567"
    _dist(site, "Foo_Bar.Baz", "1.0")
    _dist(site, "mypkg", "0.1.dev0", json.dumps(
        {"url": "file:///src/my%20pkg", "dir_info": {"editable": True}}))
    _dist(site, "localdir", "2.0", json.dumps({"url": "file:///src/localdir", "dir_info": {}}))
    _dist(site, "localwheel", "3.0", json.dumps(
        {"url": "file:///wheels/localwheel-3.0-py3-none-any.whl", "archive_info": {}}))
    _dist(site, "vcspkg", "4.0", json.dumps(
        {"url": "https://user:ghp_SECRETCANARY@git.example.org/o/r.git", "subdirectory": "py",
         "vcs_info": {"vcs": "git", "commit_id": commit, "requested_revision": "main"}}))
    _dist(site, "archivepkg", "5.0", json.dumps(
        {"url": "https://files.example.org/archivepkg-5.0.tar.gz",
         "archive_info": {"hashes": {"sha256": "ab" * 32}}}))
    _dist(site, "brokenurl", "6.0", "{not json")
    return root


def test_probe_real_work_venv() -> None:
    python, blas = python_env.probe(WORK_PYTHON, subprocess_runner)
    assert python.version == ".".join(map(str, sys.version_info[:3]))
    assert python.implementation == "cpython"
    assert python.executable == WORK_PYTHON
    assert python.abi_tag == f"cp{sys.version_info[0]}{sys.version_info[1]}"
    assert python.platform_tag == sysconfig.get_platform().replace("-", "_").replace(".", "_")
    names = [p.name for p in python.packages]
    assert names == sorted(names) and len(names) == len(set(names))
    import numpy
    import yaml
    assert Package("numpy", numpy.__version__) in python.packages
    assert Package("pyyaml", yaml.__version__) in python.packages
    (numpy_blas,) = blas
    assert numpy_blas.provider == "numpy" and "openblas" in numpy_blas.name
    assert numpy_blas.version and numpy_blas.num_threads and numpy_blas.num_threads >= 1


def test_probe_throwaway_venv_reads_pep610_records(venv: Path) -> None:
    python, blas = python_env.probe(str(venv / "bin" / "python"), subprocess_runner)
    assert python.executable == str(venv / "bin" / "python")
    assert blas == ()  # no numpy in this venv
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert python.packages == (
        Package("archivepkg", "5.0", "url", "https://files.example.org/archivepkg-5.0.tar.gz"),
        Package("brokenurl", "6.0"),
        Package("foo-bar-baz", "1.0"),
        Package("localdir", "2.0", "local", "/src/localdir"),
        Package("localwheel", "3.0", "local", "/wheels/localwheel-3.0-py3-none-any.whl"),
        Package("mypkg", "0.1.dev0", "editable", "/src/my pkg"),
        Package("vcspkg", "4.0", "vcs", "git+https://git.example.org/o/r.git", commit, "py"),
    )
    assert "SECRETCANARY" not in repr(python)


def test_probe_script_runs_on_python38_when_present() -> None:
    python38 = Path("/root/.pyenv/versions/3.8.18/bin/python3.8")
    if not python38.exists():
        pytest.skip("no Python 3.8 on this machine")
    python, _ = python_env.probe(str(python38), subprocess_runner)
    assert python.version.startswith("3.8.") and python.abi_tag == "cp38"


class FakeRunner:
    def __init__(self, result: RunOutput) -> None:
        self.result = result
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], cwd: Path | None = None,
                 timeout: float = 30) -> RunOutput:
        self.calls.append(list(argv))
        return self.result


def test_probe_runs_isolated_and_tolerates_noise_before_report() -> None:
    report = {"version": "3.12.1", "implementation": "cpython", "executable": "/p",
              "abi_tag": "cp312", "platform_tag": "linux_aarch64",
              "distributions": [{"name": "Zeta", "version": "1", "direct_url": None},
                                {"name": "alpha", "version": "2", "direct_url": None}],
              "blas": [{"name": "mkl", "version": None, "threading": "openmp",
                        "num_threads": 8, "provider": "numpy"}]}
    runner = FakeRunner(RunOutput(0, "import-time noise\n" + json.dumps(report) + "\n", ""))
    python, blas = python_env.probe("/p", runner)
    assert runner.calls == [["/p", "-I", str(python_env.PROBE_SCRIPT)]]
    assert [p.name for p in python.packages] == ["alpha", "zeta"]
    assert blas[0].name == "mkl" and blas[0].num_threads == 8 and blas[0].version is None


@pytest.mark.parametrize("result", [
    RunOutput(1, "", "Traceback ...\nSyntaxError: invalid syntax"),
    RunOutput(0, "not json\n", ""),
    RunOutput(0, "", ""),
    RunOutput(0, "[1, 2]\n", ""),
    RunOutput(0, '{"version": "3.11"}\n', ""),
])
def test_probe_failures_are_unavailable(result: RunOutput) -> None:
    with pytest.raises(ProbeUnavailable, match="/p"):
        python_env.probe("/p", FakeRunner(result))


def test_probe_missing_interpreter_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ProbeUnavailable, match="not found"):
        python_env.probe(str(tmp_path / "nope"), subprocess_runner)


# --- resolve_interpreter -------------------------------------------------------------------


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_resolve_python_names_on_path(venv: Path) -> None:
    bin_dir = str(venv / "bin")
    expected = str(venv / "bin" / "python")
    assert python_env.resolve_interpreter(["python", "train.py"], bin_dir) == expected
    minor = f"python3.{sys.version_info[1]}"
    assert python_env.resolve_interpreter([minor, "-m", "x"], bin_dir) == str(venv / "bin" / minor)
    # The venv symlink is kept: resolving it would name the base interpreter.
    assert os.path.islink(expected)


def test_resolve_paths_absolute_and_relative(venv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(venv)
    assert python_env.resolve_interpreter(["bin/python3"], "") == str(venv / "bin" / "python3")
    assert python_env.resolve_interpreter([WORK_PYTHON, "x.py"], "") == WORK_PYTHON
    assert python_env.resolve_interpreter(["./missing/python"], "") is None


def test_resolve_shebang_scripts(venv: Path, tmp_path: Path) -> None:
    python = str(venv / "bin" / "python")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    path = f"{bin_dir}{os.pathsep}{venv / 'bin'}"
    _script(bin_dir / "train", f"#!{python} -u\nprint(1)\n")
    _script(bin_dir / "viaenv", "#!/usr/bin/env python\nprint(1)\n")
    _script(bin_dir / "trampoline", f"#!/bin/sh\n'''exec' \"{python}\" \"$0\" \"$@\"\n' '''\n")
    _script(bin_dir / "wrapper", f"#!{bin_dir / 'train'}\n")
    _script(bin_dir / "loop", f"#!{bin_dir / 'loop'}\n")
    _script(bin_dir / "shell", "#!/bin/sh\necho hi\n")
    (bin_dir / "binary").write_bytes(b"\x7fELF\x02\x01")
    for name in ("train", "viaenv", "trampoline", "wrapper"):
        assert python_env.resolve_interpreter([name, "--epochs", "3"], path) == python, name
    for name in ("loop", "shell", "binary", "absent"):
        assert python_env.resolve_interpreter([name], path) is None, name


def test_resolve_env_prefix_and_edge_cases(venv: Path) -> None:
    bin_dir = str(venv / "bin")
    python = str(venv / "bin" / "python")
    argv = ["env", "-u", "X", "OMP_NUM_THREADS=1", "python", "t.py"]
    assert python_env.resolve_interpreter(argv, bin_dir) == python
    assert python_env.resolve_interpreter([], bin_dir) is None
    assert python_env.resolve_interpreter(["env"], bin_dir) is None
    assert python_env.resolve_interpreter(["bash", "run.sh"], bin_dir) is None
    # No PATH at all: the OS default search path, as exec*p would use.
    assert python_env.resolve_interpreter(["python3"], None) in ("/bin/python3", "/usr/bin/python3")


def test_normalize_name() -> None:
    assert python_env.normalize_name("Foo_Bar.baz--Qux") == "foo-bar-baz-qux"


def test_a_torch_build_from_the_pytorch_index_records_that_index(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPROBOX_TORCH_INDEX_URL", raising=False)
    dist = {"name": "torch", "version": "2.3.1+cu121", "direct_url": None}
    package = python_env._package(dist)
    assert package.index_url == "https://download.pytorch.org/whl/cu121"
    assert python_env._package({"name": "torch", "version": "2.3.1"}).index_url is None
