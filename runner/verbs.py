"""The runner's host-side verbs that ops calls: submit, cancel, tail.

Each answers one question in one call and returns a JSON-able dict; failures raise
VerbError with a kind that the CLI maps to an exit code.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from runner import contract, redact, sweep, tmux
from runner.finish import failure_record, summary_doc
from runner.status import run_status, wrapper_alive


class VerbError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind  # usage | not_found | conflict | failed
        self.message = message


def submit(root: Path, payload: dict[str, Any]) -> dict[str, Any]:
    spec = payload.get("spec")
    if not isinstance(spec, dict):
        raise VerbError("usage", "submit expects {'spec': {...}, 'secrets': {...}} on stdin")
    try:
        run_id = contract.validate_run_id(spec.get("run_id", ""))
        run_dir = contract.make_run_dir(root, run_id)
    except contract.RunDirExists as exc:
        raise VerbError("conflict", str(exc)) from exc
    except contract.ContractError as exc:
        raise VerbError("usage", str(exc)) from exc
    spec["created_at"] = contract.iso()  # the host's clock, like every later timestamp
    socket = spec.setdefault("tmux", {}).get("socket") or "ops"
    session = spec["tmux"].setdefault("session", tmux.session_name(run_id))
    redact.place_store(spec, payload.get("secrets") or {})
    store = spec["secrets"]["store"]
    contract.atomic_write_json(run_dir / contract.SPEC, spec)
    try:
        tmux.launch_wrapper(run_dir, socket, session)
    except Exception as exc:
        _record_launch_failure(run_dir, run_id, f"tmux launch failed: {exc}")
        if store:
            with contextlib.suppress(FileNotFoundError):
                Path(os.path.expanduser(store)).unlink()
        raise VerbError("failed", f"could not launch {run_id} in tmux: {exc}") from exc
    return {"run_id": run_id, "run_dir": str(run_dir), "tmux_session": session,
            "tmux_socket": socket}


def submit_sweep(root: Path, payload: dict[str, Any]) -> dict[str, Any]:
    specs = payload.get("specs")
    sweep_id = payload.get("sweep_id")
    if not isinstance(specs, list) or not specs or not isinstance(sweep_id, str):
        raise VerbError("usage", "submit-sweep expects {'sweep_id', 'specs': [...], 'secrets'}")
    try:
        run_dirs = sweep.create(root, sweep_id, specs, payload.get("secrets") or {})
    except contract.RunDirExists as exc:
        raise VerbError("conflict", str(exc)) from exc
    except contract.ContractError as exc:
        raise VerbError("usage", str(exc)) from exc
    try:
        session = sweep.launch(root, sweep_id)
    except Exception as exc:
        for run_dir in run_dirs:
            _record_launch_failure(run_dir, run_dir.name, f"tmux launch failed: {exc}")
        raise VerbError("failed", f"could not launch sweep {sweep_id}: {exc}") from exc
    return {"sweep_id": sweep_id, "run_ids": [d.name for d in run_dirs],
            "run_dirs": [str(d) for d in run_dirs], "tmux_session": session,
            "tmux_socket": specs[0].get("tmux", {}).get("socket") or "ops"}


def _record_launch_failure(run_dir: Path, run_id: str, message: str) -> None:
    now = time.time()
    contract.atomic_write_json(run_dir / contract.SUMMARY, summary_doc(
        run_id, status="failed", started=now, ended=now, written_by="runner",
        failure=failure_record("launch", message)))


def cancel(run_dir: Path, wait_s: float = 60.0) -> dict[str, Any]:
    """Ask the wrapper to stop the workload (it escalates SIGINT, SIGTERM, SIGKILL) and wait."""
    before = run_status(run_dir)
    if before["status"] in contract.RECORDED_STATUSES:
        return {**before, "cancelled": False, "message": f"run already {before['status']}"}
    meta = contract.read_json_or_none(run_dir / contract.METADATA)
    if meta is None and before["status"] == "queued" and sweep.claim(run_dir):
        sweep.record_cancelled_while_queued(run_dir)
        return {**run_status(run_dir), "cancelled": True, "message": "cancelled while queued"}
    if meta is None:
        raise VerbError("failed", f"{run_dir.name} has not started yet ({before['status']}); "
                                  "try again in a few seconds")
    process = meta.get("process", {})
    alive, reason = wrapper_alive(process, contract.boot_id(), meta.get("host", {}).get("boot_id"))
    if not alive:
        _kill_group(process.get("pgid"))
        return {**run_status(run_dir), "cancelled": False,
                "message": f"wrapper is not running ({reason}); its process group was killed"}
    os.kill(int(process["pid"]), signal.SIGTERM)
    deadline = time.time() + wait_s
    while time.time() < deadline:
        if contract.read_runner_summary(run_dir) is not None:
            break
        time.sleep(0.1)
    return {**run_status(run_dir), "cancelled": True}


def _kill_group(pgid: Any) -> None:
    if isinstance(pgid, int) and pgid > 1:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def tail(run_dir: Path, offset: int | None, max_bytes: int, lines: int | None) -> dict[str, Any]:
    """Bytes of stdout.log from ``offset`` (or the start of the last ``lines`` lines)."""
    if not (run_dir / contract.SPEC).exists():
        raise VerbError("not_found", f"no run at {run_dir}")
    log = run_dir / contract.STDOUT_LOG
    ended = contract.read_runner_summary(run_dir) is not None
    try:
        with open(log, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            start = _start_of_last_lines(fh, size, lines) if offset is None else offset
            start = min(max(0, start), size)
            fh.seek(start)
            data = fh.read(max_bytes)
    except FileNotFoundError:
        size, start, data = 0, 0, b""
    status = run_status(run_dir) if ended or not data else None
    return {"run_id": run_dir.name, "offset": start, "next_offset": start + len(data),
            "size": size, "data_b64": base64.b64encode(data).decode(), "ended": ended,
            "status": status}


def _start_of_last_lines(fh: Any, size: int, lines: int | None) -> int:
    if not lines or lines <= 0:
        return 0 if lines is None else size
    window = min(size, 256 * 1024)
    fh.seek(size - window)
    data = fh.read(window)
    body = data[:-1] if data.endswith(b"\n") else data
    cut = len(body)
    for _ in range(lines):
        cut = body.rfind(b"\n", 0, cut)
        if cut < 0:
            return size - window
    return size - window + cut + 1
