"""What the run table shows of every run, live or ended, beside its status: its place in a
sweep, the last step its heartbeat recorded, how long it ran, its headline metric, and a
phase that agrees with the step. Filled in by runner.status; values are checked, never
trusted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from runner import contract, fields

ENDED = (*contract.RECORDED_STATUSES, "dead")
METRICS_TAIL = 16384  # bytes of metrics.jsonl read for a live run's latest headline value


def add_fields(run_dir: Path, spec: dict[str, Any] | None, info: dict[str, Any],
               now: float, *, heartbeat: tuple[dict[str, Any] | None, Any] | None = None) -> None:
    """Fill ``info`` (a status record that is not invalid) with the table's fields.
    ``heartbeat``: heartbeat.json as the status read it already ((doc or None, ...))."""
    info["sweep_index"] = fields.integer((spec or {}).get("sweep_index"))
    if info.get("step") is None and info["status"] in ENDED:
        # only the step is wanted: a heartbeat whose other fields are off still says it
        beat = contract.read_json_or_none(run_dir / contract.HEARTBEAT) if heartbeat is None \
            else heartbeat[0]
        if beat is not None and contract.check_schema_tag(beat, "heartbeat") is None:
            info["step"] = fields.integer(beat.get("step"))
    info["duration_s"] = _duration(info, now)
    info["headline"] = _headline(spec, info)
    if info["headline"] is not None and info["status"] not in ENDED:
        info["headline"]["last"] = last_value(run_dir, info["headline"]["metric"])


def _duration(info: dict[str, Any], now: float) -> float | None:
    """Seconds from start to end (the summary's elapsed_s), or to now for a live run; both
    ends read by this host's clock."""
    if info.get("elapsed_s") is not None:
        return float(info["elapsed_s"])
    started_at = info.get("started_at")
    if not isinstance(started_at, str) or info["status"] in ENDED:
        return None
    try:
        started = contract.parse_iso(started_at).timestamp()
    except (ValueError, TypeError, OverflowError):
        return None  # not started yet, or a time that does not parse
    return round(max(0.0, now - started), 1)


def _headline(spec: dict[str, Any] | None, info: dict[str, Any]) -> dict[str, Any] | None:
    """The preset's first ``best`` metric with its best value once the run has ended."""
    best = fields.obj(fields.obj(spec, "metrics"), "best")
    name = next(iter(best), None)
    if not isinstance(name, str) or best[name] not in ("min", "max"):
        return None
    value = fields.obj(info, "metrics_best").get(name)
    return {"metric": fields.clip(name, 100), "goal": best[name],
            "value": value if fields.number(value) is not None else None}


def shown_phase(phase: str | None, step: int | None) -> str | None:
    """The heartbeat's phase, made to agree with its step: a workload that reports steps but
    never a phase of its own is past "starting" once its first step is in."""
    return "running" if phase == "starting" and step is not None else phase


def last_value(run_dir: Path, name: str) -> float | int | None:
    """The latest finite value of metric ``name`` in the last lines of metrics.jsonl (a
    bounded read of a regular file; a torn or foreign line is skipped)."""
    try:
        with contract.open_regular(run_dir / contract.METRICS) as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - METRICS_TAIL))
            data = fh.read(METRICS_TAIL)
    except (OSError, contract.ContractError):
        return None
    for line in reversed(data.splitlines()[1:] if len(data) == METRICS_TAIL else
                         data.splitlines()):
        try:  # untrusted: bounded depth, no NaN, a RecursionError never escapes
            record = contract.parse_json(line)
        except ValueError:
            continue
        value = fields.obj(record, "metrics").get(name) if isinstance(record, dict) else None
        if fields.number(value) is not None:
            return value
    return None
