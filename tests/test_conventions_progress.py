"""Progress of `ops data synth`: a bar over the volumes on a terminal (a real one: a tmux
pane, read back with capture-pane), nothing when stderr is piped or with --json."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.services.data import _default_workers

REPO = Path(__file__).resolve().parent.parent
SYNTH = ["data", "synth", "--n", "3", "--size", "16", "--workers", "1"]

pytest.importorskip("nibabel", reason="ops data synth needs the train extra")


@pytest.fixture
def tmux_socket() -> Iterator[str]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (CI installs it)")
    socket = f"ops-test-{secrets.token_hex(4)}"
    yield socket
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)


def _pane(socket: str) -> str:
    return subprocess.run(["tmux", "-L", socket, "capture-pane", "-p", "-t", "bar"],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.tmux
def test_synth_shows_volumes_on_a_terminal(tmux_socket: str, tmp_path: Path) -> None:
    out = tmp_path / "vessels"
    command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "ops", *SYNTH,
                                                "--out", str(out)])
    subprocess.run(["tmux", "-L", tmux_socket, "new-session", "-d", "-s", "bar", "-x", "120",
                    "-y", "20", f"cd {shlex.quote(str(REPO))} && {command}; echo EXIT=$?; "
                    "sleep 30"], check=True, env={**os.environ, "TERM": "xterm"})
    deadline = time.time() + 60
    while "EXIT=" not in (screen := _pane(tmux_socket)) and time.time() < deadline:
        time.sleep(0.2)
    assert "EXIT=0" in screen, screen
    assert "volumes" in screen and "3/3" in screen, screen
    assert "wrote 3 volumes" in screen


def test_synth_piped_or_json_has_no_bar(tmp_path: Path) -> None:
    for extra in ([], ["--json"]):
        out = tmp_path / f"vessels{len(extra)}"
        result = subprocess.run([sys.executable, "-m", "ops", *SYNTH, "--out", str(out),
                                 *extra], cwd=REPO, capture_output=True, text=True,
                                timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        assert "volumes" not in result.stderr and "3/3" not in result.stderr
        if extra:
            assert json.loads(result.stdout)["n"] == 3


@pytest.mark.parametrize(("n", "size", "workers"), [
    pytest.param(6, 32, 1, id="toy-one-process"),
    pytest.param(7, 256, 1, id="just-under-eight-full-volumes"),
])
def test_small_datasets_start_no_worker_processes(n: int, size: int, workers: int) -> None:
    """Starting a worker re-imports numpy/scipy/nibabel (seconds): a toy dataset is made in
    this process, which is what the synthetic-data how-to's timing says."""
    assert _default_workers(n, size) == workers


def test_big_datasets_may_use_more_processes() -> None:
    assert 1 <= _default_workers(24, 256) <= 4
