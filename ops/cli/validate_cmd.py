"""`ops validate RUN`: check a run directory against the contract (levels L0 to L4)."""

from __future__ import annotations

from pathlib import Path

import click

from ops.cli import render
from ops.cli.context import load, project_config_option
from ops.cli.run_args import RunIdCommand, complete_run_id
from ops.services.resolve import local_run_dir
from ops.services.target import open_target
from ops.services.validation import required_files, validate_dir


@click.command("validate", cls=RunIdCommand)
@click.argument("run", metavar="RUN", shell_complete=complete_run_id)
@click.option("--deep", is_flag=True, help="Also L4: dataset and checkpoint sizes and checksums.")
@click.option("--json", "as_json", is_flag=True,
              help="Print ops.validate/1: run_dir, ok, levels, violations and warnings.")
@click.pass_context
def validate_command(ctx: click.Context, run: str, deep: bool, as_json: bool) -> None:
    """Check a run directory against the contract.

    RUN is a run dir, or the id (a prefix, @last, -1) of a local run or a fetched copy.
    Exit 0 when clean, 1 with every violation listed (file and rule), 2 on bad usage."""
    run_dir = local_run_dir(run, lambda: _roots(ctx))
    report = validate_dir(run_dir, deep=deep, required=required_files(project_config_option(ctx)))
    if as_json:
        render.echo_json(report.to_json())
    else:
        click.echo(report.render_text())
    if not report.ok:
        raise click.exceptions.Exit(1)


def _roots(ctx: click.Context) -> list[Path]:
    """Where a run id is looked for: the local host's outputs root, then fetched copies."""
    loaded = load(ctx)
    local = Path(open_target(loaded, "local", need_runner=False).paths.outputs_root)
    return [local, loaded.artifacts_root]
