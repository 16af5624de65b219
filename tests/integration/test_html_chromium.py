"""The HTML report opened in a real browser: headless Chromium (Debian's `chromium`) shows the
verdict, the outputs and the charts, makes no network request, and leaves a screenshot in
artifacts/ for a person to look at. Skipped where chromium is absent, except under CI
(REPROBOX_REQUIRE_BROWSER=1), where a skip would hide a broken report."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from reprobox.html_report import write_html
from tests.report_samples import PARTED_AT, Page, sample_comparison

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
BANNER_RED = (0xC6, 0x28, 0x28)  # header.not-reproduced in the template's CSS
# Headless as root in a container (small /dev/shm), with the browser's own traffic (updates,
# sync, spelling) quieted, so the requests left in the net log are the page's.
_HEADLESS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-extensions", "--disable-default-apps",
             "--disable-spell-checking", "--host-resolver-rules=MAP * ~NOTFOUND")


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "chromium not found (Debian: apt-get install chromium)"
        if os.environ.get("REPROBOX_REQUIRE_BROWSER") == "1":  # CI: a skipped check is a failure
            pytest.fail(reason)
        pytest.skip(f"{reason}; the HTML report is not opened in a browser here")
    return found


def _open(chromium: str, page: Path, work: Path, *action: str) -> tuple[str, list[str]]:
    """Open `page` headless; returns stdout and the URLs of the requests the page itself made."""
    netlog = work / "netlog.json"
    command = [chromium, *_HEADLESS, f"--user-data-dir={work / 'profile'}",
               f"--log-net-log={netlog}", *action, page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, _page_requests(netlog)


def _page_requests(netlog: Path) -> list[str]:
    """URLs of the network requests a page started (the browser's own have no initiator)."""
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [event["params"]["url"] for event in log["events"]
            if event["type"] == start and "url" in event.get("params", {})
            and event["params"].get("initiator") != "not an origin"]


def _png_size_and_first_row(png: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Width, height and the top row's RGB pixels of an 8-bit RGB(A) PNG, without Pillow."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = {}, 8
    while offset < len(png):
        (length,), kind = struct.unpack(">I", png[offset:offset + 4]), png[offset + 4:offset + 8]
        chunks[kind] = chunks.get(kind, b"") + png[offset + 8:offset + 8 + length]
        offset += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    step = 3 if colour == 2 else 4
    raw = zlib.decompressobj().decompress(chunks[b"IDAT"], 1 + width * step)
    row = bytearray(raw[1:1 + width * step])
    if raw[0] in (1, 3, 4):  # Sub, Average, Paeth: above the top row is zero, so each adds left
        for i in range(step, len(row)):
            row[i] = (row[i] + (row[i - step] >> (raw[0] == 3))) & 0xFF
    return width, height, [(row[i], row[i + 1], row[i + 2]) for i in range(0, len(row), step)]


def test_chromium_shows_the_verdict_outputs_and_charts(chromium: str, tmp_path: Path) -> None:
    page = ARTIFACTS / "comparison-report.html"
    write_html(page, sample_comparison(), "run 20261127T200000Z-aaaaaa, replay 20261127T210000Z-bb")
    dom, requests = _open(chromium, page, tmp_path, "--dump-dom")
    shown = Page(dom)
    assert shown.text.startswith("NOT REPRODUCED different: 2 of 4 outputs, 1 missing")
    for path in ("out/config.json", "ckpt/model.pt", "out/predictions.npy",
                 "out/weights.safetensors", "debug.log", "logs/metrics.jsonl", "logs/eval.csv"):
        assert path in shown.text, path
    assert shown.text.count(f"parted at step {PARTED_AT}") == 2  # caption and chart label
    polylines = shown.all("polyline")
    assert len(shown.all("svg")) == 2 and len(polylines) == 4
    assert all(len((p["points"] or "").split()) >= 20 for p in polylines)
    assert requests == []


def test_the_screenshot_shows_the_red_banner(chromium: str, tmp_path: Path) -> None:
    page, screenshot = ARTIFACTS / "comparison-report.html", ARTIFACTS / "comparison-report.png"
    write_html(page, sample_comparison(), "run 20261127T200000Z-aaaaaa, replay 20261127T210000Z-bb")
    screenshot.unlink(missing_ok=True)
    _, requests = _open(chromium, page, tmp_path, f"--screenshot={screenshot}",
                        "--window-size=1280,2000")
    width, height, top = _png_size_and_first_row(screenshot.read_bytes())
    assert (width, height) == (1280, 2000)
    assert top[width // 2] == BANNER_RED  # the inline CSS was applied: not a blank page
    assert requests == []


def test_the_request_check_catches_a_page_that_fetches(chromium: str, tmp_path: Path) -> None:
    """The control: without it, "no requests" could mean the check sees nothing at all."""
    page = tmp_path / "fetching.html"
    page.write_text('<!DOCTYPE html><p>hi</p><img src="https://example.org/pixel.png">')
    _, requests = _open(chromium, page, tmp_path, "--dump-dom")
    assert requests == ["https://example.org/pixel.png"]
