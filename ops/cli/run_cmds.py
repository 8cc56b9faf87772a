"""`ops run ...`: submit, list, status, tail, cancel."""

from __future__ import annotations

import sys

import click

from ops.cli import render
from ops.cli.context import load, target_for
from ops.services import runs


@click.group("run")
def run_group() -> None:
    """Submit runs and watch them."""


@run_group.command("submit")
@click.option("--preset", "-p", required=True, help="Preset name from project.json.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a preset value (typed against the preset); repeatable.")
@click.option("--run-id", default=None, help="Run id (default: <preset>-<UTC time>-<4 hex>).")
@click.option("--follow", "-f", is_flag=True, help="Tail the log; exit with the run's outcome.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def submit_cmd(ctx: click.Context, preset: str, sets: tuple[str, ...], run_id: str | None,
               follow: bool, as_json: bool) -> None:
    """Create a run directory and launch PRESET detached in tmux."""
    loaded = load(ctx)
    target = target_for(loaded)
    done = runs.submit(loaded, target, preset, sets, run_id=run_id)
    if as_json:
        render.echo_json(done.to_json())
    else:
        click.echo(f"submitted {done.run_id} on {done.host}\n  run dir: {done.run_dir}\n"
                   f"  tmux:    tmux -L {done.tmux_socket} attach -t {done.tmux_session}")
    if follow:
        runs.raise_for_outcome(runs.tail(target, done.run_id, _write_stdout, follow=True))


@run_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """Every run on the host, one line each."""
    found = runs.list_runs(target_for(load(ctx)))
    if as_json:
        render.echo_json({"schema": "ops.run_list/1", "runs": found})
    else:
        click.echo(render.runs_table(found))


@run_group.command("status")
@click.argument("run_id", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status_cmd(ctx: click.Context, run_id: str | None, as_json: bool) -> None:
    """Status of every run (one round trip), or of RUN_ID in detail."""
    target = target_for(load(ctx))
    found = [runs.run_status(target, run_id)] if run_id else runs.list_runs(target)
    if as_json:
        render.echo_json({"schema": "ops.run_status/1", "runs": found})
    elif run_id:
        click.echo(render.run_detail(found[0]))
    else:
        click.echo(render.runs_table(found))


@run_group.command("tail")
@click.argument("run_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing; exit with the run's outcome.")
@click.option("-n", "--lines", type=click.IntRange(min=0), default=None,
              help="Start with the last LINES lines.")
@click.pass_context
def tail_cmd(ctx: click.Context, run_id: str, follow: bool, lines: int | None) -> None:
    """Print RUN_ID's stdout.log."""
    final = runs.tail(target_for(load(ctx)), run_id, _write_stdout, follow=follow, lines=lines)
    if follow:
        runs.raise_for_outcome(final)


@run_group.command("cancel")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def cancel_cmd(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Stop RUN_ID: SIGINT, then SIGTERM, then SIGKILL after the preset's grace period."""
    result = runs.cancel(target_for(load(ctx)), run_id)
    if as_json:
        render.echo_json({"schema": "ops.run_cancel/1", **result})
    else:
        click.echo(result.get("message") or f"{run_id}: {result.get('status')}")


def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
