"""Commands through a shared OpenSSH master (ops.hosts.mux) as the Host protocol has them:
an ExecResult or a checked stream, a drop reported as a lost connection (never run twice)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import BinaryIO

from ops.errors import HostError
from ops.hosts.base import ConnectionLostError, ExecResult, HostCommandError
from ops.hosts.mux import MasterLostError, Mux, strip_mux_noise, wait_exit

_EXIT_GRACE_S = 32.0  # after the stream's end: the client's exit (a background child lingers)


def _lost(host: str, why: str) -> ConnectionLostError:
    return ConnectionLostError(f"connection to {host} failed during a command: {why}",
                               hint="run the command again; it reconnects")


def mux_exec(mux: Mux, host: str, argv: Sequence[str], input_text: str | None, *,
             check: bool, timeout: float | None) -> ExecResult:
    data = input_text.encode() if input_text is not None else None
    try:
        done = mux.run(argv, data, timeout)
    except subprocess.TimeoutExpired as exc:
        raise HostError(f"{argv[0]} on {host} took longer than its time limit") from exc
    except MasterLostError as exc:
        raise _lost(host, str(exc)) from exc
    result = ExecResult(host, tuple(argv), done.exit_code, done.stdout.decode(errors="replace"),
                        done.stderr.decode(errors="replace"))
    if check and not result.ok:
        raise HostCommandError(result)
    return result


@contextmanager
def mux_stream(mux: Mux, host: str, argv: Sequence[str],
               input_bytes: bytes) -> Iterator[BinaryIO]:
    """The command's stdout is the ssh client's pipe (OpenSSH's C crypto and buffering, no
    Python in the byte path); stderr goes to a file, so that neither pipe can stall the other.
    An error inside the block kills the client, which stops the command."""
    import tempfile  # only a stream needs it (it imports shutil, random)

    with tempfile.TemporaryFile() as errors:
        proc = mux.popen(argv, errors)
        assert proc.stdin is not None and proc.stdout is not None  # noqa: S101 - PIPEs
        try:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(input_bytes)
                proc.stdin.close()
            yield proc.stdout  # type: ignore[misc]  # an IO[bytes] is a BinaryIO here
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        code = wait_exit(proc, _EXIT_GRACE_S)
        errors.seek(0)
        stderr = strip_mux_noise(errors.read()).decode(errors="replace")
    if code == 255 and not mux.alive():
        raise _lost(host, stderr.strip() or "exit 255")
    if code != 0:
        raise HostCommandError(ExecResult(host, tuple(argv), code, "", stderr))
