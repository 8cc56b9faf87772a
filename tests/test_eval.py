"""The `eval` kind: a run that scores a parent run's checkpoint, under the same contract.

The fast tests use a small command eval (the toy trainer's checkpoint); the slow one evaluates
a debug run of the flagship (`dice_ce_demo` and `dice_ce_demo_eval` from the project's own
configs/ops/project.json) and finds the parent's validation DSC again, volume by volume.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO, Project, base_config

pytestmark = pytest.mark.tmux

# reads the checkpoint it is given, writes one record per item and a metric
SCORER = """
import json, os, sys
from pathlib import Path
from runner import track
ckpt = Path(sys.argv[1])
assert ckpt.is_file(), ckpt
rows = [{"item": i, "score": 0.5 + i / 10, "size": ckpt.stat().st_size} for i in range(3)]
with open(os.environ["OPS_RESULTS_FILE"], "w") as fh:
    fh.writelines(json.dumps(r) + "\\n" for r in rows)
track.log(score_mean=sum(r["score"] for r in rows) / len(rows), step=0)
print("parent", sys.argv[2])
"""


def eval_project(project: Project, **presets: dict[str, Any]) -> Project:
    doc = base_config(project.runs, project.socket)
    doc["presets"]["score"] = {
        "kind": "eval", "command": ["{python}", "-c", SCORER, "{checkpoint}", "{parent_run_dir}"],
        "checkpoint": "checkpoints/ckpt_last.json", "limits": {"grace_sec": 1}}
    doc["presets"].update(presets)
    project.write_config(doc)
    return project


def ops_ok(project: Project, *args: str, timeout: float = 90) -> str:
    result = project.ops(*args, timeout=timeout)
    assert result.exit_code == 0, result.stdout[-3000:] + result.stderr
    return result.stdout


def test_eval_reads_the_parent_checkpoint_and_lifts_results(project: Project) -> None:
    eval_project(project)
    ops_ok(project, "run", "submit", "-p", "toy", "--run-id", "toy-1", "-f")
    ops_ok(project, "run", "submit", "-p", "score", "--from", "toy-1", "--run-id", "ev-1", "-f")
    run_dir = project.run_dir("ev-1")
    summary = project.summary("ev-1")
    assert summary["status"] == "completed"
    assert summary["eval"]["parent_run_id"] == "toy-1"
    assert summary["eval"]["checkpoint"] == str(project.run_dir("toy-1") /
                                                "checkpoints" / "ckpt_last.json")
    results = summary["eval"]["results"]
    assert results["n_items"] == 3 and results["mean"]["score"] == pytest.approx(0.6)
    assert results["file"] == "results.jsonl" and len(results["sha256"]) == 64
    assert summary["metrics_final"]["score_mean"] == pytest.approx(0.6)
    meta = json.loads((run_dir / "run_metadata.json").read_text())
    assert meta["parent_run_id"] == "toy-1" and meta["kind"] == "eval"
    assert f"parent {project.run_dir('toy-1')}" in (run_dir / "stdout.log").read_text()
    assert len((run_dir / "results.jsonl").read_text().splitlines()) == 3
    assert project.ops("validate", str(run_dir)).exit_code == 0
    # ops report groups the eval with the run it scored
    report = json.loads(ops_ok(project, "report", str(project.run_dir("toy-1")), str(run_dir),
                               "--group-by", "lineage", "--format", "json"))
    assert [(g["name"], sorted(g["run_ids"])) for g in report["groups"]] == [
        ("toy-1", ["ev-1", "toy-1"])]


def test_eval_needs_an_ended_parent_and_an_eval_preset(project: Project) -> None:
    eval_project(project)
    alone = project.ops("run", "submit", "-p", "score")
    assert alone.exit_code == 2 and "--from RUN_ID" in alone.stderr
    wrong = project.ops("run", "submit", "-p", "toy", "--from", "nope")
    assert wrong.exit_code == 2 and "needs an eval preset" in wrong.stderr
    missing = project.ops("run", "submit", "-p", "score", "--from", "nope")
    assert missing.exit_code == 3, missing.stderr
    ops_ok(project, "run", "submit", "-p", "slow", "--run-id", "live-1")
    live = project.ops("run", "submit", "-p", "score", "--from", "live-1")
    assert live.exit_code == 2 and "has ended" in live.stderr
    ops_ok(project, "run", "cancel", "live-1")
    for result in (alone, wrong, missing, live):
        assert "Traceback" not in result.stderr
    assert sorted(p.name for p in project.runs.iterdir()) == ["live-1"]


def test_eval_checkpoint_must_stay_inside_the_parent(project: Project) -> None:
    eval_project(project, bad={"kind": "eval", "command": ["true"],
                               "checkpoint": "../other/ckpt.pt"})
    result = project.ops("run", "submit", "-p", "bad", "--from", "x")
    assert result.exit_code == 2 and "inside the parent run dir" in result.stderr


SMALL_FLAGSHIP = ("--set", "filters=4x8x16", "--set", "patch_size=16x16x4",
                  "--set", "steps_per_epoch=2")


def flagship_presets(data: Path) -> dict[str, Any]:
    """The project's own flagship and its eval preset, reading the repo's dataset."""
    real = json.loads((REPO / "configs" / "ops" / "project.json").read_text())["presets"]
    presets = {}
    for name in ("dice_ce_demo", "dice_ce_demo_eval"):
        text = json.dumps(real[name]).replace("{code_dir}/data/vessels", str(data))
        presets[name] = json.loads(text)
    return presets


@pytest.mark.slow
@pytest.mark.timeout(300)  # two interpreters import torch and monai: 30 s each at load 12
def test_eval_of_a_debug_flagship_run_reproduces_its_validation_dsc(project: Project,
                                                                   tmp_path: Path) -> None:
    data = tmp_path / "vessels"  # the demo's dataset, made here: a fresh clone has none
    # six volumes (all that --debug uses), small ones, a small net and two steps: the eval
    # must find the same numbers whatever the sizes, and these take seconds, not a minute
    ops_ok(project, "data", "synth", "--out", str(data), "--n", "6", "--size", "32",
           "--seed", "0", "--force")
    eval_project(project, **flagship_presets(data))
    ops_ok(project, "run", "submit", "-p", "dice_ce_demo", "--debug", "--run-id", "flag-1",
           *SMALL_FLAGSHIP, "-f", timeout=400)
    ops_ok(project, "run", "submit", "-p", "dice_ce_demo_eval", "--from", "flag-1",
           "--run-id", "flag-eval", "-f", timeout=400)
    parent, child = project.summary("flag-1"), project.summary("flag-eval")
    assert child["status"] == "completed", child["failure"]
    rows = [json.loads(line) for line in
            (project.run_dir("flag-eval") / "results.jsonl").read_text().splitlines()]
    recorded = json.loads((project.run_dir("flag-1") / "out" / "per_volume.json").read_text())
    by_volume = {(r["fold"], r["name"]): r["dsc"] for r in recorded["rows"]}
    assert len(rows) == len(by_volume) == parent["metrics_final"]["n_val_volumes"]
    for row in rows:  # the same volumes, the same DSC, volume by volume
        assert row["dsc"] == pytest.approx(by_volume[(row["fold"], row["name"])], abs=1e-6)
    final, before = child["metrics_final"], parent["metrics_final"]
    for name in ("dsc_mean", "dsc_ci_low", "dsc_ci_high", "fold0/dsc_mean", "fold1/dsc_mean",
                 "cldice_mean"):
        assert final[name] == pytest.approx(before[name], abs=1e-6), name
    assert final["dsc_max_abs_diff_vs_parent"] < 1e-6
    assert child["eval"]["results"]["n_items"] == len(rows)
    assert child["eval"]["results"]["mean"]["dsc"] == pytest.approx(before["dsc_mean"], abs=1e-6)
    checked = project.ops("validate", str(project.run_dir("flag-eval")))
    assert checked.exit_code == 0, checked.stdout
