"""`ops report`: compare runs (differing config, metrics, CIs, tests, analysis, plots)."""

from __future__ import annotations

from pathlib import Path

import click

from ops.cli.context import load, target_for
from ops.report import build, sources


@click.command("report")
@click.argument("runs", nargs=-1, metavar="[RUN_DIR | GLOB | RUN_ID]...")
@click.option("--host", "-H", default=None, metavar="HOST",
              help="Report on the runs of HOST (one round trip) instead of fetched run dirs.")
@click.option("--accept-new", is_flag=True,
              help="Trust an unknown host key (stored in .ops/known_hosts).")
@click.option("--preset", "presets", multiple=True, metavar="P",
              help="Only runs of preset P (a glob; repeatable).")
@click.option("--status", "statuses", multiple=True, metavar="S",
              help="Only runs with status S (repeatable), e.g. completed.")
@click.option("--since", default=None, metavar="AGE",
              help="Only runs started within AGE (2d, 12h, 30m, 1w) or since a date.")
@click.option("--group-by", default=None, metavar="KEY",
              help="Aggregate per preset, lineage (a run with its evals), loss or any config KEY, "
                   "with bootstrap CIs and "
                   "paired per-volume tests.")
@click.option("--reference", default=None, metavar="GROUP",
              help="The group the paired tests compare against (default: the first).")
@click.option("--metric", "metrics", multiple=True, metavar="NAME",
              help="Metric columns to show (repeatable; default: the overall metrics).")
@click.option("--sort", default=None, metavar="[-]KEY",
              help="Sort by a metric or run/status/preset/started/duration; '-' descending.")
@click.option("--top", type=click.IntRange(min=1), default=None, help="Keep the first N runs.")
@click.option("--format", "fmt", type=click.Choice(build.FORMATS), default="table",
              show_default=True, help="table, md, csv, json (versioned envelope) or html.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write to FILE instead of stdout.")
@click.option("--no-cache", is_flag=True,
              help="Read every run dir again (finished runs are otherwise cached in .ops/).")
@click.pass_context
def report_command(ctx: click.Context, runs: tuple[str, ...], host: str | None,
                   accept_new: bool, presets: tuple[str, ...], statuses: tuple[str, ...],
                   since: str | None, group_by: str | None, reference: str | None,
                   metrics: tuple[str, ...], sort: str | None, top: int | None, fmt: str,
                   output: Path | None, no_cache: bool) -> None:
    """Compare runs: differing config, metrics, CIs and problems.

    The config keys that differ, final and best metrics with CIs, groups with paired tests,
    and what went wrong."""
    loaded = load(ctx)
    selection = sources.Selection(runs, presets, statuses, sources.parse_since(since))
    options = build.ReportOptions(selection, group_by, reference, metrics, sort, top, fmt)
    opener = (lambda: target_for(ctx, loaded, host, accept_new)) if host else None
    report = build.make_report(
        options, artifacts=loaded.artifacts_root,
        open_host=opener, cache_dir=None if no_cache else loaded.repo_root / ".ops")
    text = build.render(report)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        click.echo(f"wrote {output} ({len(report.table.runs)} runs)", err=True)
