"""`runner serve`: a resident runner that answers runner verbs over a private Unix socket.

An exec over SSH costs a session on the host (sshd's fork, the login shell) and a Python
start with the runner's imports: about 0.15 s on loopback before the verb does anything. ops
reaches this process instead through its OpenSSH master's stream forwarding (a local socket in
ops' private mux directory, forwarded to SOCKET here), so a verb costs a local socket hop
and a fork of a process that has imported everything already.

Who starts it: a runner call made over exec with `--serve SOCKET --serve-idle S` starts it in
the background after its answer is written (`start_detached`), unless one already listens.
It then serves until it has had no request for S seconds, its socket is removed or replaced,
or its build dir disappears; it never outlives its build, and a new build has another socket.

What a request is: the client reads a hello line first (so a refused channel, a dead daemon or
a full host is told apart from a lost answer), then sends one JSON line {"argv": [...],
"stdin_len": N} and N bytes of stdin. The answer is one JSON line {"exit": code, "stdout_len",
"stderr_len"} and those bytes: exactly what `python -m runner ARGV` would have printed and
exited with. Each request runs in a forked child, so a verb sees a fresh process state (its
own cwd, signals, stdin) and a slow verb (`cancel --wait`) holds up nobody.

Each answered request adds a line to SOCKET.log (time, verb, exit status, milliseconds):
how to tell, on the host, that calls are being served here.

Safety: the socket's directory is made 0700 and must be ours and not a link; the socket is
0600; a connecting peer of another uid is dropped (SO_PEERCRED) before it can say anything.
Only SERVED_VERBS are answered: the wrapper, the sweep driver and pack (processes that stream
or live for hours) are never run here. Secrets arrive on the request's stdin, as over exec,
and live only in the child that handles it.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import signal
import socket
import stat
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCHEMA = "ops.runner_serve/1"
# not a runner verb: `command ARGV...` runs ARGV with the request's stdin and answers its exit
# status, stdout and stderr as they are, what an exec over SSH would (ops' code sync uses it)
COMMAND = "command"
# read-only and quick: a lost answer is asked again; runner.cli answers them in-process too
QUESTION_VERBS = frozenset({"version", "status", "show", "ls", "tail", "report-data"})
SERVED_VERBS = QUESTION_VERBS | {"submit", "submit-sweep", "cancel", "preflight", "housekeeping",
                                 COMMAND}
MAX_HEADER = 1 << 16
MAX_STDIN = 64 << 20
MAX_LOG = 1 << 20
REQUEST_TIMEOUT_S = 60.0  # for the request to arrive whole; the verb itself has no limit
_POLL_S = 1.0
# modules the verbs import when they run: imported once here, so that no child pays for them
# (hmac: runner.seal imports it where a summary's seal is checked, which status does per run)
_PRELOAD = ("runner.cli", "runner.pack", "hmac")


class ServeError(Exception):
    """A socket this daemon cannot use safely, or a request it will not answer."""


def private_dir(path: Path) -> None:
    """Make ``path`` a directory only this user can enter; ServeError if it is not ours."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ServeError(f"{path} is not a directory of uid {os.getuid()}")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


def listening(path: str) -> bool:
    """Someone accepts connections on ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def start_detached(path: str, idle_s: float) -> None:
    """Start a daemon on ``path`` in the background unless one listens there already.

    Double fork and setsid: the daemon belongs to no session of sshd's, and its stdio is
    /dev/null, so the exec that started it ends as soon as its own process does. It is a new
    interpreter (`python -m runner serve`), not a fork of this one: nothing this process read
    (a submit's secrets) lives on in it."""
    if listening(path):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        _detach_stdio()
        os.execv(sys.executable, [sys.executable, "-m", "runner",  # noqa: S606 - no shell
                                  "serve", path, "--idle", str(idle_s)])
    finally:
        os._exit(1)  # only when the exec failed: a daemon has nowhere to report it


def _detach_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    os.closerange(3, 256)  # the ssh channel's and anything else the exec held


class _Listener:
    """The bound socket, and the lock that makes it the only daemon on that path."""

    def __init__(self, path: str):
        self.path = path
        private_dir(Path(path).parent)
        self._lock = os.open(f"{path}.lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock)
            raise ServeError(f"another daemon holds {path}") from exc
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a daemon killed before it could tidy up (we hold the lock)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_mask = os.umask(0o177)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old_mask)
        self.sock.listen(64)
        self.sock.settimeout(_POLL_S)
        self.inode = os.lstat(path).st_ino

    def still_ours(self) -> bool:
        try:
            return os.lstat(self.path).st_ino == self.inode
        except OSError:
            return False

    def close(self) -> None:
        if self.still_ours():
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self.sock.close()
        os.close(self._lock)


def serve(path: str, idle_s: float) -> int:
    """Answer requests on ``path`` until idle for ``idle_s`` seconds (or told to stop)."""
    for name in _PRELOAD:
        __import__(name)
    from runner import cli

    cli._parser()  # built here once, not in every child
    for where in (os.path.expanduser("~"), "/"):  # where an exec's command starts
        with contextlib.suppress(OSError):
            os.chdir(where)
            break
    listener = _Listener(path)
    build_dir = os.environ.get("OPS_RUNNER_DIR")
    children: set[int] = set()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    last = time.monotonic()
    try:
        while not stop:
            _reap(children)
            if children:
                last = time.monotonic()
            if time.monotonic() - last > idle_s or not listener.still_ours() or \
                    (build_dir and not os.path.isdir(build_dir)):
                break
            try:
                conn, _ = listener.sock.accept()
            except (TimeoutError, socket.timeout, InterruptedError):  # noqa: UP041 - 3.8/3.9
                continue
            if build_dir and not os.path.isdir(build_dir):  # the build is gone: so are we;
                conn.close()  # no hello, so the client runs the verb over exec (and reinstalls)
                break
            last = time.monotonic()
            pid = os.fork()
            if pid == 0:
                listener.sock.close()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                _child(conn, f"{path}.log")
            conn.close()
            children.add(pid)
    finally:
        listener.close()
    return 0


def _reap(children: set[int]) -> None:
    for pid in list(children):
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if not done:
                continue
        children.discard(pid)


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _child(conn: socket.socket, log_path: str) -> None:
    """Handle one connection and exit (never returns)."""
    code = 0
    try:
        if peer_uid(conn) != os.getuid():
            os._exit(0)  # another user: not a word
        conn.settimeout(REQUEST_TIMEOUT_S)
        from runner import __version__

        hello = {"schema": SCHEMA, "runner_version": __version__, "pid": os.getpid()}
        conn.sendall(json.dumps(hello).encode() + b"\n")
        reader = conn.makefile("rb")
        argv, stdin = read_request(reader)
        conn.settimeout(None)
        started = time.monotonic()
        exit_code, out, err = run_verb(argv, stdin)
        # noted before the answer goes: whoever got an answer finds its line in the log
        note_request(log_path, argv[0] if argv else "", exit_code, time.monotonic() - started)
        conn.sendall(json.dumps({"exit": exit_code, "stdout_len": len(out),
                                 "stderr_len": len(err)}).encode() + b"\n" + out + err)
    except BaseException:  # noqa: BLE001 - the client sees the connection close
        code = 1
    finally:
        with contextlib.suppress(OSError):
            conn.close()
    os._exit(code)


def note_request(log_path: str, verb: str, exit_code: int, seconds: float) -> None:
    """One line in SOCKET.log for each answered request: when, which verb, its exit status
    and time. Never its arguments' contents or stdin. Past MAX_LOG bytes the log starts over
    (the last one kept as .1)."""
    line = json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "verb": verb[:40], "exit": exit_code, "ms": round(seconds * 1000, 1)})
    with contextlib.suppress(OSError):
        if os.path.getsize(log_path) > MAX_LOG:
            os.replace(log_path, f"{log_path}.1")
    with contextlib.suppress(OSError):
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode() + b"\n")
        finally:
            os.close(fd)


def read_request(reader: io.BufferedReader) -> tuple[list[str], bytes]:
    """The request's argv and stdin, checked; ServeError for anything malformed."""
    line = reader.readline(MAX_HEADER + 1)
    if not line.endswith(b"\n"):
        raise ServeError("no request line")
    try:
        head = json.loads(line)
    except ValueError as exc:
        raise ServeError(f"request line is not JSON: {exc}") from exc
    argv = head.get("argv") if isinstance(head, dict) else None
    size = head.get("stdin_len") if isinstance(head, dict) else None
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv) \
            or type(size) is not int or not 0 <= size <= MAX_STDIN:
        raise ServeError("request line is not {argv: [str], stdin_len: int}")
    stdin = reader.read(size)
    if len(stdin) != size:
        raise ServeError("request stdin cut short")
    return argv, stdin


def run_verb(argv: Sequence[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    """(exit code, stdout, stderr) of `python -m runner ARGV` with ``stdin``, in this process
    (a forked child: it may change what it likes)."""
    from runner import cli

    out, err = io.StringIO(), io.StringIO()
    verb = argv[0] if argv else None
    if verb not in SERVED_VERBS:  # options first (--serve) are not taken either
        err.write(f"runner serve: {verb!r} is not served here; run it over exec\n")
        return 2, b"", err.getvalue().encode()
    if verb == COMMAND:
        return run_command(argv[1:], stdin)
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException:  # noqa: BLE001 - what the process would print, and exit 1
            import traceback

            traceback.print_exc()
            code = 1
    return code, out.getvalue().encode(), err.getvalue().encode()


def run_command(argv: Sequence[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    """(exit status, stdout, stderr) of ARGV, as a shell reports them: 127 when it cannot be
    started, 128+N when signal N ended it."""
    import subprocess

    if not argv:
        return 2, b"", b"runner serve: command: no argv\n"
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, check=False)
    except OSError as exc:
        return 127, b"", f"runner serve: {argv[0]}: {exc.strerror or exc}\n".encode()
    code = done.returncode if done.returncode >= 0 else 128 - done.returncode
    return code, done.stdout, done.stderr


def hello_ok(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("schema") == SCHEMA
