"""Which runs a command means: the run table's order and filters, and the short ways to name
a run (a unique prefix, `@last`, `-1`, `-2`, ...).

Run ids come back from the host, which is untrusted: an id is only ever used as a name after
it matched the run id pattern (one path component, no `/`, never `.` or `..`).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ops.errors import NotFoundError, UsageError
from ops.services import runs as runs_service
from ops.services.runs import Target
from runner import contract

# @last is -1, the newest run; -N the N-th newest (the command line spells -N as @N, so that
# click does not take it for an option: see ops.cli.run_args)
RECENT_RE = re.compile(r"@last|[-@]([1-9][0-9]{0,5})")
CANDIDATES_SHOWN = 10
# a whole id as ops makes them (<preset>-<UTC time>-<4 hex>): taken as typed, no listing
FULL_ID_RE = re.compile(r".+-[0-9]{8}T[0-9]{6}-[0-9a-f]{4}")


class AmbiguousRunError(UsageError):
    """A prefix that names more than one run."""


class Listing(NamedTuple):
    """The runs a table shows, newest first, and where they were looked for."""

    runs: list[dict[str, Any]]
    where: str
    total: int  # runs there before the filters

    def empty_text(self) -> str:
        if self.total == 0:
            return f"no runs in {self.where}"
        return f"no runs match the filters ({self.total} in {self.where})"


class TableFilter(NamedTuple):
    """--status, --preset, --since and -n of the run table."""

    statuses: tuple[str, ...] = ()
    presets: tuple[str, ...] = ()
    since: str | None = None
    limit: int | None = None

    def apply(self, found: Sequence[dict[str, Any]],
              now: Callable[[], dt.datetime] = contract.utc_now) -> list[dict[str, Any]]:
        # the report's selection rules; imported here, as status needs no report reader
        from ops.report.sources import Selection, parse_since, select

        chosen = Selection(presets=self.presets, statuses=self.statuses,
                           since=parse_since(self.since))
        kept = select(newest_first(found), chosen, now)
        return kept if self.limit is None else kept[: self.limit]


def where(target: Target) -> str:
    return f"{target.paths.outputs_root} on {target.host.name}"


def listing(target: Target, chosen: TableFilter) -> Listing:
    """The host's runs (one round trip), newest first, filtered."""
    found = runs_service.list_runs(target)
    return Listing(chosen.apply(found), where(target), len(found))


def _when(run: dict[str, Any]) -> str:
    """When the run was submitted (spec.json's created_at, the same clock for every run of a
    host); '' when unknown, which sorts last."""
    stamp = run.get("created_at") or run.get("started_at")
    return stamp if isinstance(stamp, str) else ""


def newest_first(found: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Newest run first; a sweep's members stay together, in their sweep order, placed by the
    sweep's submit time. Runs of unknown time (invalid ones) come last, by id."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in found:
        sweep = run.get("sweep_id")
        key = f"sweep:{sweep}" if isinstance(sweep, str) and sweep else f"run:{run['run_id']}"
        groups.setdefault(key, []).append(run)
    for members in groups.values():
        members.sort(key=_sweep_position)
    ordered = sorted(groups.values(), key=lambda g: (min(_when(r) for r in g),
                                                     str(g[0]["run_id"])), reverse=True)
    dated = [g for g in ordered if all(_when(r) for r in g)]
    undated = sorted((g for g in ordered if not all(_when(r) for r in g)),
                     key=lambda g: str(g[0]["run_id"]))
    return [run for group in (*dated, *undated) for run in group]


def _sweep_position(run: dict[str, Any]) -> tuple[int, str]:
    index = run.get("sweep_index")
    return (index if type(index) is int else 1 << 30, str(run["run_id"]))


def usable_ids(found: Iterable[dict[str, Any]]) -> list[str]:
    """The run ids of a listing that are safe to use as names, in the listing's order."""
    return [r["run_id"] for r in found
            if isinstance(r.get("run_id"), str) and contract.RUN_ID_RE.fullmatch(r["run_id"])]


def match(text: str, ids_newest_first: Sequence[str]) -> str | None:
    """The run ``text`` names among ``ids_newest_first``: `@last` or `-N` (the N-th newest),
    the id itself, or the only id it is a prefix of. None when nothing matches; an ambiguous
    prefix raises AmbiguousRunError with the candidates."""
    recent = RECENT_RE.fullmatch(text)
    if recent:
        nth = int(recent.group(1) or 1)
        if nth > len(ids_newest_first):
            raise NotFoundError(f"{spelled(text)}: there are only {len(ids_newest_first)} "
                                "runs")
        return ids_newest_first[nth - 1]
    _check_id(text)
    if text in ids_newest_first:
        return text
    candidates = [i for i in ids_newest_first if i.startswith(text)]
    if len(candidates) > 1:
        shown = candidates[:CANDIDATES_SHOWN]
        more = len(candidates) - len(shown)
        raise AmbiguousRunError(
            f"{text!r} is the start of {len(candidates)} runs", details=shown +
            ([f"... and {more} more"] if more else []),
            hint="type more of the id (or @last for the newest run)")
    return candidates[0] if candidates else None


def spelled(text: str) -> str:
    """``text`` as the user typed it: the command line passes -N on as @N."""
    return f"-{text[1:]}" if text[:1] == "@" and text[1:].isdigit() else text


def _check_id(text: str) -> None:
    try:
        contract.validate_run_id(text)
    except contract.ContractError as exc:
        raise UsageError(str(exc)) from exc


def resolve(target: Target, text: str) -> str:
    """The run id ``text`` names on the host (one round trip, none for a whole id as ops
    makes them). Text that matches no run is returned as is, so the command reports the
    missing run in its own words."""
    if not RECENT_RE.fullmatch(text):
        _check_id(text)
        if FULL_ID_RE.fullmatch(text):
            return text  # pasted whole: the command's own round trip finds it or says so
    ids = usable_ids(newest_first(runs_service.list_runs(target)))
    if not ids and RECENT_RE.fullmatch(text):
        raise NotFoundError(f"{spelled(text)}: no runs in {where(target)}")
    return match(text, ids) or text


def names_a_copy(name: str, artifacts: Path) -> bool:
    """Whether ``name`` is a path to a run dir or the id of a fetched copy (not a host's run)."""
    return "/" in name or Path(name).is_dir() or (
        contract.RUN_ID_RE.fullmatch(name) is not None and (artifacts / name).is_dir())


def local_runs(root: Path) -> list[dict[str, Any]]:
    """The run dirs directly under ``root`` on this machine with what ordering needs from
    their spec.json (read as untrusted: a bad one only loses its place in the order)."""
    try:
        with os.scandir(root) as entries:
            names = [e.name for e in entries if e.is_dir(follow_symlinks=False)
                     and contract.RUN_ID_RE.fullmatch(e.name)]
    except OSError:
        return []
    found = []
    for name in names:
        spec = contract.read_json_or_none(root / name / contract.SPEC)
        spec = spec if isinstance(spec, dict) else {}
        found.append({"run_id": name, **{k: spec.get(k) for k in ("created_at", "sweep_id",
                                                                  "sweep_index")}})
    return found


def resolve_local(roots: Sequence[Path], text: str) -> str:
    """The run id ``text`` names among the run dirs under ``roots`` (the first root with a
    match wins); ``text`` itself when none matches."""
    if not RECENT_RE.fullmatch(text):
        _check_id(text)
    for root in roots:
        ids = usable_ids(newest_first(local_runs(root)))
        found = match(text, ids) if ids else None
        if found is not None:
            return found
    if RECENT_RE.fullmatch(text):
        raise NotFoundError(f"{spelled(text)}: no runs in {' or '.join(map(str, roots))}")
    return text


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds any file of the run directory contract (a damaged run dir is
    still one, and validate lists what it lacks)."""
    for name in (contract.SPEC, contract.METADATA, contract.SUMMARY, contract.HEARTBEAT,
                 contract.EXIT, contract.STDOUT_LOG):
        try:
            (path / name).lstat()
        except OSError:
            continue
        return True
    return False


def local_run_dir(text: str, roots: Callable[[], Sequence[Path]]) -> Path:
    """The run dir on this machine that ``text`` names: a path (which must be a run dir, not
    a folder of them), else a run id, prefix, @last or -N under ``roots()`` (the local
    outputs root, then the fetched copies)."""
    path = Path(text)
    if "/" in text or text in (".", "..") or path.exists():
        if path.is_dir() and not is_run_dir(path):
            inside = [n for n in usable_ids(local_runs(path)) if is_run_dir(path / n)]
            raise UsageError(f"{text}: not a run directory (it has no spec.json, summary.json "
                             "or other file of a run)",
                             hint=f"it holds {len(inside)} run directories: validate one, "
                                  f"e.g. ops validate {path / inside[0]}" if inside else None)
        return path
    searched = roots()
    found = resolve_local(searched, text)
    for root in searched:
        if contract.RUN_ID_RE.fullmatch(found) and (root / found).is_dir():
            return root / found
    raise NotFoundError(f"no run {text!r} in {' or '.join(map(str, searched))}",
                        hint="give the run directory's path, or `ops run fetch RUN` first")
