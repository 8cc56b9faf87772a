"""Bad input gets a clear message, a documented exit code, and changes nothing on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ops.config.loader import load_config
from ops.services.outputs_root import ensure_local_outputs_root

from .conftest import Project


def _snapshot(*roots: Path) -> dict[str, str]:
    state = {}
    for root in roots:
        for path in sorted(root.rglob("*")) if root.exists() else []:
            key = str(path)
            state[key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "d"
    return state


CASES = [
    pytest.param(["run", "submit", "-p", "nope"], 2, "unknown preset 'nope' (known: ",
                 id="unknown-preset"),
    pytest.param(["run", "submit", "-p", "toy", "--run-id", "../evil"], 2, "invalid run id",
                 id="run-id-dotdot"),
    pytest.param(["run", "submit", "-p", "toy", "--run-id", "a/b"], 2, "invalid run id",
                 id="run-id-slash"),
    pytest.param(["run", "submit", "-p", "toy", "--set", "max_iters=many"], 2,
                 "expected an integer", id="set-wrong-type"),
    pytest.param(["run", "submit", "-p", "toy", "--set", "nosuch=1"], 2, "max_iters",
                 id="set-unknown-key"),
    pytest.param(["run", "submit", "-p", "toy", "--set", "max_iters"], 2, "KEY=VALUE",
                 id="set-without-equals"),
    pytest.param(["run", "status", "../x"], 2, "invalid run id", id="status-bad-id"),
    pytest.param(["run", "status", "never-ran"], 3, "no run 'never-ran'", id="status-unknown"),
    pytest.param(["run", "tail", "never-ran"], 3, "no run at", id="tail-unknown"),
    pytest.param(["run", "cancel", "never-ran"], 3, "no run at", id="cancel-unknown"),
    pytest.param(["validate", "/nonexistent/run"], 3, "no such run directory",
                 id="validate-missing"),
]


@pytest.mark.parametrize(("args", "code", "message"), CASES)
def test_bad_input(project: Project, args: list[str], code: int, message: str) -> None:
    # the (empty) local outputs root is there before any command: what is checked is that
    # bad input adds nothing to it or to the checkout
    ensure_local_outputs_root(load_config(project.config_path))
    before = _snapshot(project.runs, project.root)
    result = project.ops(*args)
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert message.lower() in result.stderr.lower(), result.stderr
    assert "Traceback" not in result.stderr
    assert _snapshot(project.runs, project.root) == before


def test_malformed_project_json(project: Project) -> None:
    project.config_path.write_text('{"project": {"name": "x",}\n')
    before = _snapshot(project.runs, project.root)
    result = project.ops("run", "submit", "-p", "toy")
    assert result.exit_code == 2
    assert "invalid JSON at line 1" in result.stderr
    assert _snapshot(project.runs, project.root) == before


def test_schema_violation_lists_each_problem(project: Project) -> None:
    project.config_path.write_text(
        '{"project": {"name": "x"}, "tmux": {"watch_interval_sec": -1},'
        ' "presets": {"p": {"kind": "command", "command": [], "bogus": 1}}}')
    result = project.ops("config", "validate")
    assert result.exit_code == 2
    for line in ("tmux.watch_interval_sec:", "presets.p.command:", "presets.p.bogus:"):
        assert line in result.stderr, result.stderr


def test_existing_run_id_is_refused_and_left_untouched(project: Project) -> None:
    assert project.ops("run", "submit", "-p", "toy", "--run-id", "taken", "-f").exit_code == 0
    before = _snapshot(project.runs)
    result = project.ops("run", "submit", "-p", "toy", "--run-id", "taken")
    assert result.exit_code == 4
    assert "already exists" in result.stderr
    assert _snapshot(project.runs) == before
