"""`ops report`: gather runs, select, sort, tabulate, analyse, compare; one Report value.

The command calls ``make_report`` and then one renderer (``render``); nothing here prints.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.errors import UsageError
from ops.report import analysis, compare, sources
from ops.report.table import Table, build_table, sort_runs
from ops.services.runs import Target
from runner import contract
from runner.report_data import Want

FORMATS = ("table", "md", "csv", "json", "html")
SERIES_POINTS = 200
REPORT_SCHEMA = "ops.report/1"


@dataclass(frozen=True)
class ReportOptions:
    selection: sources.Selection = field(default_factory=sources.Selection)
    group_by: str | None = None
    reference: str | None = None
    metrics: tuple[str, ...] = ()
    sort: str | None = None
    top: int | None = None
    fmt: str = "table"

    def want(self) -> Want:
        """Series and per-volume rows cost a read of metrics.jsonl and out/ per run: only the
        formats that show them (html, json) or a comparison (--group-by) ask for them."""
        rich = self.fmt in ("html", "json")
        return Want(series=SERIES_POINTS if rich else 0,
                    volumes=rich or self.group_by is not None)


@dataclass
class Report:
    table: Table
    origin: str
    generated_at: str
    flags: list[analysis.Flag] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    comparison: dict[str, Any] | None = None
    changes: list[dict[str, Any]] = field(default_factory=list)
    options: ReportOptions = field(default_factory=ReportOptions)

    def to_json(self) -> dict[str, Any]:
        return {"schema": REPORT_SCHEMA, "generated_at": self.generated_at,
                "origin": self.origin, "group_by": self.options.group_by,
                "columns": [{"key": c.key, "title": c.title, "kind": c.kind}
                            for c in self.table.columns],
                "metrics": self.table.metrics, "config_keys": self.table.config_keys,
                "runs": [_json_run(r) for r in self.table.runs],
                "flags": [f.to_json() for f in self.flags], "groups": self.groups,
                "comparison": self.comparison, "changes": self.changes}


def _json_run(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k != "docs"}


def make_report(options: ReportOptions, *, artifacts: Path,
                open_host: Callable[[], Target] | None,
                cache_dir: Path | None = None) -> Report:
    """Runs from the host when ``open_host`` is given (``--host``), else local run dirs
    (finished ones from the record cache under ``cache_dir`` when given)."""
    if options.fmt not in FORMATS:
        raise UsageError(f"--format {options.fmt}: use one of {', '.join(FORMATS)}")
    want = options.want()
    if open_host is not None:
        gathered = sources.host_runs(open_host(), options.selection.sources, want)
    else:
        gathered = sources.Gathered(sources.local_runs(options.selection.sources, artifacts,
                                                       want, cache_dir), f"local ({artifacts})"
                                    if not options.selection.sources else "local paths")
    runs = sources.select(gathered.runs, options.selection)
    runs = sort_runs(runs, options.sort, options.top)
    return assemble(runs, options, gathered.origin)


def assemble(runs: list[dict[str, Any]], options: ReportOptions, origin: str) -> Report:
    table = build_table(runs, options.metrics)
    report = Report(table, origin, contract.iso(), options=options)
    report.flags = [flag for run in runs for flag in analysis.run_flags(run)]
    report.changes = analysis.changes(runs, table.metrics) if len(runs) <= 12 else []
    if options.group_by:
        report.groups = compare.group_runs(runs, options.group_by, table.metrics)
    key = options.group_by or ("run" if options.fmt in ("html", "json") else None)
    if key:  # html and json compare run by run unless told how to group
        report.comparison = compare.volume_comparison(runs, key, options.reference)
    return report


def render(report: Report) -> str:
    """The report in its format (text for table/md/csv/json/html)."""
    from ops.report import render as text

    fmt = report.options.fmt
    if fmt == "json":
        return json.dumps(report.to_json(), indent=1, allow_nan=False)
    if fmt == "html":
        from ops.report.html import render_html

        return render_html(report)
    return text.render_report(report, fmt)
