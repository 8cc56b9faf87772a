"""Progress lines (issue 8 item 6, for SSH connect retries and code sync): on a terminal
only, human-readable, and never under --json or into a pipe."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from ops.hosts.base import human_size

from .sshd_fixture import free_port

# connect to a port nobody listens on, retrying for 1.2 s: two or three failed attempts
PROBE = """
import sys
from pathlib import Path
from ops.errors import OpsError
from ops.hosts.ssh import open_host
host = open_host("127.0.0.1:{port}", repo_root=Path({repo!r}), retry_for=1.2)
try:
    host.exec(["true"])
except OpsError as exc:
    print("gave up:", exc.message)
"""


def _run(tmp_path: Path, *, tty: bool, extra_argv: tuple[str, ...] = ()) -> str:
    code = PROBE.format(port=free_port(), repo=str(tmp_path))
    argv = [sys.executable, "-c", code, *extra_argv]
    if not tty:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stderr
    leader, follower = pty.openpty()
    try:
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=follower, check=True,
                       timeout=60)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the pty is drained and closed
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_connect_retries_are_shown_on_a_terminal(tmp_path: Path) -> None:
    shown = _run(tmp_path, tty=True)
    assert "attempt 1 failed (" in shown and "ConnectionRefusedError" in shown
    assert "retrying in 0.5 s" in shown


@pytest.mark.parametrize(("tty", "extra"), [(False, ()), (True, ("--json",))],
                         ids=["piped", "json"])
def test_no_progress_when_piped_or_under_json(tmp_path: Path, tty: bool,
                                              extra: tuple[str, ...]) -> None:
    assert "attempt" not in _run(tmp_path, tty=tty, extra_argv=extra)


@pytest.mark.parametrize(("count", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                             (5 * 2**20, "5.0 MiB"), (3 * 2**40, "3072.0 GiB")])
def test_human_size(count: int, text: str) -> None:
    assert human_size(count) == text
