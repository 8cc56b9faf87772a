"""What went wrong, not only the numbers: flags per run, and changes between runs.

Per run (each flag has a kind, a severity and a sentence a user can act on):
- ``invalid``: the run dir could not be read (the reason);
- ``failed``: a recorded failure (failed, killed, timeout) or a dead run, with its message;
- ``watchdog``: aborted by the watchdog (memory limit, no progress);
- ``no_progress``: stalled now, or the heartbeat's step stopped moving;
- ``non_finite``: a metric recorded as NaN/inf, or a non-finite-loss failure;
- ``diverging`` / ``plateau``: from the loss curves in metrics.jsonl (when series were read);
- ``weak_fold``: one cross-validation fold much worse than the others.

For two or more runs, ``changes`` compares each run with the first: per metric the absolute and
percent change, and which of the two is better when the metric has a direction.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ops.report.stats import direction

FAILED = ("failed", "killed", "timeout", "dead")
FOLD_METRIC_RE = re.compile(r"fold(\d+)/(\w+_mean)$")
DIVERGE_RISE = 0.5  # rose above its best by half of what it had gained
PLATEAU_REL = 0.01  # improved under 1% over the last three quarters of the run
WEAK_FOLD_GAP = 0.15  # absolute gap to the other folds' median (scores in 0..1)
WEAK_FOLD_REL = 0.5  # relative gap for distances (lower is better)


@dataclass(frozen=True)
class Flag:
    run_id: str
    kind: str
    severity: str  # error | warning
    message: str

    def to_json(self) -> dict[str, str]:
        return {"run_id": self.run_id, "kind": self.kind, "severity": self.severity,
                "message": self.message}


def run_flags(run: dict[str, Any]) -> list[Flag]:
    rid = str(run.get("run_id"))
    status = run.get("status")
    failure = run.get("failure") or {}
    flags: list[Flag] = []
    if status == "invalid":
        return [Flag(rid, "invalid", "error", str(run.get("reason") or "unreadable run dir"))]
    if status == "aborted":
        flags.append(Flag(rid, "watchdog", "error", "stopped by the watchdog: "
                          f"{failure.get('message') or failure.get('class') or 'no reason'}"))
    elif status in FAILED:
        text = failure.get("message") or run.get("reason") or "no message"
        flags.append(Flag(rid, "failed", "error",
                          str(text) if status == "failed" else f"{status}: {text}"))
    if status == "stalled" or failure.get("class") == "no_progress":
        flags.append(Flag(rid, "no_progress", "warning",
                          str(run.get("reason") or "no step progress between heartbeats")))
    flags += _non_finite(run, rid, failure)
    flags += _curve_flags(run, rid)
    flags += _weak_folds(run, rid)
    return flags


def _non_finite(run: dict[str, Any], rid: str, failure: dict[str, Any]) -> list[Flag]:
    bad = sorted(k for k, v in (run.get("metrics_final") or {}).items() if v is None)
    out = []
    if bad:
        out.append(Flag(rid, "non_finite", "error",
                        f"non-finite final metrics: {', '.join(bad[:5])}"))
    if failure.get("class") == "non_finite_loss":
        out.append(Flag(rid, "non_finite", "error", str(failure.get("message"))))
    return out


def _curve_flags(run: dict[str, Any], rid: str) -> list[Flag]:
    out = []
    for name, points in sorted((run.get("series") or {}).items()):
        if "loss" not in name.lower() or len(points) < 5:
            continue
        values = [p[1] for p in points]
        first, last, best = values[0], values[-1], min(values)
        gained = first - best
        if last > first and last - first > 1e-12 * max(1.0, abs(first)):
            out.append(Flag(rid, "diverging", "error",
                            f"{name} ends above where it started ({last:.4g} > {first:.4g})"))
        elif gained > 0 and (last - best) > DIVERGE_RISE * gained:
            out.append(Flag(rid, "diverging", "warning",
                            f"{name} rose from its best {best:.4g} to {last:.4g}"))
        elif _plateau(values):
            start = points[len(points) // 4][0]
            out.append(Flag(rid, "plateau", "warning",
                            f"{name} barely moves after step {start:g} (under "
                            f"{PLATEAU_REL:.0%} change)"))
    return out


def _plateau(values: Sequence[float]) -> bool:
    quarter = values[len(values) // 4]
    rest = values[len(values) // 4:]
    scale = max(abs(quarter), 1e-12)
    return (max(rest) - min(rest)) / scale < PLATEAU_REL


def _weak_folds(run: dict[str, Any], rid: str) -> list[Flag]:
    by_metric: dict[str, dict[int, float]] = {}
    for key, value in (run.get("metrics_final") or {}).items():
        match = FOLD_METRIC_RE.match(key)
        if match and value is not None:
            by_metric.setdefault(match.group(2), {})[int(match.group(1))] = value
    out = []
    for metric, folds in sorted(by_metric.items()):
        if len(folds) < 2:
            continue
        sense = direction(metric)
        for fold, value in sorted(folds.items()):
            others = statistics.median(v for k, v in folds.items() if k != fold)
            worse_score = sense == "max" and others - value > WEAK_FOLD_GAP
            worse_distance = sense == "min" and value > others * (1 + WEAK_FOLD_REL) > 0
            if worse_score or worse_distance:
                out.append(Flag(rid, "weak_fold", "warning",
                                f"fold {fold} is much worse on {metric}: {value:.3g} vs "
                                f"{others:.3g} for the others"))
    return out


def changes(runs: Sequence[dict[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Each later run against the first, per metric: delta, percent, the better one."""
    valid = [r for r in runs if r.get("status") != "invalid"]
    if len(valid) < 2:
        return []
    base = valid[0]
    out = []
    for run in valid[1:]:
        for name in metrics:
            a = (base.get("metrics_final") or {}).get(name)
            b = (run.get("metrics_final") or {}).get(name)
            if a is None or b is None or a == b:
                continue
            sense = direction(name, run.get("best_rules") or base.get("best_rules"))
            better = None
            if sense and a != b:
                better = run["run_id"] if (b > a) == (sense == "max") else base["run_id"]
            out.append({"metric": name, "base": base["run_id"], "run": run["run_id"],
                        "base_value": a, "value": b, "delta": b - a,
                        "percent": (b - a) / abs(a) * 100 if a else None, "better": better})
    return out


def render_flags(flags: Sequence[Flag]) -> str:
    if not flags:
        return "analysis: nothing unusual"
    lines = ["analysis:"]
    lines += [f"  {'!!' if f.severity == 'error' else ' !'} {f.run_id}: {f.kind}: {f.message}"
              for f in flags]
    return "\n".join(lines)


def render_changes(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return ""
    lines = [f"changes against {rows[0]['base']}:"]
    for row in rows:
        pct = "" if row["percent"] is None else f" ({row['percent']:+.1f}%)"
        mark = f"  better: {row['better']}" if row["better"] else ""
        lines.append(f"  {row['run']}  {row['metric']}: {row['base_value']:.4g} -> "
                     f"{row['value']:.4g}  {row['delta']:+.4g}{pct}{mark}")
    return "\n".join(lines)
