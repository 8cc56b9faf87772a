"""One error tree for ops: every error carries the exit code the CLI returns.

The table of codes is docs/reference/exit-codes.md; only the click entry point turns these
into output and exit codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ExitCode:
    OK = 0
    FAILURE = 1  # violations found, or an operation that ran but did not succeed
    USAGE = 2  # bad command line, config or input: nothing was started or changed
    NOT_FOUND = 3  # run, run dir, preset file or host path does not exist
    CONFLICT = 4  # the thing to create already exists
    HOST = 5  # the host could not be reached or a host command failed
    PREFLIGHT = 6  # preflight refused the launch
    INTERRUPTED = 130


# exit codes of `run tail --follow` and `run submit --follow` by the run's final status
STATUS_EXIT_CODES: dict[str, int] = {
    "completed": 0,
    "failed": 10,
    "killed": 11,
    "timeout": 12,
    "aborted": 13,
    "dead": 14,
    "invalid": 15,
}


class OpsError(Exception):
    """Base of every error ops reports to a user."""

    exit_code = ExitCode.FAILURE

    def __init__(self, message: str, *, details: Sequence[str] = (), hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = list(details)
        self.hint = hint

    def render(self) -> str:
        lines = [f"error: {self.message}"]
        lines.extend(f"  {line}" for line in self.details)
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


class UsageError(OpsError):
    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """project.json (or an overlay, or --set) is wrong; one `dotted.path: message` per problem."""


class NotFoundError(OpsError):
    exit_code = ExitCode.NOT_FOUND


class ConflictError(OpsError):
    exit_code = ExitCode.CONFLICT


class HostError(OpsError):
    exit_code = ExitCode.HOST


class PreflightError(OpsError):
    exit_code = ExitCode.PREFLIGHT


class RunOutcome(OpsError):
    """Not a fault of ops: a followed run ended with a status other than completed."""

    def __init__(self, status: str):
        super().__init__(f"run ended with status {status}")
        self.status = status
        self.exit_code = STATUS_EXIT_CODES.get(status, ExitCode.FAILURE)


def from_click(exc: Any) -> OpsError:
    """click's own usage errors (no such option, missing argument, bad value) as an OpsError,
    so they read like every other error: `error: ...` and a `hint:` naming the help."""
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None) or "ops"
    error = OpsError(exc.format_message(), hint=f"see `{command} --help`")
    error.exit_code = int(getattr(exc, "exit_code", ExitCode.USAGE))
    return error
