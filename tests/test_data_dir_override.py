"""`--set data_dir=X`: the run's dataset record names X, the directory the workload was given.

The built-in trainer takes its dataset as `--data_dir`, and an override of that name is
rendered after the command, so it is what the workload reads. spec.dataset.dir (and with it
{data_dir} and dataset_manifest.json) must follow it, or the record describes data the run
never read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ops.config.loader import load_config, resolve_preset
from ops.services.spec import HostPaths, build_spec
from runner import workload_command
from runner.seg import synth

from .conftest import Project, _preset


def _spec(config_path: Path, preset: str, sets: list[str]) -> dict[str, Any]:
    loaded = load_config(config_path)
    return build_spec(loaded, resolve_preset(loaded.config, preset, sets), "r-1",
                      paths=HostPaths("/o", "/h"), code={"dir": "/code"}, secret_names=[])


@pytest.fixture
def seg_config(tmp_path: Path) -> Path:
    path = tmp_path / "configs" / "ops" / "project.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"project": {"name": "demo"}, "presets": {"seg": {
        "kind": "monai_seg", "dataset": {"name": "vessels", "dir": "{code_dir}/data/a"},
        "overrides": {"loss": "dice_ce"}}}}))
    return path


def test_the_trainers_data_dir_override_becomes_the_dataset_dir(seg_config: Path) -> None:
    spec = _spec(seg_config, "seg", ["data_dir=/data/b"])
    assert spec["dataset"]["dir"] == "/data/b"
    assert spec["dataset"]["preset_dir"] == "{code_dir}/data/a"  # what the preset said
    assert spec["overrides"] == {"data_dir": "/data/b"}  # the override is recorded
    assert spec["config"]["dataset"]["dir"] == "/data/b"
    values = workload_command.placeholder_values(spec, Path("/o/r-1"), "python3")
    assert values["data_dir"] == "/data/b"
    argv = workload_command.build_argv(spec["workload"], values)
    given = [a.split("=", 1)[1] for a in argv if a.startswith("--data_dir=")]
    assert given and set(given) == {"/data/b"}  # every --data_dir the trainer sees


def test_without_the_override_the_preset_dir_stands(seg_config: Path) -> None:
    spec = _spec(seg_config, "seg", [])
    assert spec["dataset"] == {"name": "vessels", "dir": "{code_dir}/data/a"}
    values = workload_command.placeholder_values(spec, Path("/o/r-1"), "python3")
    assert values["data_dir"] == "/code/data/a"


def test_the_manifest_lists_the_directory_the_run_was_given(project: Project,
                                                            tmp_path: Path) -> None:
    first, second = tmp_path / "data-a", tmp_path / "data-b"
    synth.synthesize(first, n=1, size=8, seed=0)
    synth.synthesize(second, n=2, size=8, seed=1)
    doc = json.loads(project.config_path.read_text())
    # reads its data the way the trainer does: the last --data_dir wins (argparse)
    script = ("import os, sys; d = [a.split('=', 1)[1] for a in sys.argv "
              "if a.startswith('--data_dir=')][-1]; print(sorted(os.listdir(d + '/imagesTr')))")
    doc["presets"]["lister"] = _preset(
        ["{python}", "-c", script, "--data_dir={data_dir}"],
        overrides={"data_dir": str(first)}, dataset={"name": "vessels", "dir": str(first)})
    project.write_config(doc)
    done = project.ops("run", "submit", "-p", "lister", "--set", f"data_dir={second}",
                       "--run-id", "dd-1", "-f")
    assert done.exit_code == 0, done.stderr
    assert "vessel_001.nii" in done.stdout  # the workload read the second dataset
    manifest = json.loads((project.run_dir("dd-1") / "dataset_manifest.json").read_text())
    assert manifest["root"] == str(second)
    expected = sorted(p.relative_to(second).as_posix() for p in second.rglob("*") if p.is_file())
    assert [f["path"] for f in manifest["files"]] == expected
    spec = json.loads((project.run_dir("dd-1") / "spec.json").read_text())
    assert spec["overrides"] == {"data_dir": str(second)}
    checked = project.ops("validate", "--deep", str(project.run_dir("dd-1")))
    assert checked.exit_code == 0, checked.stdout
