"""Every --json output and every file ops writes outside a run dir matches its schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from runner.schemas import load_schema

from .conftest import Project

pytestmark = pytest.mark.tmux


def _check(doc: object, name: str) -> None:
    jsonschema.validate(doc, load_schema(name))


def test_envelopes_match_their_schemas(project: Project, tmp_path: Path) -> None:
    submitted = project.ops("run", "submit", "-p", "toy", "--run-id", "env-1", "--json")
    _check(submitted.json(), "run_submit")
    project.wait_for((project.run_dir("env-1") / "summary.json").exists)
    _check(project.ops("run", "list", "--json").json(), "run_list")
    _check(project.ops("run", "status", "--json").json(), "run_status")
    _check(project.ops("run", "status", "env-1", "--json").json(), "run_status")
    _check(project.ops("run", "cancel", "env-1", "--json").json(), "run_cancel")
    fetched = project.ops("run", "fetch", "env-1", "--to", str(tmp_path), "--json")
    _check(fetched.json(), "run_fetch")
    _check(json.loads((tmp_path / "env-1" / ".ops" / "fetch.json").read_text()), "fetch")
    _check(project.ops("config", "show", "--json").json(), "config_show")
    report = project.ops("validate", "--json", str(project.run_dir("env-1")))
    _check(report.json(), "validate")


def test_sweep_files_match_their_schemas(project: Project) -> None:
    doc = project.ops("run", "submit", "-p", "pair", "--json").json()
    _check(doc, "run_submit")
    sweeps = project.runs / ".sweeps"
    project.wait_for((sweeps / f"{doc['sweep_id']}.driver.json").exists)
    _check(json.loads((sweeps / f"{doc['sweep_id']}.json").read_text()), "sweep")
    _check(json.loads((sweeps / f"{doc['sweep_id']}.driver.json").read_text()), "sweep_driver")
    for run_id in doc["run_ids"]:
        project.wait_for((project.run_dir(run_id) / "summary.json").exists)


def test_report_and_diff_envelopes(project: Project) -> None:
    for run_id in ("env-r1", "env-r2"):
        assert project.ops("run", "submit", "-p", "toy", "--run-id", run_id, "-f").exit_code == 0
    _check(project.ops("report", "--host", "local", "--format", "json").json(), "report")
    _check(project.ops("run", "diff", "env-r1", "env-r2", "--json").json(), "run_diff")
    _check(project.ops("run", "status", "env-r1", "--json").json(), "run_status")
