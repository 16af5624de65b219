"""Run the user's command, teeing stdout and stderr to the terminal and to the bundle's logs."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from reprobox.errors import CaptureError, Interrupted

_CHUNK = 65536


def terminal_streams() -> tuple[BinaryIO, BinaryIO]:
    """This process's own stdout and stderr, as byte streams."""
    return sys.stdout.buffer, sys.stderr.buffer


def run_teed(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    logs: Path,
    terminal: tuple[BinaryIO, BinaryIO],
) -> int:
    """Run `argv`; its output goes to `terminal` as it comes and to logs/stdout.log, stderr.log.

    Ctrl-C stops the command and raises Interrupted; the exit code is returned otherwise.
    """
    process = _start(argv, cwd, env)
    with (logs / "stdout.log").open("wb") as out_log, (logs / "stderr.log").open("wb") as err_log:
        pumps = [
            threading.Thread(target=_tee, args=(pipe, shown, log), daemon=True)
            for pipe, shown, log in (
                (process.stdout, terminal[0], out_log),
                (process.stderr, terminal[1], err_log),
            )
        ]
        for pump in pumps:
            pump.start()
        exit_code = _wait(process)
        for pump in pumps:
            pump.join()
    return exit_code


def _start(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            list(argv), cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as exc:  # not found, not executable, no #! line (ENOEXEC), bad cwd
        raise CaptureError(
            f"{argv[0]}: cannot run ({exc.strerror or exc})",
            hint="check the command after `--`; is it on PATH and executable?",
        ) from None


def _wait(process: subprocess.Popen[bytes]) -> int:
    try:
        return process.wait()
    except KeyboardInterrupt:
        # The terminal already sent SIGINT to the whole group; make sure the command is gone.
        process.terminate()
        process.wait()
        raise Interrupted("capture interrupted; no bundle was written") from None


def _tee(source: BinaryIO, terminal: BinaryIO, log: BinaryIO) -> None:
    """Copy `source` to the log, then the terminal; a terminal gone (`| head`) stops only the echo.

    Draining goes on whatever happens to the terminal, or the command would block on a full pipe.
    """
    echo = True
    with source:
        while chunk := source.read1(_CHUNK):  # type: ignore[attr-defined]
            log.write(chunk)
            if echo:
                echo = _echo(terminal, chunk)


def _echo(terminal: BinaryIO, chunk: bytes) -> bool:
    """Show `chunk`; False once the terminal cannot take it (closed pipe, closed stream)."""
    try:
        terminal.write(chunk)
        terminal.flush()
    except (OSError, ValueError):
        return False
    return True
