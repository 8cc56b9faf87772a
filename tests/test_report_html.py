"""The HTML report in a real headless Chromium: it loads from disk with no console errors and
no network, and a screenshot of it is written (OPS_REPORT_SCREENSHOT names where to keep it).

The console is read from Chromium's own log (``--enable-logging=stderr``), which prints every
console message and uncaught exception as an ``INFO:CONSOLE`` line; a control page with an
error proves the check sees one.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from ops.report import build
from runner.report_data import collect

from .report_runs import FakeRun, seg_run, write_run

pytestmark = pytest.mark.browser

CONSOLE_RE = re.compile(r":CONSOLE[^\]]*\]\s*(.*)")
NETWORK_RE = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (CI installs it: scripts/system-deps.sh)")


def open_in_chromium(page: Path, screenshot: Path, profile: Path) -> list[str]:
    """Load ``page`` headless, write a screenshot, return the console messages."""
    argv = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
            "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1400,2000",
            f"--screenshot={screenshot}", page.resolve().as_uri()]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [m.group(1) for m in CONSOLE_RE.finditer(proc.stderr)]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def sweep_report(root: Path) -> str:
    """The four losses of the loss sweep (one run each, the same splits) and a failed run."""
    losses = (("dice_ce", 0.0), ("cbdice", 0.01), ("dice_ce_cldice", 0.04), ("warp", -0.02))
    dirs = [write_run(root, seg_run(f"sweep-{loss}", loss, offset,
                                    started_at=f"2026-01-02T1{i}:00:00.000Z"))
            for i, (loss, offset) in enumerate(losses)]
    dirs.append(write_run(root, FakeRun("broken", status="failed",
                                        started_at="2026-01-03T00:00:00.000Z",
                                        failure={"class": "exit_code", "message": "exit 1"})))
    want = build.ReportOptions(fmt="html", group_by="loss").want()
    runs = [collect(d, want) for d in dirs]
    options = build.ReportOptions(fmt="html", group_by="loss")
    return build.render(build.assemble(runs, options, "test"))


def test_html_report_loads_without_errors_and_screenshots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the report extra is not installed")
    page = tmp_path / "report.html"
    page.write_text(sweep_report(tmp_path / "runs"), encoding="utf-8")
    text = page.read_text()
    assert NETWORK_RE.search(text) is None, "the page must not load anything from a network"
    assert "<script" not in text.lower()
    assert text.count("<svg") >= 6  # 4 learning-curve figures, per-fold, per-volume
    for loss in ("dice_ce (ref)", "cbdice", "dice_ce_cldice", "warp"):
        assert f"<td>{loss}</td>" in text  # a row of the loss x metric table
    assert text.count("p=") == 12 and text.count("dz=") == 12  # 3 losses x 4 metrics
    assert "broken</b> failed: exit 1" in text
    shot = Path(os.environ.get("OPS_REPORT_SCREENSHOT") or tmp_path / "report.png")
    messages = open_in_chromium(page, shot, tmp_path / "profile")
    assert messages == []
    width, height = png_size(shot)
    assert (width, height) == (1400, 2000)
    assert shot.stat().st_size > 20_000  # a page of tables and plots, not a blank one


def test_console_check_sees_an_error(tmp_path: Path) -> None:
    """The control: the same check reports a page's console error."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><script>console.error('boom');"
                    "missing_function();</script></body></html>")
    messages = open_in_chromium(page, tmp_path / "bad.png", tmp_path / "profile")
    assert any("boom" in m for m in messages)
    assert any("missing_function is not defined" in m for m in messages)
