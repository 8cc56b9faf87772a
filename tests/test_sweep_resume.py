"""Sweeps run their members one after another (waiting ones read `queued`); resume links runs."""

from __future__ import annotations

import json

import pytest

from .conftest import Project

pytestmark = pytest.mark.tmux


def _statuses(project: Project, run_ids: list[str]) -> list[str]:
    runs = {r["run_id"]: r for r in project.ops("run", "status", "--json").json()["runs"]}
    return [runs[r]["status"] for r in run_ids]


def test_sweep_runs_members_in_order_as_separate_runs(project: Project) -> None:
    result = project.ops("run", "submit", "-p", "pair", "--json", "--follow")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout[: result.stdout.index("}\n") + 1])
    run_ids = doc["run_ids"]
    assert [r.split("-")[0] for r in run_ids] == ["printer", "toy"]
    assert _statuses(project, run_ids) == ["completed", "completed"]
    first, second = (project.summary(r) for r in run_ids)
    assert first["ended_at"] <= second["started_at"]
    for run_id in run_ids:
        spec = json.loads((project.run_dir(run_id) / "spec.json").read_text())
        assert spec["sweep_id"] == doc["sweep_id"]
        assert project.ops("validate", str(project.run_dir(run_id))).exit_code == 0


def test_waiting_member_is_queued_and_can_be_cancelled(project: Project) -> None:
    doc = project.ops("run", "submit", "-p", "slowpair", "--json").json()
    slow, waiting = doc["run_ids"]
    project.wait_for(lambda: _statuses(project, [slow, waiting]) == ["running", "queued"])
    cancelled = project.ops("run", "cancel", waiting, "--json")
    assert cancelled.exit_code == 0 and cancelled.json()["status"] == "killed"
    assert project.summary(waiting)["failure"]["message"] == "cancelled while queued in its sweep"
    assert project.ops("run", "cancel", slow).exit_code == 0
    assert _statuses(project, [slow, waiting]) == ["killed", "killed"]
    assert not (project.run_dir(waiting) / "run_metadata.json").exists()  # it never started


def test_resume_is_a_new_run_linked_to_its_parent(project: Project) -> None:
    first = project.ops("run", "submit", "-p", "resumable", "--set", "lr=0.5",
                        "--run-id", "r-1", "-f")
    assert first.exit_code == 0
    again = project.ops("run", "submit", "--resume", "r-1", "--run-id", "r-2", "-f")
    assert again.exit_code == 0, again.stderr
    parent_dir = str(project.run_dir("r-1"))
    assert f"resume {parent_dir} ['--resume_from={parent_dir}', '--lr=0.5']" in again.stdout
    meta = json.loads((project.run_dir("r-2") / "run_metadata.json").read_text())
    assert meta["parent_run_id"] == "r-1"
    assert project.ops("run", "submit", "--resume", "nope").exit_code == 3


def test_submit_needs_exactly_one_of_preset_and_resume(project: Project) -> None:
    result = project.ops("run", "submit")
    assert result.exit_code == 2 and "exactly one of --preset and --resume" in result.stderr
