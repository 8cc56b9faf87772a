"""Warnings of a run: what went quietly wrong without failing it, kept in summary.json.

A `metrics_from_stdout` pattern that never turned a line into a metric, or a `best` metric
that never appeared, gives a completed run with no metrics to compare: the wrapper records
each as a warning (``warnings`` in summary.json), `runner status` carries them to
`ops run status`, and `ops validate` reports them (warnings, never violations).

summary.json is written by the wrapper but lives in a directory the workload can write, so a
reader takes its warnings through ``read_warnings`` only: typed, clipped and bounded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from runner import fields

WARNINGS_LIMIT = 32  # warnings kept in a summary, and read back from one
SUBJECT_LIMIT = 200  # characters of a pattern or metric name kept in a warning
MESSAGE_LIMIT = 1000  # a message quotes its subject with escapes: it stays within this
PATTERN_UNMATCHED = "metric-pattern-unmatched"
BEST_MISSING = "best-metric-missing"
CODES = (PATTERN_UNMATCHED, BEST_MISSING)


def stdout_patterns(spec: Mapping[str, Any]) -> list[str]:
    """The spec's `metrics_from_stdout` patterns, in order (non-strings skipped)."""
    items = fields.obj(spec, "metrics").get("from_stdout")
    return [item["pattern"] for item in (items if isinstance(items, list) else [])
            if isinstance(item, dict) and isinstance(item.get("pattern"), str)]


def best_rules(spec: Mapping[str, Any]) -> dict[str, str]:
    """The spec's `best` metrics and their direction (min or max)."""
    rules = fields.obj(spec, "metrics").get("best")
    return {str(k): v for k, v in rules.items() if v in ("min", "max")} \
        if isinstance(rules, dict) else {}


def pattern_unmatched(pattern: str) -> dict[str, str]:
    shown = fields.clip(pattern, SUBJECT_LIMIT)
    return {"code": PATTERN_UNMATCHED, "pattern": shown,
            "message": fields.clip(f"metrics_from_stdout pattern {shown!r} matched no line of "
                                   "stdout: no metric came from it", MESSAGE_LIMIT)}


def best_missing(name: str, direction: str) -> dict[str, str]:
    shown = fields.clip(name, SUBJECT_LIMIT)
    return {"code": BEST_MISSING, "metric": shown,
            "message": fields.clip(f"best metric {shown!r} ({direction}) never appeared in "
                                   "metrics.jsonl: metrics_best has no value for it",
                                   MESSAGE_LIMIT)}


def metric_warnings(spec: Mapping[str, Any], matches: Sequence[int] | None,
                    best: Mapping[str, float]) -> list[dict[str, str]]:
    """The warnings of a run that has ended: each stdout pattern with zero ``matches`` (per
    pattern, in spec order; None when nothing was counted, e.g. the workload never started)
    and each `best` metric with no value in ``best``."""
    found = []
    if matches is not None:
        found += [pattern_unmatched(pattern)
                  for pattern, count in zip(stdout_patterns(spec), matches, strict=False)
                  if count == 0]
    found += [best_missing(name, direction) for name, direction in best_rules(spec).items()
              if name not in best]
    return found[:WARNINGS_LIMIT]


def read_warnings(value: Any) -> list[dict[str, str]]:
    """Warnings read back from an untrusted summary.json: objects with a string code and
    message (others dropped), strings clipped, at most WARNINGS_LIMIT."""
    if not isinstance(value, list):
        return []
    kept = []
    for item in value[:WARNINGS_LIMIT]:
        if not isinstance(item, dict):
            continue
        code, message = fields.text(item.get("code"), 60), fields.text(item.get("message"))
        if code is None or message is None:
            continue
        entry = {"code": code, "message": message}
        for key in ("pattern", "metric"):
            subject = fields.text(item.get(key), SUBJECT_LIMIT)
            if subject is not None:
                entry[key] = subject
        kept.append(entry)
    return kept
