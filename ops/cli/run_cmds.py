"""`ops run ...`: submit, list, status, tail, cancel, fetch, diff.

`ops run list` is the history (every run, one line each, with filters); `ops run status` is
the present (what is live now, or one run in detail); `ops ps` is the short form of the list.
A RUN_ID may be a unique prefix, `@last` or `-1` (the newest run), `-2`, ...
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ops.cli import housekeeping_cmds
from ops.cli.context import host_options, load, target_for
from ops.cli.ps_cmd import table_options
from ops.cli.run_args import RunIdCommand, complete_preset, complete_run_id, run_id_argument
from ops.errors import ExitCode, UsageError

if TYPE_CHECKING:  # each command imports the services it runs, when it runs
    from ops.config.loader import LoadedConfig
    from ops.services import runs, submit

DIFF_SECTIONS = ("config", "command", "code", "env", "data", "metrics")  # ops.report.diff's
JSON_HELP = "Print the result as JSON (its `schema` field names the format)."


@click.group("run")
def run_group() -> None:
    """Submit runs and watch them."""


@run_group.command("submit", cls=RunIdCommand)
@click.argument("preset_arg", metavar="[PRESET]", required=False,
                shell_complete=complete_preset)
@click.option("--preset", "-p", default=None, shell_complete=complete_preset,
              help="Preset name from project.json (or give it as PRESET).")
@click.option("--resume", "resume_id", default=None, metavar="RUN_ID",
              shell_complete=complete_run_id,
              help="A new run that continues where RUN_ID stopped (its preset and overrides).")
@click.option("--from", "from_id", default=None, metavar="RUN_ID",
              shell_complete=complete_run_id,
              help="For an eval preset: the ended run whose checkpoint it scores.")
@click.option("--debug", is_flag=True, help="Apply the preset's debug_overrides (a short run).")
@click.option("--ref", default=None, metavar="REF",
              help="Code to run: a branch, tag, sha or pr:N, synced to the host (remote hosts "
                   "always sync, HEAD by default; locally the working tree is used as is).")
@click.option("--allow-dirty", is_flag=True,
              help="Sync uncommitted changes as a snapshot commit instead of refusing.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a preset value (typed against the preset); repeatable. "
                   "KEY=A,B makes a grid: one run per combination, as a sweep; "
                   "'KEY=\"a,b\"' (a JSON string) is one value with a comma.")
@click.option("--run-id", default=None, help="Run id (default: <preset>-<UTC time>-<4 hex>).")
@click.option("--follow", "-f", is_flag=True, help="Tail the log; exit with the run's outcome.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.option("--skip-preflight", is_flag=True, help="Launch even when preflight fails.")
@click.option("--dry-run", is_flag=True,
              help="Print the spec, argv, preflight and a duration/cost estimate; launch "
                   "nothing.")
@host_options
@click.pass_context
def submit_cmd(ctx: click.Context, preset_arg: str | None, preset: str | None,
               resume_id: str | None,
               from_id: str | None, debug: bool, ref: str | None, allow_dirty: bool,
               sets: tuple[str, ...], run_id: str | None,
               follow: bool, as_json: bool, skip_preflight: bool, dry_run: bool,
               host: str | None, accept_new: bool) -> None:
    """Launch a preset in a new run directory.

    PRESET (or --preset) runs detached in tmux on the host; a sweep launches one run per
    member."""
    from ops.cli import render
    from ops.services import runs, submit

    preset = _one_preset(preset_arg, preset)
    if (preset is None) == (resume_id is None):
        raise UsageError("give exactly one of --preset and --resume",
                         hint="the preset may come first too: ops run submit PRESET")
    if from_id and resume_id:
        raise UsageError("--from goes with --preset (an eval preset), not with --resume")
    loaded = load(ctx)
    target = target_for(ctx, loaded, host, accept_new)
    if dry_run:
        _dry_run(loaded, target, preset, sets, debug=debug, as_json=as_json)
        return
    # preflight is checked by the launching runner call itself (one round trip)
    done = _launch(loaded, target, preset, sets, from_id=from_id, resume_id=resume_id,
                   run_id=run_id, debug=debug, code=submit.CodeChoice(ref, allow_dirty),
                   check_preflight=not skip_preflight)
    if as_json:
        render.echo_json(done.to_json())
    else:
        click.echo(render.submitted(done))
    if follow:
        for index, member in enumerate(done.run_ids):
            if note := submit.member_note(done, index):
                click.echo(note, err=True)
            runs.raise_for_outcome(_follow(target, member))


def _launch(loaded: LoadedConfig, target: runs.Target, preset: str | None,
            sets: tuple[str, ...], *, from_id: str | None, resume_id: str | None,
            run_id: str | None, debug: bool, code: submit.CodeChoice,
            check_preflight: bool) -> submit.Submitted:
    """A new run of PRESET, an eval of FROM_ID's checkpoint, or a resume of RESUME_ID (the
    two ids may be prefixes, @last or -N). A new run finds its preflight arguments with its
    spec (from the preset's spec template when there is one)."""
    from ops.services import submit

    if not from_id and not resume_id:
        return submit.submit(loaded, target, str(preset), sets, run_id=run_id, debug=debug,
                             code=code, check_preflight=check_preflight)
    from ops.services import preflight, resolve

    if check_preflight:
        code = code._replace(preflight=tuple(preflight.preflight_args(loaded, target, preset)))
    if from_id:
        from ops.services import evaluation  # it reads the models: an eval has no template

        return evaluation.submit_from(loaded, target, str(preset),
                                      resolve.resolve(target, from_id), sets, run_id=run_id,
                                      debug=debug, code=code)
    return submit.resume(loaded, target, resolve.resolve(target, str(resume_id)), sets,
                         run_id=run_id, debug=debug, code=code)


def _one_preset(positional: str | None, option: str | None) -> str | None:
    if positional and option and positional != option:
        raise UsageError(f"two presets given: {positional!r} and --preset {option!r}")
    return positional or option


def _follow(target: runs.Target, run_id: str, lines: int | None = None) -> str | None:
    """Stream the log until the run ends; Ctrl-C stops following, never the run."""
    from ops.services import runs

    try:
        return runs.tail(target, run_id, _write_stdout, follow=True, lines=lines)
    except KeyboardInterrupt:
        click.echo(f"\nstopped following; the run goes on: `ops run tail {run_id} -f`",
                   err=True)
        raise click.exceptions.Exit(ExitCode.INTERRUPTED) from None


def _dry_run(loaded: LoadedConfig, target: runs.Target, preset: str | None,
             sets: tuple[str, ...], *, debug: bool, as_json: bool) -> None:
    from ops.cli import render
    from ops.services import dryrun

    if preset is None:
        raise UsageError("--dry-run goes with --preset")
    doc = dryrun.dry_run(loaded, target, preset, sets, debug=debug)
    if as_json:
        render.echo_json(doc)
    else:
        click.echo(dryrun.dry_run_text(doc))


@run_group.command("list")
@table_options(None)
@click.option("--json", "as_json", is_flag=True,
              help="Print the runs as JSON (ops.run_list/1), newest first, filtered.")
@host_options
@click.pass_context
def list_cmd(ctx: click.Context, statuses: tuple[str, ...], presets: tuple[str, ...],
             since: str | None, limit: int | None, as_json: bool, host: str | None,
             accept_new: bool) -> None:
    """Every run on the host, newest first.

    The history, one line each, with filters; `ops ps` is the short form."""
    from ops.cli import render
    from ops.cli.ps_cmd import show_listing
    from ops.services import resolve

    found = resolve.listing(target_for(ctx, load(ctx), host, accept_new),
                            resolve.TableFilter(statuses, presets, since, limit))
    if as_json:
        render.echo_json({"schema": "ops.run_list/1", "runs": found.runs})
    else:
        show_listing(found)


@run_group.command("status", cls=RunIdCommand)
@run_id_argument(required=False)
@click.option("--fetched", is_flag=True,
              help="Read the fetched copy under artifacts/ instead of asking the host.")
@click.option("--json", "as_json", is_flag=True,
              help="Print ops.run_status/1: every run's record, or RUN_ID's in full.")
@host_options
@click.pass_context
def status_cmd(ctx: click.Context, run_id: str | None, fetched: bool, as_json: bool,
               host: str | None, accept_new: bool) -> None:
    """What is live now, or one run in detail.

    Without RUN_ID: the live runs and a count of the ended ones. With it: status, times,
    heartbeat, failure with its traceback, final and best metrics, the log's last lines."""
    # imported where used: a listing needs neither the detail readers nor the renderers
    from ops.services import resolve

    loaded = load(ctx)
    if fetched:
        from ops.services import fetch

        root = loaded.artifacts_root
        found = [fetch.fetched_status(root, resolve.resolve_local(
            [root], _need(run_id, "--fetched needs a RUN_ID")))]
    else:
        target = target_for(ctx, loaded, host, accept_new)
        if run_id:
            from ops.report import detail

            found = [detail.status_detail(target, resolve.resolve(target, run_id))]
        else:
            from ops.services import runs

            found = resolve.newest_first(runs.list_runs(target))
    if as_json:
        from ops.cli import render

        render.echo_json({"schema": "ops.run_status/1", "runs": found})
        return
    from ops.cli import render_run

    if run_id:
        render_run.show_detail(found[0])
    else:
        render_run.show_live(found, resolve.where(target))


def _need(value: str | None, message: str) -> str:
    if not value:
        raise UsageError(message)
    return value


@run_group.command("diff", cls=RunIdCommand)
@run_id_argument("run_a")
@run_id_argument("run_b")
@click.option("--section", "sections", multiple=True, type=click.Choice(DIFF_SECTIONS),
              help="Only these sections (repeatable; default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the diff as JSON (ops.run_diff/1).")
@host_options
@click.pass_context
def diff_cmd(ctx: click.Context, run_a: str, run_b: str, sections: tuple[str, ...],
             as_json: bool, host: str | None, accept_new: bool) -> None:
    """What differs between two runs.

    Config, command, code, env, data and metrics. A run is a run dir path, a fetched run id,
    or a run id on the host."""
    from ops.cli import render
    from ops.report import detail, diff
    from ops.services import resolve

    loaded = load(ctx)
    artifacts = loaded.artifacts_root
    opened: list[runs.Target] = []

    def open_host() -> runs.Target:
        if not opened:
            opened.append(target_for(ctx, loaded, host, accept_new))
        return opened[0]

    names = [n if resolve.names_a_copy(n, artifacts) else resolve.resolve(open_host(), n)
             for n in (run_a, run_b)]
    a, b = detail.diff_records(names, artifacts, open_host)
    doc = diff.diff_runs(a, b, repo=loaded.repo_root, sections=sections or diff.SECTIONS)
    if as_json:
        render.echo_json(doc)
    else:
        click.echo(diff.diff_text(doc))


@run_group.command("tail", cls=RunIdCommand)
@run_id_argument()
@click.option("--follow", "-f", is_flag=True, help="Keep printing; exit with the run's outcome.")
@click.option("-n", "--lines", type=click.IntRange(min=0), default=None,
              help="Start with the last LINES lines.")
@host_options
@click.pass_context
def tail_cmd(ctx: click.Context, run_id: str, follow: bool, lines: int | None,
             host: str | None, accept_new: bool) -> None:
    """Print RUN_ID's stdout.log."""
    from ops.services import resolve, runs

    target = target_for(ctx, load(ctx), host, accept_new)
    run_id = resolve.resolve(target, run_id)
    if follow:
        runs.raise_for_outcome(_follow(target, run_id, lines))
    else:
        runs.tail(target, run_id, _write_stdout, lines=lines)


@run_group.command("cancel", cls=RunIdCommand)
@run_id_argument()
@click.option("--json", "as_json", is_flag=True,
              help="Print ops.run_cancel/1: the run's status record and `cancelled`.")
@host_options
@click.pass_context
def cancel_cmd(ctx: click.Context, run_id: str, as_json: bool, host: str | None,
               accept_new: bool) -> None:
    """Stop a run (SIGINT, SIGTERM, then SIGKILL).

    Each signal waits the preset's grace period before the next."""
    from ops.cli import render
    from ops.services import resolve, runs

    target = target_for(ctx, load(ctx), host, accept_new)
    run_id = resolve.resolve(target, run_id)
    result = runs.cancel(target, run_id)
    if as_json:
        render.echo_json({**result, "schema": "ops.run_cancel/1"})
    else:
        click.echo(result.get("message") or f"{run_id}: {result.get('status')}")


@run_group.command("fetch", cls=RunIdCommand)
@run_id_argument()
@click.option("--to", "dest", type=click.Path(path_type=Path), default=None,
              help="Directory to fetch into (default: storage.artifacts_dir).")
@click.option("--with-checkpoints", is_flag=True, help="Also fetch checkpoints/.")
@click.option("--json", "as_json", is_flag=True,
              help="Print ops.run_fetch/1: the files and bytes fetched, the remote status.")
@host_options
@click.pass_context
def fetch_cmd(ctx: click.Context, run_id: str, dest: Path | None, with_checkpoints: bool,
              as_json: bool, host: str | None, accept_new: bool) -> None:
    """Copy a run directory here.

    Only new or changed files are sent; resumable after a drop."""
    from ops.cli import render
    from ops.services import fetch, resolve

    loaded = load(ctx)
    root = dest or loaded.artifacts_root
    target = target_for(ctx, loaded, host, accept_new)
    with render.ProgressBar(enabled=not as_json) as bar:
        result = fetch.fetch(target, resolve.resolve(target, run_id), root,
                             with_checkpoints=with_checkpoints, progress=bar.start)
    if as_json:
        render.echo_json(result.to_json())
    else:
        click.echo(render.fetched(result))


@run_group.command("open", cls=RunIdCommand)
@run_id_argument()
@click.option("--local-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port to listen on here (0: any free port).")
@host_options
@click.pass_context
def open_cmd(ctx: click.Context, run_id: str, local_port: int, host: str | None,
             accept_new: bool) -> None:
    """Reach a service run's port.

    On the local host it prints the URL; on an SSH host it forwards the port here until
    Ctrl-C."""
    from ops.services import forward, resolve

    target = target_for(ctx, load(ctx), host, accept_new)
    forward.open_service(target, resolve.resolve(target, run_id), local_port, click.echo)


def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


run_group.add_command(housekeeping_cmds.rm_cmd)
run_group.add_command(housekeeping_cmds.gc_cmd)
