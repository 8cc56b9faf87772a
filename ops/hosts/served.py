"""Runner calls through the resident runner on a host (runner.serve), over the shared master.

A runner verb over exec costs an SSH session on the host and a Python start there, about 0.15 s
on loopback before the verb begins. Where ops has an OpenSSH master for the host (ops.hosts.mux)
and knows the runner build it runs, the first call goes over exec as before but asks the runner
to start a resident copy of itself after answering (`--serve SOCKET`); ops then has the master
forward a socket in its private mux directory to that one. Later calls, from this process or
the next, connect to the local socket: a channel on the live connection, a fork on the host.

When it falls back to exec, and why that is safe:
- no master, no runner build on record, a verb the resident runner does not take, or
  OPS_RUNNER_SERVE=0: exec, as before.
- the local socket is missing or refuses (the master was replaced): exec, which starts the
  resident runner if needed, then the forward is set up again.
- no hello on the connection (the resident runner is gone, or the host refuses stream
  forwarding): nothing was sent, so exec is safe. After two such misses on one master ops stops
  trying until the master is replaced.
- the connection ends after the request was sent: a question verb (read-only) is asked again
  over exec; any other verb raises ConnectionLostError, never runs twice.

Plain commands (`Served.command`: the code sync's probe and apply scripts, say) go the same
way once a resident runner answers, run by it as an exec would run them; they never start one.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from ops.hosts.base import ConnectionLostError, ExecResult, error_reason
from ops.hosts.mux import MAX_SOCKET_PATH, Mux, idle_seconds
from runner.digest import sha256
from runner.serve import COMMAND, QUESTION_VERBS, SERVED_VERBS, hello_ok

SERVE_ENV = "OPS_RUNNER_SERVE"
HELLO_TIMEOUT_S = 20.0
MAX_MISSES = 2
MAX_ANSWER = 1 << 30  # what a header may announce; an exec's output has no bound either


def enabled() -> bool:
    return os.environ.get(SERVE_ENV, "1") != "0"


def _digest(text: str, size: int) -> str:
    return sha256(text.encode()).hexdigest()[:size]


def remote_socket(runner_argv: Sequence[str]) -> str | None:
    """Where the resident runner of this runner command listens on the host: beside the ops
    home's builds when the path fits a socket address, else a private dir in /tmp. None when
    the command names no uploaded build (OPS_RUNNER_DIR)."""
    found = [a.split("=", 1)[1] for a in runner_argv if a.startswith("OPS_RUNNER_DIR=")]
    if not found or not found[0].startswith("/"):
        return None
    key = _digest(json.dumps(list(runner_argv)), 16)
    near, far = serve_dirs(posixpath.dirname(posixpath.dirname(found[0].rstrip("/"))))
    path = f"{near}/{key}.sock"
    return path if len(path) <= MAX_SOCKET_PATH else f"{far}/{key}.sock"


def serve_dirs(ops_home: str) -> tuple[str, str]:
    """Where the sockets of an ops home's resident runners live: its `serve` dir, or (when
    that path is too long for a socket address) a dir in /tmp named after it. The daemon makes
    either 0700 and will not use one that is not its own."""
    return (f"{ops_home.rstrip('/')}/serve",
            f"/tmp/ops-serve-{_digest(ops_home, 12)}")  # noqa: S108


class Served:
    """The resident runner of one host's runner command, reached through ``mux``."""

    def __init__(self, mux: Mux, host: str):
        self.mux, self.host = mux, host

    def _paths(self, runner_argv: Sequence[str]) -> tuple[Path, str] | None:
        remote = remote_socket(runner_argv)
        if remote is None:
            return None
        return self.mux.directory / f"{self.mux.socket.name}.{_digest(remote, 8)}.srv", remote

    def call(self, runner_argv: Sequence[str], args: Sequence[str], input_text: str | None,
             timeout: float | None) -> ExecResult:
        """The runner's answer to ``args``: through the resident runner where it answers,
        else over exec (which starts one, and the forward to it)."""
        paths = self._paths(runner_argv) if enabled() and args and args[0] in SERVED_VERBS \
            else None
        argv = (*runner_argv, *args)
        if paths is None or self._given_up(paths[0]):
            return self._exec(argv, input_text, timeout)
        local, remote = paths
        answered, forwarded = self._ask(local, argv, args, input_text, timeout)
        if answered is not None:
            return answered
        serve = ["--serve", remote, "--serve-idle", str(idle_seconds())]
        result = self._exec([*runner_argv, *serve, *args], input_text, timeout)
        if not forwarded and result.exit_code != 127:  # 127: no runner, so no resident one
            self._forward(local, remote)
        return result

    def _forward(self, local: Path, remote: str) -> None:
        """The master's forward of ``local`` to ``remote``. A socket file left by a master that
        is gone is removed first; a master that holds the forward on a file someone removed
        lets go of it first."""
        for attempt in (1, 2):
            with contextlib.suppress(FileNotFoundError):
                local.unlink()
            if (self.mux.forward(local, remote) and local.exists()) or attempt == 2:
                return
            self.mux.forward(local, remote, cancel=True)

    def command(self, runner_argv: Sequence[str], argv: Sequence[str],
                input_text: str | None) -> ExecResult | None:
        """ARGV run on the host by its resident runner, as an exec would run it; None when
        no resident runner answers yet (nothing was sent: the caller execs). Never starts one:
        only runner calls do."""
        paths = self._paths(runner_argv) if enabled() and argv else None
        if paths is None or self._given_up(paths[0]):
            return None
        # no hello counts for nothing here: only a runner call, which restarts the resident
        # runner when it is gone, can tell a dead one from a host that refuses forwarding
        return self._ask(paths[0], argv, [COMMAND, *argv], input_text, None,
                         count_miss=False)[0]

    def _exec(self, argv: Sequence[str], input_text: str | None,
              timeout: float | None) -> ExecResult:
        from ops.hosts.mux_commands import mux_exec

        return mux_exec(self.mux, self.host, argv, input_text, check=False, timeout=timeout)

    # -- one request ------------------------------------------------------------------------

    def _ask(self, local: Path, argv: Sequence[str], args: Sequence[str],
             input_text: str | None, timeout: float | None, *,
             count_miss: bool = True) -> tuple[ExecResult | None, bool]:
        """(the answer through the forward, or None when nothing was sent or a question's
        answer was lost: the caller asks over exec; whether the forward is in place).
        ``count_miss``: a connection without a hello counts toward giving up."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(HELLO_TIMEOUT_S)
            try:
                sock.connect(str(local))
            except OSError:  # no forward yet, or its master is gone
                return None, False
            reader = sock.makefile("rb")
            try:
                hello = json.loads(reader.readline(1 << 16) or b"null")
            except (OSError, ValueError):
                hello = None
            if not hello_ok(hello):  # nothing was sent: safe to ask over exec
                if count_miss:
                    self._missed(local)
                return None, True
            self._answered(local)
            data = (input_text or "").encode()
            head = json.dumps({"argv": list(args), "stdin_len": len(data)}).encode()
            try:
                sock.settimeout(timeout)
                sock.sendall(head + b"\n" + data)
                return self._answer(reader, argv), True
            except (OSError, ValueError) as exc:
                if args[0] in QUESTION_VERBS:
                    return None, True  # read-only: asking again over exec changes nothing
                raise ConnectionLostError(
                    f"the runner on {self.host} stopped answering during `runner {args[0]}` "
                    f"({error_reason(exc)}); it may have run",
                    hint="check with `ops run status` before running the command again") \
                    from exc
        finally:
            sock.close()

    def _answer(self, reader: BinaryIO, argv: Sequence[str]) -> ExecResult:
        head = json.loads(reader.readline(1 << 16))
        if not isinstance(head, dict):
            raise ValueError("no answer header")
        code, out_len, err_len = head.get("exit"), head.get("stdout_len"), head.get("stderr_len")
        if type(code) is not int or type(out_len) is not int or type(err_len) is not int \
                or not 0 <= out_len <= MAX_ANSWER or not 0 <= err_len <= MAX_ANSWER:
            raise ValueError("malformed answer header")
        out, err = reader.read(out_len), reader.read(err_len)
        if len(out) != out_len or len(err) != err_len:
            raise ValueError("answer cut short")
        return ExecResult(self.host, tuple(argv), code, out.decode(errors="replace"),
                          err.decode(errors="replace"))

    # -- a host that never answers: stop trying, for this master ----------------------------

    def _miss_file(self, local: Path) -> Path:
        return local.with_name(f"{local.name}.miss")

    def _master_id(self) -> str:
        try:
            return str(os.stat(self.mux.socket).st_ino)
        except OSError:
            return "-"

    def _misses(self, local: Path) -> int:
        with contextlib.suppress(OSError, ValueError):
            master, count = self._miss_file(local).read_text().split(":")
            if master == self._master_id():
                return int(count)
        return 0

    def _given_up(self, local: Path) -> bool:
        return self._misses(local) >= MAX_MISSES

    def _missed(self, local: Path) -> None:
        path = self._miss_file(local)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        with contextlib.suppress(OSError):
            tmp.write_text(f"{self._master_id()}:{self._misses(local) + 1}")
            os.replace(tmp, path)

    def _answered(self, local: Path) -> None:
        if self._misses(local):
            self._miss_file(local).unlink(missing_ok=True)

