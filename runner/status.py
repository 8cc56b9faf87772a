"""Deriving a run's status on the host: recorded if summary.json says so, else from liveness.

Liveness is the wrapper's pid *and* its start time *and* the host's boot id, all read on the
host itself; the laptop's clock and a tmux session are never taken as proof of life. A summary
ends a run only when it is the runner's, carries the run's seal, and the wrapper that owns the
run is gone. Every file of the run dir is untrusted input: a bad one makes that run ``invalid``
(with the reason), never an exception.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from runner import contract, fields, reaper, run_table, run_warnings, slurm, sweep, tmux
from runner import tidy as tidy_module

LAUNCH_WINDOW_SEC = 60.0
START_TIME_TOLERANCE_SEC = 1.0
SOCKET_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# the fields status relies on, per schema name, and the type each must have when present
SHAPES: dict[str, dict[str, fields.Rule]] = {
    "spec": {"preset": fields.TEXT, "kind": fields.TEXT, "sweep_id": fields.TEXT,
             "created_at": fields.TEXT, "tmux": fields.OBJECT, "tmux.session": fields.TEXT,
             "tmux.socket": fields.TEXT, "heartbeat": fields.OBJECT,
             "heartbeat.interval_s": fields.POSITIVE,
             "heartbeat.stall_after_intervals": fields.POSITIVE,
             "secrets": fields.OBJECT_OR_NULL, "seal": fields.OBJECT_OR_NULL},
    "run_metadata": {"started_at": fields.TEXT, "host": fields.OBJECT,
                     "host.boot_id": fields.TEXT, "process": fields.OBJECT,
                     "process.pid": fields.PID, "process.pid_start_time": fields.NUMBER},
    "heartbeat": {"pid": fields.PID, "pid_start_time": fields.NUMBER, "boot_id": fields.TEXT,
                  "step": fields.COUNT, "phase": fields.TEXT, "rss_bytes": fields.COUNT,
                  "gpu_memory_bytes": fields.COUNT, "last_step_at": fields.TEXT},
    "summary": {"exit_code": fields.COUNT, "ended_at": fields.TEXT, "elapsed_s": fields.NUMBER,
                "metrics_final": fields.OBJECT_OR_NULL, "failure": fields.OBJECT_OR_NULL,
                "failure.class": fields.TEXT, "failure.message": fields.TEXT},
}
SERVICE_STATES = ("starting", "serving", "unhealthy")  # a live service's status, from its probe
SUMMARY_WHILE_ALIVE = ("summary.json present but the wrapper is still running "
                       "(ignored until it exits)")


def wrapper_alive(process: dict[str, Any], host_boot_id: str | None,
                  recorded_boot_id: str | None, *,
                  pids: LivePids | None = None) -> tuple[bool, str]:
    """Whether the process ``process`` names (pid + pid_start_time) still runs on this boot.
    ``pids``: the process table as one listing read it, so that a pid long gone costs no
    system call of its own."""
    recorded_boot = fields.text(recorded_boot_id, 64)
    if recorded_boot and host_boot_id and recorded_boot != host_boot_id:
        return False, "the host rebooted since the run started"
    pid = fields.pid(process.get("pid")) if isinstance(process, dict) else None
    if pid is None:
        return False, "no usable wrapper pid is recorded"
    try:
        if pids is not None and pids.surely_gone(pid, fields.number(
                process.get("pid_start_time"))):
            raise psutil.NoSuchProcess(pid)
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False, f"wrapper pid {pid} is gone"
    except (psutil.Error, OSError, ValueError) as exc:
        return False, f"wrapper pid {pid} cannot be inspected: {exc}"
    recorded = fields.number(process.get("pid_start_time"))
    if recorded is None or abs(started - float(recorded)) > START_TIME_TOLERANCE_SEC:
        return False, f"pid {pid} now belongs to another process"
    return True, "wrapper alive"


@dataclass(frozen=True)
class LivePids:
    """The pids of the process table, read once for a whole listing."""

    pids: frozenset[int]
    taken_at: float

    @classmethod
    def now(cls) -> LivePids:
        taken_at = time.time()
        return cls(frozenset(psutil.pids()), taken_at)

    def surely_gone(self, pid: int, recorded_start: float | None) -> bool:
        """Not in the table, and recorded as started well before the table was read (a
        process that started since is asked about directly)."""
        return pid not in self.pids and recorded_start is not None and \
            recorded_start < self.taken_at - START_TIME_TOLERANCE_SEC


@dataclass(frozen=True)
class Owner:
    """The wrapper a run dir names: its process record, boot id and the file that said so."""

    process: dict[str, Any]
    boot_id: str | None
    source: str


def owner_of(meta: dict[str, Any] | None, beat: dict[str, Any] | None) -> Owner | None:
    """The wrapper from run_metadata.json, else from heartbeat.json; None when neither names
    one (the wrapper never started)."""
    process = fields.obj(meta, "process")
    if meta is not None and process:
        return Owner(process, fields.text(fields.obj(meta, "host").get("boot_id")),
                     contract.METADATA)
    if beat is not None:
        return Owner(beat, fields.text(beat.get("boot_id")), contract.HEARTBEAT)
    return None


def read_doc(path: Path, name: str) -> tuple[dict[str, Any] | None, str | None]:
    """(document, None) when ``path`` is a usable ``ops.<name>`` file; (None, reason) when it
    is not; (None, None) when it is absent."""
    return _checked(path.name, name, *_read_raw(path))


def _read_raw(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return contract.read_json(path), None
    except FileNotFoundError:
        return None, None
    except (OSError, contract.ContractError) as exc:
        return None, fields.clip(str(exc))


def _checked(file: str, name: str, doc: dict[str, Any] | None,
             problem: str | None) -> tuple[dict[str, Any] | None, str | None]:
    if doc is None:
        return None, problem
    problem = contract.check_schema_tag(doc, name) or \
        fields.shape_problem(doc, SHAPES.get(name, {}))
    if problem is not None:
        return None, fields.clip(f"{file}: {problem}")
    return doc, None


class RunFiles:
    """The JSON files of one run dir as one status reads them: each at most once."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self._raw: dict[str, tuple[dict[str, Any] | None, str | None]] = {}

    def raw(self, file: str) -> tuple[dict[str, Any] | None, str | None]:
        """(document, None); (None, why) when unreadable or not a JSON object; (None, None)
        when absent. No schema check."""
        if file not in self._raw:
            self._raw[file] = _read_raw(self.run_dir / file)
        return self._raw[file]

    def doc(self, file: str, name: str) -> tuple[dict[str, Any] | None, str | None]:
        """As read_doc: a usable ``ops.<name>`` document, or why not."""
        return _checked(file, name, *self.raw(file))


def final_summary(run_dir: Path, *, host_boot: str | None = None) -> dict[str, Any] | None:
    """The runner's sealed summary.json, and only once the wrapper that owns the run is gone
    (a launch failure has no wrapper: its summary counts at once). None otherwise."""
    summary = contract.read_runner_summary(run_dir)
    cache = SessionCache()
    if summary is None or cache.wrapper_running(run_dir):
        return None
    spec = contract.read_json_or_none(run_dir / contract.SPEC)
    if slurm.is_slurm(spec):  # the wrapper ran on a compute node: gone = its job has ended
        job = slurm.job_id(spec)
        state = cache.slurm_job(job) if job else None
        return None if state is not None and state.active else summary
    meta, _ = read_doc(run_dir / contract.METADATA, "run_metadata")
    beat, _ = read_doc(run_dir / contract.HEARTBEAT, "heartbeat")
    owner = owner_of(meta, beat)
    if owner is None:
        return summary
    alive, _ = wrapper_alive(owner.process, host_boot or contract.boot_id(), owner.boot_id)
    return None if alive else summary


class SessionCache:
    """tmux sessions per socket, asked once per status call."""

    def __init__(self) -> None:
        self._by_socket: dict[str, set[str]] = {}
        self._wrappers: dict[str, int] | None = None
        self._wrapper_names: set[str] = set()
        self._pids: LivePids | None = None
        self._jobs: dict[str, slurm.Job | None] | None = None
        self._accounting = True
        self.slurm_error: str | None = None

    def slurm_job(self, job_id: str) -> slurm.Job | None:
        """SLURM's word on a job: one squeue call for every job of the user per status call
        (sacct only for a job squeue no longer holds). None when SLURM knows no such job or
        could not be asked (then ``slurm_error`` says why)."""
        if self._jobs is None:
            try:
                self._jobs = dict(slurm.query())
            except slurm.SlurmError as exc:
                self._jobs, self.slurm_error = {}, fields.clip(str(exc))
        if job_id not in self._jobs and self.slurm_error is None and self._accounting:
            found = slurm.accounting([job_id])
            self._accounting = found is not None  # no slurmdbd: asked once, not once a run
            self._jobs[job_id] = (found or {}).get(job_id)
        return self._jobs.get(job_id)

    def live_pids(self) -> LivePids:
        """The process table's pids, read once per status call."""
        if self._pids is None:
            self._pids = LivePids.now()
        return self._pids

    def wrapper_running(self, run_dir: Path) -> bool:
        """Whether a `runner exec RUN_DIR` process of this run is in the process table: the
        kernel's word, which no file a workload writes can change (one scan per call)."""
        if self._wrappers is None:
            self._wrappers = reaper.live_wrappers()
            self._wrapper_names = {os.path.basename(path) for path in self._wrappers}
        try:
            if os.path.basename(run_dir) not in self._wrapper_names and \
                    not os.path.islink(run_dir):
                return False  # no wrapper of that name runs (most runs: no realpath to walk)
            return os.path.realpath(run_dir) in self._wrappers
        except (OSError, ValueError):
            return False

    def __call__(self, socket: str) -> set[str]:
        if socket not in self._by_socket:
            self._by_socket[socket] = tmux.live_sessions(socket)
        return self._by_socket[socket]


def _spec_fields(spec: dict[str, Any], info: dict[str, Any], sessions: SessionCache) -> None:
    info.update(preset=fields.text(spec.get("preset")), kind=fields.text(spec.get("kind")),
                sweep_id=fields.text(spec.get("sweep_id")),
                created_at=fields.text(spec.get("created_at"), 64))
    tmux_cfg = fields.obj(spec, "tmux")
    session = fields.text(tmux_cfg.get("session"), 200)
    socket = fields.text(tmux_cfg.get("socket"), 64) or "ops"
    info["tmux_session"] = session
    if not SOCKET_RE.fullmatch(socket):
        info["notes"].append("spec.json names an unusable tmux socket (not asked)")
        info["tmux_alive"] = False
        return
    info["tmux_alive"] = bool(session) and session in sessions(socket)


def run_status(run_dir: Path, *, now: float | None = None, host_boot: str | None = None,
               sessions: SessionCache | None = None, tidy: bool = False) -> dict[str, Any]:
    """The status of one run as a JSON-able dict; never raises on what the run dir holds.

    With ``tidy`` (the status verb), a run that has ended or is dead loses its stale temp files
    and its leftover secret store, with a note for each.
    """
    run_dir = Path(run_dir)
    now = time.time() if now is None else now
    info: dict[str, Any] = {"run_id": run_dir.name, "run_dir": str(run_dir), "status": None,
                            "notes": []}
    files = RunFiles(run_dir)
    spec, problem = files.doc(contract.SPEC, "spec")
    if problem is not None:
        return _invalid(info, problem)
    sessions = sessions or SessionCache()
    if spec is not None:
        _spec_fields(spec, info, sessions)
    if spec is not None and slurm.is_slurm(spec):
        _slurm_derive(files, spec, now, info, sessions)
    else:
        _derive(files, spec, now, host_boot or contract.boot_id(), info, sessions=sessions)
    if info["status"] != "invalid":
        run_table.add_fields(run_dir, spec, info, now, heartbeat=files.raw(contract.HEARTBEAT))
    if tidy and info["status"] in (*contract.RECORDED_STATUSES, "dead"):
        info["notes"].extend(tidy_module.tidy(run_dir, spec, now))
    return info


def _derive(files: RunFiles, spec: dict[str, Any] | None, now: float, host_boot: str | None,
            info: dict[str, Any], *, sessions: SessionCache) -> dict[str, Any]:
    run_dir = files.run_dir
    exec_running = sessions.wrapper_running(run_dir)
    meta, meta_problem = files.doc(contract.METADATA, "run_metadata")
    beat, beat_problem = files.doc(contract.HEARTBEAT, "heartbeat")
    owner = owner_of(meta, beat)
    alive, why = (False, "") if owner is None else \
        wrapper_alive(owner.process, host_boot, owner.boot_id, pids=sessions.live_pids())
    if exec_running and not alive:
        if owner is not None:
            info["notes"].append(f"{owner.source} names a wrapper that is gone ({why}), but "
                                 "the run's `runner exec` process is running: the run is live")
        alive = True
    if _summary_status(files, spec, info, wrapper_running=alive):
        return info
    if owner is None and exec_running:
        info.update(status="launching" if _young(run_dir, now) else "stalled",
                    reason="the wrapper runs but names itself in no usable "
                           "run_metadata.json or heartbeat.json")
        return info
    if owner is None:
        reason = meta_problem or beat_problem
        if reason and not _young(run_dir, now):
            return _invalid(info, reason)
        # no usable metadata yet (or one the workload replaced before the first heartbeat)
        return _not_started(run_dir, spec, now, info)
    if meta is None or owner.source != contract.METADATA:
        info["notes"].append(f"liveness from heartbeat.json: "
                             f"{meta_problem or 'run_metadata.json names no wrapper process'}")
    info["started_at"] = fields.text((meta or {}).get("started_at"), 64)
    if not alive:
        info.update(status="dead", reason=why)
        return info
    return _live_status(run_dir, spec or {}, now, beat, info, beat_problem=beat_problem)


def _invalid(info: dict[str, Any], reason: str) -> dict[str, Any]:
    info.update(status="invalid", reason=reason)
    return info


def _summary_status(files: RunFiles, spec: dict[str, Any] | None, info: dict[str, Any], *,
                    wrapper_running: bool) -> bool:
    """Fill ``info`` from summary.json; False when no summary of the runner's ends the run.
    ``spec``: spec.json as this status read it (its seal commitment)."""
    summary, problem = contract.runner_summary(files.run_dir, spec=spec)
    if summary is None:
        if problem is not None:
            info["notes"].append(fields.clip(f"summary.json ignored: {problem}"))
        return False
    if wrapper_running:
        info["notes"].append(SUMMARY_WHILE_ALIVE)
        return False
    shape = fields.shape_problem(summary, SHAPES["summary"])
    if shape is not None:
        _invalid(info, fields.clip(f"summary.json: {shape}"))
        return True
    status = summary.get("status")
    info.update(status=status, exit_code=fields.integer(summary.get("exit_code")),
                ended_at=fields.text(summary.get("ended_at"), 64),
                elapsed_s=fields.number(summary.get("elapsed_s")),
                metrics_final=fields.metrics(summary.get("metrics_final")),
                failure=fields.failure(summary.get("failure")),
                written_by=summary.get("written_by"),
                started_at=fields.text(summary.get("started_at"), 64),
                metrics_best=fields.metrics(summary.get("metrics_best")),
                warnings=run_warnings.read_warnings(summary.get("warnings")))
    info["notes"].extend(f"warning: {item['message']}" for item in info["warnings"])
    if status not in contract.RECORDED_STATUSES:
        shown = fields.text(status, 40) if isinstance(status, str) else type(status).__name__
        _invalid(info, f"summary.json: unknown status {shown!r}")
    return True


def _mtime(path: Path) -> float | None:
    try:
        return path.lstat().st_mtime
    except OSError:
        return None


def _young(run_dir: Path, now: float) -> bool:
    created = _mtime(run_dir / contract.SPEC)
    return created is not None and now - created < LAUNCH_WINDOW_SEC


def _not_started(run_dir: Path, spec: dict[str, Any] | None, now: float,
                 info: dict[str, Any]) -> dict[str, Any]:
    created = _mtime(run_dir / contract.SPEC)
    if spec is None or created is None:
        return _invalid(info, "no spec.json: not a run directory")
    age = now - created
    sweep_id = fields.text(spec.get("sweep_id"), 128)
    if sweep_id and not (run_dir / sweep.CLAIM).exists():
        if not contract.RUN_ID_RE.fullmatch(sweep_id):
            return _invalid(info, "spec.json: sweep_id is not a usable id")
        driver = _sweep_driver(run_dir, sweep_id)
        if driver:
            info.update(status="queued", reason=f"waiting in sweep {sweep_id}")
            return info
        if driver is False:
            info.update(status="dead", reason="its sweep driver ended before it started")
            return info
    if age < LAUNCH_WINDOW_SEC:
        info.update(status="launching", reason=f"created {age:.0f} s ago, wrapper not started")
    else:
        info.update(status="dead", reason=f"the wrapper never started ({age:.0f} s since submit)")
    return info


def _sweep_driver(run_dir: Path, sweep_id: str) -> bool | None:
    try:
        return sweep.driver_alive(run_dir.parent, sweep_id)
    except (ValueError, TypeError, OverflowError):
        return False  # a driver record that does not parse as one names no live driver


def _live_status(run_dir: Path, spec: dict[str, Any], now: float, beat: dict[str, Any] | None,
                 info: dict[str, Any], *, beat_problem: str | None) -> dict[str, Any]:
    beat_cfg = fields.obj(spec, "heartbeat")
    interval = fields.positive(beat_cfg.get("interval_s"), 5.0)
    intervals = fields.integer(beat_cfg.get("stall_after_intervals"))
    stall_after = interval * (intervals if intervals is not None and intervals > 0 else 3)
    beat_mtime = _mtime(run_dir / contract.HEARTBEAT)
    if beat_problem is not None:
        info.update(status="stalled", reason=f"the wrapper runs but {beat_problem}")
        return info
    if beat is None or beat_mtime is None:
        info.update(status="launching", reason="no heartbeat yet")
        return info
    age = now - beat_mtime
    info.update(heartbeat_age_s=round(age, 2), step=fields.integer(beat.get("step")),
                phase=run_table.shown_phase(fields.text(beat.get("phase"), 100),
                                  fields.integer(beat.get("step"))),
                rss_bytes=fields.integer(beat.get("rss_bytes")),
                gpu_memory_bytes=fields.integer(beat.get("gpu_memory_bytes")),
                last_step_at=fields.text(beat.get("last_step_at"), 64))
    if age > stall_after:
        info.update(status="stalled", reason=f"heartbeat {age:.0f} s old (interval {interval:g} s)")
    elif fields.text(spec.get("kind")) == "service":
        _service_status(beat, info)
    else:
        info.update(status="running")
    return info


def _service_status(beat: dict[str, Any], info: dict[str, Any]) -> None:
    """A live service reads starting, serving or unhealthy, as its health probe last found;
    every field of the probe's record is checked before it is shown."""
    block = beat.get("service")
    state = block.get("state") if isinstance(block, dict) else None
    if not isinstance(block, dict) or state not in SERVICE_STATES:
        info.update(status="starting", reason="no health probe recorded yet")
        return
    code = fields.integer(block.get("last_status_code"))
    latency = fields.number(block.get("last_latency_ms"))
    info.update(status=state, service={
        "port": fields.integer(block.get("port")),
        "last_status_code": code if code is not None and 100 <= code <= 599 else None,
        "last_latency_ms": latency if latency is not None and latency >= 0 else None,
        "last_probe_at": fields.text(block.get("last_probe_at"), 64),
        "ready_at": fields.text(block.get("ready_at"), 64),
        "requests": fields.integer(block.get("requests")),
        "last_error": fields.text(block.get("last_error"), 300)})
    if state == "unhealthy":
        info["reason"] = fields.clip(
            "health probe failing: " + (f"HTTP {code}" if code is not None
                                        else fields.text(block.get("last_error"), 300) or "?"))


def _slurm_derive(files: RunFiles, spec: dict[str, Any], now: float, info: dict[str, Any],
                  sessions: SessionCache) -> dict[str, Any]:
    """A run SLURM launched: its wrapper runs on a compute node, so no pid is checked from
    here. The job state decides whether the wrapper can still run (a summary counts only once
    the job has ended); a live job's status comes from its heartbeat, a queued one carries
    SLURM's reason, and a job that ended without a runner summary is dead with SLURM's final
    state as the failure class."""
    run_dir = files.run_dir
    job_id = slurm.job_id(spec)
    info["slurm_job_id"] = job_id
    job = sessions.slurm_job(job_id) if job_id else None
    if job is not None:
        info["slurm"] = job.to_json()
    active = job is not None and job.active
    if _summary_status(files, spec, info, wrapper_running=active or
                       sessions.wrapper_running(run_dir)):
        return info
    if job_id is None:
        return _not_submitted(run_dir, now, info)
    if sessions.slurm_error is not None and job is None:
        info["notes"].append(f"SLURM could not be asked: {sessions.slurm_error}")
        return _heartbeat_status(files, spec, now, info)
    if job is not None and job.waiting:
        reason = job.reason if job.reason and job.reason not in ("None", "(null)") \
            else "waiting for the scheduler"
        info.update(status="queued", reason=f"SLURM job {job_id} pending: {reason}")
        return info
    if active:
        return _heartbeat_status(files, spec, now, info)
    return _slurm_dead(run_dir, job_id, job, info)


def _not_submitted(run_dir: Path, now: float, info: dict[str, Any]) -> dict[str, Any]:
    if _young(run_dir, now):
        info.update(status="launching", reason="not yet submitted to SLURM")
    else:
        info.update(status="dead", reason="never submitted to SLURM (no job id recorded)")
    return info


def _heartbeat_status(files: RunFiles, spec: dict[str, Any], now: float,
                      info: dict[str, Any]) -> dict[str, Any]:
    run_dir = files.run_dir
    meta, _ = files.doc(contract.METADATA, "run_metadata")
    beat, beat_problem = files.doc(contract.HEARTBEAT, "heartbeat")
    if meta is None and beat is None and beat_problem is None:
        info.update(status="launching", reason="the job runs; the wrapper has not started yet")
        return info
    info["started_at"] = fields.text((meta or {}).get("started_at"), 64)
    return _live_status(run_dir, spec, now, beat, info, beat_problem=beat_problem)


def _slurm_dead(run_dir: Path, job_id: str, job: slurm.Job | None,
                info: dict[str, Any]) -> dict[str, Any]:
    exit_doc, _ = read_doc(run_dir / contract.EXIT, "exit")
    exit_code = fields.integer((exit_doc or {}).get("exit_code"))
    if exit_doc is None and job is not None:
        exit_code = job.exit_code
    state = job.state if job is not None else "UNKNOWN"
    known = f"ended {state}" if job is not None else \
        "is no longer known to SLURM (purged after MinJobAge; no accounting to ask)"
    info.update(status="dead", exit_code=exit_code,
                reason=f"SLURM job {job_id} {known} without a runner summary",
                failure={"class": state, "message": f"SLURM job {job_id} {known}"
                         + (f" ({job.signal})" if job is not None and job.signal else "")})
    return info


def list_runs(root: Path, *, tidy: bool = False) -> list[dict[str, Any]]:
    """Every run under ``root`` in one pass: one tmux query per socket, one boot id read. A run
    dir that breaks a reader is listed as invalid; it never hides the others."""
    if not root.is_dir():
        return []
    host_boot = contract.boot_id()
    sessions = SessionCache()
    now = time.time()
    return [safe_status(path, now=now, host_boot=host_boot, sessions=sessions, tidy=tidy)
            for path in sorted(root.iterdir())
            if contract.RUN_ID_RE.fullmatch(path.name) and path.is_dir()]


def safe_status(run_dir: Path, *, now: float | None = None, host_boot: str | None = None,
                sessions: SessionCache | None = None, tidy: bool = False) -> dict[str, Any]:
    """run_status behind a last guard: a run dir that still breaks it reads invalid."""
    info: dict[str, Any] = {"run_id": run_dir.name, "run_dir": str(run_dir), "notes": []}
    if run_dir.is_symlink():
        return _invalid(info, "the run dir is a symbolic link, not a directory the runner made")
    try:
        return run_status(run_dir, now=now, host_boot=host_boot, sessions=sessions, tidy=tidy)
    except Exception as exc:  # noqa: BLE001 - the last guard: one bad run never hides the others
        return _invalid(info, fields.clip(f"status could not be read: {exc!r}"))
