"""`ops config show|validate` and `ops init`: thin adapters over ops.config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ops.config.loader import LoadedConfig, display_path, load_config

if TYPE_CHECKING:  # imported by the commands that use them
    from ops.config.scaffold import InitResult
    from ops.services.outputs_root import OutputsRoot

SHOW_SCHEMA = "ops.config_show/1"


def _project_config(ctx: click.Context) -> Path | None:
    """The root group's --project-config, when there is a root group that stored it."""
    obj = ctx.find_object(dict)
    value = obj.get("project_config") if obj else None
    return Path(value) if value is not None else None


@click.group("config")
def config_group() -> None:
    """Show or check the project's config.

    configs/ops/project.json, with project.local.json merged over it."""


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document (ops.config_show/1).")
@click.pass_context
def show_command(ctx: click.Context, as_json: bool) -> None:
    """Every effective value and the file it came from.

    Also each host's outputs root and each preset's override form."""
    loaded = load_config(_project_config(ctx))
    click.echo(render_show_json(loaded) if as_json else render_show_text(loaded))


@config_group.command("validate")
@click.pass_context
def validate_command(ctx: click.Context) -> None:
    """Check the config; exit 2 if it has problems.

    One `dotted.path: message` line per problem."""
    loaded = load_config(_project_config(ctx))
    click.echo(render_validate(loaded))


@click.command("init")
@click.option("--name", help="Project name (default: this directory's name, sanitized).")
@click.option("--force", is_flag=True, help="Replace an existing configs/ops/project.json.")
def init_command(name: str | None, force: bool) -> None:
    """Write a starter configs/ops/project.json (a `smoke` preset).

    In the current directory; also gitignores the local overlay, .ops/, runs/ and artifacts/.
    Refused where a project file exists, or at the root of the enclosing git repository."""
    from ops.config.scaffold import init_project

    result = init_project(Path.cwd(), name=name, force=force)
    click.echo(render_init(result))


def show_document(loaded: LoadedConfig) -> dict[str, Any]:
    from ops.services.outputs_root import all_outputs_roots, earlier_runs_note

    return {
        "schema": SHOW_SCHEMA,
        "config_path": str(loaded.path),
        "local_path": str(loaded.local_path) if loaded.local_path else None,
        "values": [
            {"path": path, "value": value, "source": source}
            for path, value, source in loaded.provenance()
        ],
        "outputs_roots": [root.to_json() for root in all_outputs_roots(loaded)],
        "notes": [note] if (note := earlier_runs_note(loaded)) else [],
    }


def render_show_json(loaded: LoadedConfig) -> str:
    return json.dumps(show_document(loaded), indent=2)


def render_show_text(loaded: LoadedConfig) -> str:
    from ops.config.models import SweepPreset
    from ops.services.outputs_root import all_outputs_roots, earlier_runs_note

    overlay = display_path(loaded.local_path) if loaded.local_path else "none"
    lines = [f"# config: {display_path(loaded.path)}", f"# overlay: {overlay}"]
    lines += [
        f"{path} = {json.dumps(value)}  [{source}]" for path, value, source in loaded.provenance()
    ]
    lines += outputs_lines(all_outputs_roots(loaded), earlier_runs_note(loaded))
    for name, preset in sorted(loaded.config.presets.items()):
        if isinstance(preset, SweepPreset):
            lines.append(f"# preset {name}: sweep of {', '.join(preset.members)}, in order")
            continue
        lines.append(
            f"# preset {name}: overrides as {preset.override_format!r}: {preset.override_form()}"
        )
    return "\n".join(lines)


def outputs_lines(roots: list[OutputsRoot], note: str | None) -> list[str]:
    """Where each host keeps its run directories, and the setting that decided it."""
    width = max(len(root.host) for root in roots)
    lines = ["# outputs roots (where run directories live):"]
    lines += [f"#   {root.host:{width}}  {root.path}  [{root.setting}: {root.source}]"
              for root in roots]
    return lines + ([f"# {note}"] if note else [])


def render_validate(loaded: LoadedConfig) -> str:
    count = len(loaded.config.presets)
    noun = "preset" if count == 1 else "presets"
    line = f"ok: {display_path(loaded.path)} ({count} {noun})"
    if loaded.local_path:
        line += f"\n  merged: {display_path(loaded.local_path)}"
    return line


def render_init(result: InitResult) -> str:
    lines = [f"created {display_path(path)}" for path in result.created]
    lines += [f"updated {display_path(path)}" for path in result.changed]
    lines.append(
        f"project {result.name!r}: try `ops config validate`, then `ops run submit --preset smoke`"
    )
    return "\n".join(lines)
