"""Run a subprocess for a probe through one injectable callable, so unit tests can fake it."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from reprobox.errors import ProbeUnavailable


@dataclass(frozen=True, slots=True)
class RunOutput:
    """What a finished command returned."""

    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    """Runs `argv` in `cwd` and returns its output; raises ProbeUnavailable if it cannot start."""

    def __call__(
        self, argv: Sequence[str], cwd: Path | None = None, timeout: float = 30
    ) -> RunOutput: ...


def subprocess_runner(
    argv: Sequence[str], cwd: Path | None = None, timeout: float = 30
) -> RunOutput:
    """Run `argv` for real, text mode; a missing program or a timeout is ProbeUnavailable."""
    program = argv[0] if argv else "<empty command>"
    try:
        completed = subprocess.run(
            list(argv), cwd=cwd, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout,
            # Undecodable bytes (a latin-1 file in a diff) must not abort a probe.
            text=True, encoding="utf-8", errors="replace", check=False,
        )
    except FileNotFoundError:
        if cwd is not None and not Path(cwd).is_dir():
            raise ProbeUnavailable(f"{cwd}: no such directory to run {program} in") from None
        raise ProbeUnavailable(f"{program}: command not found") from None
    except subprocess.TimeoutExpired:
        raise ProbeUnavailable(f"{program}: no answer within {timeout:g} s") from None
    except (OSError, ValueError) as exc:
        raise ProbeUnavailable(f"{program}: cannot run ({exc})") from None
    return RunOutput(completed.returncode, completed.stdout, completed.stderr)
