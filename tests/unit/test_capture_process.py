"""process.run_teed: real subprocesses, output shown and logged, stdout and stderr kept apart."""

from __future__ import annotations

import io
import os
import sys
import threading
from pathlib import Path

import pytest

from reprobox.capture.process import run_teed
from reprobox.errors import CaptureError

SCRIPT = "import sys; print('to out'); print('to err', file=sys.stderr); sys.exit(3)"


def test_streams_are_shown_logged_and_kept_apart(tmp_path: Path) -> None:
    out, err = io.BytesIO(), io.BytesIO()
    code = run_teed([sys.executable, "-c", SCRIPT], tmp_path, os.environ, tmp_path, (out, err))
    assert code == 3
    assert out.getvalue() == b"to out\n" and err.getvalue() == b"to err\n"
    assert (tmp_path / "stdout.log").read_bytes() == b"to out\n"
    assert (tmp_path / "stderr.log").read_bytes() == b"to err\n"


def test_large_output_is_not_truncated(tmp_path: Path) -> None:
    out = io.BytesIO()
    script = "import sys; sys.stdout.write('x' * 3_000_000)"
    run_teed([sys.executable, "-c", script], tmp_path, os.environ, tmp_path, (out, io.BytesIO()))
    assert len(out.getvalue()) == 3_000_000 == (tmp_path / "stdout.log").stat().st_size


@pytest.mark.parametrize("argv", [["no-such-program-xyz"], [os.devnull]])
def test_a_command_that_cannot_start_is_a_capture_error(tmp_path: Path, argv: list[str]) -> None:
    with pytest.raises(CaptureError, match="cannot run") as error:
        run_teed(argv, tmp_path, os.environ, tmp_path, (io.BytesIO(), io.BytesIO()))
    assert error.value.hint


def test_a_script_without_a_shebang_line_is_a_capture_error(tmp_path: Path) -> None:
    script = tmp_path / "train.sh"
    script.write_bytes(b"\x7fELF-not-really\n")
    script.chmod(0o755)
    with pytest.raises(CaptureError, match="cannot run"):
        run_teed([str(script)], tmp_path, os.environ, tmp_path, (io.BytesIO(), io.BytesIO()))


def test_a_closed_terminal_stops_the_echo_but_not_the_log(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `reprobox capture -- ... | head` once head has exited
    script = "import sys; sys.stdout.write('x' * 1_000_000); print('done', file=sys.stderr)"
    result: list[int] = []
    with open(write_end, "wb") as closed_terminal:
        worker = threading.Thread(target=lambda: result.append(run_teed(
            [sys.executable, "-c", script], tmp_path, os.environ, tmp_path,
            (closed_terminal, io.BytesIO()))), daemon=True)
        worker.start()
        worker.join(timeout=60)  # before the fix the command blocked on its full pipe
    assert result == [0]
    assert (tmp_path / "stdout.log").stat().st_size == 1_000_000
    assert (tmp_path / "stderr.log").read_bytes() == b"done\n"
