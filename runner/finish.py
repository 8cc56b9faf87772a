"""The end of a run: integrity of the contract files, final metrics, and summary.json."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner import contract


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
        with contextlib.suppress(OSError):
            self.written[name] = (run_dir / name).read_bytes()

    def restore_replaced(self, run_dir: Path, out_dir: Path) -> list[dict[str, Any]]:
        """Move files the workload put over the runner's aside, put the runner's back."""
        violations = []
        for name, data in self.written.items():
            path = run_dir / name
            try:
                current = path.read_bytes()
            except FileNotFoundError:
                current = None
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
        if summary.exists():
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
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
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
        paths += sorted(p for p in ckpt.rglob("*") if p.is_file() and not p.name.startswith("."))
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            files[path.relative_to(run_dir).as_posix()] = {
                "size": path.stat().st_size, "sha256": contract.sha256_file(path)}
    return files


def tail_lines(path: Path, lines: int = 30, max_bytes: int = 16384) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    return b"\n".join(data.splitlines()[-lines:]).decode(errors="replace")

