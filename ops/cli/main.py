"""The `ops` entry point: the only place errors become output and exit codes.

Commands are a table of name -> "module:attribute", imported only when the command is used
(ops.cli.app.LazyGroup); adding a top-level command is adding a row. `ops --version` answers
before click or any command module is imported.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (12 ms)
if TYPE_CHECKING:
    import click

COMMANDS: dict[str, str] = {
    "init": "ops.cli.config_cmds:init_command",
    "config": "ops.cli.config_cmds:config_group",
    "run": "ops.cli.run_cmds:run_group",
    "ps": "ops.cli.ps_cmd:ps_command",
    "validate": "ops.cli.validate_cmd:validate_command",
    "data": "ops.cli.data_cmds:data_group",
    "repo": "ops.cli.repo_cmds:repo_group",
    "report": "ops.cli.report_cmds:report_command",
    "pod": "ops.cli.pod_cmds:pod_group",
    "preflight": "ops.cli.pod_cmds:preflight_command",
}

_cli: click.Group | None = None


def get_cli() -> click.Group:
    global _cli  # noqa: PLW0603 - built once per process, on first use
    if _cli is None:
        from ops.cli.app import build_cli

        _cli = build_cli(COMMANDS)
    return _cli


def __getattr__(name: str) -> click.Group:  # `from ops.cli.main import cli` still works
    if name == "cli":
        return get_cli()
    raise AttributeError(name)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        from ops import __version__

        sys.stdout.write(f"ops, version {__version__}\n")
        sys.exit(0)
    _run(args)


def _run(args: list[str]) -> None:
    import click

    from ops.errors import ExitCode, OpsError, from_click

    try:
        code = get_cli().main(args=args, prog_name="ops", standalone_mode=False)
    except OpsError as exc:
        click.echo(exc.render(), err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except click.ClickException as exc:
        click.echo(from_click(exc).render(), err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)
