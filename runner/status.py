"""Deriving a run's status on the host: recorded if summary.json says so, else from liveness.

Liveness is the wrapper's pid *and* its start time *and* the host's boot id, all read on the
host itself; the laptop's clock and a tmux session are never taken as proof of life.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psutil

from runner import contract, sweep, tmux

LAUNCH_WINDOW_SEC = 60.0
START_TIME_TOLERANCE_SEC = 1.0


def wrapper_alive(process: dict[str, Any], host_boot_id: str | None,
                  recorded_boot_id: str | None) -> tuple[bool, str]:
    if recorded_boot_id and host_boot_id and recorded_boot_id != host_boot_id:
        return False, "the host rebooted since the run started"
    pid = process.get("pid")
    if not isinstance(pid, int):
        return False, "run_metadata.json has no wrapper pid"
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False, f"wrapper pid {pid} is gone"
    except psutil.Error as exc:
        return False, f"wrapper pid {pid} cannot be inspected: {exc}"
    recorded = process.get("pid_start_time")
    if not isinstance(recorded, (int, float)) or abs(started - recorded) > \
            START_TIME_TOLERANCE_SEC:
        return False, f"pid {pid} now belongs to another process"
    return True, "wrapper alive"


def _summary_status(run_dir: Path, info: dict[str, Any]) -> bool:
    """Fill ``info`` from summary.json; False when there is no summary of the runner's."""
    summary = contract.read_runner_summary(run_dir)
    if summary is None:
        if (run_dir / contract.SUMMARY).exists():
            info["notes"].append("summary.json is not the runner's (ignored)")
        return False
    info.update(status=summary.get("status"), exit_code=summary.get("exit_code"),
                ended_at=summary.get("ended_at"), elapsed_s=summary.get("elapsed_s"),
                metrics_final=summary.get("metrics_final", {}), failure=summary.get("failure"),
                written_by=summary.get("written_by"))
    if summary.get("status") not in contract.RECORDED_STATUSES:
        info.update(status="invalid", reason=f"unknown status {summary.get('status')!r}")
    return True


class SessionCache:
    """tmux sessions per socket, asked once per status call."""

    def __init__(self) -> None:
        self._by_socket: dict[str, set[str]] = {}

    def __call__(self, socket: str) -> set[str]:
        if socket not in self._by_socket:
            self._by_socket[socket] = tmux.live_sessions(socket)
        return self._by_socket[socket]


def run_status(run_dir: Path, *, now: float | None = None, host_boot: str | None = None,
               sessions: SessionCache | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    info: dict[str, Any] = {"run_id": run_dir.name, "run_dir": str(run_dir), "status": None,
                            "notes": []}
    spec = _read(run_dir / contract.SPEC, "spec", info)
    if spec is not None:
        info.update(preset=spec.get("preset"), kind=spec.get("kind"),
                    sweep_id=spec.get("sweep_id"), created_at=spec.get("created_at"))
        session = spec.get("tmux", {}).get("session")
        socket = spec.get("tmux", {}).get("socket") or "ops"
        info["tmux_session"] = session
        info["tmux_alive"] = bool(session) and session in (sessions or SessionCache())(socket)
    if info["status"] == "invalid":
        return info
    if _summary_status(run_dir, info):
        return info
    meta = _read(run_dir / contract.METADATA, "run_metadata", info)
    beat = _read(run_dir / contract.HEARTBEAT, "heartbeat", info)
    if meta is None and beat is None:
        if (run_dir / contract.METADATA).exists() and not _young(run_dir, now):
            return info  # invalid, with the reason already set
        # no usable metadata yet (or one the workload replaced before the first heartbeat)
        info.update(status=None, reason=None)
        return _not_started(run_dir, spec, now, info)
    if meta is None:
        # run_metadata.json was replaced (by the workload?): the heartbeat also names the wrapper
        info.update(status=None, reason=None)
        info["notes"].append(f"liveness from heartbeat.json: {info.pop('reason', None) or ''}"
                             "run_metadata.json is unusable")
    info["started_at"] = (meta or {}).get("started_at")
    process = (meta or {}).get("process") or (beat or {})
    recorded_boot = (meta or {}).get("host", {}).get("boot_id") or (beat or {}).get("boot_id")
    alive, reason = wrapper_alive(process, host_boot or contract.boot_id(), recorded_boot)
    if not alive:
        info.update(status="dead", reason=reason)
        return info
    return _live_status(run_dir, spec or {}, now, beat, info)


def _read(path: Path, name: str, info: dict[str, Any]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        doc = contract.read_json(path)
    except contract.ContractError as exc:
        info.update(status="invalid", reason=str(exc))
        return None
    problem = contract.check_schema_tag(doc, name)
    if problem is not None:
        info.update(status="invalid", reason=f"{path.name}: {problem}")
        return None
    return doc


def _young(run_dir: Path, now: float) -> bool:
    try:
        return now - (run_dir / contract.SPEC).stat().st_mtime < LAUNCH_WINDOW_SEC
    except FileNotFoundError:
        return False


def _not_started(run_dir: Path, spec: dict[str, Any] | None, now: float,
                 info: dict[str, Any]) -> dict[str, Any]:
    if spec is None:
        info.update(status="invalid", reason="no spec.json: not a run directory")
        return info
    age = now - (run_dir / contract.SPEC).stat().st_mtime
    if spec.get("sweep_id") and not (run_dir / sweep.CLAIM).exists():
        driver = sweep.driver_alive(run_dir.parent, str(spec["sweep_id"]))
        if driver:
            info.update(status="queued", reason=f"waiting in sweep {spec['sweep_id']}")
            return info
        if driver is False:
            info.update(status="dead", reason="its sweep driver ended before it started")
            return info
    if age < LAUNCH_WINDOW_SEC:
        info.update(status="launching", reason=f"created {age:.0f} s ago, wrapper not started")
    else:
        info.update(status="dead", reason=f"the wrapper never started ({age:.0f} s since submit)")
    return info


def _live_status(run_dir: Path, spec: dict[str, Any], now: float, beat: dict[str, Any] | None,
                 info: dict[str, Any]) -> dict[str, Any]:
    beat_cfg = spec.get("heartbeat", {})
    interval = float(beat_cfg.get("interval_s", 5.0))
    stall_after = interval * int(beat_cfg.get("stall_after_intervals", 3))
    if beat is None:
        info.update(status="launching", reason="no heartbeat yet")
        return info
    age = now - (run_dir / contract.HEARTBEAT).stat().st_mtime
    info.update(heartbeat_age_s=round(age, 2), step=beat.get("step"), phase=beat.get("phase"),
                rss_bytes=beat.get("rss_bytes"), gpu_memory_bytes=beat.get("gpu_memory_bytes"),
                last_step_at=beat.get("last_step_at"))
    if age > stall_after:
        info.update(status="stalled", reason=f"heartbeat {age:.0f} s old (interval {interval:g} s)")
    else:
        info.update(status="running")
    return info


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Every run under ``root`` in one pass: one tmux query per socket, one boot id read."""
    if not root.is_dir():
        return []
    host_boot = contract.boot_id()
    sessions = SessionCache()
    now = time.time()
    return [run_status(p, now=now, host_boot=host_boot, sessions=sessions)
            for p in sorted(root.iterdir())
            if p.is_dir() and contract.RUN_ID_RE.fullmatch(p.name)]
