"""The `ops` entry point: the only place errors become output and exit codes."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ops import __version__
from ops.cli.config_cmds import config_group, init_command
from ops.cli.data_cmds import data_group
from ops.cli.pod_cmds import pod_group, preflight_command
from ops.cli.repo_cmds import repo_group
from ops.cli.report_cmds import report_command
from ops.cli.run_cmds import run_group
from ops.cli.validate_cmd import validate_command
from ops.errors import ExitCode, OpsError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ops")
@click.option("--project-config", type=click.Path(path_type=Path), default=None,
              envvar="OPS_PROJECT_CONFIG",
              help="project.json to use (default: configs/ops/project.json found upwards).")
@click.pass_context
def cli(ctx: click.Context, project_config: Path | None) -> None:
    """Run training on ephemeral GPU pods, with a run directory you can trust."""
    ctx.ensure_object(dict)["project_config"] = project_config


cli.add_command(init_command, "init")
cli.add_command(config_group, "config")
cli.add_command(run_group, "run")
cli.add_command(validate_command, "validate")
cli.add_command(data_group, "data")
cli.add_command(repo_group, "repo")
cli.add_command(report_command, "report")
cli.add_command(pod_group, "pod")
cli.add_command(preflight_command, "preflight")


def main(argv: list[str] | None = None) -> None:
    try:
        code = cli.main(args=argv, prog_name="ops", standalone_mode=False)
    except OpsError as exc:
        click.echo(exc.render(), err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)
