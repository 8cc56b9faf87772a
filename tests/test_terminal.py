"""A terminal recording: the run table and `ops ps --watch` in a real tmux pane, read back with
`capture-pane -e` (colours on), and the same commands piped (no colour)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runner import contract

from .conftest import REPO, Project
from .report_runs import FakeRun, write_run

GREEN_COMPLETED = re.compile(r"\x1b\[(?:[0-9;]*;)?32m\s*completed")
RED_FAILED = re.compile(r"\x1b\[(?:[0-9;]*;)?31m\s*failed")
WATCH_HEAD = "(Ctrl-C to stop)"


def _run(root: Path, run_id: str, day: int, status: str = "completed") -> None:
    run_dir = write_run(root, FakeRun(run_id, status=status, metrics_best={"dsc_mean": 0.8}))
    spec = json.loads((run_dir / contract.SPEC).read_text())
    spec["created_at"] = f"2026-01-{day:02d}T00:00:00.000Z"
    contract.atomic_write_json(run_dir / contract.SPEC, spec)


@pytest.fixture
def runs(project: Project) -> Project:
    _run(project.runs, "ok-1", 1)
    _run(project.runs, "bad-1", 2, status="failed")
    return project


class Pane:
    """One tmux pane on a private server, running a shell command line."""

    def __init__(self, socket: str, cwd: Path) -> None:
        self.socket, self.cwd = socket, cwd

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                              text=True, check=True, timeout=30).stdout

    def start(self, line: str) -> None:
        self.tmux("new-session", "-d", "-s", "t", "-x", "150", "-y", "30", "-c",
                  str(self.cwd), f"{line}; echo rc=$?; sleep 60")

    def screen(self, *, history: bool = False) -> str:
        return self.tmux("capture-pane", "-p", "-e", "-t", "t", *(
            ["-S", "-"] if history else []))

    def wait_for(self, ready: Callable[[str], bool], timeout: float = 60) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.screen()
            if ready(text):
                return text
            time.sleep(0.1)
        raise AssertionError(f"the pane never showed it; it shows:\n{self.screen()}")


@pytest.fixture
def pane(runs: Project) -> Iterator[Pane]:
    made = Pane(f"ops-term-{secrets.token_hex(4)}", runs.root)
    yield made
    subprocess.run(["tmux", "-L", made.socket, "kill-server"], capture_output=True,
                   check=False)


def _ops_line(project: Project, *args: str, env: str = "") -> str:
    return (f"env {env} OPS_PROJECT_CONFIG={shlex.quote(str(project.config_path))} "
            f"PYTHONPATH={shlex.quote(str(REPO))} {shlex.quote(sys.executable)} -m ops "
            + " ".join(shlex.quote(a) for a in args))


def test_the_run_table_in_a_terminal_has_colours(runs: Project, pane: Pane) -> None:
    pane.start(_ops_line(runs, "run", "list"))
    screen = pane.wait_for(lambda text: "rc=" in text)
    assert "rc=0" in screen
    assert GREEN_COMPLETED.search(screen) and RED_FAILED.search(screen), screen
    assert re.search(r"\x1b\[1mRUN", screen), screen  # the header is bold
    plain = re.sub(r"\x1b\[[0-9;]*m", "", screen)
    assert plain.index("bad-1") < plain.index("ok-1")  # newest first


def test_no_color_turns_the_colours_off(runs: Project, pane: Pane) -> None:
    pane.start(_ops_line(runs, "ps", env="NO_COLOR=1"))
    screen = pane.wait_for(lambda text: "rc=" in text)
    assert "rc=0" in screen and "bad-1" in screen
    assert not GREEN_COMPLETED.search(screen) and not RED_FAILED.search(screen), screen


def test_ps_watch_redraws_in_place(runs: Project, pane: Pane) -> None:
    pane.start(_ops_line(runs, "ps", "--watch", "--interval", "0.3"))
    pane.wait_for(lambda text: WATCH_HEAD in text and "bad-1" in text)
    _run(runs.runs, "late-1", 3)
    screen = pane.wait_for(lambda text: "late-1" in text)
    assert GREEN_COMPLETED.search(screen), screen
    time.sleep(1)  # a few more redraws
    everything = pane.screen(history=True)
    assert everything.count(WATCH_HEAD) == 1, everything  # redrawn in place, never scrolled
    plain = re.sub(r"\x1b\[[0-9;]*m", "", everything)
    assert plain.index("late-1") < plain.index("bad-1") < plain.index("ok-1")
    pane.tmux("send-keys", "-t", "t", "C-c")
    screen = pane.wait_for(lambda text: "rc=" in text)
    assert "rc=0" in screen and "Traceback" not in screen and "aborted" not in screen


def test_piped_the_same_commands_have_no_colour(runs: Project) -> None:
    listed = runs.ops("run", "list")
    assert listed.exit_code == 0 and "bad-1" in listed.stdout and "\x1b" not in listed.stdout
    env = {**os.environ, "OPS_PROJECT_CONFIG": str(runs.config_path),
           "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ops", "ps", "--watch", "--interval", "0.3"],
                            cwd=runs.root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    seen = b""
    deadline = time.time() + 60
    while seen.count(WATCH_HEAD.encode()) < 2 and time.time() < deadline:
        seen += os.read(proc.stdout.fileno(), 4096) or b""
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    text = (seen + out).decode()
    assert proc.returncode == 0, err
    assert text.count(WATCH_HEAD) >= 2 and "\x1b" not in text  # one table after another
    assert text.count("bad-1") >= 2


def test_one_run_in_detail_colours_its_status(runs: Project, pane: Pane) -> None:
    pane.start(_ops_line(runs, "run", "status", "bad"))
    pane.wait_for(lambda text: "rc=" in text)
    screen = pane.screen(history=True)  # the detail is taller than the pane
    assert "rc=0" in screen and RED_FAILED.search(screen), screen
    piped = runs.ops("run", "status", "bad")
    assert "status         failed" in piped.stdout and "\x1b" not in piped.stdout


def test_fetch_shows_files_bytes_and_rate_on_a_terminal_only(runs: Project, pane: Pane) -> None:
    (runs.runs / "ok-1" / "out").mkdir(exist_ok=True)
    (runs.runs / "ok-1" / "out" / "weights.bin").write_bytes(os.urandom(3 * 2**20))
    pane.start(_ops_line(runs, "run", "fetch", "ok-1"))
    screen = pane.wait_for(lambda text: "rc=" in text)
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", screen)
    assert "rc=0" in plain, screen
    bar = re.search(r"fetching (\d+) files .*?([\d.]+)/([\d.]+) MiB .*?/s", plain)
    assert bar and float(bar.group(2)) == float(bar.group(3)) >= 3.0, plain
    assert f"fetched {bar.group(1)} files" in plain
    again = runs.ops("run", "fetch", "ok-1", "--to", str(runs.root / "piped"))
    assert again.exit_code == 0, again.stderr
    assert "fetching" not in again.stderr and "\x1b" not in again.stderr + again.stdout
