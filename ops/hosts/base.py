"""The host interface and the record every host command returns."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, BinaryIO, NamedTuple, Protocol

from ops.errors import ConflictError, HostError, NotFoundError, OpsError, UsageError


class ExecResult(NamedTuple):
    host: str
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def error_reason(exc: BaseException) -> str:
    """What went wrong, never empty: `str(EOFError())` is "", so the type name stands in."""
    text = str(exc).strip()
    return text or type(exc).__name__


def progress(message: str) -> None:
    """One human-readable progress line on stderr: only on a terminal, never under --json
    (whose readers want stdout alone, and a pipe gets no progress at all)."""
    if "--json" in sys.argv[1:] or not sys.stderr.isatty():
        return
    sys.stderr.write(f"{message}\n")
    sys.stderr.flush()


def human_size(count: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


class ConnectionLostError(HostError):
    """The connection dropped while a command ran; the next call reconnects."""


class HostCommandError(HostError):
    """A host command exited non-zero; the full result rides along."""

    def __init__(self, result: ExecResult):
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        super().__init__(f"{command_name(result.argv)} on {result.host} exited with "
                         f"{result.exit_code}", details=tail)
        self.result = result


def command_name(argv: Sequence[str]) -> str:
    """What a user recognises: `runner status`, not `env PYTHONPATH=... python3 -m runner`."""
    words = list(argv)
    if words[:1] == ["env"]:
        words = [w for w in words[1:] if "=" not in w]
    if len(words) >= 3 and words[1:3] == ["-m", "runner"]:
        rest = words[3:]
        while rest[:1] in (["--serve"], ["--serve-idle"]):  # how it was asked, not what
            rest = rest[2:]
        return " ".join(["runner", *rest[:1]])
    return words[0] if words else "?"


class Host(Protocol):
    name: str

    def exec(self, argv: Sequence[str], *, input_text: str | None = None, check: bool = True,
             timeout: float | None = None) -> ExecResult: ...

    def runner_argv(self) -> list[str]: ...

    def stream(self, argv: Sequence[str], *,
               input_bytes: bytes = b"") -> AbstractContextManager[BinaryIO]:
        """Run ``argv`` and read its stdout as a binary stream (for tar); on leaving the
        context a non-zero exit raises HostCommandError."""
        ...


RUNNER_ERRORS: dict[str, type[OpsError]] = {
    "usage": UsageError, "not_found": NotFoundError, "conflict": ConflictError,
}


def call_runner(host: Host, args: Sequence[str], *, input_text: str | None = None,
                timeout: float | None = None) -> dict[str, Any]:
    """Run one runner verb on the host and return its JSON answer (one round trip)."""
    in_process = getattr(host, "runner_in_process", None)  # LocalHost: questions need no process
    result = in_process(args) if in_process and input_text is None and timeout is None else None
    if result is None:
        ask = getattr(host, "runner_call", None)  # SSHHost: its resident runner, if any
        result = ask(args, input_text=input_text, timeout=timeout) if ask is not None else \
            host.exec([*host.runner_argv(), *args], input_text=input_text, check=False,
                      timeout=timeout)
    try:
        doc = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else None
    except (ValueError, RecursionError):  # not JSON, or nested past what json can parse
        doc = None
    if isinstance(doc, dict) and "error" in doc:
        err = doc["error"] if isinstance(doc["error"], dict) else {"message": doc["error"]}
        kind = err.get("kind")
        error_type = RUNNER_ERRORS.get(kind, OpsError) if isinstance(kind, str) else OpsError
        raise error_type(str(err.get("message"))[:2000])
    if not result.ok and not isinstance(doc, dict) and runner_missing(result):
        recheck = getattr(host, "runner_recheck", None)
        if recheck is not None:  # a remembered runner is gone: check the host fully, once
            host.runner_recheck = None  # type: ignore[attr-defined]
            recheck()
            return call_runner(host, args, input_text=input_text, timeout=timeout)
    if not result.ok or not isinstance(doc, dict):
        raise HostCommandError(result)
    return doc


def runner_missing(result: ExecResult) -> bool:
    """The runner could not even start: no interpreter, or no runner package where expected."""
    text = result.stderr + result.stdout
    return result.exit_code == 127 or "No module named" in text
