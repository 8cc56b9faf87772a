"""What every command needs: the loaded project config and the host it targets."""

from __future__ import annotations

from pathlib import Path

import click

from ops.config.loader import LoadedConfig, load_config
from ops.services.runs import Target, local_target


def project_config_option(ctx: click.Context) -> Path | None:
    obj = ctx.find_object(dict)
    value = obj.get("project_config") if obj else None
    return Path(value) if value else None


def load(ctx: click.Context) -> LoadedConfig:
    return load_config(project_config_option(ctx))


def target_for(loaded: LoadedConfig) -> Target:
    """The local host: remote hosts arrive with the SSH transport."""
    return local_target(loaded)
