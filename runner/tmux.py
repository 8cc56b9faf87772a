"""The one place the runner talks to tmux (the tmux command itself), on a dedicated socket.

The server is started from a scrubbed environment, so `tmux -L <socket> show-environment -g`
holds nothing the submitter had in theirs; a session only runs the wrapper, stdin /dev/null.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
from pathlib import Path

from runner import contract
from runner.envpolicy import scrubbed_env


def _encode(run_id: str) -> str:
    """tmux treats '.' and ':' in a name as target separators. Run ids never hold ':'; '.' is
    spelled '_-' and '_' is doubled, so two run ids never share a session name (`col.1` ->
    `col_-1`, `col_1` -> `col__1`) and ids of letters, digits and '-' read unchanged."""
    return contract.validate_run_id(run_id).replace("_", "__").replace(".", "_-")


def session_name(run_id: str) -> str:
    return "ops-" + _encode(run_id)


def free_session_name(run_id: str, run_dir: Path, socket: str) -> str:
    """The run's session name, unless another run of that id (another checkout or project on
    the same socket) holds it: then the name gains `_+` and a hash of the run dir. Encoded ids
    never hold `_+`, so the longer name is nobody else's either; spec.json records the one used."""
    plain = session_name(run_id)
    if plain not in live_sessions(socket):
        return plain
    return f"{plain}_+{hashlib.sha256(str(run_dir).encode()).hexdigest()[:10]}"


def sweep_session_name(sweep_id: str) -> str:
    """`ops-sweep_<id>`: in an encoded run id '_' is always followed by '_' or '-', never by a
    letter or digit, so a sweep's session never takes a run's name."""
    return "ops-sweep_" + _encode(sweep_id)


def launch_command(argv: list[str], socket: str, session: str, log: Path) -> None:
    """Start ``argv`` in a new detached session: stdin /dev/null, stderr appended to ``log``.

    One `tmux new-session -d` from a scrubbed environment (the server it may start inherits
    that environment, never the submitter's). Called directly, not through libtmux: importing
    libtmux was close to half of a warm submit's time on the host. Raises RuntimeError with
    tmux's own words when tmux refuses (a duplicate session, no tmux)."""
    package_parent = Path(__file__).resolve().parent.parent
    command = f"{shlex.join(argv)} </dev/null 2>>{shlex.quote(str(log))}"
    new_session = ["tmux", "-L", socket, "new-session", "-d", "-s", session, "-x", "200",
                   "-y", "50", "-c", str(package_parent), command]
    try:
        done = subprocess.run(new_session, capture_output=True, text=True, timeout=60,
                              check=False, stdin=subprocess.DEVNULL, env=scrubbed_env())
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"tmux could not be started: {exc}") from exc
    if done.returncode != 0:
        said = done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}"
        raise RuntimeError(f"tmux new-session {session}: {said[:500]}")


def launch_wrapper(run_dir: Path, socket: str, session: str) -> None:
    """Start `python -m runner exec RUN_DIR` in a new detached session."""
    launch_command([sys.executable, "-m", "runner", "exec", str(run_dir)], socket, session,
                   run_dir / contract.WRAPPER_LOG)


def live_sessions(socket: str) -> set[str]:
    """Names of the sessions on the socket; an absent server (or no tmux) means none.

    One `tmux list-sessions` rather than libtmux: status asks this on every listing, and
    importing libtmux costs more than the call itself."""
    try:
        done = subprocess.run(["tmux", "-L", socket, "list-sessions", "-F", "#{session_name}"],
                              capture_output=True, text=True, timeout=30, check=False,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return set()
    if done.returncode != 0:  # no server on the socket: tmux says so and exits 1
        return set()
    return {name for name in done.stdout.splitlines() if name}
