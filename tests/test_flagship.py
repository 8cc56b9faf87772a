"""The flagship preset through ops itself: monai_seg in tmux under the full contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner.seg import synth

from .conftest import Project, base_config

pytestmark = [pytest.mark.tmux, pytest.mark.slow]

SMALL = {"filters": "4,8,16", "patch_size": "16x16x8", "num_threads": 1}


@pytest.fixture
def seg_project(project: Project, tmp_path: Path) -> Project:
    data = tmp_path / "vessels"
    synth.synthesize(data, n=6, size=32, seed=0)
    doc = base_config(project.runs, project.socket)
    doc["storage"] = {"wandb": {"mode": "offline", "project": "ops-test"}}
    doc["presets"]["seg"] = {"kind": "monai_seg", "dataset": {"name": "vessels", "dir": str(data)},
                             "overrides": {"loss": "dice_ce", **SMALL},
                             "best": {"dsc_mean": "max"}}
    project.write_config(doc)
    return project


def test_debug_flagship_run_completes_and_validates(seg_project: Project) -> None:
    result = seg_project.ops("run", "submit", "-p", "seg", "--debug", "--run-id", "seg-1", "-f",
                             timeout=300)
    assert result.exit_code == 0, result.stdout + result.stderr
    run_dir = seg_project.run_dir("seg-1")
    checked = seg_project.ops("validate", "--deep", str(run_dir))
    assert checked.exit_code == 0, checked.stdout
    summary = seg_project.summary("seg-1")
    final = summary["metrics_final"]
    for name in ("dsc", "cldice", "masd", "hd95"):
        for fold in ("fold0/", "fold1/", ""):
            for part in ("mean", "ci_low", "ci_high"):
                assert f"{fold}{name}_{part}" in final, f"{fold}{name}_{part}"
    assert final["folds_completed"] == 2
    printed = subprocess.run([sys.executable, "-m", "runner.seg.table", str(run_dir)],
                             capture_output=True, text=True, check=False)
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()  # what `make demo` ends with
    assert lines[0].startswith("run seg-1: completed in ")
    assert [line.split()[0] for line in lines[1:]] == ["fold", "----", "0", "1", "all"]
    assert lines[-1].split()[1] == f"{final['dsc_mean']:.3f}"
    effective = json.loads((run_dir / "config_effective.json").read_text())
    assert effective["derived"]["workload"]["patch_size"] == [16, 16, 8]
    # the 5-slice volume is padded up to the patch, and config_effective.json says so
    assert effective["derived"]["workload"]["padding"]["volumes"] == [
        {"name": "vessel_001", "shape": [32, 32, 5], "pad": [0, 0, 3]}]
    assert "--debug=True" in effective["derived"]["argv"]
    assert "--wandb=offline" in effective["derived"]["argv"]
    # W&B offline for real: the run lives in the run dir, under the id ops chose up front
    meta = json.loads((run_dir / "run_metadata.json").read_text())
    assert meta["wandb"]["run_id"] == "seg-1"
    assert summary["wandb"]["run_id"] == "seg-1" and summary["wandb"]["mode"] == "offline"
    assert list((run_dir / "wandb").rglob("*seg-1*"))


def test_guard_refusal_is_a_failed_run_with_class_guard(seg_project: Project) -> None:
    result = seg_project.ops("run", "submit", "-p", "seg", "--debug", "--run-id", "seg-2",
                             "--set", "patch_size=64x64x4", "-f", timeout=300)
    assert result.exit_code == 10
    failure = seg_project.summary("seg-2")["failure"]
    assert failure["class"] == "guard"
    assert "patch_size 64x64x4 is larger than every volume" in failure["message"]
