"""`runner exec RUN_DIR`: the wrapper that runs a workload inside the contract.

It takes the run's secret store (secrets and seal key) before anything else, makes itself the
subreaper of everything the workload starts, starts the workload in its own process group with
stdin from /dev/null and the environment of its own submit (allow-listed), writes the
start-of-run files, pumps the output into stdout.log, keeps the heartbeat, turns signals and
watchdog breaches into an orderly stop, ends every process the workload left behind, and always
ends with exit.json and the sealed summary.json, written last (runner/finish.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from runner import __version__, contract, early_signals, gpu, reaper, redact, slurm, snapshots
from runner import service as svc
from runner import workload_command as wc
from runner.envpolicy import scrubbed_env
from runner.finish import (
    RESULTS_FILE,
    Ledger,
    RunEnd,
    Stop,
    failure_record,
    summary_doc,
    write_summary,
)
from runner.heartbeat import Breach, Heartbeat, Limits
from runner.logpump import LogPump, StdoutMetrics, compile_metric_pattern
from runner.track import EventLog

PUMP_DRAIN_SEC = 2.0
DEFAULT_GRACE_SEC = 10.0


class Wrapper:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir.resolve()
        self.spec = contract.read_json(self.run_dir / contract.SPEC)
        # the store goes first: whatever happens next, no plaintext secret stays on disk
        self.store = redact.take_store(redact.store_path(self.spec))
        self.run_id = contract.validate_run_id(str(self.spec.get("run_id", "")))
        if self.run_id != self.run_dir.name:
            raise contract.ContractError(f"spec run_id {self.run_id!r} is not the dir name")
        self.ledger = Ledger()
        self.ledger.adopt(self.run_dir, contract.SPEC)
        self.events = EventLog(self.run_dir / contract.EVENTS, self.run_id, source="wrapper")
        self.values = {**wc.placeholder_values(self.spec, self.run_dir, sys.executable),
                       **kind_values(self.spec)}
        self.out_dir = Path(self.values["out_dir"])
        self.grace = _grace(self.spec)
        self.stop = Stop()
        self.subreaper = reaper.become_subreaper()
        self.redactor = redact.Redactor(())
        self._stopping = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.proc_started: float | None = None
        self.started_at = time.time()
        self.service = svc.ServiceSpec.from_spec(self.spec)
        self.probe: svc.HealthProbe | None = None
        self.metric_matches: list[int] | None = None  # per metrics_from_stdout pattern

    def end(self) -> RunEnd:
        return RunEnd(self.run_dir, self.run_id, self.spec, self.values, self.ledger,
                      self.events, self.started_at, self.store.seal, probe=self.probe,
                      metric_matches=self.metric_matches)

    # -- start -----------------------------------------------------------------------------
    def run(self) -> int:
        # handlers first: a TERM that arrives while the run is set up (SLURM, a quick cancel)
        # stops the workload as soon as it exists instead of killing the wrapper
        self._install_signal_handlers()
        for signum in early_signals.received()[:1]:  # arrived before the handlers were up
            self._on_signal(signum, None)
        workload = self.spec["workload"]
        secrets = self.store.env
        files = [wc.render(f, self.values) for f in self.spec.get("secrets", {}).get("files", [])]
        self.redactor = redact.Redactor([*secrets.values(), *redact.values_from_files(files)])
        ranks = slurm.rank_options(self.spec)
        argv = wc.build_argv(workload, self.values, ranks)
        cwd = wc.resolve_cwd(workload, self.values)
        env = wc.build_env(workload, self.values, secrets, base=_submit_env(self.spec))
        if self.spec.get("parent_run_dir"):
            env["OPS_RESUME_FROM"] = str(self.spec["parent_run_dir"])
        env.update(kind_env(self.spec, self.values))
        env.update(wc.rank_env(wc.rank_launcher(workload, ranks)))
        env.update(wc.wandb_env(self.spec.get("wandb") or {}, self.run_dir))
        for sub in (self.out_dir, self.run_dir / contract.CHECKPOINTS_DIR):
            sub.mkdir(parents=True, exist_ok=True)
        script = wc.command_script(argv, cwd, {k: v for k, v in env.items() if k not in secrets},
                                   sorted(secrets))
        self.ledger.write_bytes(self.run_dir, contract.COMMAND,
                                self.redactor.redact(script.encode()), 0o755)
        launch_error = self._pattern_problem() or self._start(argv, cwd, env)
        self._write_metadata()
        if self.stop.signal is not None:  # signalled before the workload existed
            self._stop_workload()
        snap = threading.Thread(target=self._write_snapshots, args=(argv, env), daemon=True)
        snap.start()
        self.events.emit("run_start", argv_len=len(argv), workload_pid=self.proc and self.proc.pid,
                         subreaper=self.subreaper)
        returncode = None if launch_error is not None else self._supervise()
        snap.join()
        self._end_leftovers()
        return self.end().finish(returncode, self.stop, launch_error)

    def _pattern_problem(self) -> str | None:
        """A metrics pattern the runner cannot compile (a hand-edited or old spec.json) fails
        the run before it starts, instead of taking the wrapper down mid-run."""
        for item in self.spec.get("metrics", {}).get("from_stdout", []):
            try:
                compile_metric_pattern(item["pattern"])
            except (ValueError, KeyError, TypeError) as exc:
                return f"spec.json: unusable metrics_from_stdout pattern: {exc}"
        return None

    def _start(self, argv: list[str], cwd: Path, env: dict[str, str]) -> str | None:
        try:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         start_new_session=True,
                                         preexec_fn=reaper.die_with_parent)  # noqa: PLW1509 - no threads yet; prctl is async-signal-safe
        except OSError as exc:
            (self.run_dir / contract.STDOUT_LOG).touch()
            return f"could not start {argv[0]!r} in {cwd}: {exc.strerror or exc}"
        try:
            self.proc_started = psutil.Process(self.proc.pid).create_time()
        except psutil.Error:
            self.proc_started = None
        return None

    def _write_metadata(self) -> None:
        spec = self.spec
        me = psutil.Process()
        pid = self.proc.pid if self.proc else None
        doc = {
            "schema": contract.schema_tag("run_metadata"), "run_id": self.run_id,
            "project": spec.get("project"), "preset": spec.get("preset"),
            "kind": spec.get("kind"), "parent_run_id": spec.get("parent_run_id"),
            "sweep_id": spec.get("sweep_id"), "created_at": spec.get("created_at"),
            "started_at": contract.iso(self.started_at),
            "git": {k: spec.get("code", {}).get(k)
                    for k in ("commit", "ref", "branch", "dirty", "base_commit")},
            "host": {"hostname": socket.gethostname(), "pod_id": spec.get("pod_id"),
                     "boot_id": contract.boot_id()},
            "process": {"pid": me.pid, "pid_start_time": me.create_time(), "pgid": pid,
                        "workload_pid": pid, "workload_start_time": self.proc_started,
                        "subreaper": self.subreaper,
                        "tmux_session": spec.get("tmux", {}).get("session"),
                        "tmux_socket": spec.get("tmux", {}).get("socket")},
            "runner": {"version": __version__, "python": sys.executable},
            "slurm": slurm.job_env(),
            "wandb": spec.get("wandb") or {"mode": "disabled", "project": None, "run_id": None,
                                           "url": None},
        }
        self.ledger.write_json(self.run_dir, contract.METADATA, doc)

    def _write_snapshots(self, argv: list[str], env: dict[str, str]) -> None:
        spec = self.spec
        self.ledger.write_json(self.run_dir, contract.CONFIG_EFFECTIVE, {
            "schema": contract.schema_tag("config_effective"), "run_id": self.run_id,
            "preset": spec.get("preset"), "kind": spec.get("kind"),
            "config": spec.get("config", {}), "overrides": spec.get("overrides", {}),
            "override_format": spec["workload"].get("override_format"),
            "derived": {"argv": argv, "cwd": str(wc.resolve_cwd(spec["workload"], self.values)),
                        "placeholders": self.values,
                        "python_unbuffered": env.get("PYTHONUNBUFFERED") == "1",
                        "world_size": wc.world_size(spec["workload"], slurm.rank_options(spec)),
                        "rank_launcher": wc.rank_launcher(spec["workload"],
                                                          slurm.rank_options(spec))},
        })
        self.ledger.write_json(self.run_dir, contract.ENV_SNAPSHOT,
                               snapshots.env_snapshot(self.run_id, env))
        dataset = spec.get("dataset")
        if dataset:
            self.ledger.write_json(self.run_dir, contract.DATASET_MANIFEST,
                                   snapshots.dataset_manifest(self.run_id, dataset["name"],
                                                              Path(self.values["data_dir"])))

    # -- during ------------------------------------------------------------------------------
    def _supervise(self) -> int:
        if self.proc is None or self.proc.stdout is None:
            raise RuntimeError("supervise called before the workload started")
        spec = self.spec
        patterns = [m["pattern"] for m in spec.get("metrics", {}).get("from_stdout", [])]
        metrics = StdoutMetrics(patterns, self.run_dir / contract.METRICS)
        self.metric_matches = metrics.matches
        pump = LogPump(self.proc.stdout.fileno(), self.run_dir / contract.STDOUT_LOG,
                       self.redactor, metrics)
        pump_thread = threading.Thread(target=pump.run, name="ops-logpump", daemon=True)
        pump_thread.start()
        if self.service is not None:
            self.probe = svc.HealthProbe(self.service, self._on_breach)
            self.probe.start()
            self.events.emit("service_start", port=self.service.port, health=self.service.health,
                             ready_timeout_sec=self.service.ready_timeout_sec)
        beat = Heartbeat(self.run_dir, self.run_id,
                         interval=float(spec.get("heartbeat", {}).get("interval_s", 5.0)),
                         workload_pid=self.proc.pid,
                         limits=Limits.from_spec(spec.get("limits", {})), on_limit=self._on_breach,
                         service=self.probe.snapshot if self.probe is not None else None)
        beat.start()
        unenforced = gpu.limit_warning(beat.limits.gpu_mem_limit_bytes)
        if unenforced:  # never a limit that silently cannot trigger
            self.events.emit("warning", message=unenforced)
        returncode = self.proc.wait()
        if self.probe is not None:
            self.probe.stop()
        # the workload's leader is gone: its process group goes with it, unconditionally
        self._record_killed("process_group", self._kill_group(self.proc.pid))
        pump_thread.join(PUMP_DRAIN_SEC)
        if pump_thread.is_alive():  # an escaped child still holds the pipe open
            self._end_leftovers()
            pump_thread.join(PUMP_DRAIN_SEC)
        beat.stop()
        beat.join()
        beat.beat()  # a last heartbeat with the final step
        if pump.bytes_dropped:
            self.events.emit("log_write_error", bytes_dropped=pump.bytes_dropped,
                             errors=pump.write_errors)
        return returncode

    def _kill_group(self, pgid: int) -> list[dict[str, Any]]:
        members = [p for p in reaper.descendants() if _pgid(p.pid) == pgid]
        killed = [reaper.describe(p, self.redactor.redact_text) for p in members]
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return []
        return killed

    def _end_leftovers(self) -> None:
        """Every process the workload started and left behind (escaped its group, daemonized,
        ignored its stdout) is a descendant of this subreaper: end them all before the end of
        the run is written, so none of them can rewrite it."""
        self._record_killed("escaped", reaper.end_descendants(self.redactor.redact_text))

    def _record_killed(self, how: str, killed: list[dict[str, Any]]) -> None:
        if killed:
            self.events.emit("leftover_processes", how=how, action="SIGKILL",
                             processes=killed[:100], count=len(killed))

    def _install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        name = reaper.signal_name(signum)
        limit = None
        if signum == signal.SIGTERM and slurm.is_slurm(self.spec):
            limit, evidence = slurm.term_is_time_limit(self.run_dir, self.spec)
            self.events.emit("slurm_term", **evidence)
        if limit is not None:  # SLURM's warning before the time limit (--signal=B:TERM@lead)
            self._on_breach(Breach("timeout", "timeout", limit))
            return
        if self.stop.signal is None:
            self.stop.signal = name
        self.events.emit("signal", signal=name, action="stopping the workload")
        self._stop_workload()

    def _on_breach(self, breach: Breach) -> None:
        self.stop.breach = breach
        self.events.emit("watchdog", failure_class=breach.failure_class, message=breach.message)
        self._stop_workload()

    def _stop_workload(self) -> None:
        if self.proc is None or not self._stopping.acquire(blocking=False):
            return
        threading.Thread(target=self._escalate, name="ops-stop", daemon=True).start()

    def _escalate(self) -> None:
        if self.proc is None:
            return
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                return
            _killpg(self.proc.pid, sig)
            self.events.emit("stop", signal=sig.name)
            if sig is signal.SIGKILL:
                return
            deadline = time.time() + self.grace
            while time.time() < deadline and self.proc.poll() is None:
                time.sleep(0.05)


def kind_values(spec: dict[str, Any]) -> dict[str, str]:
    """Placeholders of the eval and service kinds: {parent_run_dir} and {checkpoint} (the
    parent run's checkpoint an eval reads), {port} (the port a service listens on)."""
    values: dict[str, str] = {}
    parent = spec.get("parent_run_dir")
    if isinstance(parent, str) and parent:
        values["parent_run_dir"] = parent
        checkpoint = spec.get("eval", {}).get("checkpoint") \
            if isinstance(spec.get("eval"), dict) else None
        if isinstance(checkpoint, str) and checkpoint:
            values["checkpoint"] = os.path.join(parent, checkpoint)
    service = svc.ServiceSpec.from_spec(spec)
    if service is not None:
        values["port"] = str(service.port)
    return values


def kind_env(spec: dict[str, Any], values: dict[str, str]) -> dict[str, str]:
    env = {}
    if spec.get("kind") == "eval":
        env["OPS_RESULTS_FILE"] = str(Path(values["run_dir"]) / RESULTS_FILE)
        if "checkpoint" in values:
            env["OPS_CHECKPOINT"] = values["checkpoint"]
    if "port" in values:
        env["OPS_SERVICE_PORT"] = values["port"]
    return env


def _grace(spec: dict[str, Any]) -> float:
    limits = spec.get("limits")
    value = limits.get("grace_sec") if isinstance(limits, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 86400:
        return float(value)
    return DEFAULT_GRACE_SEC


def _submit_env(spec: dict[str, Any]) -> dict[str, str]:
    """The allow-listed environment of the `runner submit` that created this run (recorded in
    spec.inherited_env), never that of whichever command started the tmux server."""
    recorded = spec.get("inherited_env")
    if isinstance(recorded, dict):
        return scrubbed_env({str(k): v for k, v in recorded.items() if isinstance(v, str)})
    return scrubbed_env(os.environ)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _killpg(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return


def exec_run(run_dir: Path) -> int:
    """Run the wrapper; if the wrapper itself breaks, still leave a summary saying so."""
    wrapper = Wrapper(run_dir)
    try:
        return wrapper.run()
    except Exception as exc:
        if not (wrapper.run_dir / contract.SUMMARY).exists() \
                or contract.read_runner_summary(wrapper.run_dir) is None:
            _emergency_summary(wrapper, exc)
        raise


def _emergency_summary(wrapper: Wrapper, exc: Exception) -> None:
    import traceback

    if wrapper.proc is not None and wrapper.proc.poll() is None:
        _killpg(wrapper.proc.pid, signal.SIGKILL)
    reaper.end_descendants(wrapper.redactor.redact_text)
    now = time.time()
    returncode = wrapper.proc.returncode if wrapper.proc is not None else None
    if returncode is not None and not (wrapper.run_dir / contract.EXIT).exists():
        contract.atomic_write_json(wrapper.run_dir / contract.EXIT, {
            "schema": contract.schema_tag("exit"), "run_id": wrapper.run_id,
            "exit_code": returncode if returncode >= 0 else None,
            "signal": reaper.signal_name(-returncode) if returncode < 0 else None,
            "ended_at": contract.iso(now)})
    write_summary(wrapper.run_dir, summary_doc(
        wrapper.run_id, status="failed", started=wrapper.started_at, ended=now,
        written_by="wrapper", failure=failure_record("runner", f"the wrapper failed: {exc!r}",
                                                     traceback.format_exc()[-4000:]),
        seal=wrapper.store.seal))
