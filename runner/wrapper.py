"""`runner exec RUN_DIR`: the wrapper that runs a workload inside the contract.

It reads spec.json, starts the workload in its own process group with stdin from /dev/null and
a scrubbed environment, writes the start-of-run files, pumps the output into stdout.log, keeps
the heartbeat, turns signals and watchdog breaches into an orderly stop, and always ends with
exit.json and summary.json, written last.
"""

from __future__ import annotations

import contextlib
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

from runner import __version__, contract, redact, snapshots
from runner import workload_command as wc
from runner.finish import (
    Ledger,
    failure_record,
    file_digests,
    metrics_from_log,
    numbers_from_summary_file,
    summary_doc,
    tail_lines,
)
from runner.heartbeat import Breach, Heartbeat, Limits
from runner.logpump import LogPump, StdoutMetrics
from runner.track import EventLog

PUMP_DRAIN_SEC = 2.0
DERIVED_FILE = "derived.json"  # in {out_dir}: values a workload derives at run time
# failure classes a workload may report with track.event("failure", failure_class=...)
WORKLOAD_FAILURE_CLASSES = ("guard", "non_finite_loss", "data", "config")


class Wrapper:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir.resolve()
        self.spec = contract.read_json(self.run_dir / contract.SPEC)
        self.run_id = contract.validate_run_id(self.spec["run_id"])
        if self.run_id != self.run_dir.name:
            raise contract.ContractError(f"spec run_id {self.run_id!r} is not the dir name")
        self.ledger = Ledger()
        self.ledger.adopt(self.run_dir, contract.SPEC)
        self.events = EventLog(self.run_dir / contract.EVENTS, self.run_id, source="wrapper")
        self.values = wc.placeholder_values(self.spec, self.run_dir, sys.executable)
        self.out_dir = Path(self.values["out_dir"])
        self.grace = float(self.spec.get("limits", {}).get("grace_sec", 10.0))
        self.stop_reason: Breach | None = None
        self.cancelled: str | None = None
        self._stopping = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = time.time()

    # -- start -----------------------------------------------------------------------------
    def run(self) -> int:
        workload = self.spec["workload"]
        secrets = redact.take_store(_path_or_none(self.spec.get("secrets", {}).get("store")))
        files = [wc.render(f, self.values) for f in self.spec.get("secrets", {}).get("files", [])]
        redactor = redact.Redactor([*secrets.values(), *redact.values_from_files(files)])
        argv = wc.build_argv(workload, self.values)
        cwd = wc.resolve_cwd(workload, self.values)
        env = wc.build_env(workload, self.values, secrets)
        if self.spec.get("parent_run_dir"):
            env["OPS_RESUME_FROM"] = str(self.spec["parent_run_dir"])
        env.update(wc.wandb_env(self.spec.get("wandb") or {}, self.run_dir))
        for sub in (self.out_dir, self.run_dir / contract.CHECKPOINTS_DIR):
            sub.mkdir(parents=True, exist_ok=True)
        script = wc.command_script(argv, cwd, {k: v for k, v in env.items() if k not in secrets},
                                   sorted(secrets))
        self.ledger.write_bytes(self.run_dir, contract.COMMAND, redactor.redact(script.encode()),
                                0o755)
        launch_error = self._start(argv, cwd, env)
        self._write_metadata()
        self._install_signal_handlers()
        snap = threading.Thread(target=self._write_snapshots, args=(argv, env), daemon=True)
        snap.start()
        self.events.emit("run_start", argv_len=len(argv), workload_pid=self.proc and self.proc.pid)
        if launch_error is not None:
            snap.join()
            return self._finish(None, launch_error=launch_error)
        returncode = self._supervise(redactor)
        snap.join()
        return self._finish(returncode)

    def _start(self, argv: list[str], cwd: Path, env: dict[str, str]) -> str | None:
        try:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        except OSError as exc:
            (self.run_dir / contract.STDOUT_LOG).touch()
            return f"could not start {argv[0]!r} in {cwd}: {exc.strerror or exc}"
        return None

    def _write_metadata(self) -> None:
        spec = self.spec
        me = psutil.Process()
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
            "process": {"pid": me.pid, "pid_start_time": me.create_time(),
                        "pgid": self.proc.pid if self.proc else None,
                        "workload_pid": self.proc.pid if self.proc else None,
                        "tmux_session": spec.get("tmux", {}).get("session"),
                        "tmux_socket": spec.get("tmux", {}).get("socket")},
            "runner": {"version": __version__, "python": sys.executable},
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
                        "python_unbuffered": env.get("PYTHONUNBUFFERED") == "1"},
        })
        self.ledger.write_json(self.run_dir, contract.ENV_SNAPSHOT,
                               snapshots.env_snapshot(self.run_id, env))
        dataset = spec.get("dataset")
        if dataset:
            self.ledger.write_json(self.run_dir, contract.DATASET_MANIFEST,
                                   snapshots.dataset_manifest(self.run_id, dataset["name"],
                                                              Path(self.values["data_dir"])))

    # -- during ------------------------------------------------------------------------------
    def _supervise(self, redactor: redact.Redactor) -> int:
        if self.proc is None or self.proc.stdout is None:
            raise RuntimeError("supervise called before the workload started")
        spec = self.spec
        patterns = [m["pattern"] for m in spec.get("metrics", {}).get("from_stdout", [])]
        pump = LogPump(self.proc.stdout.fileno(), self.run_dir / contract.STDOUT_LOG, redactor,
                       StdoutMetrics(patterns, self.run_dir / contract.METRICS))
        pump_thread = threading.Thread(target=pump.run, name="ops-logpump", daemon=True)
        pump_thread.start()
        beat = Heartbeat(self.run_dir, self.run_id,
                         interval=float(spec.get("heartbeat", {}).get("interval_s", 5.0)),
                         workload_pid=self.proc.pid,
                         limits=Limits.from_spec(spec.get("limits", {})), on_limit=self._on_breach)
        beat.start()
        returncode = self.proc.wait()
        pump_thread.join(PUMP_DRAIN_SEC)
        if pump_thread.is_alive():  # a leftover child holds the pipe open: end the group
            self.events.emit("leftover_processes", action="SIGKILL to the process group")
            _killpg(self.proc.pid, signal.SIGKILL)
            pump_thread.join(PUMP_DRAIN_SEC)
        beat.stop()
        beat.join()
        beat.beat()  # a last heartbeat with the final step
        if pump.bytes_dropped:
            self.events.emit("log_write_error", bytes_dropped=pump.bytes_dropped,
                             errors=pump.write_errors)
        return returncode

    def _install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.cancelled is None:
            self.cancelled = name
        self.events.emit("signal", signal=name, action="stopping the workload")
        self._stop_workload()

    def _on_breach(self, breach: Breach) -> None:
        self.stop_reason = breach
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

    # -- end ---------------------------------------------------------------------------------
    def _finish(self, returncode: int | None, launch_error: str | None = None) -> int:
        ended = time.time()
        exit_code = returncode if returncode is not None and returncode >= 0 else None
        sig = signal.Signals(-returncode).name if returncode is not None and returncode < 0 \
            else None
        self.ledger.write_json(self.run_dir, contract.EXIT, {
            "schema": contract.schema_tag("exit"), "run_id": self.run_id,
            "exit_code": exit_code, "signal": sig, "ended_at": contract.iso(ended)})
        status, failure = self._outcome(exit_code, sig, launch_error)
        violations = self.ledger.restore_replaced(self.run_dir, self.out_dir)
        for item in violations:
            self.events.emit("contract_violation", file=item["file"], kept_as=item["kept_as"])
        self._merge_workload_derived()
        final, best = metrics_from_log(self.run_dir, self.spec.get("metrics", {}).get("best", {}))
        final.update(self._summary_from_numbers())
        self.events.emit("run_end", status=status, exit_code=exit_code, signal=sig)
        doc = summary_doc(
            self.run_id, status=status, started=self.started_at, ended=ended,
            written_by="wrapper", failure=failure, exit_code=exit_code, signal=sig,
            metrics_final=final, metrics_best=best,
            files=file_digests(self.run_dir, sorted(self.ledger.written)),
            contract_violations=violations, wandb=self._wandb_final())
        contract.atomic_write_json(self.run_dir / contract.SUMMARY, doc)
        return exit_code if exit_code is not None else 128 + (-(returncode or 0) or 1)

    def _outcome(self, exit_code: int | None, sig: str | None,
                 launch_error: str | None) -> tuple[str, dict[str, Any] | None]:
        if launch_error is not None:
            return "failed", failure_record("launch", launch_error)
        tail = tail_lines(self.run_dir / contract.STDOUT_LOG)
        if self.stop_reason is not None:
            reason = self.stop_reason
            return reason.status, failure_record(reason.failure_class, reason.message, tail)
        if self.cancelled is not None:
            return "killed", failure_record("cancelled", f"stopped on {self.cancelled}", tail)
        if exit_code == 0:
            return "completed", None
        return self._exit_outcome(exit_code, sig, tail)

    def _exit_outcome(self, exit_code: int | None, sig: str | None,
                      tail: str) -> tuple[str, dict[str, Any]]:
        """The workload ended on its own, not cleanly: by a signal or a non-zero code."""
        if sig is not None:
            status = "killed" if sig in ("SIGINT", "SIGTERM", "SIGHUP") else "failed"
            hint = " (the kernel's OOM killer sends this)" if sig == "SIGKILL" else ""
            return status, failure_record("signal", f"killed by {sig}{hint}", tail)
        reported = self._reported_failure()
        if reported is not None:
            return "failed", {**reported, "traceback_tail": tail}
        return "failed", failure_record("exit_code", f"exited with code {exit_code}", tail)

    def _reported_failure(self) -> dict[str, str] | None:
        """The last `failure` event the workload logged through runner.track, if any: its
        class (guard, non_finite_loss...) says more than an exit code."""
        found = None
        for record in contract.read_jsonl(self.run_dir / contract.EVENTS).records:
            if record.get("type") == "failure" and record.get("source") == "track" \
                    and record.get("failure_class") in WORKLOAD_FAILURE_CLASSES:
                found = {"class": str(record["failure_class"]),
                         "message": str(record.get("message", ""))[:2000]}
        return found

    def _merge_workload_derived(self) -> None:
        """Values the workload derived itself ({out_dir}/derived.json: batch size, patch size,
        compute profile...) join config_effective.json under derived.workload."""
        extra = contract.read_json_or_none(self.out_dir / DERIVED_FILE)
        current = contract.read_json_or_none(self.run_dir / contract.CONFIG_EFFECTIVE)
        if extra is None or current is None:
            return
        current.setdefault("derived", {})["workload"] = extra
        self.ledger.write_json(self.run_dir, contract.CONFIG_EFFECTIVE, current)

    def _wandb_final(self) -> dict[str, Any]:
        """The spec's W&B settings, completed by what the workload reported (run id, url)."""
        final = dict(self.spec.get("wandb") or {})
        fields = {"mode": "mode", "run_id": "wandb_run_id", "url": "url", "project": "project"}
        for record in contract.read_jsonl(self.run_dir / contract.EVENTS).records:
            if record.get("type") == "wandb":
                final.update({key: record[name] for key, name in fields.items()
                              if record.get(name) is not None})
        return final

    def _summary_from_numbers(self) -> dict[str, float]:
        source = self.spec.get("metrics", {}).get("summary_from")
        if not source:
            return {}
        path = Path(wc.render(source, self.values))
        if not path.is_absolute():
            path = wc.resolve_cwd(self.spec["workload"], self.values) / path
        return numbers_from_summary_file(path)


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _path_or_none(value: str | None) -> Path | None:
    return Path(os.path.expanduser(value)) if value else None


def exec_run(run_dir: Path) -> int:
    """Run the wrapper; if the wrapper itself breaks, still leave a summary saying so."""
    wrapper = Wrapper(run_dir)
    try:
        return wrapper.run()
    except Exception as exc:
        if contract.read_runner_summary(wrapper.run_dir) is None:
            _emergency_summary(wrapper, exc)
        raise


def _emergency_summary(wrapper: Wrapper, exc: Exception) -> None:
    import traceback

    if wrapper.proc is not None and wrapper.proc.poll() is None:
        _killpg(wrapper.proc.pid, signal.SIGKILL)
    contract.atomic_write_json(wrapper.run_dir / contract.SUMMARY, summary_doc(
        wrapper.run_id, status="failed", started=wrapper.started_at, ended=time.time(),
        written_by="wrapper", failure=failure_record("runner", f"the wrapper failed: {exc!r}",
                                                     traceback.format_exc()[-4000:])))
