"""The end of a run: integrity of the contract files, final metrics, and summary.json."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner import contract
from runner.reaper import signal_name
from runner.run_warnings import best_rules, metric_warnings
from runner.track import EventLog
from runner.workload_command import render, resolve_cwd


@dataclass
class Ledger:
    """What the runner wrote: file name -> exact bytes, to restore a file the workload replaced."""

    written: dict[str, bytes] = field(default_factory=dict)

    def write_json(self, run_dir: Path, name: str, doc: Mapping[str, Any]) -> None:
        self.written[name] = contract.atomic_write_json(run_dir / name, doc)

    def write_bytes(self, run_dir: Path, name: str, data: bytes, mode: int = 0o644) -> None:
        contract.atomic_write_bytes(run_dir / name, data, mode)
        self.written[name] = data

    def adopt(self, run_dir: Path, name: str) -> None:
        with contextlib.suppress(OSError, contract.ContractError):
            self.written[name] = contract.read_regular_bytes(run_dir / name)

    def restore_replaced(self, run_dir: Path, out_dir: Path) -> list[dict[str, Any]]:
        """Move files the workload put over the runner's aside, put the runner's back."""
        violations = []
        for name, data in self.written.items():
            path = run_dir / name
            try:
                current: bytes | None = contract.read_regular_bytes(path, len(data) + 1)
            except FileNotFoundError:
                current = None
            except contract.ContractError:  # a FIFO, a link, a directory, a huge file
                current = b""
            if current == data:
                continue
            kept_as = _displace(path, out_dir) if current is not None else None
            contract.atomic_write_bytes(path, data, 0o755 if name == contract.COMMAND else 0o644)
            violations.append({
                "file": name, "rule": "contract-file-replaced", "kept_as": kept_as,
                "message": ("replaced by the workload during the run" if current is not None
                            else "deleted by the workload during the run"),
            })
        summary = run_dir / contract.SUMMARY
        if summary.exists() or summary.is_symlink():
            kept_as = _displace(summary, out_dir)
            violations.append({"file": contract.SUMMARY, "rule": "contract-file-replaced",
                               "kept_as": kept_as,
                               "message": "written by the workload; only the runner writes it"})
        return violations


def summary_doc(run_id: str, *, status: str, started: float, ended: float,
                written_by: str, failure: dict[str, Any] | None = None,
                exit_code: int | None = None, signal: str | None = None,
                **fields: Any) -> dict[str, Any]:
    """A summary.json document: every field of the contract, ``fields`` filling the rest
    (metrics, files, violations, W&B) where the writer has them."""
    if fields.get("seal") is None:
        fields.pop("seal", None)  # a run without a commitment (written before seals)
    return {
        "schema": contract.schema_tag("summary"), "run_id": run_id, "status": status,
        "ok": status == "completed", "exit_code": exit_code, "signal": signal,
        "started_at": contract.iso(started), "ended_at": contract.iso(ended),
        "elapsed_s": round(ended - started, 3), "metrics_final": {}, "metrics_best": {},
        "failure": failure, "written_by": written_by, "files": {}, "contract_violations": [],
        "wandb": {}, **fields,
    }


def failure_record(failure_class: str, message: str, traceback_tail: str = "") -> dict[str, str]:
    return {"class": failure_class, "message": message, "traceback_tail": traceback_tail}


def _displace(path: Path, out_dir: Path) -> str:
    target_dir = out_dir / ".displaced"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / path.name
    n = 1
    while target.exists():
        target = target_dir / f"{path.name}.{n}"
        n += 1
    shutil.move(str(path), target)
    return str(target)


def metrics_from_log(run_dir: Path, best_rules: Mapping[str, str]) -> tuple[dict[str, float],
                                                                             dict[str, float]]:
    """Last value of every metric, and the best of those with a direction (min/max)."""
    final: dict[str, float] = {}
    best: dict[str, float] = {}
    for record in contract.read_jsonl(run_dir / contract.METRICS).records:
        metrics = record.get("metrics")
        if not isinstance(metrics, dict):
            continue
        for name, value in metrics.items():
            if not _is_number(value):
                continue
            final[name] = float(value)
            direction = best_rules.get(name) or ("min" if "loss" in name.lower() else None)
            if direction == "min":
                best[name] = min(best.get(name, math.inf), float(value))
            elif direction == "max":
                best[name] = max(best.get(name, -math.inf), float(value))
    return final, best


def numbers_from_summary_file(path: Path) -> dict[str, float]:
    """Numeric leaves of a workload's own summary file, as dotted names."""
    try:
        doc = contract.parse_json(contract.read_regular_bytes(path, SUMMARY_FILE_LIMIT))
    except (OSError, contract.ContractError):
        return {}
    found: dict[str, float] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{prefix}.{key}" if prefix else str(key))
        elif _is_number(value) and prefix:
            found[prefix] = float(value)

    walk(doc, "")
    return found


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def file_digests(run_dir: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    files: dict[str, dict[str, Any]] = {}
    paths = [run_dir / n for n in names]
    ckpt = run_dir / contract.CHECKPOINTS_DIR
    if ckpt.is_dir():
        paths += sorted(p for p in ckpt.rglob("*") if _regular(p) and not p.name.startswith("."))
    for path in paths:
        with contextlib.suppress(OSError, contract.ContractError):
            files[path.relative_to(run_dir).as_posix()] = {
                "size": path.stat().st_size, "sha256": contract.sha256_file(path)}
    return files


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def tail_lines(path: Path, lines: int = 30, max_bytes: int = 16384) -> str:
    try:
        with contract.open_regular(path) as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except (OSError, contract.ContractError):
        return ""
    return b"\n".join(data.splitlines()[-lines:]).decode(errors="replace")



# ---------------------------------------------------------------------------------------------
# the end of a run: exit.json, the outcome, the integrity check, summary.json (last)

DERIVED_FILE = "derived.json"  # in {out_dir}: values a workload derives at run time
# failure classes a workload may report with track.event("failure", failure_class=...)
WORKLOAD_FAILURE_CLASSES = ("guard", "non_finite_loss", "data", "config")
SUMMARY_FILE_LIMIT = 4 << 20  # a workload's own summary file: numbers only, bounded
RESULTS_FILE = "results.jsonl"  # an eval's per-item records, one JSON object a line


@dataclass
class Stop:
    """Why the wrapper stopped the workload, when it did: a watchdog breach or a signal."""

    breach: Any = None  # runner.heartbeat.Breach (status, failure_class, message)
    signal: str | None = None


@dataclass
class RunEnd:
    """What the end of a run needs from its wrapper."""

    run_dir: Path
    run_id: str
    spec: dict[str, Any]
    values: dict[str, str]
    ledger: Ledger
    events: EventLog
    started_at: float
    seal: str | None
    probe: Any = None  # runner.service.HealthProbe of a service run
    # lines each metrics_from_stdout pattern turned into metrics (the log pump's count, live);
    # None when no pump ran (the workload never started)
    metric_matches: Sequence[int] | None = None

    @property
    def out_dir(self) -> Path:
        return Path(self.values["out_dir"])

    def finish(self, returncode: int | None, stop: Stop, launch_error: str | None = None) -> int:
        """Write exit.json, then summary.json last; return the wrapper's own exit code."""
        ended = time.time()
        exit_code = returncode if returncode is not None and returncode >= 0 else None
        sig = signal_name(-returncode) if returncode is not None and returncode < 0 else None
        self.ledger.write_json(self.run_dir, contract.EXIT, {
            "schema": contract.schema_tag("exit"), "run_id": self.run_id,
            "exit_code": exit_code, "signal": sig, "ended_at": contract.iso(ended)})
        status, failure = self._outcome(exit_code, sig, stop, launch_error)
        violations = self.ledger.restore_replaced(self.run_dir, self.out_dir)
        for item in violations:
            self.events.emit("contract_violation", file=item["file"], kept_as=item["kept_as"])
        self._merge_workload_derived()
        final, best = metrics_from_log(self.run_dir, best_rules(self.spec))
        final.update(self._summary_from_numbers())
        warnings = [] if launch_error is not None else \
            metric_warnings(self.spec, self.metric_matches, best)
        for item in warnings:
            self.events.emit("warning", message=item["message"], code=item["code"])
        self.events.emit("run_end", status=status, exit_code=exit_code, signal=sig)
        doc = summary_doc(
            self.run_id, status=status, started=self.started_at, ended=ended,
            written_by="wrapper", failure=failure, exit_code=exit_code, signal=sig,
            metrics_final=final, metrics_best=best,
            files=file_digests(self.run_dir, sorted(self.ledger.written)),
            contract_violations=violations, wandb=self._wandb_final(), seal=self.seal,
            warnings=warnings, **self._kind_fields(ended))
        write_summary(self.run_dir, doc)
        return exit_code if exit_code is not None else 128 + (-(returncode or 0) or 1)

    def _kind_fields(self, ended: float) -> dict[str, Any]:
        """What an eval or a service adds to summary.json: the aggregate of results.jsonl and
        the parent it evaluated; the service's uptime, probes and reported request count."""
        extra: dict[str, Any] = {}
        if self.spec.get("kind") == "eval":
            extra["eval"] = {"parent_run_id": self.spec.get("parent_run_id"),
                             "checkpoint": self.values.get("checkpoint"),
                             "results": results_aggregate(self.run_dir / RESULTS_FILE)}
        if self.probe is not None:
            extra["service"] = self.probe.final(ended)
        return extra

    def _outcome(self, exit_code: int | None, sig: str | None, stop: Stop,
                 launch_error: str | None) -> tuple[str, dict[str, Any] | None]:
        if launch_error is not None:
            return "failed", failure_record("launch", launch_error)
        tail = tail_lines(self.run_dir / contract.STDOUT_LOG)
        if stop.breach is not None:
            reason = stop.breach
            return reason.status, failure_record(reason.failure_class, reason.message, tail)
        if stop.signal is not None:
            return "killed", failure_record("cancelled", f"stopped on {stop.signal}", tail)
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
        derived = current.get("derived")
        current["derived"] = {**(derived if isinstance(derived, dict) else {}),
                              "workload": extra}
        self.ledger.write_json(self.run_dir, contract.CONFIG_EFFECTIVE, current)

    def _wandb_final(self) -> dict[str, Any]:
        """The spec's W&B settings, completed by what the workload reported (run id, url)."""
        final = dict(self.spec.get("wandb") or {})
        fields = {"mode": "mode", "run_id": "wandb_run_id", "url": "url", "project": "project"}
        for record in contract.read_jsonl(self.run_dir / contract.EVENTS).records:
            if record.get("type") == "wandb":
                final.update({key: str(record[name])[:500] for key, name in fields.items()
                              if isinstance(record.get(name), (str, int, float))})
        return final

    def _summary_from_numbers(self) -> dict[str, float]:
        source = self.spec.get("metrics", {}).get("summary_from")
        if not source:
            return {}
        path = Path(render(source, self.values))
        if not path.is_absolute():
            path = resolve_cwd(self.spec["workload"], self.values) / path
        return numbers_from_summary_file(path)


RESULTS_FIELDS_LIMIT = 200  # numeric fields averaged from results.jsonl


def results_aggregate(path: Path) -> dict[str, Any]:
    """Item count and the mean of every numeric field of results.jsonl (nulls and non-finite
    values skipped, counted per field), read as untrusted input."""
    read = contract.read_jsonl(path)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    items = 0
    for record in read.records:
        items += 1
        for name, value in record.items():
            if _is_number(value) and (name in sums or len(sums) < RESULTS_FIELDS_LIMIT):
                sums[name] = sums.get(name, 0.0) + float(value)
                counts[name] = counts.get(name, 0) + 1
    present = path.is_file()
    return {"file": RESULTS_FILE if present else None, "n_items": items,
            "mean": {k: m for k in sorted(sums) if math.isfinite(m := sums[k] / counts[k])},
            "n": {k: counts[k] for k in sorted(counts)},
            "sha256": _digest(path) if present else None}


def _digest(path: Path) -> str | None:
    with contextlib.suppress(OSError, contract.ContractError):
        return contract.sha256_file(path)
    return None


def write_summary(run_dir: Path, doc: Mapping[str, Any]) -> None:
    """summary.json, written last. A non-regular file in its place (a FIFO, a directory left by
    the workload) is moved aside first, so the write neither blocks nor fails."""
    path = run_dir / contract.SUMMARY
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISREG(path.lstat().st_mode):
            _displace(path, run_dir / contract.OUT_DIR)
    contract.atomic_write_json(path, doc)
