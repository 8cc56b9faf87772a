"""`ops validate RUN_DIR`: check a run directory against the contract (levels L0 to L4)."""

from __future__ import annotations

from pathlib import Path

import click

from ops.cli import render
from ops.cli.context import project_config_option
from ops.services.validation import required_files, validate_dir


@click.command("validate")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--deep", is_flag=True, help="Also L4: dataset and checkpoint sizes and checksums.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def validate_command(ctx: click.Context, run_dir: Path, deep: bool, as_json: bool) -> None:
    """Exit 0 when clean, 1 with every violation listed (file and rule), 2 on bad usage."""
    report = validate_dir(run_dir, deep=deep, required=required_files(project_config_option(ctx)))
    if as_json:
        render.echo_json(report.to_json())
    else:
        click.echo(report.render_text())
    if not report.ok:
        raise click.exceptions.Exit(1)
