"""Find the Python a command runs, and record that interpreter and every package installed in it."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from reprobox import cuda
from reprobox.capture.cuda_stack import from_report
from reprobox.capture.environ import strip_url_credentials
from reprobox.capture.runner import Runner
from reprobox.errors import ProbeUnavailable
from reprobox.manifest import Blas, CudaStack, Package, Python

PROBE_SCRIPT = Path(__file__).with_name("interpreter_probe.py")
_PYTHON_NAME = re.compile(r"^(?:python|pypy)(?:\d+(?:\.\d+)?t?)?$")
_ENV_OPTIONS_WITH_VALUE = frozenset({"-u", "--unset", "-C", "--chdir"})
_MAX_SHEBANG_HOPS = 4  # a script whose #! names a script whose #! names ...


def normalize_name(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def resolve_interpreter(argv: Sequence[str], path_env: str | None) -> str | None:
    """The Python interpreter `argv` runs (a python, `env python`, or a #!python script), or None.

    The path is made absolute but symlinks are kept: a venv's bin/python is a symlink, and
    resolving it would name the base interpreter instead of the venv.
    """
    for _ in range(_MAX_SHEBANG_HOPS):
        program = _program(argv, path_env)
        if program is None:
            return None
        if _PYTHON_NAME.match(Path(program).name):
            return program
        shebang = _shebang(Path(program))
        if shebang is None:
            return None
        argv = shebang
    return None


def _program(argv: Sequence[str], path_env: str | None) -> str | None:
    """The absolute path of the program `argv` starts, looking past `env`."""
    argv = _skip_env(argv)
    if not argv:
        return None
    return _which(argv[0], path_env)


def _skip_env(argv: Sequence[str]) -> Sequence[str]:
    """`env [-i] [NAME=VALUE]... CMD` runs CMD; drop the env part."""
    if not argv or Path(argv[0]).name != "env":
        return argv
    rest = list(argv[1:])
    while rest and (rest[0].startswith("-") or "=" in rest[0]):
        option = rest.pop(0)
        if option in _ENV_OPTIONS_WITH_VALUE and rest:
            rest.pop(0)
    return rest


def _which(program: str, path_env: str | None) -> str | None:
    if os.sep in program:
        path = Path(program)
        return os.path.abspath(path) if path.is_file() else None
    # A missing PATH means the OS default search path, as exec*p uses it.
    found = shutil.which(program, path=path_env if path_env is not None else os.defpath)
    return os.path.abspath(found) if found else None


def _shebang(script: Path) -> list[str] | None:
    """The interpreter command of a `#!` script, including pip's `/bin/sh` trampoline."""
    try:
        with script.open("rb") as handle:
            head = handle.read(4096).decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    if not head or not head[0].startswith("#!"):
        return None
    # pip writes this for interpreter paths with spaces or over the kernel's length limit.
    if len(head) > 1 and head[1].startswith("'''exec' "):
        return shlex.split(head[1][len("'''exec' "):])[:1]
    return head[0][2:].split() or None


@dataclass(frozen=True, slots=True)
class Environment:
    """What the interpreter probe found: the interpreter, its BLAS and the CUDA it carries."""

    python: Python
    blas: tuple[Blas, ...]
    cuda: CudaStack


def probe(executable: str, runner: Runner) -> tuple[Python, tuple[Blas, ...]]:
    """Run the probe script with `executable` and return its Python record and BLAS libraries."""
    environment = probe_environment(executable, runner)
    return environment.python, environment.blas


def probe_environment(executable: str, runner: Runner) -> Environment:
    """Run the probe script with `executable` and return everything it reported."""
    result = runner([executable, "-I", str(PROBE_SCRIPT)], timeout=120)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no error output"])[-1]
        raise ProbeUnavailable(f"{executable}: the interpreter probe failed ({last})")
    report = _last_json_line(executable, result.stdout)
    try:
        python = python_record(report)
        blas = tuple(_blas(item) for item in report.get("blas", ()))
        return Environment(python, blas, from_report(report.get("cuda_files"), python.packages))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProbeUnavailable(f"{executable}: unexpected probe report ({exc!r})") from None


def _last_json_line(executable: str, stdout: str) -> dict[str, Any]:
    lines = stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise ProbeUnavailable(f"{executable}: the interpreter probe printed no report") from None
    if not isinstance(report, dict):
        raise ProbeUnavailable(f"{executable}: the interpreter probe printed no report")
    return report


def python_record(report: Mapping[str, Any]) -> Python:
    """The Python record of a probe report (the JSON the probe script printed)."""
    packages = sorted((_package(d) for d in report["distributions"]), key=lambda p: p.name)
    return Python(
        version=str(report["version"]), implementation=str(report["implementation"]),
        executable=str(report["executable"]), abi_tag=str(report["abi_tag"]),
        platform_tag=str(report["platform_tag"]), packages=tuple(packages))


def _blas(item: Mapping[str, Any]) -> Blas:
    threads = item.get("num_threads")
    return Blas(name=str(item["name"]), version=_opt_str(item.get("version")),
                threading=_opt_str(item.get("threading")),
                num_threads=int(threads) if threads is not None else None,
                provider=_opt_str(item.get("provider")))


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _package(dist: Mapping[str, Any]) -> Package:
    """A Package from the name, version and PEP 610 direct_url.json the probe found."""
    name, version = normalize_name(str(dist["name"])), str(dist["version"])
    direct = dist.get("direct_url")
    if not isinstance(direct, Mapping) or not isinstance(direct.get("url"), str):
        return Package(name, version, index_url=cuda.index_url(name, version))
    url = strip_url_credentials(direct["url"])
    subdirectory = _opt_str(direct.get("subdirectory"))
    vcs = direct.get("vcs_info")
    if isinstance(vcs, Mapping):
        return Package(name, version, "vcs", f"{vcs.get('vcs', 'git')}+{url}",
                       _opt_str(vcs.get("commit_id")), subdirectory)
    if url.startswith("file:"):
        dir_info = direct.get("dir_info")
        editable = isinstance(dir_info, Mapping) and dir_info.get("editable") is True
        return Package(name, version, "editable" if editable else "local",
                       _file_url_path(url), None, subdirectory)
    return Package(name, version, "url", url, None, subdirectory)


def _file_url_path(url: str) -> str:
    """file:///home/a%20b/pkg -> /home/a b/pkg"""
    parts = urlsplit(url)
    return url2pathname(parts.path) if parts.path else url
