"""The import rules of DESIGN.md: each module imports only the layers below it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "reprobox"

# module -> the reprobox modules it may import (capture/* share one entry)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "fileio": set(),
    "manifest": {"errors", "fileio"},
    "cuda": {"manifest", "errors"},
    "lock": {"manifest", "cuda"},
    "render": {"manifest", "lock", "seeding", "cuda"},
    "compare": {"manifest", "errors", "fileio", "compare"},
    "seeding": {"manifest", "errors", "fileio"},
    "bundle": {"manifest", "errors", "fileio"},
    "capture": {"manifest", "errors", "fileio", "capture", "seeding", "lock", "bundle", "cuda",
                "__init__"},
    "engine": {"errors"},
    "baseimage": {"engine", "errors", "fileio", "cuda"},
    "wheelhouse": {"manifest", "errors", "fileio", "cuda"},
    "build": {
        "manifest",
        "bundle",
        "lock",
        "render",
        "engine",
        "baseimage",
        "wheelhouse",
        "seeding",
        "errors",
        "fileio",
        "cuda",
    },
    "preflight": {"manifest", "errors", "cuda"},
    # pure: two runs' environments -> ranked differences; parses the replay's probe with capture's
    "envdiff": {"manifest", "compare", "preflight", "capture", "errors"},
    "replay": {
        "preflight",
        "manifest",
        "bundle",
        "render",
        "engine",
        "seeding",
        "build",
        "compare",
        "errors",
        "fileio",
        "envdiff",
    },
    "variation": {"replay", "bundle", "compare", "fileio", "sweep"},
    # seed sweeps: metrics of each replay -> mean, std, range beside the original's; pure
    "sweep": {"manifest", "compare", "errors", "seeding", "fileio"},
    # cluster engines: scripts and documents (pure), Slurm's commands, a replay through Slurm
    "cluster": {"cluster", "manifest", "engine", "render", "seeding", "errors", "capture",
                "envdiff", "preflight", "build", "bundle", "fileio", "replay", "archive"},
    "signing": {"errors", "fileio"},
    "reproduce": {"manifest", "errors", "preflight", "seeding", "render"},
    "archive": {"bundle", "build", "engine", "baseimage", "errors", "fileio", "manifest",
                "reproduce", "signing", "lock", "wheelhouse", "replay"},
    "doctor": {"manifest", "bundle", "capture", "preflight", "cuda", "lock", "errors",
               "fileio"},
    "report": {"manifest", "compare", "doctor", "variation", "sweep", "errors"},
    "html_report": {"report", "compare", "errors", "fileio"},
    "cli": {"*"},
    "__init__": {"errors", "manifest"},
    "__main__": {"cli"},
}
THIRD_PARTY_HOMES = {
    "docker": {"engine"},
    "rich": {"report", "cli"},
    "torch": set(),
    "jinja2": {"render", "html_report", "reproduce", "cluster"},
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "shim" not in p.parts)


def _key(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else path.stem


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_lower_layers(path: Path) -> None:
    key, allowed = _key(path), ALLOWED[_key(path)]
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] == "reprobox" and len(parts) > 1 and "*" not in allowed:
            assert parts[1] in allowed | {"__version__"}, f"{key} must not import {name}"
        homes = THIRD_PARTY_HOMES.get(parts[0])
        if homes is not None:
            assert key in homes, f"only {sorted(homes)} may import {parts[0]}; {key} does"


def test_shim_is_stdlib_only() -> None:
    for path in (PACKAGE / "shim").glob("*.py"):
        roots = {name.split(".")[0] for name in _imports(path)}
        assert "reprobox" not in roots
        assert not roots & {"numpy", "torch", "yaml", "docker", "rich"}, path.name


def test_every_module_imports_alone_and_reprobox_stays_light() -> None:
    modules = sorted(
        {f"reprobox.{_dotted(p)}".rstrip(".") for p in _modules() if p.stem != "__main__"}
    )
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "import reprobox\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    light = "import reprobox, sys; assert not {'torch', 'docker', 'rich'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", light], check=True)


def _dotted(path: Path) -> str:
    relative = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in relative.parts if p != "__init__"]
    return ".".join(parts) or ""
