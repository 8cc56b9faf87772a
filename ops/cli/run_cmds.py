"""`ops run ...`: submit, list, status, tail, cancel, fetch, diff."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ops.cli import render
from ops.cli.context import host_options, load, target_for
from ops.config.loader import LoadedConfig
from ops.errors import UsageError
from ops.report import detail, diff
from ops.services import dryrun, evaluation, fetch, forward, preflight, runs, submit


@click.group("run")
def run_group() -> None:
    """Submit runs and watch them."""


@run_group.command("submit")
@click.option("--preset", "-p", default=None, help="Preset name from project.json.")
@click.option("--resume", "resume_id", default=None, metavar="RUN_ID",
              help="A new run that continues where RUN_ID stopped (its preset and overrides).")
@click.option("--from", "from_id", default=None, metavar="RUN_ID",
              help="For an eval preset: the ended run whose checkpoint it scores.")
@click.option("--debug", is_flag=True, help="Apply the preset's debug_overrides (a short run).")
@click.option("--ref", default=None, metavar="REF",
              help="Code to run: a branch, tag, sha or pr:N, synced to the host (remote hosts "
                   "always sync, HEAD by default; locally the working tree is used as is).")
@click.option("--allow-dirty", is_flag=True,
              help="Sync uncommitted changes as a snapshot commit instead of refusing.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a preset value (typed against the preset); repeatable.")
@click.option("--run-id", default=None, help="Run id (default: <preset>-<UTC time>-<4 hex>).")
@click.option("--follow", "-f", is_flag=True, help="Tail the log; exit with the run's outcome.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--skip-preflight", is_flag=True, help="Launch even when preflight fails.")
@click.option("--dry-run", is_flag=True,
              help="Print the spec, argv, preflight and a duration/cost estimate; launch "
                   "nothing.")
@host_options
@click.pass_context
def submit_cmd(ctx: click.Context, preset: str | None, resume_id: str | None,
               from_id: str | None, debug: bool, ref: str | None, allow_dirty: bool,
               sets: tuple[str, ...], run_id: str | None,
               follow: bool, as_json: bool, skip_preflight: bool, dry_run: bool,
               host: str | None, accept_new: bool) -> None:
    """Create a run directory and launch a preset detached in tmux (a sweep: one run each)."""
    if (preset is None) == (resume_id is None):
        raise UsageError("give exactly one of --preset and --resume")
    if from_id and resume_id:
        raise UsageError("--from goes with --preset (an eval preset), not with --resume")
    loaded = load(ctx)
    target = target_for(ctx, loaded, host, accept_new)
    if dry_run:
        _dry_run(loaded, target, preset, sets, debug=debug, as_json=as_json)
        return
    if not skip_preflight:
        preflight.require_pass(preflight.run_preflight(loaded, target, preset))
    code = submit.CodeChoice(ref, allow_dirty)
    if from_id:
        done = evaluation.submit_from(loaded, target, str(preset), from_id, sets,
                                      run_id=run_id, debug=debug, code=code)
    elif resume_id:
        done = submit.resume(loaded, target, resume_id, sets, run_id=run_id, debug=debug,
                             code=code)
    else:
        done = submit.submit(loaded, target, str(preset), sets, run_id=run_id, debug=debug,
                             code=code)
    if as_json:
        render.echo_json(done.to_json())
    else:
        click.echo(render.submitted(done))
    if follow:
        for index, member in enumerate(done.run_ids):
            if note := submit.member_note(done, index):
                click.echo(note, err=True)
            runs.raise_for_outcome(runs.tail(target, member, _write_stdout, follow=True))


def _dry_run(loaded: LoadedConfig, target: runs.Target, preset: str | None,
             sets: tuple[str, ...], *, debug: bool, as_json: bool) -> None:
    if preset is None:
        raise UsageError("--dry-run goes with --preset")
    doc = dryrun.dry_run(loaded, target, preset, sets, debug=debug)
    if as_json:
        render.echo_json(doc)
    else:
        click.echo(dryrun.dry_run_text(doc))


@run_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@host_options
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool, host: str | None, accept_new: bool) -> None:
    """Every run on the host, one line each."""
    found = runs.list_runs(target_for(ctx, load(ctx), host, accept_new))
    if as_json:
        render.echo_json({"schema": "ops.run_list/1", "runs": found})
    else:
        click.echo(render.runs_table(found))


@run_group.command("status")
@click.argument("run_id", required=False)
@click.option("--fetched", is_flag=True,
              help="Read the fetched copy under artifacts/ instead of asking the host.")
@click.option("--json", "as_json", is_flag=True)
@host_options
@click.pass_context
def status_cmd(ctx: click.Context, run_id: str | None, fetched: bool, as_json: bool,
               host: str | None, accept_new: bool) -> None:
    """Status of every run (one round trip), or of RUN_ID in detail: heartbeat age and step,
    the last lines of stdout, W&B, the host's GPUs now, metrics per fold."""
    loaded = load(ctx)
    if fetched:
        if not run_id:
            raise UsageError("--fetched needs a RUN_ID")
        root = loaded.repo_root / loaded.config.storage.artifacts_dir
        found = [fetch.fetched_status(root, run_id)]
    else:
        target = target_for(ctx, loaded, host, accept_new)
        found = [detail.status_detail(target, run_id)] if run_id else runs.list_runs(target)
    if as_json:
        render.echo_json({"schema": "ops.run_status/1", "runs": found})
    elif run_id and not fetched:
        click.echo(detail.detail_text(found[0]))
    elif run_id:
        click.echo(render.run_detail(found[0]))
    else:
        click.echo(render.runs_table(found))


@run_group.command("diff")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--section", "sections", multiple=True, type=click.Choice(diff.SECTIONS),
              help="Only these sections (repeatable; default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the diff as JSON.")
@host_options
@click.pass_context
def diff_cmd(ctx: click.Context, run_a: str, run_b: str, sections: tuple[str, ...],
             as_json: bool, host: str | None, accept_new: bool) -> None:
    """What differs between two runs: config, command, code, env, data and metrics. A run is
    a run dir path, a fetched run id, or a run id on the host."""
    loaded = load(ctx)
    a, b = detail.diff_records([run_a, run_b], loaded.repo_root /
                               loaded.config.storage.artifacts_dir,
                               lambda: target_for(ctx, loaded, host, accept_new))
    doc = diff.diff_runs(a, b, repo=loaded.repo_root, sections=sections or diff.SECTIONS)
    if as_json:
        render.echo_json(doc)
    else:
        click.echo(diff.diff_text(doc))


@run_group.command("tail")
@click.argument("run_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing; exit with the run's outcome.")
@click.option("-n", "--lines", type=click.IntRange(min=0), default=None,
              help="Start with the last LINES lines.")
@host_options
@click.pass_context
def tail_cmd(ctx: click.Context, run_id: str, follow: bool, lines: int | None,
             host: str | None, accept_new: bool) -> None:
    """Print RUN_ID's stdout.log."""
    target = target_for(ctx, load(ctx), host, accept_new)
    final = runs.tail(target, run_id, _write_stdout, follow=follow, lines=lines)
    if follow:
        runs.raise_for_outcome(final)


@run_group.command("cancel")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@host_options
@click.pass_context
def cancel_cmd(ctx: click.Context, run_id: str, as_json: bool, host: str | None,
               accept_new: bool) -> None:
    """Stop RUN_ID: SIGINT, then SIGTERM, then SIGKILL after the preset's grace period."""
    result = runs.cancel(target_for(ctx, load(ctx), host, accept_new), run_id)
    if as_json:
        render.echo_json({**result, "schema": "ops.run_cancel/1"})
    else:
        click.echo(result.get("message") or f"{run_id}: {result.get('status')}")


@run_group.command("fetch")
@click.argument("run_id")
@click.option("--to", "dest", type=click.Path(path_type=Path), default=None,
              help="Directory to fetch into (default: storage.artifacts_dir).")
@click.option("--with-checkpoints", is_flag=True, help="Also fetch checkpoints/.")
@click.option("--json", "as_json", is_flag=True)
@host_options
@click.pass_context
def fetch_cmd(ctx: click.Context, run_id: str, dest: Path | None, with_checkpoints: bool,
              as_json: bool, host: str | None, accept_new: bool) -> None:
    """Copy RUN_ID's run dir here: only new or changed files, resumable after a drop."""
    loaded = load(ctx)
    root = dest or loaded.repo_root / loaded.config.storage.artifacts_dir
    with render.ProgressBar(enabled=not as_json) as bar:
        result = fetch.fetch(target_for(ctx, loaded, host, accept_new), run_id, root,
                             with_checkpoints=with_checkpoints, progress=bar.start)
    if as_json:
        render.echo_json(result.to_json())
    else:
        click.echo(render.fetched(result))


@run_group.command("open")
@click.argument("run_id")
@click.option("--local-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port to listen on here (0: any free port).")
@host_options
@click.pass_context
def open_cmd(ctx: click.Context, run_id: str, local_port: int, host: str | None,
             accept_new: bool) -> None:
    """Reach a service run's port: print its URL (local host) or forward it here over SSH
    until Ctrl-C."""
    target = target_for(ctx, load(ctx), host, accept_new)
    forward.open_service(target, run_id, local_port, click.echo)


def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
