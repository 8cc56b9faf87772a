"""Sweeps: several runs executed one after another by a driver in one tmux session.

Every member gets its own run directory (and its own spec.json, with `sweep_id`) when the sweep
is submitted, so a waiting member is visible at once: status derives `queued` for it while the
driver lives. The driver claims a member (an exclusive marker file) before starting its wrapper;
`cancel` of a waiting member claims it first and records it as killed, so exactly one of them
decides what happens to it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from runner import contract, redact, tmux
from runner.envpolicy import scrubbed_env
from runner.finish import failure_record, summary_doc, write_summary

SWEEPS_DIR = ".sweeps"
CLAIM = ".claimed"


def sweep_file(root: Path, sweep_id: str) -> Path:
    return root / SWEEPS_DIR / f"{contract.validate_run_id(sweep_id)}.json"


def driver_file(root: Path, sweep_id: str) -> Path:
    return root / SWEEPS_DIR / f"{sweep_id}.driver.json"


def create(root: Path, sweep_id: str, specs: list[dict[str, Any]],
           secrets: dict[str, dict[str, str]], *,
           grid: dict[str, Any] | None = None) -> list[Path]:
    """Make every member's run dir (all or none are new), write the sweep file (with the
    --set ``grid`` that made the members, when one did). ``secrets`` maps each member's run id
    to its own secrets: a member never sees another's."""
    contract.validate_run_id(sweep_id)
    ids = [contract.validate_run_id(str(s.get("run_id", ""))) for s in specs]
    taken = [i for i in ids if (root / i).exists()]
    if taken or len(set(ids)) != len(ids):
        raise contract.RunDirExists(f"run ids already exist or repeat: {', '.join(taken or ids)}")
    run_dirs = []
    session = tmux.sweep_session_name(sweep_id)
    for index, spec in enumerate(specs):
        run_dir = contract.make_run_dir(root, spec["run_id"])
        spec.update(sweep_id=sweep_id, sweep_index=index, created_at=contract.iso())
        spec["inherited_env"] = scrubbed_env()
        tmux_block = spec.get("tmux")
        spec["tmux"] = {**(tmux_block if isinstance(tmux_block, dict) else {}),
                        "session": session}
        redact.place_store(spec, secrets.get(spec["run_id"], {}), root)
        contract.atomic_write_json(run_dir / contract.SPEC, spec)
        run_dirs.append(run_dir)
    sweep_file(root, sweep_id).parent.mkdir(exist_ok=True)
    contract.atomic_write_json(sweep_file(root, sweep_id), {
        "schema": contract.schema_tag("sweep"), "run_id": sweep_id, "sweep_id": sweep_id,
        "members": ids, "created_at": contract.iso(), "tmux_session": session,
        **({"grid": grid} if grid is not None else {})})
    return run_dirs


def claim(run_dir: Path) -> bool:
    """Take a waiting member exclusively; False when someone else already did."""
    try:
        fd = os.open(run_dir / CLAIM, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def record_cancelled_while_queued(run_dir: Path) -> None:
    spec = contract.read_json(run_dir / contract.SPEC)
    now = time.time()
    key = redact.peek_seal(spec)
    redact.discard_store(spec)
    write_summary(run_dir, summary_doc(
        run_dir.name, status="killed", started=now, ended=now, written_by="runner",
        failure=failure_record("cancelled", "cancelled while queued in its sweep"), seal=key))


class Driver:
    def __init__(self, root: Path, sweep_id: str):
        self.root = root
        self.sweep = contract.read_json(sweep_file(root, sweep_id))
        self.sweep_id = sweep_id
        self.current: subprocess.Popen[bytes] | None = None
        self.stopping = False

    def run(self) -> int:
        me = psutil.Process()
        contract.atomic_write_json(driver_file(self.root, self.sweep_id), {
            "schema": contract.schema_tag("sweep_driver"), "run_id": self.sweep_id,
            "pid": me.pid, "pid_start_time": me.create_time(), "boot_id": contract.boot_id(),
            "started_at": contract.iso()})
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        members = self.sweep["members"]
        for index, run_id in enumerate(members, start=1):
            run_dir = self.root / run_id
            if not claim(run_dir):
                continue  # cancelled while queued: `cancel` claimed it and wrote its summary
            if self.stopping:
                record_cancelled_while_queued(run_dir)
                continue
            self._progress(index, len(members), run_id)
            self.current = subprocess.Popen([sys.executable, "-m", "runner", "exec",
                                             str(run_dir)], stdin=subprocess.DEVNULL)
            self.current.wait()
            self.current = None
        return 0

    def _progress(self, index: int, count: int, run_id: str) -> None:
        """"member k of n" in the tmux pane (stdout), the driver's log (stderr) and record."""
        line = f"sweep {self.sweep_id}: member {index} of {count}: {run_id}"
        print(line, flush=True)
        print(line, file=sys.stderr, flush=True)
        path = driver_file(self.root, self.sweep_id)
        doc = contract.read_json_or_none(path) or {}
        contract.atomic_write_json(path, {**doc, "member": index, "members": count,
                                          "current": run_id})

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stopping = True
        if self.current is not None and self.current.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.current.send_signal(signal.SIGTERM)  # the wrapper stops its workload


def driver_alive(root: Path, sweep_id: str) -> bool | None:
    """True/False when the driver has started (and lives or not); None before it started."""
    doc = contract.read_json_or_none(driver_file(root, sweep_id))
    if doc is None:
        return None
    if doc.get("boot_id") and doc.get("boot_id") != contract.boot_id():
        return False
    try:
        started = psutil.Process(int(doc["pid"])).create_time()
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False
    recorded = doc.get("pid_start_time")
    return isinstance(recorded, (int, float)) and not isinstance(recorded, bool) \
        and abs(started - recorded) < 1.0


def launch(root: Path, sweep_id: str) -> str:
    doc = contract.read_json(sweep_file(root, sweep_id))
    session = str(doc["tmux_session"])
    first = contract.read_json(root / doc["members"][0] / contract.SPEC)
    socket = first.get("tmux", {}).get("socket") or "ops"
    tmux.launch_command([sys.executable, "-m", "runner", "sweep", str(root), sweep_id],
                        socket, session, log=root / SWEEPS_DIR / f"{sweep_id}.driver.log")
    return session

