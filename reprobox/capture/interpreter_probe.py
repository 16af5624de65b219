"""Describe the interpreter running this script, and what is installed in it, as one JSON object.

Run by the interpreter the user's command resolves to (`TARGET_PYTHON -I interpreter_probe.py`),
never imported. Stdlib only, Python 3.8+. `-I` keeps this script's folder, PYTHONPATH and the
user's site-packages off sys.path, so what is listed is the interpreter's own environment: the
thing an image can rebuild. numpy is imported, guarded, only to ask which BLAS it uses.
"""

from __future__ import annotations

import ast
import ctypes
import importlib.util
import json
import os
import platform
import re
import sys
import sysconfig
from typing import Any

try:
    from importlib import metadata
except ImportError:  # Python < 3.8: report what we can, with no packages
    metadata = None  # type: ignore[assignment]

# OpenBLAS symbol names: plain builds, 64-bit-int builds, and the scipy-openblas wheels.
_OPENBLAS_PREFIXES = ("openblas", "scipy_openblas")
_OPENBLAS_SUFFIXES = ("", "64_", "_64_")
_PARALLEL = {0: "sequential", 1: "pthreads", 2: "openmp"}


def abi_tag() -> str:
    """The wheel ABI tag, e.g. cp311, cp313t or pypy310_pp73, from the extension suffix ABI."""
    soabi = sysconfig.get_config_var("SOABI") or ""
    parts = soabi.split("-")
    if parts[0] == "cpython" and len(parts) > 1:
        return "cp" + parts[1]
    if parts[0].startswith("pypy") and len(parts) > 1:
        return parts[0] + "_" + parts[1]
    return "cp{}{}".format(*sys.version_info[:2])


def distributions() -> list[dict[str, Any]]:
    """Every distribution on sys.path, first one wins per name (the one `import` would use)."""
    if metadata is None:
        return []
    seen = set()
    found = []
    for dist in metadata.distributions():
        name, version = name_and_version(dist)
        if not name:
            continue  # broken dist-info without a Name: nothing to pin
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        found.append({"name": name, "version": version, "direct_url": direct_url(dist)})
    return found


def name_and_version(dist: Any) -> tuple[Any, Any]:
    """The Name and Version headers of a distribution's METADATA (or PKG-INFO), or None.

    Read from the header lines only: `dist.metadata` runs the email parser over the whole file,
    long description included, and `dist.version` parses it again; in a venv of a hundred
    packages that was two thirds of the probe's time. The files tried are the ones
    `dist.metadata` reads, in its order; the first of each header wins, as with `.get`.
    """
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or dist.read_text("") or ""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the blank line that ends the headers
        key, colon, value = line.partition(":")
        key = key.lower()
        if colon and key in ("name", "version") and key not in found:
            found[key] = value.strip()
            if len(found) == 2:
                break
    return found.get("name"), found.get("version")


def direct_url(dist: Any) -> Any:
    """The parsed PEP 610 direct_url.json of a distribution, or None."""
    try:
        text = dist.read_text("direct_url.json")
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None


def blas() -> list[dict[str, Any]]:
    """BLAS used by numpy, if numpy imports: build config plus, for OpenBLAS, runtime threads."""
    try:
        import numpy
    except Exception:  # noqa: BLE001 - a broken numpy must not break the whole probe
        return []
    record: dict[str, Any] = {"name": None, "version": None, "threading": None, "num_threads": None,
              "provider": "numpy"}
    record.update(numpy_build_blas(numpy))
    record.update({k: v for k, v in openblas_runtime().items() if v is not None})
    return [record] if record["name"] else []


def numpy_build_blas(numpy: Any) -> dict[str, Any]:
    """Name, version and threading from numpy's build config (>=1.26 dicts, older attributes)."""
    try:
        config = numpy.show_config(mode="dicts")
        info = config["Build Dependencies"]["blas"]
        text = info.get("openblas configuration") or ""
        threading = "openmp" if "USE_OPENMP" in text else None
        return {"name": info.get("name"), "version": info.get("version"), "threading": threading}
    except Exception:  # noqa: BLE001 - numpy < 1.26 has no mode=, fall back to attributes
        pass
    config = getattr(numpy, "__config__", None)
    for key in ("blas_ilp64_opt_info", "blas_opt_info", "openblas_info", "blas_mkl_info"):
        info = getattr(config, key, None) or {}
        if info.get("libraries"):
            return {"name": info["libraries"][0]}
    return {}


def openblas_runtime() -> dict[str, Any]:
    """Version, threading and thread count from the OpenBLAS library loaded in this process."""
    for path in loaded_libraries("openblas"):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        config = call(lib, "get_config", ctypes.c_char_p)
        parallel = call(lib, "get_parallel", ctypes.c_int)
        threads = call(lib, "get_num_threads", ctypes.c_int)
        match = re.match(r"OpenBLAS\s+(\S+)", config.decode() if config else "")
        return {"version": match.group(1) if match else None,
                "threading": _PARALLEL.get(parallel) if parallel is not None else None,
                "num_threads": threads}
    return {}


def call(lib: Any, stem: str, restype: Any) -> Any:
    """Call the first OpenBLAS function named like `<prefix>_<stem><suffix>` that exists."""
    for prefix in _OPENBLAS_PREFIXES:
        for suffix in _OPENBLAS_SUFFIXES:
            func = getattr(lib, prefix + "_" + stem + suffix, None)
            if func is not None:
                func.restype = restype
                return func()
    return None


def loaded_libraries(word: str) -> list[str]:
    """Paths of shared libraries mapped into this process whose file name contains `word`."""
    try:
        with open("/proc/self/maps") as maps:
            paths = [line.split(None, 5)[-1].strip() for line in maps if ".so" in line]
    except OSError:
        return []
    return sorted({p for p in paths if word in p.rsplit("/", 1)[-1].lower()})


def cuda_files() -> dict[str, Any]:
    """What CUDA builds say of themselves in their files, read without importing them.

    Importing torch takes seconds and may initialise CUDA; `find_spec` of a top-level package
    only locates it, and the version files are plain assignments of literals.
    """
    return {
        "torch": literal_assignments(package_file("torch", "version.py")),
        "tensorflow": literal_assignments(
            package_file("tensorflow", os.path.join("python", "platform", "build_info.py"))),
    }


def package_file(package: str, relative: str) -> str | None:
    """The path of a file inside an installed top-level package, or None."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    folders = list(spec.submodule_search_locations or []) if spec else []
    paths = [os.path.join(folder, relative) for folder in folders]
    return next((path for path in paths if os.path.isfile(path)), None)


def literal_assignments(path: str | None) -> dict[str, Any] | None:
    """`name = <literal>` (annotated or not) at the top of a Python file; dicts are flattened."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
    except (OSError, SyntaxError, ValueError):
        return None
    found: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign):
            target: ast.expr = node.target
            expression = node.value
        elif isinstance(node, ast.Assign):
            target, expression = node.targets[0], node.value
        else:
            continue
        if isinstance(target, ast.Name) and expression is not None:
            inner = dict_call_argument(expression)
            try:
                value = ast.literal_eval(inner)
                value = dict(value) if inner is not expression else value
            except (ValueError, TypeError):
                continue
            found.update(value if isinstance(value, dict) else {target.id: value})
    return {k: v for k, v in found.items() if isinstance(v, (str, int, float, bool, type(None)))}


def dict_call_argument(expression: ast.expr) -> ast.expr:
    """`collections.OrderedDict([...])` or `dict([...])` -> the literal list inside it.

    TensorFlow writes its build_info.py that way; anything else is returned as it is.
    """
    if isinstance(expression, ast.Call) and len(expression.args) == 1:
        name = getattr(expression.func, "attr", None) or getattr(expression.func, "id", None)
        if name in ("OrderedDict", "dict"):
            return expression.args[0]
    return expression


def describe() -> dict[str, Any]:
    """The whole report."""
    return {
        "version": platform.python_version(),
        "implementation": sys.implementation.name,
        "executable": sys.executable,
        "abi_tag": abi_tag(),
        "platform_tag": sysconfig.get_platform().replace("-", "_").replace(".", "_"),
        "distributions": distributions(),
        "blas": blas(),
        "cuda_files": cuda_files(),
    }


def main() -> None:
    """Print the report as the last line of stdout; anything imports print goes to stderr."""
    out = sys.stdout
    sys.stdout = sys.stderr
    try:
        report = describe()
    finally:
        sys.stdout = out
    out.write(json.dumps(report, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
