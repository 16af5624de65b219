"""Time `reprobox capture` against `pip freeze` on the same venv of 100 distributions.

Baseline: `VENV/bin/python -m pip freeze`, a subprocess, as a user would type it. Measured:
`python -m reprobox capture -- VENV/bin/python -c pass` in a small git project, also a
subprocess, so both pay an interpreter start; the capture runs the command, probes the
interpreter, system and git, and writes a bundle. Three diagnostic rows go with it: the same
capture called in-process (`reprobox.capture.capture`, no start-up cost), called from a bare
`python -c` that imports only `reprobox.capture` (what a CLI with lazy imports would cost), and
the CLI's start-up alone (`python -c "import reprobox.cli"`). All rows are timed
interleaved, in one process, N times each; the table shows medians. The venv (98 pinned
pure-Python wheels installed with --no-deps, plus the venv's own pip and setuptools) is built
once under $REPROBOX_BENCH_HOME (default /tmp/reprobox-bench) and reused.
Goal (from the issue): capture takes less time than pip freeze.

Usage: python benchmarks/bench_capture.py [--quick] [--repeats N]
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from _common import (
    BENCH_HOME,
    REPROBOX_CLI,
    arguments,
    git_project,
    median,
    run,
    seconds,
    table,
    venv,
)

from reprobox.bundle import RUNS_DIR, Bundle
from reprobox.capture import CaptureOptions, capture

PINS = (
    "six==1.16.0", "attrs==23.2.0", "idna==3.7", "certifi==2024.2.2", "urllib3==2.2.1",
    "requests==2.31.0", "click==8.1.7", "itsdangerous==2.2.0", "jinja2==3.1.4", "packaging==24.0",
    "pyparsing==3.1.2", "python-dateutil==2.9.0.post0", "pytz==2024.1", "tzdata==2024.1",
    "toml==0.10.2", "tomli==2.0.1", "tomli-w==1.0.0", "typing-extensions==4.11.0", "zipp==3.18.1",
    "importlib-metadata==7.1.0", "more-itertools==10.2.0", "decorator==5.1.1", "docutils==0.21.2",
    "pygments==2.18.0", "markdown==3.6", "mdurl==0.1.2", "markdown-it-py==3.0.0", "rich==13.7.1",
    "colorama==0.4.6", "tabulate==0.9.0", "termcolor==2.4.0", "tqdm==4.66.4", "filelock==3.14.0",
    "platformdirs==4.2.1", "distlib==0.3.8", "appdirs==1.4.4", "cachetools==5.3.3",
    "chardet==5.2.0", "soupsieve==2.5", "beautifulsoup4==4.12.3", "html5lib==1.1",
    "webencodings==0.5.1", "bleach==6.1.0", "pluggy==1.5.0", "iniconfig==2.0.0", "pytest==8.2.0",
    "py==1.11.0", "execnet==2.1.1", "mock==5.1.0", "sniffio==1.3.1", "anyio==4.3.0", "h11==0.14.0",
    "httpcore==1.0.5", "httpx==0.27.0", "sortedcontainers==2.4.0", "toolz==0.12.1",
    "cloudpickle==3.0.0", "jmespath==1.0.1", "pyasn1==0.6.0", "rsa==4.9", "oauthlib==3.2.2",
    "requests-oauthlib==2.0.0", "blinker==1.8.2", "werkzeug==3.0.3", "flask==3.0.3",
    "jsonpointer==2.4", "jsonschema==4.22.0", "jsonschema-specifications==2023.12.1",
    "referencing==0.35.1", "semver==3.0.2", "wcwidth==0.2.13", "prompt-toolkit==3.0.43",
    "pexpect==4.9.0", "ptyprocess==0.7.0", "parso==0.8.4", "asttokens==2.4.1", "executing==2.0.1",
    "pure-eval==0.2.2", "traitlets==5.14.3", "matplotlib-inline==0.1.7", "stack-data==0.6.3",
    "isodate==0.6.1", "defusedxml==0.7.1", "xmltodict==0.13.0", "pycparser==2.22",
    "text-unidecode==1.3", "python-slugify==8.0.4", "humanize==4.9.0", "inflection==0.5.1",
    "absl-py==2.1.0", "fsspec==2024.3.1", "sqlparse==0.5.0", "et-xmlfile==1.1.0",
    "openpyxl==3.1.2", "pathspec==0.12.1", "mypy-extensions==1.0.0", "typing-inspect==0.9.0",
    "tenacity==8.3.0",
)  # fmt: skip
# Pure wheels only and no resolver: the same 98 distributions on every machine.
PIP_OPTIONS = ("--no-deps", "--only-binary", ":all:")
# What `reprobox capture` would cost if the CLI imported only the capture package.
_BARE_CAPTURE = (
    "import sys; from reprobox.capture import CaptureOptions, capture; "
    "capture(CaptureOptions(argv=tuple(sys.argv[1:])))"
)


def main() -> None:
    args = arguments(__doc__.splitlines()[0], 11, 3, "3 repeats (CI size)")
    python = venv(BENCH_HOME / "capture-venv", PINS, PIP_OPTIONS)
    project = git_project(BENCH_HOME / "capture-project")
    steps = _steps(python, project)
    for step in steps.values():  # warm the page cache for every row alike
        step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            samples[name].append(seconds(step))
    freeze_lines = run([str(python), "-m", "pip", "freeze"]).stdout.split()
    _report(samples, len(freeze_lines), project, args.repeats)


def _steps(python: Path, project: Path) -> dict[str, Callable[[], None]]:
    command = (str(python), "-c", "pass")

    def freeze() -> None:
        run([str(python), "-m", "pip", "freeze"])

    def capture_cli() -> None:
        _clear_bundles(project)
        run([*REPROBOX_CLI, "capture", "--", *command], cwd=project)

    def capture_in_process() -> None:
        _clear_bundles(project)
        capture(CaptureOptions(argv=command, cwd=project), terminal=(io.BytesIO(), io.BytesIO()))

    def capture_bare_subprocess() -> None:
        _clear_bundles(project)
        run([sys.executable, "-c", _BARE_CAPTURE, *command], cwd=project)

    def cli_start_up() -> None:
        run([sys.executable, "-c", "import reprobox.cli"])

    return {
        "pip freeze (baseline, subprocess)": freeze,
        "reprobox capture (CLI, subprocess)": capture_cli,
        "capture() in-process (diagnostic)": capture_in_process,
        "capture() in a bare subprocess (diagnostic)": capture_bare_subprocess,
        "import reprobox.cli only (diagnostic)": cli_start_up,
    }


def _clear_bundles(project: Path) -> None:
    shutil.rmtree(project / RUNS_DIR, ignore_errors=True)


def _report(samples: dict[str, list[float]], freeze_count: int, project: Path, n: int) -> None:
    manifest = Bundle(next((project / RUNS_DIR).iterdir())).manifest()
    fields = _leaves(dataclasses.asdict(manifest))
    recorded = {
        "pip freeze (baseline, subprocess)": f"{freeze_count} packages, {2 * freeze_count} fields",
        "reprobox capture (CLI, subprocess)": f"{len(manifest.python.packages)} packages, "
        f"{fields} fields",
    }
    rows = [
        (name, f"{median(times):.3f}", f"{min(times):.3f}", recorded.get(name, ""))
        for name, times in samples.items()
    ]
    print(table((f"what (median of {n})", "median s", "min s", "recorded"), rows))
    names = list(samples)
    ratio = median(samples[names[1]]) / median(samples[names[0]])
    verdict = "faster" if ratio < 1 else "SLOWER"
    print(f"\nratio capture/pip-freeze = {ratio:.2f}  (capture is {verdict} than pip freeze)")
    print("pip freeze leaves out pip and setuptools; capture records every distribution.")


def _leaves(value: object) -> int:
    """How many scalar values a manifest holds (the 'fields' it recorded)."""
    if isinstance(value, dict):
        return sum(_leaves(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_leaves(v) for v in value)
    return 1


if __name__ == "__main__":
    main()
