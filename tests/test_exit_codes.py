"""docs/reference/exit-codes.md agrees with the code, and a few commands exit as it says.

The tables are parsed from the page (rows `| code | name-or-status-or-kind | ...`) and compared
with ops.errors.ExitCode, ops.errors.STATUS_EXIT_CODES and runner.cli.EXIT_BY_KIND. The CLI
checks run `python -m ops` / `python -m runner` as a user would, on a throwaway project with
no tmux involved (none of these cases gets as far as launching anything).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from ops.errors import STATUS_EXIT_CODES, ExitCode
from runner.cli import EXIT_BY_KIND

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "reference" / "exit-codes.md"
_CELL_NAME = re.compile(r"`([^`]+)`")


def doc_tables() -> dict[str, dict[int, str]]:
    """Every table of the page whose first column is `code`, keyed by its second header:
    {header: {code: the backticked name in the second column, or "-"}}."""
    tables: dict[str, dict[int, str]] = {}
    current: dict[int, str] | None = None
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith(
            "|") else []
        if len(cells) < 2:
            current = None
        elif cells[0] == "code":
            current = tables.setdefault(cells[1], {})
        elif current is not None and cells[0].isdigit():
            found = _CELL_NAME.search(cells[1])
            current[int(cells[0])] = found.group(1) if found else cells[1]
    return tables


def exit_code_names() -> dict[int, str]:
    return {value: name for name, value in vars(ExitCode).items()
            if name.isupper() and isinstance(value, int)}


def test_page_has_the_three_tables() -> None:
    assert set(doc_tables()) >= {"name", "run status", "error kind"}


def test_ops_table_matches_exit_code() -> None:
    assert doc_tables()["name"] == exit_code_names()


def test_follow_table_matches_status_exit_codes() -> None:
    documented = {status: code for code, status in doc_tables()["run status"].items()}
    assert documented == STATUS_EXIT_CODES


def test_runner_table_matches_exit_by_kind() -> None:
    documented = {kind: code for code, kind in doc_tables()["error kind"].items() if kind != "-"}
    assert documented == EXIT_BY_KIND
    assert doc_tables()["error kind"][0] == "-"


def test_status_codes_do_not_collide_with_error_codes() -> None:
    failures = set(STATUS_EXIT_CODES.values()) - {0}
    assert not failures & set(exit_code_names())


# -- what a user gets ----------------------------------------------------------------------------
@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with two command presets and a writable outputs root; returns its root."""
    root = tmp_path / "repo"
    (root / "configs" / "ops").mkdir(parents=True)
    preset = {"kind": "command", "command": ["true"]}
    doc = {"project": {"name": "codes", "local_outputs_dir": str(tmp_path / "runs")},
           "presets": {"alpha": preset, "beta": preset}}
    (root / "configs" / "ops" / "project.json").write_text(json.dumps(doc))
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "spec.json").write_text("{}")
    return root


def run_module(module: str, *args: str, cwd: Path,
               stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPS_PROJECT_CONFIG"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, env=env, timeout=60, check=False)


def _ops(project: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    config = project / "configs" / "ops" / "project.json"
    return run_module("ops", "--project-config", str(config), *args, cwd=project)


OPS_CASES = [
    pytest.param(["validate", "/nonexistent"], ExitCode.NOT_FOUND, "no such run directory",
                 id="validate-missing-dir"),
    pytest.param(["validate", "../incomplete"], ExitCode.FAILURE,
                 "summary.json: L0.required: required file is missing",
                 id="validate-missing-files"),
    pytest.param(["run", "submit", "--preset", "nope"], ExitCode.USAGE,
                 "unknown preset 'nope' (known: alpha, beta)", id="submit-unknown-preset"),
    pytest.param(["run", "status", "../x"], ExitCode.USAGE, "invalid run id",
                 id="status-dotdot-run-id"),
    pytest.param(["run", "submit"], ExitCode.USAGE, "give exactly one of --preset and --resume",
                 id="submit-no-preset"),
    pytest.param(["run", "status", "--no-such-option"], ExitCode.USAGE, "no such option",
                 id="click-usage-error"),
]


@pytest.mark.parametrize(("args", "code", "message"), OPS_CASES)
def test_ops_exit_code(project: Path, args: list[str], code: int, message: str) -> None:
    result = _ops(project, args)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert message.lower() in (result.stdout + result.stderr).lower(), result
    assert "Traceback" not in result.stderr
    runs = project.parent / "runs" / "codes"  # <local_outputs_dir>/<name>
    assert not runs.exists() or not any(runs.iterdir()), "a failed command created a run dir"


def test_missing_project_config_is_not_found(tmp_path: Path) -> None:
    result = run_module("ops", "run", "list", cwd=tmp_path)
    assert result.returncode == ExitCode.NOT_FOUND, result.stderr
    assert "ops init" in result.stderr


def _spec(run_id: str) -> str:
    return json.dumps({"spec": {"run_id": run_id}, "secrets": {}})


RUNNER_CASES = [
    pytest.param(["version"], "", 0, None, id="version"),
    pytest.param(["status", "{root}", "../x"], "", 2, "usage", id="status-bad-run-id"),
    pytest.param(["status", "{root}", "nope"], "", 3, "not_found", id="status-unknown-run"),
    pytest.param(["show", "{root}/taken", "summary.json"], "", 3, "not_found",
                 id="show-missing-file"),
    pytest.param(["submit", "{root}"], "not json", 2, "usage", id="submit-stdin-not-json"),
    pytest.param(["submit", "{root}"], _spec("taken"), 4, "conflict", id="submit-existing-run"),
]


@pytest.mark.parametrize(("args", "stdin", "code", "kind"), RUNNER_CASES)
def test_runner_exit_code(tmp_path: Path, args: list[str], stdin: str, code: int,
                          kind: str | None) -> None:
    (tmp_path / "taken").mkdir()
    result = run_module("runner", *[a.format(root=tmp_path) for a in args], cwd=REPO,
                        stdin=stdin)
    assert result.returncode == code, (result.stdout, result.stderr)
    answer: Mapping[str, object] = json.loads(result.stdout)
    error = answer.get("error")
    if kind is None:
        assert error is None
    else:
        assert isinstance(error, dict) and error["kind"] == kind and error["message"]
        assert EXIT_BY_KIND[kind] == code
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"], "nothing else was created"
