"""Housekeeping under one root of run dirs: `rm` of named runs, `gc` of old ones.

The root is a host's outputs root (a run's liveness comes from its status and the process
table: a live run is never removed) or, with ``copies``, a local artifacts dir of fetched runs
(copies have no process to ask). Only a direct child of the root that is a real directory (not
a symbolic link), whose name is a run id and which holds a regular spec.json, is a run dir;
nothing else is removed, and nothing is followed out of the root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner import contract, fields, reaper, redact, status, sweep
from runner.verbs import VerbError

REMOVABLE = (*contract.RECORDED_STATUSES, "dead", "invalid")  # what `rm` takes when named
COLLECTABLE = (*contract.RECORDED_STATUSES, "dead")  # gc never guesses about an invalid run
SIZE_WALK_LIMIT = 100_000  # entries counted for a run dir's size


@dataclass
class RunEntry:
    run_id: str
    path: Path
    status: str
    ended: float | None
    headline: tuple[str, str, str, float] | None = None  # preset, metric, min|max, value

    def to_json(self, reason: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {"run_id": self.run_id, "status": self.status,
                               "ended_at": contract.iso(self.ended) if self.ended else None,
                               "bytes": dir_bytes(self.path)}
        if reason:
            doc["reason"] = reason
        return doc


def add_verb(sub: Any) -> None:
    p = sub.add_parser("housekeeping", help="remove named runs (--rm) or old ones (gc) under ROOT")
    p.add_argument("root", type=Path)
    p.add_argument("--rm", dest="run_ids", nargs="+", default=None, metavar="RUN_ID")
    p.add_argument("--older-than-s", type=float, default=None)
    p.add_argument("--keep-best", type=int, default=0)
    p.add_argument("--dry-run", action="store_true", help="list what would go; remove nothing")
    p.add_argument("--copies", action="store_true",
                   help="ROOT holds fetched copies (no liveness to ask)")


def answer(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.root)
    if args.run_ids is None and (args.older_than_s is None or args.older_than_s < 0):
        raise VerbError("usage", "housekeeping needs --rm RUN_ID... or --older-than-s SECONDS")
    if args.keep_best < 0:
        raise VerbError("usage", "--keep-best must be 0 or more")
    if args.run_ids is not None:
        chosen = named(root, args.run_ids, copies=args.copies)
        kept: list[dict[str, Any]] = []
    else:
        chosen, kept = collect(root, args.older_than_s, args.keep_best, copies=args.copies)
    listed = [entry.to_json() for entry in chosen]
    sweeps: list[str] = []
    if not args.dry_run:
        remove_all(root, chosen)
        sweeps = tidy_sweeps(root) if chosen else []
    return {"root": str(root), "dry_run": bool(args.dry_run),
            ("would_remove" if args.dry_run else "removed"): listed, "kept": kept,
            "sweeps_removed": sweeps}


def run_dir_problem(root: Path, run_id: str) -> tuple[str, str] | None:
    """(error kind, reason) when ROOT/RUN_ID is not a run dir that may be removed, else None."""
    try:
        contract.validate_run_id(run_id)
    except contract.ContractError as exc:
        return "usage", str(exc)
    path = root / run_id
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "not_found", f"no run {run_id!r} under {root}"
    except OSError as exc:
        return "failed", f"{run_id}: {exc.strerror}"
    reason = _kind_problem(path, mode)
    return ("usage", f"{run_id} {reason} (left alone)") if reason else None


def _kind_problem(path: Path, mode: int) -> str | None:
    if stat.S_ISLNK(mode):
        return "is a symbolic link, not a run dir"
    if not stat.S_ISDIR(mode):
        return "is not a directory, so not a run dir"
    try:
        spec_mode = os.lstat(path / contract.SPEC).st_mode
    except OSError:
        spec_mode = 0
    return None if stat.S_ISREG(spec_mode) else "is not a run dir: it has no spec.json file"


def entry_of(root: Path, run_id: str, *, copies: bool, live: dict[str, int],
             sessions: status.SessionCache | None = None) -> RunEntry:
    path = root / run_id
    summary = contract.read_json_or_none(path / contract.SUMMARY)
    if copies:
        recorded = summary.get("status") if summary else None
        state = recorded if recorded in contract.RECORDED_STATUSES else "unfinished copy"
    else:
        state = str(status.safe_status(path, sessions=sessions).get("status") or "invalid")
        if os.path.realpath(path) in live:
            state = "running"  # the process table names its wrapper, whatever the files say
    return RunEntry(run_id, path, state, _ended(path, summary, copies=copies),
                    _headline(path, summary))


def named(root: Path, run_ids: list[str], *, copies: bool) -> list[RunEntry]:
    """The named runs, all checked before any is removed: one refusal refuses them all."""
    refusals: list[tuple[str, str]] = []
    entries: list[RunEntry] = []
    live = {} if copies else reaper.live_wrappers()
    for run_id in dict.fromkeys(run_ids):
        problem = run_dir_problem(root, run_id)
        if problem is not None:
            refusals.append(problem)
            continue
        entry = entry_of(root, run_id, copies=copies, live=live)
        if not copies and entry.status not in REMOVABLE:
            refusals.append(("conflict", f"{run_id} is {entry.status}: a live run is not "
                                         f"removed (cancel it first: ops run cancel {run_id})"))
        entries.append(entry)
    if refusals:
        kinds = [kind for kind, _ in refusals]
        kind = next(k for k in ("usage", "not_found", "conflict", "failed") if k in kinds)
        raise VerbError(kind, "nothing was removed: " + "; ".join(r for _, r in refusals))
    return entries


def collect(root: Path, older_than_s: float, keep_best: int, *,
            copies: bool) -> tuple[list[RunEntry], list[dict[str, Any]]]:
    """Runs that ended more than ``older_than_s`` ago, less the ``keep_best`` best of each
    preset (by its first `best` metric); (to remove, kept with the reason)."""
    if not root.is_dir() or root.is_symlink():
        return [], []
    live = {} if copies else reaper.live_wrappers()
    sessions = None if copies else status.SessionCache()
    entries = [entry_of(root, child.name, copies=copies, live=live, sessions=sessions)
               for child in sorted(root.iterdir())
               if run_dir_problem(root, child.name) is None]
    best = _best_ids(entries, keep_best)
    now = time.time()
    chosen: list[RunEntry] = []
    kept: list[dict[str, Any]] = []
    for entry in entries:
        if entry.ended is None or now - entry.ended < older_than_s:
            continue
        if not copies and entry.status not in COLLECTABLE:
            continue
        if entry.run_id in best:
            kept.append(entry.to_json(best[entry.run_id]))
        else:
            chosen.append(entry)
    return chosen, kept


def _best_ids(entries: list[RunEntry], keep: int) -> dict[str, str]:
    """Run id -> why it is kept, for the ``keep`` best runs of every (preset, metric)."""
    groups: dict[tuple[str, str, str], list[RunEntry]] = {}
    for entry in entries:
        if entry.headline is not None:
            groups.setdefault(entry.headline[:3], []).append(entry)
    found: dict[str, str] = {}
    for (preset, metric, direction), members in groups.items():
        ranked = sorted(members, key=lambda e: e.headline[3] if e.headline else 0.0,
                        reverse=direction == "max")
        for place, entry in enumerate(ranked[:keep], start=1):
            found[entry.run_id] = f"best {place} of {preset} by {metric} ({direction})"
    return found


def _headline(path: Path, summary: dict[str, Any] | None) -> tuple[str, str, str, float] | None:
    """(preset, metric, direction, best value) of a run that recorded its preset's first
    `best` metric."""
    spec = contract.read_json_or_none(path / contract.SPEC)
    if spec is None or summary is None:
        return None
    rules = fields.obj(spec, "metrics").get("best")
    if not isinstance(rules, dict) or not rules:
        return None
    metric, direction = next(iter(rules.items()))
    value = fields.number(fields.obj(summary, "metrics_best").get(metric))
    preset = fields.text(spec.get("preset"), 128)
    if direction not in ("min", "max") or value is None or not preset:
        return None
    return preset, str(metric), str(direction), float(value)


def _ended(path: Path, summary: dict[str, Any] | None, *, copies: bool) -> float | None:
    """When the run ended (its summary), else when its dir last changed (a dead run, a copy)."""
    text = fields.text(summary.get("ended_at"), 40) if summary else None
    if text:
        try:
            return contract.parse_iso(text).timestamp()
        except ValueError:
            pass
    try:
        marker = path / ".ops" / "fetch.json" if copies else path
        return os.lstat(marker if os.path.lexists(marker) else path).st_mtime
    except OSError:
        return None


def remove_all(root: Path, entries: list[RunEntry]) -> None:
    """Remove each entry in turn; an OS error stops there and says what was done."""
    done: list[str] = []
    for entry in entries:
        try:
            remove(root, entry)
        except OSError as exc:
            raise VerbError("failed", f"{entry.run_id} could not be removed: "
                                      f"{exc.strerror or exc}; removed before it: "
                                      f"{', '.join(done) or 'none'}") from exc
        done.append(entry.run_id)


def remove(root: Path, entry: RunEntry) -> None:
    """Delete one checked run dir (never through a link) and its leftover secret store."""
    if run_dir_problem(root, entry.run_id) is not None:
        return  # it changed since it was checked: leave it
    shutil.rmtree(entry.path)  # fd-based on Linux: links inside are unlinked, not followed
    store = root / redact.STORE_DIR / f"{entry.run_id}.json"
    if store.is_file() and not store.is_symlink():
        store.unlink()


def tidy_sweeps(root: Path) -> list[str]:
    """Delete the records of sweeps none of whose members is left (the sweep file, its
    driver record and log; regular files only); the sweep ids removed."""
    folder = root / sweep.SWEEPS_DIR
    if folder.is_symlink() or not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.glob("*.json")):
        sweep_id = path.name[:-len(".json")]
        if sweep_id.endswith(".driver") or not contract.RUN_ID_RE.fullmatch(sweep_id):
            continue
        members = (contract.read_json_or_none(path) or {}).get("members")
        if not isinstance(members, list) or any(
                isinstance(m, str) and contract.RUN_ID_RE.fullmatch(m)
                and os.path.lexists(root / m) for m in members):
            continue
        for leftover in (path, sweep.driver_file(root, sweep_id),
                         folder / f"{sweep_id}.driver.log"):
            if leftover.is_file() and not leftover.is_symlink():
                leftover.unlink()
        removed.append(sweep_id)
    return removed


def dir_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path``, links not followed, bounded."""
    total = seen = 0
    for base, dirs, files in os.walk(path, followlinks=False):
        for name in (*dirs, *files):
            seen += 1
            if seen > SIZE_WALK_LIMIT:
                return total
            try:
                info = os.lstat(os.path.join(base, name))
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total
