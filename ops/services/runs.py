"""Run services: submit, list, status, tail, cancel. Commands call these; these call hosts."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ops.errors import RunOutcome, UsageError
from ops.hosts.base import ConnectionLostError, Host, call_runner
from ops.services.spec import HostPaths
from runner import contract

TAIL_CHUNK = 1 << 20


@dataclass(frozen=True)
class Target:
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
    runs: list[dict[str, Any]] = call_runner(target.host,
                                             ["status", target.paths.outputs_root])["runs"]
    return runs


def run_status(target: Target, run_id: str) -> dict[str, Any]:
    target.run_dir(run_id)
    runs = call_runner(target.host, ["status", target.paths.outputs_root, run_id])["runs"]
    status: dict[str, Any] = runs[0]
    return status


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
        write(base64.b64decode(answer["data_b64"]))
        offset = int(answer["next_offset"])
        if offset < int(answer["size"]):
            continue  # more is already there
        final = (answer.get("status") or {}).get("status")
        if answer["ended"] or final in ("dead", "invalid"):
            return str(final) if final else None
        if not follow:
            return None
        sleep(poll_s)


def raise_for_outcome(status: str | None) -> None:
    if status is not None and status != "completed":
        raise RunOutcome(status)
