"""Run services: submit, list, status, tail, cancel. Commands call these; these call hosts."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

from ops.errors import HostError, NotFoundError, RunOutcome, UsageError
from ops.hosts.base import ConnectionLostError, Host, call_runner
from ops.services.spec import HostPaths
from runner import contract

TAIL_CHUNK = 1 << 20


class Target(NamedTuple):
    """A host and where runs live on it."""

    host: Host
    paths: HostPaths

    def close(self) -> None:
        close = getattr(self.host, "close", None)
        if close is not None:
            close()

    def run_dir(self, run_id: str) -> str:
        try:
            contract.validate_run_id(run_id)
        except contract.ContractError as exc:
            raise UsageError(str(exc)) from exc
        return f"{self.paths.outputs_root.rstrip('/')}/{run_id}"


def list_runs(target: Target) -> list[dict[str, Any]]:
    return checked_runs(call_runner(target.host, ["status", target.paths.outputs_root]))


def run_status(target: Target, run_id: str) -> dict[str, Any]:
    target.run_dir(run_id)
    runs = checked_runs(call_runner(target.host,
                                    ["status", target.paths.outputs_root, run_id]))
    if not runs:
        raise NotFoundError(f"the host reported no run {run_id!r}")
    return runs[0]


def checked_runs(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``runs`` of a runner status answer, each an object with a string run_id; a host
    that answers anything else gets a clear error, never a traceback further on."""
    runs = answer.get("runs")
    if not isinstance(runs, list):
        raise HostError("the host's runner answered status without a list of runs")
    kept = [run for run in runs if isinstance(run, dict) and isinstance(run.get("run_id"), str)]
    if len(kept) != len(runs):
        raise HostError(f"the host's runner answered status with {len(runs) - len(kept)} "
                        "entries that are not runs")
    return kept


def show(target: Target, run_id: str, name: str) -> dict[str, Any]:
    """One contract JSON file of a run, read on the host."""
    doc: dict[str, Any] = call_runner(target.host, ["show", target.run_dir(run_id), name])["doc"]
    return doc


def cancel(target: Target, run_id: str, wait_s: float = 120.0) -> dict[str, Any]:
    answer = call_runner(target.host, ["cancel", target.run_dir(run_id), "--wait", str(wait_s)])
    return answer


def tail(target: Target, run_id: str, write: Callable[[bytes], None], *, follow: bool = False,
         lines: int | None = None, poll_s: float = 1.0,
         sleep: Callable[[float], None] = time.sleep) -> str | None:
    """Write the log (the last ``lines`` lines, or all of it); with ``follow`` keep writing until
    the run ends. Reads by byte offset, so each round trip resumes exactly where the last
    stopped. Returns the run's final status once it has ended, else None."""
    run_dir = target.run_dir(run_id)
    offset: int | None = None
    while True:
        args = ["tail", run_dir, "--max-bytes", str(TAIL_CHUNK)]
        if offset is not None:
            args += ["--offset", str(offset)]
        elif lines is not None:
            args += ["--lines", str(lines)]
        try:
            answer = call_runner(target.host, args)
        except ConnectionLostError:
            if not follow:
                raise
            sleep(poll_s)  # the host reconnects on the next call; the offset says where
            continue
        data, offset, size, ended, final = _tail_answer(answer)
        write(data)
        if offset < size:
            continue  # more is already there
        if ended or final in ("dead", "invalid"):
            return final
        if not follow:
            return None
        sleep(poll_s)


def _tail_answer(answer: dict[str, Any]) -> tuple[bytes, int, int, bool, str | None]:
    """(data, next offset, size, ended, final status) of a runner tail answer, checked."""
    offset, size = answer.get("next_offset"), answer.get("size")
    encoded = answer.get("data_b64")
    if type(offset) is not int or type(size) is not int or not isinstance(encoded, str):
        raise HostError("the host's runner answered tail without data, offset and size")
    import base64  # here: status and submit never decode, and each command's start-up counts

    try:
        data = base64.b64decode(encoded, validate=True)
    except ValueError as exc:  # binascii.Error is one
        raise HostError(f"the host's runner answered tail with bad data: {exc}") from exc
    status = answer.get("status")
    final = status.get("status") if isinstance(status, dict) else None
    return data, offset, size, answer.get("ended") is True, \
        (final[:40] if isinstance(final, str) and final else None)


def raise_for_outcome(status: str | None) -> None:
    if status is not None and status != "completed":
        raise RunOutcome(status)
