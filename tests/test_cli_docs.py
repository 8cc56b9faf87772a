"""docs/reference/cli.md names every command and every option `ops --help` has, each option in
its own command's section (from the command's `## ` heading to the next one)."""

from __future__ import annotations

import re
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


def section(text: str, path: str) -> str | None:
    """The text of the `## \\`ops run submit ...\\`` section of a command, heading included, up
    to the next `## ` heading; None when the command has no heading of its own."""
    heading = re.search(rf"^## `{re.escape(path)}[ `]", text, re.MULTILINE)
    if heading is None:
        return None
    following = re.search(r"^## ", text[heading.end():], re.MULTILINE)
    end = heading.end() + following.start() if following else len(text)
    return text[heading.start():end]


def _documented(option: str, body: str) -> bool:
    return f"`{option}" in body or f", {option}" in body


def undocumented(text: str) -> list[str]:
    """Commands without a section, and options absent from their command's section."""
    missing = []
    for path, command in _commands(cli):
        body = section(text, path)
        if body is None:
            missing.append(path)
            continue
        for param in command.params:
            names = [n for n in getattr(param, "opts", []) if n.startswith("--")]
            if isinstance(param, click.Option) and names and not any(
                    _documented(n, body) for n in names):
                missing.append(f"{path} {names[0]}")
    return missing


def test_every_command_and_option_is_documented() -> None:
    assert undocumented(CLI_MD.read_text()) == []


def test_an_option_documented_only_in_a_later_section_is_missing() -> None:
    """Deleting `ops run submit`'s --json and --follow rows is caught, although later sections
    (ops run list, ops run tail) document options of those names."""
    text = CLI_MD.read_text()
    submit = section(text, "ops run submit")
    assert submit is not None
    rows = [line for line in submit.splitlines()
            if line.startswith(("| `--json`", "| `-f, --follow`"))]
    assert len(rows) == 2
    for row in rows:
        text = text.replace(row + "\n", "", 1)
    assert undocumented(text) == ["ops run submit --follow", "ops run submit --json"]
