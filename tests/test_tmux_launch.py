"""runner.tmux.launch_command starts the wrapper's session with the tmux command itself (issue
14: importing libtmux was close to half of a warm submit on the host): a detached session on
the run's own socket, from a scrubbed environment, and tmux's own words when it refuses."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner import tmux

pytestmark = pytest.mark.tmux
CANARY = f"canary-{secrets.token_hex(8)}"


@pytest.fixture
def socket() -> Iterator[str]:
    name = f"ops-launch-{secrets.token_hex(4)}"
    yield name
    subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True, check=False)


def _wait_for(path: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written within {timeout:.0f} s")


def test_the_session_runs_the_command_detached_with_a_scrubbed_environment(
        socket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPS_TEST_SECRET", CANARY)
    out = tmp_path / "seen.json"
    program = ("import json, os, sys; json.dump({'env': dict(os.environ), 'cwd': os.getcwd(), "
               "'stdin': sys.stdin.read()}, open(sys.argv[1], 'w')); "
               "open(sys.argv[1], 'a').write('\\n'); sys.stderr.write('to the log\\n'); "
               "sys.stderr.flush(); __import__('time').sleep(60)")
    log = tmp_path / "wrapper.log"
    tmux.launch_command([sys.executable, "-c", program, str(out)], socket, "ops-one", log)
    seen = json.loads(_wait_for(out))
    assert "OPS_TEST_SECRET" not in seen["env"] and CANARY not in json.dumps(seen)
    assert seen["stdin"] == ""  # stdin is /dev/null, never a terminal it could wait on
    assert Path(seen["cwd"]) == Path(tmux.__file__).resolve().parent.parent
    deadline = time.monotonic() + 10
    while "to the log" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "stderr never reached the wrapper log"
        time.sleep(0.05)
    shown = subprocess.run(["tmux", "-L", socket, "show-environment", "-g"],
                           capture_output=True, text=True, check=True).stdout
    assert CANARY not in shown and "OPS_TEST_SECRET" not in shown
    assert os.environ["OPS_TEST_SECRET"] == CANARY  # the caller's environment is left alone


def test_a_taken_session_name_is_refused_in_tmux_words(socket: str, tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    tmux.launch_command(argv, socket, "ops-twice", tmp_path / "log")
    assert tmux.live_sessions(socket) == {"ops-twice"}
    with pytest.raises(RuntimeError, match="duplicate session: ops-twice"):
        tmux.launch_command(argv, socket, "ops-twice", tmp_path / "log")
    assert tmux.live_sessions(socket) == {"ops-twice"}


def test_no_tmux_on_the_path_is_an_error_not_a_hang(socket: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    bare = {**tmux.scrubbed_env(), "PATH": str(tmp_path)}  # the session's PATH: no tmux there
    monkeypatch.setattr(tmux, "scrubbed_env", lambda: bare)
    with pytest.raises(RuntimeError, match="tmux could not be started"):
        tmux.launch_command(["true"], socket, "ops-none", tmp_path / "log")


def test_launching_imports_no_libtmux(socket: str, tmp_path: Path) -> None:
    probe = ("import sys\nfrom pathlib import Path\nfrom runner import tmux\n"
             f"tmux.launch_command(['true'], {socket!r}, 'ops-probe', Path({str(tmp_path)!r}) "
             "/ 'log')\nprint('libtmux' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"
