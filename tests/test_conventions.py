"""CLI conventions: bare `ops` is help, summaries are whole sentences, every --json says what
it prints, click's own usage errors read like ops's, and `ops init` keeps a repo tidy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from ops.cli.main import get_cli
from ops.config.scaffold import init_project
from ops.errors import ConflictError

REPO = Path(__file__).resolve().parent.parent
HELP_WIDTH = 80  # click wraps help at min(terminal width, 80)


def _ops(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPS_PROJECT_CONFIG"}
    return subprocess.run([sys.executable, "-m", "ops", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def _walk(group: click.Group, path: str = "ops") -> Iterator[tuple[str, click.Group, str,
                                                                   click.Command]]:
    ctx = click.Context(group, info_name=path)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, f"{path} {name} is listed but cannot be loaded"
        yield path, group, name, command
        if isinstance(command, click.Group):
            yield from _walk(command, f"{path} {name}")


def _commands() -> list[tuple[str, click.Group, str, click.Command]]:
    return list(_walk(get_cli()))


def test_bare_ops_prints_help_and_succeeds() -> None:
    result = _ops()
    assert result.returncode == 0, result.stderr
    assert "Usage: ops" in result.stdout and "Commands:" in result.stdout


def test_no_command_summary_is_cut_mid_sentence() -> None:
    """What `ops GROUP --help` lists for each command is its whole first sentence: click cuts
    a longer one to fit the line and ends it with '...'."""
    cut = []
    for path, group, name, command in _commands():
        longest = max(len(n) for n in group.list_commands(click.Context(group)))
        limit = HELP_WIDTH - 6 - longest
        shown = command.get_short_help_str(limit=limit)
        if shown.endswith("..."):
            cut.append(f"{path} {name}: {shown!r}")
    assert not cut, "summaries cut in --help lists:\n" + "\n".join(cut)


def test_every_json_option_has_help() -> None:
    bare = [f"{path} {name}" for path, _group, name, command in _commands()
            for param in command.params
            if isinstance(param, click.Option) and "--json" in param.opts and not param.help]
    assert not bare, "--json without help text: " + ", ".join(bare)


@pytest.mark.parametrize(("args", "message", "hint"), [
    pytest.param(["config", "show", "--bogus"], "No such option '--bogus'",
                 "see `ops config show --help`", id="unknown-option"),
    pytest.param(["run", "gc"], "Missing option '--older-than'", "see `ops run gc --help`",
                 id="missing-option"),
    pytest.param(["run", "gc", "--older-than", "1d", "--scope", "moon"],
                 "Invalid value for '--scope'", "see `ops run gc --help`", id="bad-choice"),
    pytest.param(["nosuch"], "No such command 'nosuch'", "see `ops --help`",
                 id="unknown-command"),
    pytest.param(["run", "rm"], "Missing argument 'RUN_ID...'", "see `ops run rm --help`",
                 id="missing-argument"),
])
def test_click_usage_errors_read_like_ops_errors(args: list[str], message: str,
                                                 hint: str) -> None:
    result = _ops(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert lines[-1] == f"hint: {hint}"
    assert "Usage:" not in result.stderr and "Traceback" not in result.stderr


def _git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


def test_init_gitignores_runs_and_artifacts(tmp_path: Path) -> None:
    repo = _git_repo(tmp_path / "repo")
    result = _ops("init", "--name", "tidy", cwd=repo)
    assert result.returncode == 0, result.stderr
    lines = (repo / ".gitignore").read_text().splitlines()
    assert {"runs/", "artifacts/", ".ops/", "configs/ops/project.local.json"} <= set(lines)
    smoke = json.loads((repo / "configs/ops/project.json").read_text())["presets"]["smoke"]
    assert smoke["command"][0] == "{python}"


@pytest.mark.parametrize("force", [False, True], ids=["refused", "forced"])
def test_init_in_a_subdirectory_of_a_configured_repo(tmp_path: Path, force: bool) -> None:
    repo = _git_repo(tmp_path / "repo")
    init_project(repo, name="top")
    sub = repo / "experiments" / "a"
    sub.mkdir(parents=True)
    if not force:
        with pytest.raises(ConflictError, match="already has a project file at its root"):
            init_project(sub)
        assert not (sub / "configs").exists()
        result = _ops("init", cwd=sub)
        assert result.returncode == 4 and "hint: run ops from anywhere" in result.stderr
    else:
        init_project(sub, force=True)
        assert (sub / "configs/ops/project.json").exists()


def test_init_outside_a_repo_or_at_its_root_is_fine(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    init_project(plain)
    assert (plain / "configs/ops/project.json").exists()
    repo = _git_repo(tmp_path / "repo")
    init_project(repo)
    assert (repo / "configs/ops/project.json").exists()
