"""Describe the environment a replay ran in, from inside its container, as one JSON line.

Run by the image's interpreter (`python -I container_probe.py [SMI_FIELDS]`) in a container made
like the replay's: same image, env, limits and GPUs. Stdlib only, Python 3.8+, never imported
by reprobox. The interpreter probe that capture runs on the host is mounted beside this file
and reused, so both sides are described by the same code. The host turns the report into
manifest records (`envdiff.from_probe`); this script only reads and prints.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from typing import Any

SMI_TIMEOUT_S = 10.0
_CPU_MODEL_KEYS = ("model name", "Model", "Hardware", "cpu model", "Processor")
_CPU_FLAG_KEYS = ("flags", "Features")


def interpreter() -> dict[str, Any]:
    """What the interpreter probe beside this file reports (capture runs the same code)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "interpreter_probe.py")
    spec = importlib.util.spec_from_file_location("interpreter_probe", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report: dict[str, Any] = module.describe()
    return report


def system() -> dict[str, Any]:
    """OS release of the image; kernel, CPU and usable CPUs as the container sees them."""
    cpu = cpu_fields()
    libc, version = platform.libc_ver()
    return {
        "os_release": os_release(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "libc": f"{libc} {version}" if libc and version else "unknown",
        "cpu_model": first(cpu, _CPU_MODEL_KEYS) or platform.processor() or "unknown",
        "cpu_flags": sorted(set((first(cpu, _CPU_FLAG_KEYS) or "").split())),
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count() or 1,
    }


def os_release() -> dict[str, str]:
    """KEY=value pairs of /etc/os-release, quotes removed."""
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        pairs = (line.partition("=") for line in lines if "=" in line)
        return {key.strip(): value.strip().strip("\"'") for key, _, value in pairs}
    return {}


def cpu_fields() -> dict[str, str]:
    """The fields of the first processor block of /proc/cpuinfo (the host's, in a container)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def first(fields: dict[str, str], keys: tuple[str, ...]) -> str | None:
    return next((fields[key] for key in keys if fields.get(key)), None)


def nvidia_smi(fields: str) -> dict[str, Any] | None:
    """nvidia-smi's raw answers (the host parses them); None where the container has none."""
    program = shutil.which("nvidia-smi")
    if not fields or program is None:
        return None
    return {
        "fields": fields,
        "query": run([program, f"--query-gpu={fields}", "--format=csv,noheader,nounits"]),
        "header": run([program]),
    }


def run(argv: list[str]) -> dict[str, Any]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=SMI_TIMEOUT_S,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"returncode": None, "stdout": "", "stderr": str(exc)}
    return {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr[-2000:]}


def main() -> None:
    """Print the report as the last line of stdout; what imports print goes to stderr."""
    out = sys.stdout
    sys.stdout = sys.stderr
    try:
        report = {"interpreter": interpreter(), "system": system(),
                  "nvidia_smi": nvidia_smi(sys.argv[1] if len(sys.argv) > 1 else "")}
    finally:
        sys.stdout = out
    out.write(json.dumps(report, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
