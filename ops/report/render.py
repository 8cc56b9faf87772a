"""Text renderings of a report: the table plus groups, the sweep comparison and the analysis,
as plain text (``table``), Markdown (``md``) or CSV (the table only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ops.report import analysis
from ops.report.table import fmt_number, render_csv, render_markdown, render_text

if TYPE_CHECKING:
    from ops.report.build import Report


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
