"""Housekeeping: remove named runs (`ops run rm`) and old ones (`ops run gc`).

Two places hold runs: a host's outputs root (asked through the runner's `housekeeping` verb,
one round trip, so a remote host works over the same transport as everything else) and the
local artifacts dir of fetched copies (the same runner code, run here). The runner decides what
is a run dir and what is live; this side plans (a dry run), lets the user confirm, then removes
exactly the run ids that were listed, which the runner checks again.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.errors import ConflictError, HostError, NotFoundError, OpsError, UsageError
from ops.hosts.base import call_runner
from ops.services import resolve
from ops.services import runs as runs_service
from ops.services.runs import Target
from runner import housekeeping as runner_housekeeping
from runner.verbs import VerbError

_AGE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw])\s*")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_ERRORS: dict[str, type[OpsError]] = {"usage": UsageError, "not_found": NotFoundError,
                                      "conflict": ConflictError, "failed": HostError}
SCOPES = ("all", "host", "fetched")


def parse_age(text: str) -> float:
    """Seconds in an age such as 30d, 12h, 90m, 2w or 45s."""
    match = _AGE_RE.fullmatch(text)
    if not match:
        raise UsageError(f"--older-than {text}: expected a number and a unit, e.g. 30d, 12h, "
                         "90m, 2w")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


@dataclass(frozen=True)
class Place:
    """Where runs are removed: a host's outputs root, or the local fetched copies."""

    label: str
    root: str
    target: Target | None = None  # None: the local artifacts dir (copies)


@dataclass
class Outcome:
    place: Place
    dry_run: bool
    runs: list[dict[str, Any]] = field(default_factory=list)  # removed, or would be
    kept: list[dict[str, Any]] = field(default_factory=list)
    sweeps_removed: list[str] = field(default_factory=list)  # records left with no member

    def to_json(self) -> dict[str, Any]:
        return {"where": self.place.label, "root": self.place.root, "dry_run": self.dry_run,
                "runs": self.runs, "kept": self.kept, "sweeps_removed": self.sweeps_removed}

    @property
    def run_ids(self) -> list[str]:
        return [str(r["run_id"]) for r in self.runs]


def places(target: Target | None, artifacts_root: Path, scope: str) -> list[Place]:
    found = []
    if scope in ("all", "host") and target is not None:
        found.append(Place(f"host {target.host.name}", target.paths.outputs_root, target))
    if scope in ("all", "fetched"):
        found.append(Place("fetched copies", str(artifacts_root)))
    return found


def _ask(place: Place, args: list[str]) -> dict[str, Any]:
    if place.target is not None:
        return call_runner(place.target.host, ["housekeeping", place.root, *args])
    parser = argparse.ArgumentParser(prog="housekeeping", add_help=False)
    runner_housekeeping.add_verb(parser.add_subparsers(dest="verb"))
    namespace = parser.parse_args(["housekeeping", place.root, *args, "--copies"])
    try:
        return runner_housekeeping.answer(namespace)
    except VerbError as exc:
        raise _ERRORS.get(exc.kind, OpsError)(exc.message) from None
    except OSError as exc:
        raise OpsError(f"{place.root}: {exc}") from None


def _outcome(place: Place, answer: dict[str, Any], dry_run: bool) -> Outcome:
    listed = answer.get("would_remove" if dry_run else "removed")
    kept = answer.get("kept")
    if not isinstance(listed, list) or not isinstance(kept, list):
        raise HostError(f"the runner on {place.label} answered housekeeping without a list")
    good = [r for r in listed if isinstance(r, dict) and isinstance(r.get("run_id"), str)]
    sweeps = answer.get("sweeps_removed")
    return Outcome(place, dry_run, good, [k for k in kept if isinstance(k, dict)],
                   [str(s)[:128] for s in sweeps] if isinstance(sweeps, list) else [])


def resolve_ids(place: Place, texts: Sequence[str]) -> list[str]:
    """The run ids ``texts`` name in ``place``: an id, a unique prefix, @last or -N, against one
    listing of the place. Anything with a '/' or a leading '.' is refused first."""
    for text in texts:
        if "/" in text or text.startswith("."):
            raise UsageError(f"{text!r} is not a run id (a run id has no '/' and does not "
                             "start with '.')")
    if place.target is not None:
        found = resolve.newest_first(runs_service.list_runs(place.target))
    else:
        found = resolve.newest_first(resolve.local_runs(Path(place.root)))
    ids = resolve.usable_ids(found)
    return [resolve.match(text, ids) or text for text in texts]


def remove_runs(place: Place, run_ids: Sequence[str], *, dry_run: bool) -> Outcome:
    """Remove (or, dry, check and list) exactly these runs; one refusal removes none."""
    if not run_ids:
        return Outcome(place, dry_run)
    args = ["--rm", *run_ids, *(["--dry-run"] if dry_run else [])]
    return _outcome(place, _ask(place, args), dry_run)


def collect(place: Place, older_than_s: float, keep_best: int) -> Outcome:
    """The runs of ``place`` that ended more than ``older_than_s`` ago, less the best
    ``keep_best`` of each preset; nothing is removed (remove_runs does that)."""
    args = ["--older-than-s", str(older_than_s), "--keep-best", str(keep_best), "--dry-run"]
    return _outcome(place, _ask(place, args), True)


def size_text(n: int) -> str:
    """Bytes for people: 512 B, 3.4 KiB, 12.0 MiB, 1.5 GiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def outcome_text(outcome: Outcome) -> str:
    verb = "would remove" if outcome.dry_run else "removed"
    total = sum(int(r.get("bytes") or 0) for r in outcome.runs)
    head = (f"{outcome.place.label} ({outcome.place.root}): {verb} {len(outcome.runs)} "
            f"run(s), {size_text(total)}")
    lines = [head]
    lines += [f"  {r['run_id']}  {r.get('status')}  ended {r.get('ended_at') or '?'}  "
              f"{size_text(int(r.get('bytes') or 0))}" for r in outcome.runs]
    lines += [f"  kept {k.get('run_id')}: {k.get('reason')}" for k in outcome.kept]
    if outcome.sweeps_removed:
        lines.append(f"  and the records of {len(outcome.sweeps_removed)} sweep(s) left "
                     "without members")
    return "\n".join(lines)
