"""LocalHost: the embedded default; host commands are local processes (one helper runs them).

A runner question (status, show, ls, tail, report-data, version: runner.serve.QUESTION_VERBS) is
answered by the runner's own code in this process, under the same scrubbed environment a runner
process gets: the same JSON document and exit code as `python -m runner`, without starting a Python
(0.1 to 0.3 s of CPU a question, once a second under `ops run tail --follow`). Everything
else the runner does (submit, exec, cancel, pack, preflight, housekeeping) stays a process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ops.errors import HostError
from ops.hosts.base import ExecResult, HostCommandError
from ops.hosts.local_files import write_local_file
from runner.envpolicy import scrubbed_env, scrubbed_environ


def run_local(argv: Sequence[str], *, cwd: Path | None = None, input_text: str | None = None,
              check: bool = True, timeout: float | None = None,
              env: dict[str, str] | None = None, host: str = "local") -> ExecResult:
    """The one place ops starts a local process. The environment is scrubbed by default."""
    try:
        proc = subprocess.run(list(argv), cwd=cwd, input=input_text, capture_output=True,
                              text=True, timeout=timeout, check=False,
                              env=scrubbed_env() if env is None else env)
    except FileNotFoundError as exc:
        raise HostError(f"{argv[0]} not found on {host}", hint="install it or fix PATH") from exc
    except subprocess.TimeoutExpired as exc:
        raise HostError(f"{argv[0]} on {host} took longer than {timeout} s") from exc
    result = ExecResult(host, tuple(argv), proc.returncode, proc.stdout, proc.stderr)
    if check and not result.ok:
        raise HostCommandError(result)
    return result


class LocalHost:
    name = "local"

    def exec(self, argv: Sequence[str], *, input_text: str | None = None, check: bool = True,
             timeout: float | None = None) -> ExecResult:
        return run_local(argv, input_text=input_text, check=check, timeout=timeout)

    def runner_argv(self) -> list[str]:
        return [sys.executable, "-m", "runner"]

    def runner_in_process(self, args: Sequence[str]) -> ExecResult | None:
        """The runner's answer to a question verb, computed here (see the module docstring);
        None for any other verb. An unexpected error reads as a runner process that died of
        it: exit 1 and the traceback as stderr."""
        from runner.cli import answer
        from runner.serve import QUESTION_VERBS

        if not args or args[0] not in QUESTION_VERBS:
            return None
        argv = (*self.runner_argv(), *args)
        with scrubbed_environ():
            try:
                code, out = answer([os.fspath(arg) for arg in args])  # as an argv would
            except Exception:  # noqa: BLE001 - what a runner process would print and exit 1 on
                import traceback

                return ExecResult(self.name, argv, 1, "", traceback.format_exc())
        return ExecResult(self.name, argv, code, out, "")

    @contextmanager
    def stream(self, argv: Sequence[str], *, input_bytes: bytes = b"") -> Iterator[BinaryIO]:
        """stdout as a pipe; stderr into a temp file, so that a chatty command cannot fill a
        pipe nobody reads and stall."""
        import tempfile  # here: every `ops` command imports this module, few stream

        with tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=errors, env=scrubbed_env())
            assert proc.stdin is not None and proc.stdout is not None  # noqa: S101 - PIPEs
            proc.stdin.write(input_bytes)
            proc.stdin.close()
            try:
                yield proc.stdout  # type: ignore[misc]  # Popen types its pipes as IO[bytes]
            finally:
                proc.stdout.close()
                code = proc.wait()
                errors.seek(0)
                stderr = errors.read().decode(errors="replace")
        if code != 0:
            raise HostCommandError(ExecResult(self.name, tuple(argv), code, "", stderr))

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        write_local_file(self.expand(path), data, mode)

    def expand(self, path: str) -> str:
        return os.path.expanduser(path)
