"""The report table: one row per run, the config keys that differ, then metrics.

Columns, in order: run id, status, preset, started, duration, git short sha (``*`` when the
tree was dirty), every flattened config key whose value differs across the selected runs, then
per metric its final value, its best (when the preset names a direction) and its confidence
interval (when the run recorded ``<metric>_ci_low``/``_ci_high``). In a cell, blank means the
run lacks that value and ``-`` means the run has no metrics at all.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ops.errors import UsageError

FIXED = ("run", "status", "preset", "started", "duration", "git")
CI_SUFFIXES = ("_ci_low", "_ci_high")
FOLD_RE = re.compile(r"fold\d+/")
DEFAULT_METRICS_MAX = 8
FIELD_SORT = {"run": "run_id", "status": "status", "preset": "preset", "started": "started_at",
              "duration": "elapsed_s"}


@dataclass(frozen=True)
class Column:
    key: str  # "run", "config:overrides.loss", "final:dsc_mean", "best:...", "ci:..."
    title: str
    kind: str = field(init=False)  # field | config | final | best | ci
    name: str = field(init=False)  # the part after the colon (the key for a field)

    def __post_init__(self) -> None:
        kind, _, name = self.key.partition(":")
        object.__setattr__(self, "kind", kind if name else "field")
        object.__setattr__(self, "name", name or self.key)


@dataclass
class Table:
    columns: list[Column]
    runs: list[dict[str, Any]]
    metrics: list[str]
    config_keys: list[str]

    def value(self, run: dict[str, Any], column: Column) -> Any:
        kind = column.kind
        if kind == "final":
            return run["metrics_final"].get(column.name)
        if kind == "config":
            return run["config"].get(column.name)
        if kind == "best":
            return run["metrics_best"].get(column.name)
        if kind == "field":
            return _field(run, column.key)
        finals = run["metrics_final"]
        low_key, high_key = ci_keys(column.name, finals)
        low, high = finals.get(low_key), finals.get(high_key)
        return [low, high] if low is not None and high is not None else None


def ci_keys(metric: str, finals: dict[str, Any]) -> tuple[str, str]:
    """The CI bounds of ``metric``: ``<m>_ci_low``/``_ci_high``, or for ``<m>_mean`` (as the
    segmentation trainer writes them) ``<m>_ci_low``/``_ci_high`` without the ``_mean``."""
    base = metric[:-5] if metric.endswith("_mean") and f"{metric}_ci_low" not in finals \
        else metric
    return f"{base}_ci_low", f"{base}_ci_high"


def _field(run: dict[str, Any], key: str) -> Any:
    if key == "run":
        return run.get("run_id")
    if key == "started":
        return run.get("started_at") or run.get("created_at")
    if key == "duration":
        return run.get("elapsed_s")
    if key == "git":
        git = run.get("git") or {}
        sha = git.get("commit")
        return f"{sha[:8]}{'*' if git.get('dirty') else ''}" if isinstance(sha, str) else None
    return run.get(key)


def metric_names(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Metrics worth a column by default: overall ones (no ``foldK/`` prefix, no CI bounds),
    in order of first appearance, at most DEFAULT_METRICS_MAX."""
    names: dict[str, None] = {}
    for run in runs:
        for name in run.get("metrics_final") or {}:
            if FOLD_RE.match(name) or name.endswith(CI_SUFFIXES):
                continue
            names.setdefault(name, None)
    return list(names)[:DEFAULT_METRICS_MAX]


def differing_keys(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Config keys whose value is not the same in every run that has a config (absent counts
    as a value; a run without config_effective.json yet, queued say, is left out)."""
    valid = [r for r in runs if r.get("status") != "invalid" and r.get("config")]
    if len(valid) < 2:
        return []
    # runs read from the record cache share one dict per distinct config: compare those once
    configs = list({id(r["config"]): r["config"] for r in valid}.values())
    keys: dict[str, None] = {}
    for config in configs:
        for key in config:
            keys.setdefault(key, None)
    return [k for k in keys if _differs(configs, k)]


def _differs(configs: Sequence[dict[str, Any]], key: str) -> bool:
    """Whether ``key`` has two values (repr: typed, 1 != True != "1") or is absent somewhere."""
    first = repr(configs[0].get(key, _MISSING))
    return any(repr(c.get(key, _MISSING)) != first for c in configs)


_MISSING = ("<absent>",)


def build_table(runs: list[dict[str, Any]], metrics: Sequence[str] = ()) -> Table:
    chosen = list(metrics) or metric_names(runs)
    config_keys = differing_keys(runs)
    columns = [Column(k, k.upper()) for k in FIXED]
    columns += [Column(f"config:{k}", k) for k in config_keys]
    for name in chosen:
        columns.append(Column(f"final:{name}", name))
        if any(name in (r.get("metrics_best") or {}) for r in runs):
            columns.append(Column(f"best:{name}", f"{name} best"))
        if any(ci_keys(name, r.get("metrics_final") or {})[0] in (r.get("metrics_final") or {})
               for r in runs):
            columns.append(Column(f"ci:{name}", f"{name} 95% CI"))
    return Table(columns, runs, chosen, config_keys)


def sort_runs(runs: list[dict[str, Any]], key: str | None,
              top: int | None) -> list[dict[str, Any]]:
    """``--sort [-]KEY`` (a metric's final value, or run/status/preset/started/duration), runs
    without the value last either way; then ``--top N``."""
    if not key:  # oldest first: a sweep reads in the order it ran
        runs = sorted(runs, key=lambda r: (str(r.get("started_at") or r.get("created_at")
                                               or "~"), str(r.get("run_id"))))
    else:
        descending = key.startswith("-")
        name = key.lstrip("-+")

        def get(run: dict[str, Any]) -> Any:
            return run.get(FIELD_SORT[name]) if name in FIELD_SORT else \
                (run.get("metrics_final") or {}).get(name)

        present = [r for r in runs if get(r) is not None]
        absent = [r for r in runs if get(r) is None]
        if not present and runs and name not in FIELD_SORT:
            raise UsageError(f"--sort {key}: no selected run has a metric {name!r}")
        runs = sorted(present, key=get, reverse=descending) + absent
    return runs[:top] if top is not None else runs


# -- cells -----------------------------------------------------------------------------------


def fmt_number(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.4f}".rstrip("0").rstrip(".")
    return f"{value:.3e}"


def fmt_duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def cell_text(table: Table, run: dict[str, Any], column: Column) -> str:
    value = table.value(run, column)
    kind = column.kind
    if kind in ("final", "best", "ci"):
        return _metric_text(run, column, value)
    if value is None:
        return ""
    if isinstance(value, str):
        return value[:16].replace("T", " ") if column.key == "started" else value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return fmt_duration(float(value)) if column.key == "duration" else \
            fmt_number(float(value))
    return json.dumps(value)


def _metric_text(run: dict[str, Any], column: Column, value: Any) -> str:
    if not run.get("metrics_final") and not run.get("metrics_best"):
        return "-"  # the run has no metrics at all
    if value is None:
        recorded = column.key.split(":", 1)[1] in (run.get("metrics_final") or {})
        return "non-finite" if column.kind == "final" and recorded else ""
    if column.kind == "ci":
        return f"[{fmt_number(value[0])}, {fmt_number(value[1])}]"
    return fmt_number(float(value))


def render_text(table: Table) -> str:
    if not table.runs:
        return "no runs"
    rows = [[cell_text(table, r, c) for c in table.columns] for r in table.runs]
    headers = [c.title for c in table.columns]
    widths = [max(len(x) for x in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(row, widths, strict=False)).rstrip()
             for row in [headers, *rows]]
    return "\n".join(lines)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(table: Table) -> str:
    headers = [_md_escape(c.title) for c in table.columns]
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if c.kind in ("field", "config") else "---:"
                            for c in table.columns) + "|"]
    lines += ["| " + " | ".join(_md_escape(cell_text(table, r, c)) for c in table.columns)
              + " |" for r in table.runs]
    return "\n".join(lines)


def render_csv(table: Table) -> str:
    """Raw values for scripts: full precision, a CI as two columns, ISO times, seconds."""
    headers: list[str] = []
    for column in table.columns:
        if column.kind == "ci":
            name = column.key.split(":", 1)[1]
            headers += [f"{name}_ci_low", f"{name}_ci_high"]
        else:
            headers.append(column.title.lower() if column.kind == "field" else column.title)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    for run in table.runs:
        row: list[Any] = []
        for column in table.columns:
            value = table.value(run, column)
            if column.kind == "ci":
                row += list(value) if value else ["", ""]
            elif isinstance(value, (list, dict)):
                row.append(json.dumps(value))
            else:
                row.append("" if value is None else value)
        writer.writerow(row)
    return buffer.getvalue()
