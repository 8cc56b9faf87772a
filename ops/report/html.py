"""`ops report --format html`: one self-contained page (no network when viewed).

The figures are drawn by matplotlib (the ``report`` extra) into inline SVG, with text kept as
text; the page has no script, no external stylesheet, font or image. Sections: the table,
the analysis flags and changes, the sweep comparison, learning curves per run (from
metrics.jsonl), per-fold metrics and per-volume distributions.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ops.errors import UsageError
from ops.report.table import Table, cell_text

if TYPE_CHECKING:
    from ops.report.build import Report

MAX_CURVE_RUNS = 40
MAX_LINES = 8
FOLD_KEY_RE = re.compile(r"fold(\d+)/(\w+)_mean$")
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.invalid td{background:#fde8e8} .error{color:#b00020} .warning{color:#8a5a00}
.better{font-weight:bold;color:#116611} .figs{display:flex;flex-wrap:wrap;gap:12px}
.fig{border:1px solid #eee;padding:4px} .muted{color:#777}
"""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UsageError("--format html needs matplotlib, which is not installed",
                         hint="pip install 'pod-ops[report]'") from exc
    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "figure.dpi": 96})
    return plt


def _svg(plt: Any, fig: Any) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: inline SVG


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def table_html(table: Table) -> str:
    head = "".join(f"<th>{_esc(c.title)}</th>" for c in table.columns)
    rows = []
    for run in table.runs:
        cells = "".join(
            f"<td class='{'num' if c.kind in ('final', 'best', 'ci') else ''}'>"
            f"{_esc(cell_text(table, run, c))}</td>" for c in table.columns)
        css = " class='invalid'" if run.get("status") == "invalid" else ""
        rows.append(f"<tr{css}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _flags_html(report: Report) -> str:
    if not report.flags:
        return "<p>Nothing unusual.</p>"
    items = "".join(f"<li class='{f.severity}'><b>{_esc(f.run_id)}</b> {_esc(f.kind)}: "
                    f"{_esc(f.message)}</li>" for f in report.flags)
    return f"<ul>{items}</ul>"


def _changes_html(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{_esc(r['run'])}</td><td>{_esc(r['metric'])}</td>"
        f"<td class='num'>{r['base_value']:.4g}</td><td class='num'>{r['value']:.4g}</td>"
        f"<td class='num'>{r['delta']:+.4g}</td><td class='num'>"
        f"{'' if r['percent'] is None else format(r['percent'], '+.1f') + '%'}</td>"
        f"<td class='better'>{_esc(r['better'] or '')}</td></tr>" for r in rows)
    return (f"<h3>Changes against {_esc(rows[0]['base'])}</h3><table><tr><th>run</th>"
            "<th>metric</th><th>base</th><th>value</th><th>delta</th><th>%</th>"
            f"<th>better</th></tr>{body}</table>")


def comparison_html(comparison: dict[str, Any] | None) -> str:
    if not comparison:
        return "<p class='muted'>No per-volume metrics (out/per_volume.json) to compare.</p>"
    from ops.report.build import comparison_rows

    headers, rows = comparison_rows(comparison)
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    refused = "".join(f"<li class='error'>{_esc(r['group'])}: not paired: {_esc(r['reason'])}"
                      "</li>" for r in comparison["refused"])
    return (f"<p>Reference: <b>{_esc(comparison['reference'])}</b>; cells are mean [95% CI] "
            "over validation volumes; p: paired sign-flip test against the reference over "
            "the same volumes; dz: effect size.</p>"
            f"<table><tr>{head}</tr>{body}</table><ul>{refused}</ul>")


def _curves(plt: Any, runs: Sequence[dict[str, Any]]) -> list[str]:
    figs = []
    for run in [r for r in runs if r.get("series")][:MAX_CURVE_RUNS]:
        series = run["series"]
        losses = [n for n in series if "loss" in n.lower()][:MAX_LINES]
        rest = sorted((n for n in series if n not in losses and len(series[n]) > 1
                       and not n.endswith(("_ci_low", "_ci_high"))),
                      key=lambda n: "val" not in n.lower())
        scores = [n for n in rest if max(abs(v) for _, v in series[n]) <= 1.5][:MAX_LINES]
        large = [n for n in rest if n not in scores][:MAX_LINES]  # distances, rates, ...
        panels = [p for p in (losses, scores, large) if p] or [list(series)[:MAX_LINES]]
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 2.8),
                                 squeeze=False)
        for ax, names in zip(axes[0], panels, strict=False):
            for name in names:
                xs, ys = zip(*series[name], strict=True)
                ax.plot(xs, ys, label=name, linewidth=1.2, marker="." if len(xs) < 30 else "")
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(str(run["run_id"]), fontsize=9)
        figs.append(f"<div class='fig'>{_svg(plt, fig)}</div>")
    return figs


def _fold_figure(plt: Any, runs: Sequence[dict[str, Any]]) -> str | None:
    rows = []
    for run in runs:
        for key, value in (run.get("metrics_final") or {}).items():
            match = FOLD_KEY_RE.match(key)
            if match and match.group(2) == "dsc" and value is not None:
                rows.append((run["run_id"], int(match.group(1)), value))
    if not rows:
        return None
    ids = list(dict.fromkeys(r[0] for r in rows))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(ids)), 3.0))
    for index, run_id in enumerate(ids):
        values = [(fold, v) for rid, fold, v in rows if rid == run_id]
        ax.scatter([index] * len(values), [v for _, v in values], s=18)
        for fold, v in values:
            ax.annotate(f"f{fold}", (index, v), fontsize=6, xytext=(4, 0),
                        textcoords="offset points")
    ax.set_xticks(range(len(ids)), [i[:28] for i in ids], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("DSC per fold")
    ax.grid(alpha=0.3)
    return _svg(plt, fig)


def _volume_figure(plt: Any, runs: Sequence[dict[str, Any]]) -> str | None:
    data = [(r["run_id"], [row["dsc"] for row in r["per_volume"] if row.get("dsc") is not None])
            for r in runs if r.get("per_volume")]
    data = [(rid, values) for rid, values in data if values]
    if not data:
        return None
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(data)), 3.0))
    ax.boxplot([v for _, v in data], showmeans=True)
    for index, (_, values) in enumerate(data, start=1):
        ax.scatter([index] * len(values), values, s=8, alpha=0.6)
    ax.set_xticks(range(1, len(data) + 1), [rid[:28] for rid, _ in data], rotation=30,
                  ha="right", fontsize=7)
    ax.set_ylabel("DSC per validation volume")
    ax.grid(alpha=0.3)
    return _svg(plt, fig)


def render_html(report: Report) -> str:
    plt = _pyplot()
    from ops.report.analysis import changes

    curves = _curves(plt, report.table.runs)
    folds, volumes = _fold_figure(plt, report.table.runs), _volume_figure(plt, report.table.runs)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width'>",
        f"<title>ops report: {len(report.table.runs)} runs</title><style>{CSS}</style>",
        "</head><body>",
        f"<h1>ops report</h1><p class='muted'>{len(report.table.runs)} runs from "
        f"{_esc(report.origin)}, generated {_esc(report.generated_at)}</p>",
        "<h2>Runs</h2>", table_html(report.table),
        "<h2>Analysis</h2>", _flags_html(report),
        _changes_html(changes(report.table.runs, report.table.metrics)),
        "<h2>Comparison</h2>", comparison_html(report.comparison),
        "<h2>Learning curves</h2>",
        f"<div class='figs'>{''.join(curves)}</div>" if curves
        else "<p class='muted'>No metric series.</p>",
        "<h2>Per-fold and per-volume distributions</h2><div class='figs'>",
        *(f"<div class='fig'>{svg}</div>" for svg in (folds, volumes) if svg),
        "</div>" if folds or volumes else "</div><p class='muted'>No per-fold metrics.</p>",
        "</body></html>\n",
    ]
    return "".join(parts)
