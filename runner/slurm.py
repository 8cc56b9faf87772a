"""The `slurm` launcher: the same wrapper, started by SLURM instead of tmux.

`runner submit` writes the run dir as for tmux, then a batch script (`slurm.sh`) whose body
execs `python -m runner exec RUN_DIR`, and submits it held (`sbatch --parsable --hold`), so the
job id is in spec.json before the wrapper can read it; then it releases the job. SLURM
schedules; the runner only asks it. Status asks once for every job of the user (`squeue --me
--states=all`); a job SLURM no longer knows is looked up in `sacct` when accounting exists.
Every value that reaches sbatch's argv comes from spec.json and is checked here first.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from runner import contract
from runner import workload_command as wc
from runner.envpolicy import scrubbed_env

SCRIPT = "slurm.sh"
CANCEL_MARKER = ".cancel_requested"  # ops cancelled: a TERM is a cancel, never a time limit
JOB_ID_RE = re.compile(r"[0-9]{1,12}")
CALL_TIMEOUT_S = 30.0
# sbatch options a host or preset may set (name in project.json -> sbatch long option)
OPTIONS = {"partition": "partition", "account": "account", "qos": "qos", "time": "time",
           "gpus": "gpus", "gpus_per_node": "gpus-per-node", "nodes": "nodes",
           "ntasks_per_node": "ntasks-per-node", "cpus_per_task": "cpus-per-task",
           "mem": "mem", "constraint": "constraint", "reservation": "reservation"}
OPTION_VALUE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:,=+@/-]{0,127}")
ACTIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED",
                           "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "REQUEUED",
                           "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"})
WAITING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                            "RESV_DEL_HOLD"})
DEFAULT_SIGNAL_MARGIN_S = 30
# a TERM this close to the time limit (after the --signal lead) is SLURM's warning
EARLY_SIGNAL_SLACK_S = 90
# asking SLURM, on TERM, whether it is the time-limit warning: a few quick tries
TERM_QUERY_PAUSES_S = (0.5, 1.0, 0.0)
TERM_QUERY_TIMEOUT_S = 8.0


class SlurmError(Exception):
    """A SLURM command failed or a spec names something sbatch must not get."""


@dataclass(frozen=True)
class Job:
    """What SLURM says about one job."""

    job_id: str
    state: str
    reason: str
    exit_code: int | None
    signal: str | None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def waiting(self) -> bool:
        return self.state in WAITING_STATES

    def to_json(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "state": self.state, "reason": self.reason,
                "exit_code": self.exit_code, "signal": self.signal}


def is_slurm(spec: dict[str, Any] | None) -> bool:
    return isinstance(spec, dict) and spec.get("launcher") == "slurm"


def block(spec: dict[str, Any]) -> dict[str, Any]:
    value = spec.get("slurm")
    return value if isinstance(value, dict) else {}


def rank_options(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The sbatch options of a SLURM run (what decides torchrun or srun for its ranks);
    None when SLURM does not launch it."""
    if not is_slurm(spec):
        return None
    options = block(spec).get("options")
    return options if isinstance(options, dict) else {}


def job_id(spec: dict[str, Any] | None) -> str | None:
    value = block(spec or {}).get("job_id")
    return value if isinstance(value, str) and JOB_ID_RE.fullmatch(value) else None


# -- submit --------------------------------------------------------------------------------
def signal_lead(spec: dict[str, Any]) -> int:
    """Seconds before the time limit at which SLURM sends TERM to the wrapper: by default
    enough for the wrapper's two grace periods (SIGINT, SIGTERM) and the summary."""
    value = block(spec).get("signal_before_s")
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return value
    limits = spec.get("limits")
    grace = limits.get("grace_sec") if isinstance(limits, dict) else None
    grace = float(grace) if isinstance(grace, (int, float)) and not isinstance(grace, bool) \
        and math.isfinite(grace) and 0 <= grace <= 3600 else 10.0
    return int(2 * grace) + DEFAULT_SIGNAL_MARGIN_S


def option_args(options: Any) -> list[str]:
    """`--name=value` for each known option; anything else is refused, never passed on."""
    if options is None:
        return []
    if not isinstance(options, dict):
        raise SlurmError("slurm.options must be an object")
    args = []
    for key, value in options.items():
        if key not in OPTIONS:
            raise SlurmError(f"slurm option {key!r} is not one of {', '.join(sorted(OPTIONS))} "
                             "(use slurm.extra for others)")
        if value is None:
            continue
        text = str(value) if not isinstance(value, bool) else ""
        if not OPTION_VALUE_RE.fullmatch(text):
            raise SlurmError(f"slurm option {key}={value!r} is not a plain value")
        args.append(f"--{OPTIONS[key]}={text}")
    return args


def extra_args(extra: Any) -> list[str]:
    if extra is None:
        return []
    if not isinstance(extra, list) or not all(isinstance(a, str) and a.startswith("--")
                                              and "\n" not in a and "\x00" not in a
                                              for a in extra):
        raise SlurmError("slurm.extra must be a list of long options (--name=value)")
    return list(extra)


def script_text(run_dir: Path, python: str = sys.executable) -> str:
    package_parent = Path(__file__).resolve().parent.parent
    return (
        "#!/bin/sh\n"
        f"# Written by the pod-ops runner: SLURM's batch script for run {run_dir.name}.\n"
        "# Its body is the wrapper (the same as under tmux); sbatch's options are in spec.json\n"
        "# (slurm.argv) and in `scontrol show job`.\n"
        f"cd {shlex.quote(str(package_parent))} || exit 1\n"
        f"exec {shlex.quote(python)} -m runner exec {shlex.quote(str(run_dir))} </dev/null\n"
    )


def sbatch_argv(run_dir: Path, spec: dict[str, Any], *, dependency: str | None = None,
                hold: bool = True) -> list[str]:
    run_id = contract.validate_run_id(run_dir.name)
    cfg = block(spec)
    argv = ["sbatch", "--parsable", f"--job-name=ops-{run_id}",
            f"--output={run_dir}/slurm-%j.out", "--open-mode=append",
            f"--signal=B:TERM@{signal_lead(spec)}", "--no-requeue",
            f"--chdir={run_dir}", *option_args(cfg.get("options")), *rank_tasks(spec)]
    if hold:
        argv.append("--hold")
    if dependency is not None:
        argv.append(f"--dependency={dependency}")
    argv += extra_args(cfg.get("extra"))
    argv.append(str(run_dir / SCRIPT))
    return argv


def rank_tasks(spec: dict[str, Any]) -> list[str]:
    """A run whose ranks srun starts asks for one task a rank on each node (unless its options
    say how many); the wrapper itself runs in the batch step, outside them."""
    workload = spec.get("workload")
    options = rank_options(spec)
    if not isinstance(workload, dict) or options is None or "ntasks_per_node" in options \
            or wc.rank_launcher(workload, options) != "srun":
        return []
    return [f"--ntasks-per-node={wc.nproc_per_node(workload)}"]


def _env() -> dict[str, str]:
    env = scrubbed_env()
    env.update({k: v for k, v in os.environ.items() if k in ("SLURM_CONF", "USER", "LOGNAME")})
    return env


def _call(argv: list[str], timeout: float = CALL_TIMEOUT_S) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=_env(),
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmError(f"{argv[0]} could not run: {exc}") from exc
    if done.returncode != 0:
        raise SlurmError(f"{argv[0]} failed ({done.returncode}): "
                         f"{(done.stderr or done.stdout).strip()[-400:]}")
    return done.stdout


def submit_held(run_dir: Path, spec: dict[str, Any], *, dependency: str | None = None) -> str:
    """Write slurm.sh and sbatch it held; return the job id. The caller records it, then
    calls release()."""
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise SlurmError(f"{run_dir} is not writable: the job's --output would fail to open")
    argv = sbatch_argv(run_dir, spec, dependency=dependency)
    script = run_dir / SCRIPT
    script.write_text(script_text(run_dir))
    script.chmod(0o755)
    answer = _call(argv).strip().split(";")[0]
    if not JOB_ID_RE.fullmatch(answer):
        raise SlurmError(f"sbatch answered {answer[:80]!r}, not a job id")
    spec.setdefault("slurm", {}).update(job_id=answer, argv=argv, dependency=dependency)
    return answer


def release(job_ids: list[str]) -> None:
    if job_ids:
        _call(["scontrol", "release", ",".join(job_ids)])


def scancel(job: str, *, batch_term: bool = False) -> None:
    """`scancel --batch --signal=TERM JOB` (the wrapper alone), or a plain `scancel JOB`."""
    argv = ["scancel", *(["--batch", "--signal=TERM"] if batch_term else []), job]
    _call(argv)


def mark_cancel(run_dir: Path) -> None:
    """Say that ops cancels: the wrapper then records `killed`, whatever the clock says."""
    (run_dir / CANCEL_MARKER).write_text(contract.iso() + "\n")


# -- status --------------------------------------------------------------------------------
def decode_wait_status(raw: str) -> tuple[int | None, str | None]:
    """squeue's exit_code is a raw wait status (3 << 8 for exit 3; 15 for SIGTERM)."""
    try:
        value = int(raw)
    except ValueError:
        return None, None
    if value < 0 or value > 0xFFFF:
        return None, None
    sig = value & 0x7F
    if sig:
        try:
            return None, signal.Signals(sig).name
        except ValueError:
            return None, f"signal {sig}"
    return value >> 8, None


def parse_squeue(text: str) -> dict[str, Job]:
    jobs = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 4 or not JOB_ID_RE.fullmatch(parts[0].strip()):
            continue
        code, sig = decode_wait_status(parts[3].strip())
        state = parts[1].strip().split()[0] if parts[1].strip() else "UNKNOWN"
        jobs[parts[0].strip()] = Job(parts[0].strip(), state, parts[2].strip(), code, sig)
    return jobs


def parse_sacct(text: str) -> dict[str, Job]:
    """`sacct -P -n -X -o JobID,State,ExitCode`: ExitCode reads code:signal."""
    jobs = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 3 or not JOB_ID_RE.fullmatch(parts[0]):
            continue
        code_text, _, sig_text = parts[2].partition(":")
        code = int(code_text) if code_text.isdigit() else None
        sig = None
        if sig_text.isdigit() and int(sig_text):
            try:
                sig = signal.Signals(int(sig_text)).name
            except ValueError:
                sig = f"signal {sig_text}"
        state = parts[1].split()[0] if parts[1] else "UNKNOWN"
        jobs[parts[0]] = Job(parts[0], state, "", code, sig)
    return jobs


def query(job_ids: list[str] | None = None) -> dict[str, Job]:
    """Every job of this user SLURM still holds, in one squeue call; jobs named in
    ``job_ids`` that it no longer holds are asked of sacct (absent without slurmdbd)."""
    jobs = parse_squeue(_call(["squeue", "--me", "--states=all", "--noheader",
                               "--Format=JobID:|,State:|,Reason:|,exit_code:|"]))
    missing = [j for j in job_ids or [] if j not in jobs]
    jobs.update(accounting(missing) or {})
    return jobs


def accounting(job_ids: list[str]) -> dict[str, Job] | None:
    """Ended jobs SLURM's controller has forgotten, from sacct; None when the cluster keeps no
    accounting (no slurmdbd): then the run dir's own exit.json must do."""
    if not job_ids:
        return {}
    try:
        found = parse_sacct(_call(["sacct", "-P", "-n", "-X", "-j", ",".join(job_ids),
                                   "-o", "JobID,State,ExitCode"]))
    except SlurmError:
        return None
    return {k: v for k, v in found.items() if k in job_ids}


def job_env() -> dict[str, Any] | None:
    """The SLURM job this process runs in (for run_metadata.json), or None."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or not JOB_ID_RE.fullmatch(job):
        return None
    return {"job_id": job, "node": os.environ.get("SLURMD_NODENAME"),
            "partition": os.environ.get("SLURM_JOB_PARTITION"),
            "nodelist": os.environ.get("SLURM_JOB_NODELIST")}


# -- the wrapper's side: a TERM from SLURM -------------------------------------------------
def _seconds(text: str) -> float | None:
    """SLURM's [D-][HH:]MM:SS duration; None for UNLIMITED, INVALID and the like."""
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text.strip())
    if not match:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def _by_the_clock(spec: dict[str, Any], job: str, evidence: dict[str, Any],
                  ) -> tuple[str | None, dict[str, Any]]:
    """The last resort when SLURM cannot be asked: a scancel needs the controller too, so a
    TERM that arrives while it is unreachable, with no ops cancel marker, within the signal
    lead of the job's own time limit (from the spec) is the time-limit warning."""
    options = block(spec).get("options")
    limit_text = str(options.get("time", ""))[:40] if isinstance(options, dict) else ""
    limit = _seconds(limit_text)
    try:  # the batch script execs the wrapper: this process started with the job
        started = psutil.Process().create_time()
    except psutil.Error:
        limit = None
    if limit is None:
        return None, {**evidence, "why": "SLURM could not be asked and no time limit is known"}
    left = started + limit - time.time()
    evidence["seconds_left_by_clock"] = round(left, 1)
    if left > signal_lead(spec) + EARLY_SIGNAL_SLACK_S:
        return None, {**evidence, "why": "SLURM could not be asked; the limit is not near"}
    return (f"SLURM time limit {limit_text} of job {job} reached "
            f"(about {max(left, 0.0):.0f} s left by the clock; SLURM did not answer)"), \
        {**evidence, "why": "time limit (by the clock: SLURM did not answer)"}


def term_is_time_limit(run_dir: Path, spec: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """When the wrapper gets SIGTERM inside a SLURM job: a message when it is the time-limit
    warning (`--signal=B:TERM@lead`), None when it is a cancel or anything else, and the
    evidence either way (for events.jsonl). Never told by the clock alone: ops leaves a marker
    when it cancels, and SLURM says whether the job is still RUNNING (a plain scancel makes it
    CANCELLED) and how much time it has left. A busy controller is asked again, briefly."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or not JOB_ID_RE.fullmatch(job):
        return None, {"why": "not inside a SLURM job"}
    if (run_dir / CANCEL_MARKER).exists():
        return None, {"job_id": job, "why": "ops cancelled the run"}
    answer: str | None = None
    error = ""
    for pause in TERM_QUERY_PAUSES_S:
        try:
            answer = _call(["squeue", "--noheader", "-j", job,
                            "--Format=State:|,TimeLeft:|,TimeLimit:|"],
                           timeout=TERM_QUERY_TIMEOUT_S)
        except SlurmError as exc:
            error = str(exc)[-200:]
        if answer is not None and answer.strip():
            break
        time.sleep(pause)
    evidence: dict[str, Any] = {"job_id": job, "squeue": (answer or "").strip()[:200] or None}
    if error:
        evidence["error"] = error
    if answer is None:  # the controller never answered: then no scancel reached us either
        return _by_the_clock(spec, job, evidence)
    parts = (answer or "").strip().split("|")
    # SIGNALING: a running job whose signal (this TERM) SLURM has not yet seen delivered
    if len(parts) < 3 or parts[0].strip() not in ("RUNNING", "SIGNALING"):
        return None, {**evidence, "why": "SLURM does not say the job is still running"}
    left = _seconds(parts[1])
    evidence["seconds_left"] = left
    if left is None or left > signal_lead(spec) + EARLY_SIGNAL_SLACK_S:
        return None, {**evidence, "why": "the time limit is not near"}
    return (f"SLURM time limit {parts[2].strip()} of job {job} reached "
            f"({left:.0f} s left when SLURM sent TERM)"), {**evidence, "why": "time limit"}
