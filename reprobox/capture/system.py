"""Describe the host: OS release, kernel, architecture, libc and CPU."""

from __future__ import annotations

import os
import platform
import re
import shlex
from pathlib import Path

from reprobox.capture.runner import Runner
from reprobox.errors import ProbeUnavailable
from reprobox.manifest import System

UNKNOWN = "unknown"
_OS_RELEASE_FILES = ("etc/os-release", "usr/lib/os-release")
# x86 names the model and flags; ARM kernels use other keys for the same things.
_CPU_MODEL_KEYS = ("model name", "Model", "Hardware", "cpu model", "Processor")
_CPU_FLAG_KEYS = ("flags", "Features")


def probe(runner: Runner, root: Path = Path("/")) -> System:
    """Read the OS from `root`'s os-release and /proc; kernel and libc from the running host."""
    release = os_release(root)
    cpuinfo = cpu_fields(root)
    return System(
        os_id=release.get("ID", platform.system().lower() or UNKNOWN),
        os_version=release.get("VERSION_ID", UNKNOWN),
        os_name=release.get("PRETTY_NAME") or release.get("NAME") or platform.platform(),
        kernel=_read_line(root / "proc/sys/kernel/osrelease") or platform.release() or UNKNOWN,
        arch=platform.machine() or UNKNOWN,
        libc=libc_version(runner),
        cpu_model=_first(cpuinfo, _CPU_MODEL_KEYS) or platform.processor() or UNKNOWN,
        cpu_count=usable_cpu_count(),
        cpu_flags=tuple(sorted(set((_first(cpuinfo, _CPU_FLAG_KEYS) or "").split()))),
    )


def os_release(root: Path) -> dict[str, str]:
    """The KEY=value pairs of os-release (shell quoting undone); {} when there is none."""
    for name in _OS_RELEASE_FILES:
        try:
            text = (root / name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        return dict(_parse_assignment(line) for line in text.splitlines()
                    if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line))
    return {}


def _parse_assignment(line: str) -> tuple[str, str]:
    key, _, raw = line.partition("=")
    try:
        return key, " ".join(shlex.split(raw))
    except ValueError:  # unbalanced quotes: keep the text, minus the quote characters
        return key, raw.strip().strip("\"'")


def cpu_fields(root: Path) -> dict[str, str]:
    """The fields of the first processor block of /proc/cpuinfo."""
    try:
        text = (root / "proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def _first(fields: dict[str, str], keys: tuple[str, ...]) -> str | None:
    return next((fields[key] for key in keys if fields.get(key)), None)


def _read_line(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip() or None
    except OSError:
        return None


def usable_cpu_count() -> int:
    """CPUs this process may run on (affinity), which is what BLAS thread pools size to."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def libc_version(runner: Runner) -> str:
    """The libc ("glibc 2.36") of the interpreter binary, else from `ldd --version` (musl)."""
    name, version = platform.libc_ver()
    if name and version:
        return f"{name} {version}"
    try:
        result = runner(["ldd", "--version"], timeout=10)
    except ProbeUnavailable:
        return UNKNOWN
    return parse_ldd_version(result.stdout + result.stderr)


def parse_ldd_version(text: str) -> str:
    """The libc named in `ldd --version` output (glibc prints to stdout, musl to stderr)."""
    if "musl" in text:
        match = re.search(r"^Version\s+(\S+)", text, re.MULTILINE)
        return f"musl {match.group(1)}" if match else "musl"
    match = re.search(r"^ldd .*?(\d+\.\d+(?:\.\d+)?)\s*$", text, re.MULTILINE)
    return f"glibc {match.group(1)}" if match else UNKNOWN
