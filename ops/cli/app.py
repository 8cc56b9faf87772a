"""The click group behind `ops`: its commands are loaded on first use from the table in
ops.cli.main, so `ops run status` imports the run commands and nothing else."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

import click

from ops import __version__


class LazyGroup(click.Group):
    """A group whose subcommands are "module:attribute" strings, imported when named."""

    def __init__(self, *args: object, lazy: Mapping[str, str], **kwargs: object) -> None:
        self._lazy = dict(lazy)
        self._loaded: dict[str, click.Command] = {}
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]  # click's own signature

    @property  # click declares a plain attribute; a property keeps `.commands` working
    def commands(self) -> dict[str, click.Command]:
        """Every command, loaded (help, docs and typo suggestions need them all)."""
        for name in self._lazy:
            self._load(name)
        return self._loaded

    @commands.setter
    def commands(self, value: Mapping[str, click.Command]) -> None:
        self._loaded = dict(value)

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        name = name or cmd.name
        if name is None:
            raise TypeError("a command needs a name")
        self._loaded[name] = cmd

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self._lazy) | set(self._loaded))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._loaded:
            return self._loaded[cmd_name]
        return self._load(cmd_name) if cmd_name in self._lazy else None

    def _load(self, name: str) -> click.Command:
        if name not in self._loaded:
            module_name, _, attr = self._lazy[name].partition(":")
            command = getattr(importlib.import_module(module_name), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self._lazy[name]} is not a click command")
            self._loaded[name] = command
        return self._loaded[name]


def build_cli(commands: Mapping[str, str]) -> click.Group:
    """The `ops` group over a name -> "module:attribute" table."""

    @click.group(cls=LazyGroup, lazy=commands, invoke_without_command=True,
                 context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="ops")
    @click.option("--project-config", type=click.Path(path_type=Path), default=None,
                  envvar="OPS_PROJECT_CONFIG",
                  help="project.json to use (default: configs/ops/project.json found upwards).")
    @click.pass_context
    def cli(ctx: click.Context, project_config: Path | None) -> None:
        """Run training on ephemeral GPU pods, with a run directory you can trust."""
        ctx.ensure_object(dict)["project_config"] = project_config
        if ctx.invoked_subcommand is None:  # bare `ops`: the help, and success
            click.echo(ctx.get_help())

    return cli
