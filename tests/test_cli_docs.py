"""docs/reference/cli.md names every command and every option `ops --help` has."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click

from ops.cli.main import cli

CLI_MD = Path(__file__).resolve().parent.parent / "docs" / "reference" / "cli.md"


def _commands(group: click.Group, prefix: str = "ops") -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            yield from _commands(command, path)
        else:
            yield path, command


def test_every_command_and_option_is_documented() -> None:
    text = CLI_MD.read_text()
    missing = []
    for path, command in _commands(cli):
        if f"`{path}" not in text:
            missing.append(path)
            continue
        section = text[text.index(f"`{path}"):]
        for param in command.params:
            names = [n for n in getattr(param, "opts", []) if n.startswith("--")]
            if isinstance(param, click.Option) and names and not any(
                    f"`{n}" in section or f"{n} " in section or f", {n}" in section
                    for n in names):
                missing.append(f"{path} {names[0]}")
    assert missing == []
