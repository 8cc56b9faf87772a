"""`runner report-data ROOT [RUN_ID ...]`: what `ops report`, `ops run diff` and the detailed
`ops run status RUN` need about runs, in one answer (one round trip on a remote host).

Every run gets its derived status (``runner.status``), the summary's numbers, its git facts,
its effective config flattened to dotted keys and the preset's ``best`` directions. On request
it also gets a downsampled metric series (``--series N`` points per metric), the per-volume
validation rows and the cross-validation splits a trainer wrote under ``out/``, a detail view
(last lines of stdout.log, heartbeat, the host's GPUs now) and the raw documents a diff needs.

A run directory is untrusted input: every read goes through the contract's bounded readers or
the bounded text reader below, every field is type-checked, and a run whose files cannot be
read stays in the answer as ``invalid`` with the reason; it never hides the others.
Standard library (and psutil, through status) only.
"""

from __future__ import annotations

import argparse
import math
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner import contract, status
from runner.report_parts import (
    docs_of,
    gpus_now,
    heartbeat_of,
    per_volume,
    series_of,
    splits_of,
    tail_lines,
)

MAX_CONFIG_KEYS = 2_000
TAIL_LINES = 20
CONFIG_NOISE = ("description", "debug_overrides")  # preset keys that never explain a result
CONTRACT_FILES = (contract.SPEC, contract.SUMMARY, contract.METADATA, contract.HEARTBEAT,
                  contract.CONFIG_EFFECTIVE)


def add_verb(sub: Any) -> None:
    """Register the verb's arguments on the runner CLI's subparsers."""
    p = sub.add_parser("report-data", help="summary, config and metric series of runs (JSON)")
    p.add_argument("root", type=Path)
    p.add_argument("run_ids", nargs="*")
    p.add_argument("--series", type=int, default=0, help="points per metric (0: none)")
    p.add_argument("--volumes", action="store_true", help="per-volume rows and splits")
    p.add_argument("--detail", action="store_true", help="stdout tail, heartbeat, GPUs now")
    p.add_argument("--docs", action="store_true", help="raw documents for a diff")


def answer(args: argparse.Namespace) -> dict[str, Any]:
    want = Want(series=max(0, int(args.series)), volumes=bool(args.volumes),
                detail=bool(args.detail), docs=bool(args.docs))
    return report_data(args.root, list(args.run_ids) or None, want)


class Want:
    """Which optional parts of a run record to read."""

    def __init__(self, *, series: int = 0, volumes: bool = False, detail: bool = False,
                 docs: bool = False) -> None:
        self.series, self.volumes, self.detail, self.docs = series, volumes, detail, docs


def run_dirs(root: Path, run_ids: list[str] | None) -> list[Path]:
    """The run dirs under ``root``: the named ones (an unknown id still gets a record), or
    every directory whose name is a valid run id."""
    if run_ids is not None:
        return [root / run_id for run_id in run_ids if _valid_id(run_id)]
    try:
        with os.scandir(root) as entries:  # the file type comes with the entry: no stat
            names = sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
    except OSError:
        return []
    return [root / n for n in names if contract.RUN_ID_RE.fullmatch(n) and ".." not in n]


def report_data(root: Path, run_ids: list[str] | None, want: Want) -> dict[str, Any]:
    now = time.time()
    host_boot = contract.boot_id()
    sessions = status.SessionCache()
    runs = [collect(d, want, now=now, host_boot=host_boot, sessions=sessions)
            for d in run_dirs(Path(root), run_ids)]
    answer: dict[str, Any] = {"root": str(root), "runs": runs}
    if want.detail:
        answer["gpus"] = gpus_now()
    return answer


def collect(run_dir: Path, want: Want, *, now: float | None = None,
            host_boot: str | None = None,
            sessions: status.SessionCache | None = None) -> dict[str, Any]:
    """One run's record; never raises for what is inside the run dir."""
    try:
        problem = _file_kind_problem(run_dir)
        spec = {} if problem else _doc(run_dir / contract.SPEC, "spec")
        problem = problem or _spec_problem(spec)
        if problem is not None:
            return _invalid(run_dir, problem)
        summary, corrupt = _summary(run_dir)
        # the detail view stands in for `runner status ROOT RUN`: it tidies an ended run too
        info = status.run_status(run_dir, now=now, host_boot=host_boot, sessions=sessions,
                                 tidy=want.detail)
        if corrupt is not None and info.get("status") != "invalid":
            info.update(status="invalid", reason=corrupt)
        return _record(run_dir, info, want, spec, summary)
    except Exception as exc:  # noqa: BLE001 - one hostile run dir must not hide the others
        return _invalid(run_dir, f"unreadable: {type(exc).__name__}: {exc}")


def _invalid(run_dir: Path, reason: str) -> dict[str, Any]:
    return {"run_id": run_dir.name, "run_dir": str(run_dir), "status": "invalid",
            "reason": reason, "notes": [], "config": {}, "metrics_final": {},
            "metrics_best": {}, "best_rules": {}}


def _file_kind_problem(run_dir: Path) -> str | None:
    """Refuse before any open: a contract file that is a link, FIFO, socket or device."""
    try:
        mode = os.lstat(run_dir).st_mode
    except OSError as exc:
        return f"no run directory: {exc.strerror}"
    if not stat.S_ISDIR(mode):
        return "not a directory"
    for name in CONTRACT_FILES:
        try:
            mode = os.lstat(run_dir / name).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            return f"{name}: {exc.strerror}"
        if not stat.S_ISREG(mode):
            return f"{name} is not a regular file"
    return None


def _record(run_dir: Path, info: dict[str, Any], want: Want, spec: dict[str, Any],
            summary: dict[str, Any]) -> dict[str, Any]:
    record = dict(info)  # every field the status check gives, then the report's own
    record.update({k: info.get(k) for k in ("run_id", "run_dir", "status", "reason", "preset",
                                            "kind", "sweep_id", "created_at", "exit_code",
                                            "ended_at", "elapsed_s")})
    record["notes"] = [str(n) for n in _as_list(info.get("notes"))]
    failure = _as_dict(info.get("failure"))
    record["failure"] = ({"class": _str(failure.get("class")),
                          "message": _str(failure.get("message")),
                          "traceback_tail": _str(failure.get("traceback_tail"))}
                         if failure else None)
    if record["status"] == "invalid":
        record.update(config={}, metrics_final={}, metrics_best={}, best_rules={})
        return record
    if record["status"] not in contract.RECORDED_STATUSES:
        summary = {}  # not (yet) a summary that ended the run: a workload may forge one
    meta = _doc(run_dir / contract.METADATA, "run_metadata")
    record.update(started_at=_str(summary.get("started_at")) or _str(meta.get("started_at")),
                  metrics_final=_numbers(summary.get("metrics_final")),
                  metrics_best=_numbers(summary.get("metrics_best")),
                  git=_git(meta), wandb=_wandb(meta), parent_run_id=_str(meta.get(
                      "parent_run_id")),
                  best_rules=_best_rules(spec), config=flat_config(run_dir))
    if want.series:
        record.update(series_of(run_dir, want.series))
    if want.volumes:
        record.update(per_volume=per_volume(run_dir), splits=splits_of(run_dir))
    if want.detail:
        record.update(stdout_tail=tail_lines(run_dir / contract.STDOUT_LOG, TAIL_LINES),
                      heartbeat=heartbeat_of(run_dir))
    if want.docs:
        record["docs"] = docs_of(run_dir, meta)
    return record


def _summary(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """summary.json when it is ours ({} otherwise), and the reason it is unusable when it
    exists but does not parse (the runner writes it atomically, so it is never torn:
    unparseable means damaged)."""
    try:
        doc = contract.read_json(run_dir / contract.SUMMARY)
    except FileNotFoundError:
        return {}, None
    except contract.ContractError as exc:
        return {}, str(exc)
    return ({} if contract.check_schema_tag(doc, "summary") else doc), None


SPEC_TYPES: dict[str, tuple[type, ...]] = {
    "preset": (str,), "kind": (str,), "tmux": (dict,), "heartbeat": (dict,),
    "metrics": (dict,), "config": (dict,), "workload": (dict,), "sweep_id": (str,)}


def _spec_problem(spec: Mapping[str, Any]) -> str | None:
    """A spec.json whose fields a reader relies on have the wrong JSON types."""
    for key, types in SPEC_TYPES.items():
        if key in spec and spec[key] is not None and not isinstance(spec[key], types):
            return f"spec.json: {key} is a {type(spec[key]).__name__}, expected " \
                   f"{' or '.join(t.__name__ for t in types)}"
    return None


# -- small typed readers ---------------------------------------------------------------------


def _doc(path: Path, name: str) -> dict[str, Any]:
    """A contract document of ours, or {} when absent, unreadable or not ours."""
    doc = contract.read_json_or_none(path)
    if doc is None or contract.check_schema_tag(doc, name) is not None:
        return {}
    return doc


def _valid_id(run_id: str) -> bool:
    return bool(contract.RUN_ID_RE.fullmatch(run_id)) and ".." not in run_id


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _numbers(value: Any) -> dict[str, float | None]:
    """Metric name -> number; a non-finite or non-numeric value is kept as None so that the
    report can flag it instead of dropping it."""
    out: dict[str, float | None] = {}
    for name, raw in _as_dict(value).items():
        number = _number(raw)
        out[str(name)] = number if number is not None and math.isfinite(number) else None
    return out


def _git(meta: Mapping[str, Any]) -> dict[str, Any]:
    git = _as_dict(meta.get("git"))
    return {"commit": _str(git.get("commit")), "branch": _str(git.get("branch")),
            "ref": _str(git.get("ref")), "base_commit": _str(git.get("base_commit")),
            "dirty": git.get("dirty") if isinstance(git.get("dirty"), bool) else None}


def _wandb(meta: Mapping[str, Any]) -> dict[str, Any]:
    wandb = _as_dict(meta.get("wandb"))
    return {k: _str(wandb.get(k)) for k in ("mode", "project", "run_id", "url")}


def _best_rules(spec: Mapping[str, Any]) -> dict[str, str]:
    best = _as_dict(_as_dict(spec.get("metrics")).get("best"))
    return {str(k): v for k, v in best.items() if v in ("min", "max")}


def flat_config(run_dir: Path) -> dict[str, Any]:
    """config_effective.json's preset config as dotted keys -> scalars (lists as JSON-able
    lists), without the keys that never explain a difference in results."""
    doc = _doc(run_dir / contract.CONFIG_EFFECTIVE, "config_effective")
    config = {k: v for k, v in _as_dict(doc.get("config")).items() if k not in CONFIG_NOISE}
    return flatten(config)


def flatten(value: Any) -> dict[str, Any]:
    """Nested dicts as dotted keys -> scalars (short lists and empty dicts kept as values)."""
    out: dict[str, Any] = {}
    _flatten(value, "", out, 0)
    return out


def _flatten(value: Any, prefix: str, out: dict[str, Any], depth: int) -> None:
    if len(out) >= MAX_CONFIG_KEYS:
        return
    if isinstance(value, dict):
        if depth >= 8:
            out[prefix] = "<nested too deep>"
            return
        for key, item in value.items():  # an empty mapping holds no setting: no key
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out, depth + 1)
    elif isinstance(value, (str, int, float, bool)) or value is None:
        out[prefix] = value
    elif isinstance(value, list):
        out[prefix] = value if len(repr(value)) <= 2_000 else "<long list>"
