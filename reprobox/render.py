"""Manifest → Dockerfile text: pure and deterministic, the same bytes for the same inputs."""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Sequence

import jinja2

from reprobox import seeding
from reprobox.lock import locked_packages
from reprobox.manifest import Manifest

ENV_DIR = "/opt/reprobox/env"
SHIM_DIR = seeding.CONTAINER_SHIM_DIR
PROJECT_DIR = "/app"
UID = 1000
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")
_SAFE_ENV_VALUE = re.compile(r"^[A-Za-z0-9_.,:/+=@%-]*$")

# StrictUndefined: a missing variable is a bug, never an empty string in a Dockerfile.
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("reprobox", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)


def dockerfile(manifest: Manifest, base_image: str) -> str:
    """Render the Dockerfile that rebuilds the captured environment on `base_image`."""
    return _TEMPLATES.get_template("Dockerfile.j2").render(
        python=manifest.python,
        system=manifest.system,
        package_count=len(locked_packages(manifest)),
        base_image=base_image,
        env_dir=ENV_DIR,
        shim_dir=SHIM_DIR,
        uid=UID,
        environment=sorted((k, _env_value(v)) for k, v in manifest.determinism.env.items()),
        workdir=container_workdir(manifest),
        command=json.dumps(list(container_argv(manifest.run.argv, manifest.python.executable))),
    )


def container_workdir(manifest: Manifest) -> str:
    """The run's working directory inside the image."""
    return posixpath.normpath(posixpath.join(PROJECT_DIR, manifest.run.workdir))


def container_argv(argv: Sequence[str], interpreter: str) -> tuple[str, ...]:
    """The command as the image runs it: the host's interpreter path becomes `python`."""
    if not argv:
        return ()
    head = argv[0]
    if head == interpreter or _PYTHON.match(posixpath.basename(head)):
        head = "python"
    return (head, *argv[1:])


def _env_value(value: str) -> str:
    # Values are quoted only when they need it, so the common case stays readable.
    return value if _SAFE_ENV_VALUE.match(value) else json.dumps(value)
