"""`ops run rm` and `ops run gc`: remove runs from a host's outputs root and fetched copies."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ops.cli.context import host_options, load, target_for
from ops.cli.run_args import RunIdCommand, complete_run_id
from ops.errors import UsageError

if TYPE_CHECKING:  # the service is imported when a command runs
    from ops.config.loader import LoadedConfig
    from ops.services import housekeeping as hk

SCOPES = ("all", "host", "fetched")  # ops.services.housekeeping.SCOPES (a test keeps them equal)


def _artifacts(loaded: LoadedConfig) -> Path:
    return loaded.artifacts_root


def _confirm(outcomes: list[hk.Outcome], yes: bool, as_json: bool) -> bool:
    """True to go on: --yes, or the user said so on a terminal after seeing the list."""
    from ops.services import housekeeping as hk

    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError("not removing anything without a confirmation",
                         hint="add --yes to remove without asking, or --dry-run to list")
    for outcome in outcomes:
        click.echo(hk.outcome_text(outcome), err=as_json)
    if click.confirm("remove them?", default=False, err=True):
        return True
    click.echo("nothing was removed", err=True)
    return False


def _apply(plans: list[hk.Outcome], *, yes: bool, dry_run: bool, as_json: bool) -> None:
    """List the plans (dry run, or nothing to do), or remove exactly what they list."""
    from ops.services import housekeeping as hk

    if dry_run or not any(p.runs for p in plans):
        _finish(plans, as_json)
    elif _confirm(plans, yes, as_json):
        _finish([hk.remove_runs(p.place, p.run_ids, dry_run=False) for p in plans], as_json)


def _finish(outcomes: list[hk.Outcome], as_json: bool) -> None:
    from ops.cli import render
    from ops.services import housekeeping as hk

    if as_json:
        render.echo_json({"schema": "ops.run_housekeeping/1",
                          "places": [o.to_json() for o in outcomes]})
        return
    for outcome in outcomes:
        click.echo(hk.outcome_text(outcome))


@click.command("rm", cls=RunIdCommand)
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN_ID...",
                shell_complete=complete_run_id)
@click.option("--fetched", is_flag=True,
              help="Remove the fetched copies under storage.artifacts_dir, not the host's runs.")
@click.option("--yes", "-y", is_flag=True, help="Remove without asking.")
@click.option("--dry-run", is_flag=True, help="Check and list what would go; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
@host_options
@click.pass_context
def rm_cmd(ctx: click.Context, run_ids: tuple[str, ...], fetched: bool, yes: bool,
           dry_run: bool, as_json: bool, host: str | None, accept_new: bool) -> None:
    """Remove ended runs (never a live one); asks first.

    RUN_ID is a run on the host (with --fetched: a fetched copy): its id, a unique prefix,
    @last or -N. Every one is checked before any is removed: one live, missing or odd entry
    removes none."""
    from ops.services import housekeeping as hk

    loaded = load(ctx)
    target = None if fetched else target_for(ctx, loaded, host, accept_new)
    place = hk.places(target, _artifacts(loaded), "fetched" if fetched else "host")[0]
    chosen = hk.resolve_ids(place, run_ids)
    _apply([hk.remove_runs(place, chosen, dry_run=True)], yes=yes, dry_run=dry_run,
           as_json=as_json)


@click.command("gc")
@click.option("--older-than", required=True, metavar="AGE",
              help="Remove runs that ended more than AGE ago: 30d, 12h, 90m, 2w.")
@click.option("--keep-best", type=click.IntRange(min=0), default=0, show_default=True,
              help="Keep the N best runs of each preset (by its first `best` metric).")
@click.option("--scope", type=click.Choice(SCOPES), default="all", show_default=True,
              help="The host's outputs root, the fetched copies, or both.")
@click.option("--yes", "-y", is_flag=True, help="Remove without asking.")
@click.option("--dry-run", is_flag=True, help="List what would go; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
@host_options
@click.pass_context
def gc_cmd(ctx: click.Context, older_than: str, keep_best: int, scope: str, yes: bool,
           dry_run: bool, as_json: bool, host: str | None, accept_new: bool) -> None:
    """Remove ended runs older than AGE.

    Looks in the host's outputs root and the fetched copies (--scope); live runs, links and
    folders that are not run dirs are left alone. Lists what goes and asks first."""
    from ops.services import housekeeping as hk

    age = hk.parse_age(older_than)
    loaded = load(ctx)
    target = target_for(ctx, loaded, host, accept_new) if scope != "fetched" else None
    plans = [hk.collect(p, age, keep_best) for p in hk.places(target, _artifacts(loaded), scope)]
    _apply(plans, yes=yes, dry_run=dry_run, as_json=as_json)
