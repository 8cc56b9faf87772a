"""Where a report's runs come from: fetched run dirs, paths, globs, run ids, or a host.

Local run dirs are read in this process with the runner's own collector
(``runner.report_data``); a host's runs come from one ``runner report-data`` call (one round
trip, no per-file SFTP). Either way every run is a plain dict record (see
runner/report_data.py); nothing is skipped silently: a run that cannot be read is a record with
status ``invalid`` and the reason, and a name that matches nothing is an error.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import glob
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.errors import NotFoundError, UsageError
from ops.hosts.base import call_runner
from ops.report.cache import RecordCache, stamp
from ops.services.fetch import RECORD as FETCH_RECORD
from ops.services.runs import Target
from runner import contract, report_data, status
from runner.report_data import Want

SINCE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
LIVE = ("launching", "running", "stalled", "dead", "starting", "serving", "unhealthy")


@dataclass(frozen=True)
class Selection:
    """What the user asked for: sources and filters."""

    sources: tuple[str, ...] = ()
    presets: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    since: dt.timedelta | None = None


@dataclass
class Gathered:
    runs: list[dict[str, Any]]
    origin: str  # "host NAME" or "local"
    gpus: list[dict[str, Any]] = field(default_factory=list)


def parse_since(text: str | None) -> dt.timedelta | None:
    """``2d``, ``12h``, ``30m``, ``1w`` (or an ISO date ``2025-01-31``) as an age limit."""
    if not text:
        return None
    match = SINCE_RE.fullmatch(text.strip())
    if match:
        return dt.timedelta(seconds=float(match.group(1)) * SINCE_UNITS[match.group(2)])
    try:
        start = dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise UsageError(f"--since {text!r}: use a duration such as 2d, 12h, 30m, 1w, or a "
                         "date such as 2025-01-31") from None
    return contract.utc_now() - start


def local_runs(sources: Sequence[str], artifacts: Path, want: Want,
               cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """Records of the run dirs named by paths, globs and run ids (default: every fetched run
    under ``artifacts``). With ``cache_dir`` (the project's .ops/), finished runs come from the
    record cache when their files are unchanged (table formats only)."""
    dirs = _resolve(sources, artifacts) if sources else report_data.run_dirs(artifacts, None)
    plain = not (want.series or want.volumes or want.detail or want.docs)
    caches: dict[str, RecordCache] = {}
    shared: dict[str, Any] = {"now": time.time(), "host_boot": contract.boot_id(),
                              "sessions": status.SessionCache()}
    runs = []
    for run_dir in dirs:
        if cache_dir is None or not plain:
            runs.append(report_data.collect(run_dir, want, **shared))
            continue
        path = str(run_dir)
        parent = os.path.dirname(path)
        if parent not in caches:
            caches[parent] = RecordCache.for_parent(cache_dir, Path(parent))
        cache = caches[parent]
        current = stamp(path)
        record = cache.get(run_dir.name, current)
        if record is not None:
            record["run_dir"] = path
        else:
            record = report_data.collect(run_dir, want, **shared)
            cache.put(run_dir.name, current, record)
        runs.append(record)
    for cache in caches.values():
        cache.save()
    for run in runs:
        _prefer_fetch_record(run)
    return runs


def _resolve(sources: Sequence[str], artifacts: Path) -> list[Path]:
    seen: dict[str, Path] = {}
    for source in sources:
        for path in _expand(source, artifacts):
            seen.setdefault(os.path.abspath(path), path)
    return list(seen.values())


def _expand(source: str, artifacts: Path) -> list[Path]:
    if any(ch in source for ch in "*?["):
        matches = sorted(Path(p) for p in glob.glob(source) if Path(p).is_dir())
        if not matches:
            raise NotFoundError(f"{source!r} matches no directory")
        return [d for m in matches for d in _dirs_at(m)]
    path = Path(source)
    if path.exists() or "/" in source:
        if not path.is_dir():
            raise NotFoundError(f"{source}: no such run directory")
        return _dirs_at(path)
    try:
        contract.validate_run_id(source)
    except contract.ContractError as exc:
        raise UsageError(str(exc)) from exc
    if not (artifacts / source).is_dir():
        raise NotFoundError(f"no fetched copy of {source!r} under {artifacts}",
                            hint=f"ops run fetch {source}, or report from the host: --host")
    return [artifacts / source]


def _dirs_at(path: Path) -> list[Path]:
    """A run dir itself (it has spec.json), or a directory of run dirs."""
    if (path / contract.SPEC).exists():
        return [path]
    inside = report_data.run_dirs(path, None)
    return inside if any((p / contract.SPEC).exists() for p in inside) else [path]


def _prefer_fetch_record(run: dict[str, Any]) -> None:
    """A fetched copy without a summary: the host's status at fetch time, not this machine's
    liveness check (the wrapper's pid means nothing here)."""
    if run.get("status") not in LIVE:
        return
    record = contract.read_json_or_none(Path(str(run["run_dir"])) / FETCH_RECORD)
    remote = (record or {}).get("remote_status")
    if isinstance(remote, dict) and isinstance(remote.get("status"), str):
        run["status"] = remote["status"]
        run["notes"] = [*run.get("notes", []),
                        f"status as of the fetch at {record.get('fetched_at')}"]  # type: ignore[union-attr]


def host_runs(target: Target, run_ids: Sequence[str], want: Want) -> Gathered:
    """Every run (or the named ones) on the host, in one ``runner report-data`` round trip."""
    for run_id in run_ids:
        target.run_dir(run_id)  # a usage error for a bad id, before any host work
    args = ["report-data", target.paths.outputs_root, *run_ids]
    if want.series:
        args += ["--series", str(want.series)]
    args += [flag for flag, on in (("--volumes", want.volumes), ("--detail", want.detail),
                                   ("--docs", want.docs)) if on]
    answer = call_runner(target.host, args)
    runs = answer.get("runs")
    if not isinstance(runs, list):
        raise UsageError(f"runner report-data on {target.host.name} answered without runs")
    return Gathered([_normalized(r) for r in runs if isinstance(r, dict)],
                    f"host {target.host.name}",
                    [g for g in answer.get("gpus") or [] if isinstance(g, dict)])


def missing(run: dict[str, Any]) -> bool:
    """A record for a named run id whose directory does not exist on the host."""
    return run.get("status") == "invalid" and \
        str(run.get("reason") or "").startswith("no run directory")


def _normalized(run: dict[str, Any]) -> dict[str, Any]:
    """A host's record with the containers the report indexes (an older or damaged answer
    lacks them): config and metrics as objects, notes as a list, the id as a string."""
    for key in ("config", "metrics_final", "metrics_best", "best_rules"):
        if not isinstance(run.get(key), dict):
            run[key] = {}
    if not isinstance(run.get("notes"), list):
        run["notes"] = []
    run["run_id"] = str(run.get("run_id"))
    return run


def select(runs: list[dict[str, Any]], selection: Selection,
           now: Callable[[], dt.datetime] = contract.utc_now) -> list[dict[str, Any]]:
    """Apply --preset, --status and --since. An invalid run (its preset and times unknown) is
    kept unless --status leaves invalid out: a filter never hides a broken run."""
    cutoff = now() - selection.since if selection.since else None
    kept = []
    for run in runs:
        if selection.statuses and run.get("status") not in selection.statuses:
            continue
        if selection.presets and run.get("preset") is not None and not any(
                fnmatch.fnmatchcase(str(run["preset"]), p) for p in selection.presets):
            continue
        if cutoff is not None and not _since_ok(run, cutoff):
            continue
        kept.append(run)
    return kept


def _since_ok(run: dict[str, Any], cutoff: dt.datetime) -> bool:
    stamp = run.get("started_at") or run.get("created_at")
    try:
        return contract.parse_iso(str(stamp)) >= cutoff
    except ValueError:
        return run.get("status") == "invalid"
