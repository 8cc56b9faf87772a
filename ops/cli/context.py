"""What every command needs: the loaded project config and the host it targets.

Imports of the config loader and the target services happen inside the functions, so a
command module that imports this one pays for them only when the command runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from ops.config.loader import LoadedConfig
    from ops.services.runs import Target


def project_config_option(ctx: click.Context) -> Path | None:
    obj = ctx.find_object(dict)
    value = obj.get("project_config") if obj else None
    return Path(value) if value else None


def load(ctx: click.Context) -> LoadedConfig:
    from ops.config.loader import load_config

    return load_config(project_config_option(ctx))


F = TypeVar("F", bound=Callable[..., Any])


def host_options(func: F) -> F:
    """--host and --accept-new, for every command that talks to a host."""
    func = click.option("--accept-new", is_flag=True,
                        help="Trust an unknown host key (stored in .ops/known_hosts).")(func)
    from ops.cli.run_args import complete_host

    return click.option("--host", "-H", default=None, metavar="HOST",
                        shell_complete=complete_host,
                        help="Host from project.json hosts, an ~/.ssh/config alias, "
                             "user@host[:port], or `local` (default: project.default_host, "
                             "else local).")(func)


def target_for(ctx: click.Context, loaded: LoadedConfig, host: str | None = None,
               accept_new: bool = False, *, need_runner: bool = True) -> Target:
    """The host the command works on; a remote one is connected once, runner checked, and
    closed when the command ends."""
    from ops.services.target import open_target, outputs_note

    target = open_target(loaded, host, accept_new=accept_new, need_runner=need_runner)
    ctx.call_on_close(target.close)
    if note := outputs_note(loaded, target):  # runs the old rule put elsewhere: never lost
        click.echo(note, err=True)
    return target
