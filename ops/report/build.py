"""`ops report`: gather runs, select, sort, tabulate, analyse, compare (one Report value), and
render it as text, Markdown, CSV or JSON (HTML: ops/report/html.py).

The command calls ``make_report`` and then one renderer (``render``); nothing here prints.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.errors import NotFoundError, UsageError
from ops.report import analysis, compare, sources
from ops.report.table import (
    Table,
    build_table,
    fmt_number,
    render_csv,
    render_markdown,
    render_text,
    sort_runs,
)
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
        missing = [r["run_id"] for r in gathered.runs if sources.missing(r)]
        if missing:
            raise NotFoundError(f"no run {missing[0]!r} on {gathered.origin[5:]}",
                                details=[f"also missing: {m}" for m in missing[1:5]])
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
    fmt = report.options.fmt
    if fmt == "json":
        return json.dumps(report.to_json(), indent=1, allow_nan=False)
    if fmt == "html":
        from ops.report.html import render_html

        return render_html(report)
    return render_report(report, fmt)


# -- text formats: the table, then groups, the comparison and the analysis --------------------


def _interval(cell: dict[str, Any] | None) -> str:
    if not cell:
        return ""
    mean = fmt_number(cell["mean"])
    if cell.get("ci_low") is None:
        return f"{mean} (n={cell['n']})"
    return f"{mean} [{fmt_number(cell['ci_low'])}, {fmt_number(cell['ci_high'])}]"


def _p(value: float) -> str:
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def comparison_rows(comparison: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Rows of the loss x metric table: per group the metrics' mean [CI], then for each
    non-reference group a line of paired tests (delta, p, dz) against the reference."""
    metrics: Sequence[str] = comparison["metrics"]
    headers = [comparison["group_by"], "volumes", *metrics]
    tests = {(t["group"], t["metric"]): t for t in comparison["tests"]}
    rows = []
    for group in comparison["groups"]:
        rows.append([group["name"], str(group["n_volumes"]),
                     *(_interval(group["metrics"].get(m)) for m in metrics)])
        if group["name"] == comparison["reference"]:
            rows[-1][0] += " (ref)"
            continue
        cells = []
        for metric in metrics:
            test = tests.get((group["name"], metric))
            if test is None:
                cells.append("")
                continue
            mark = " *" if test["better"] == group["name"] else ""
            dz = "" if test["effect_dz"] is None else f" dz={test['effect_dz']:+.2f}"
            cells.append(f"d={test['mean_diff']:+.3g} p={_p(test['p_value'])}{dz}{mark}")
        rows.append(["  vs ref", "", *cells])
    return headers, rows


def _plain(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(x) for x in col) for col in zip(headers, *rows, strict=False)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(row, widths, strict=False)).rstrip()
                     for row in [headers, *rows])


def _md(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(x.replace("|", "\\|") for x in row) + " |" for row in rows]
    return "\n".join(lines)


def groups_text(groups: Sequence[dict[str, Any]], metrics: Sequence[str], key: str,
                markdown: bool) -> str:
    headers = [key, "runs", *metrics]
    rows = [[g["name"], str(g["n_runs"]), *(_interval(g["metrics"].get(m)) for m in metrics)]
            for g in groups]
    title = f"groups by {key} (mean over runs [95% bootstrap CI])"
    return f"{title}\n" + (_md(headers, rows) if markdown else _plain(headers, rows))


def comparison_text(comparison: dict[str, Any] | None, markdown: bool) -> str:
    if comparison is None:
        return "comparison: no per-volume metrics (out/per_volume.json) in the selected runs"
    headers, rows = comparison_rows(comparison)
    lines = [f"per-volume comparison by {comparison['group_by']} (mean [95% CI] over "
             f"validation volumes; paired sign-flip test vs {comparison['reference']}; "
             "d: mean difference, * better)",
             _md(headers, rows) if markdown else _plain(headers, rows)]
    lines += [f"not paired: {r['group']}: {r['reason']}" for r in comparison["refused"]]
    return "\n".join(lines)


def render_report(report: Report, fmt: str) -> str:
    if fmt == "csv":
        return render_csv(report.table).rstrip("\n")
    markdown = fmt == "md"
    parts = [render_markdown(report.table) if markdown else render_text(report.table)]
    if report.options.group_by:
        parts.append(groups_text(report.groups, report.table.metrics, report.options.group_by,
                                 markdown))
        parts.append(comparison_text(report.comparison, markdown))
    parts.append(analysis.render_changes(report.changes))
    parts.append(analysis.render_flags(report.flags))
    return "\n\n".join(p for p in parts if p)
