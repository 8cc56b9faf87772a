"""`ops run diff`, the detailed `ops run status RUN` and `ops report --host local` over real
runs made by `ops run submit` through tmux; and the diff's sections over synthetic run dirs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from ops.report import diff
from runner.report_data import Want, collect
from runner.schemas import load_schema

from .conftest import REPO, Project, base_config
from .report_runs import FakeRun, write_run

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env={**os.environ, **GIT_ENV}, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo_project(project: Project) -> Project:
    """The test project as a git repo with its own dataset dir (gitignored) and a preset."""
    doc = base_config(project.runs, project.socket)
    data = project.root / "data"
    data.mkdir()
    shutil.copy(REPO / "examples" / "data" / "points.csv", data / "points.csv")
    (data / "notes.txt").write_text("first version\n")
    doc["presets"]["fit"] = {
        "kind": "command", "limits": {"grace_sec": 1}, "best": {"loss": "min"},
        "command": ["{python}", str(REPO / "examples" / "toy_train.py"),
                    "--data={data_dir}/points.csv"],
        "overrides": {"max_iters": 12, "sleep": 0.0},
        "dataset": {"name": "points", "dir": str(data)}}
    project.write_config(doc)
    (project.root / ".gitignore").write_text("/data/\n/.ops/\n/artifacts/\n")
    (project.root / "README.md").write_text("one\n")
    git(project.root, "init", "-q", "-b", "main")
    git(project.root, "add", "-A")
    git(project.root, "commit", "-q", "-m", "first")
    return project


@pytest.mark.slow
def test_diff_names_exactly_the_override_the_commit_and_the_data_file(
        repo_project: Project) -> None:
    """Must show: two runs that differ in one override, one commit and one dataset file."""
    p = repo_project
    first = p.ops("run", "submit", "-p", "fit", "--run-id", "d1", "-f")
    assert first.exit_code == 0, first.stderr
    (p.root / "README.md").write_text("two\n")
    git(p.root, "commit", "-q", "-am", "second commit")
    (p.root / "data" / "notes.txt").write_text("second, longer version\n")
    second = p.ops("run", "submit", "-p", "fit", "--set", "max_iters=20", "--run-id", "d2",
                   "-f")
    assert second.exit_code == 0, second.stderr
    out = p.ops("run", "diff", "d1", "d2", "--json")
    assert out.exit_code == 0, out.stderr
    doc = out.json()
    jsonschema.validate(doc, load_schema("run_diff"))
    head = git(p.root, "rev-parse", "HEAD")
    base = git(p.root, "rev-parse", "HEAD~1")
    assert doc["differences"] == ["config: overrides.max_iters 12 -> 20",
                                  f"code: commit {base[:10]} -> {head[:10]}",
                                  "data: notes.txt changed"]
    code = doc["sections"]["code"]
    assert code["commits_between"] == [f"{head[:7]} second commit"]
    assert code["direction"] == "a..b"
    assert doc["sections"]["command"]["follows_from_config"] is True
    assert doc["sections"]["env"] == {"changed": [], "packages": {"added": [], "removed": [],
                                                                  "changed": []}}
    text = p.ops("run", "diff", "d1", "d2").stdout
    assert "3 differences in the inputs:" in text
    assert "~ notes.txt: 14 -> 23 bytes" in text
    only = p.ops("run", "diff", "d1", "d2", "--section", "config", "--json").json()
    assert list(only["sections"]) == ["config"]
    detail = p.ops("run", "status", "d2")
    assert detail.exit_code == 0, detail.stderr
    for needle in ("status         completed", "heartbeat", "gpus now",
                   "stdout.log (last", f"git            {head[:12]}", "loss"):
        assert needle in detail.stdout, detail.stdout
    report = p.ops("report", "--host", "local", "--format", "json")
    assert report.exit_code == 0, report.stderr
    doc = report.json()
    jsonschema.validate(doc, load_schema("report"))
    assert [r["run_id"] for r in doc["runs"]] == ["d1", "d2"]
    assert doc["config_keys"] == ["overrides.max_iters"]
    assert doc["runs"][1]["series"]["loss"][-1][0] == 20.0


def test_diff_of_an_unknown_run_is_not_found(repo_project: Project) -> None:
    out = repo_project.ops("run", "diff", "nope-1", "nope-2")
    assert out.exit_code == 3 and "no run 'nope-1'" in out.stderr
    assert "Traceback" not in out.stderr


def _record(root: Path, run: FakeRun) -> dict[str, Any]:
    return collect(write_run(root, run), Want(docs=True))


def test_diff_sections_over_synthetic_runs(tmp_path: Path) -> None:
    a = _record(tmp_path, FakeRun("a", overrides={"lr": 0.1, "gone": 1},
                                  metrics_final={"loss": 0.5}, metrics_best={"loss": 0.4},
                                  best={"loss": "min"},
                                  dataset_files={"x.nii": (1, "a" * 64), "y.nii": (2, "b" * 64)},
                                  packages=("numpy==2.0.0", "scipy==1.0")))
    b = _record(tmp_path, FakeRun("b", overrides={"lr": 0.2, "new": True},
                                  metrics_final={"loss": 0.25}, metrics_best={"loss": 0.2},
                                  best={"loss": "min"}, commit="b" * 40, dirty=True,
                                  dataset_files={"x.nii": (1, "c" * 64), "z.nii": (3, "d" * 64)},
                                  packages=("numpy==2.1.0", "torch==2.3.0")))
    doc = diff.diff_runs(a, b, repo=None)
    jsonschema.validate(doc, load_schema("run_diff"))
    sections = doc["sections"]
    assert sections["config"]["changed"] == [{"key": "overrides.lr", "a": 0.1, "b": 0.2}]
    assert sections["config"]["added"] == [{"key": "overrides.new", "b": True}]
    assert sections["config"]["removed"] == [{"key": "overrides.gone", "a": 1}]
    assert sections["data"]["added"] == ["z.nii"] and sections["data"]["removed"] == ["y.nii"]
    assert [c["path"] for c in sections["data"]["changed"]] == ["x.nii"]
    assert sections["env"]["packages"] == {"added": ["torch==2.3.0"],
                                           "removed": ["scipy==1.0"],
                                           "changed": ["numpy 2.0.0 -> 2.1.0"]}
    loss = [m for m in sections["metrics"] if m["metric"] == "loss"]
    assert [(m["kind"], m["delta"], m["better"]) for m in loss] == [
        ("final", -0.25, "b"), ("best", pytest.approx(-0.2), "b")]
    assert "code: commit aaaaaaaaaa -> bbbbbbbbbb (dirty)" in doc["differences"]
    assert "env: 3 packages differ" in doc["differences"]
    assert json.dumps(doc)  # JSON-able as it stands


def test_status_detail_text_is_safe_and_shows_folds() -> None:
    from ops.cli.render_run import detail_text

    run = {"run_id": "r", "status": "completed", "reason": None,
           "stdout_tail": ["ok", "\x1b[2J\x1b]0;evil\x07title"], "notes": ["a\nb"],
           "metrics_final": {"fold0/dsc_mean": 0.5, "fold0/dsc_ci_low": 0.4,
                             "fold0/dsc_ci_high": 0.6, "fold1/dsc_mean": 0.7, "dsc_mean": 0.6,
                             "loss": None},
           "wandb": {"run_id": "abc", "url": "https://wandb.example/abc"},
           "heartbeat": {"age_s": 3.5, "step": 12, "phase": "train"}, "gpus_now": []}
    text = detail_text(run)
    assert "\x1b" not in text and "\\x1b[2J" in text and "note: a\\nb" in text
    assert "  fold 0   0.5 [0.4, 0.6]" in text and "  fold 1   0.7" in text
    assert "overall  0.6" in text and "non-finite" in text
    assert "wandb          abc https://wandb.example/abc" in text
    assert "heartbeat      last step 12, phase ended (3.5s ago)" in text
