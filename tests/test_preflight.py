"""`ops preflight`, submit's preflight gate, and `submit --dry-run`'s estimate, on this machine."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from .conftest import Project, base_config

pytestmark = [pytest.mark.tmux]


def _config(project: Project, **presets: Any) -> None:
    doc = base_config(project.runs, project.socket)
    doc["presets"].update(presets)
    project.write_config(doc)


def test_preflight_here_warns_about_the_missing_gpu_and_picks_the_cpu_profile(
        project: Project) -> None:
    result = project.ops("preflight", "-p", "toy", "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    checks = {c["name"]: c for c in doc["checks"]}
    assert doc["profile"] == "cpu" and doc["gpu_model"] == "cpu"
    assert doc["status"] == "warn"
    assert checks["gpu"]["status"] == "warn" and checks["gpu"]["hint"]
    assert checks["dataset"]["status"] == "pass"
    assert checks["tmux"]["status"] == "pass"
    assert {"ram", "cpus", "disk", "swap", "environment", "git"} <= set(checks)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Any:
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    (mount / "filler").write_bytes(b"\0" * (1900 * 1024))  # nearly full
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True, check=False)


def test_a_nearly_full_disk_fails_with_a_hint(project: Project, tiny_disk: Path) -> None:
    doc = base_config(tiny_disk / "runs" / project.runs.name, project.socket)
    project.write_config(doc)
    result = project.ops("preflight", "--json")
    assert result.exit_code == 6
    disk = next(c for c in result.json()["checks"] if c["name"] == "disk")
    assert disk["status"] == "fail" and "free space" in disk["hint"]
    text = project.ops("preflight")
    assert text.exit_code == 6 and "fail  disk" in text.stdout and "hint:" in text.stdout


def test_a_missing_dataset_fails_and_submit_refuses_unless_skipped(project: Project,
                                                                  tmp_path: Path) -> None:
    missing = tmp_path / "no-such-data"
    toy = base_config(project.runs, project.socket)["presets"]["toy"]
    _config(project, toy={**toy, "dataset": {"name": "points", "dir": str(missing)}})
    result = project.ops("preflight", "-p", "toy", "--json")
    assert result.exit_code == 6
    data = next(c for c in result.json()["checks"] if c["name"] == "dataset")
    assert data["status"] == "fail" and str(missing) in data["detail"] and data["hint"]
    refused = project.ops("run", "submit", "-p", "toy", "--run-id", "t1")
    assert refused.exit_code == 6 and "dataset" in refused.stderr
    assert "--skip-preflight" in refused.stderr
    assert not project.run_dir("t1").exists()
    forced = project.ops("run", "submit", "-p", "toy", "--run-id", "t1", "--skip-preflight")
    assert forced.exit_code == 0, forced.stderr
    assert project.run_dir("t1").exists()


def test_a_dataset_under_the_code_dir_is_found_in_the_checkout(project: Project) -> None:
    """`{code_dir}/data/...` (the project's own presets) is the checkout on the local host:
    present there it passes, absent it fails naming the real path, never `{code_dir}`."""
    toy = base_config(project.runs, project.socket)["presets"]["toy"]
    _config(project, toy={**toy, "dataset": {"name": "d", "dir": "{code_dir}/data/d"}})
    missing = project.ops("preflight", "-p", "toy", "--json")
    data = next(c for c in missing.json()["checks"] if c["name"] == "dataset")
    assert missing.exit_code == 6 and data["status"] == "fail"
    assert "{code_dir}" not in data["detail"] and str(project.root) in data["detail"]
    (project.root / "data" / "d").mkdir(parents=True)
    (project.root / "data" / "d" / "x.nii").write_bytes(b"x")
    found = project.ops("preflight", "-p", "toy", "--json")
    data = next(c for c in found.json()["checks"] if c["name"] == "dataset")
    assert found.exit_code == 0 and data["status"] == "pass", found.stdout


# a workload whose length is proportional to its steps (sh, not Python: no interpreter start
# whose cost on a loaded machine would swamp the difference)
SLEEPER = {"kind": "command", "limits": {"grace_sec": 1}, "overrides": {"steps": 10},
           "command": ["sh", "-c", 'sleep "$(awk "BEGIN {print ${0#--steps=} * 0.8}")"']}


def test_dry_run_estimates_from_earlier_runs_within_20_percent(project: Project) -> None:
    _config(project, sleeper=SLEEPER)
    none_yet = project.ops("run", "submit", "-p", "sleeper", "--dry-run", "--json")
    assert none_yet.exit_code == 0, none_yet.stderr
    assert none_yet.json()["estimate"]["duration_s"] is None
    assert "no completed run" in none_yet.json()["estimate"]["note"]
    for run_id in ("s1", "s2"):
        done = project.ops("run", "submit", "-p", "sleeper", "--run-id", run_id, "-f")
        assert done.exit_code == 0, done.stderr
    before = sorted(p.name for p in project.runs.iterdir())
    dry = project.ops("run", "submit", "-p", "sleeper", "--set", "steps=12", "--dry-run",
                      "--json")
    assert dry.exit_code == 0, dry.stderr
    doc = dry.json()
    assert sorted(p.name for p in project.runs.iterdir()) == before  # nothing written
    assert doc["argv"][-1] == "--steps=12" and doc["spec"]["overrides"] == {"steps": 12}
    assert doc["preflight"]["status"] in ("pass", "warn")
    estimate = doc["estimate"]
    assert estimate["runs"] == 2
    third = project.ops("run", "submit", "-p", "sleeper", "--set", "steps=12", "--run-id",
                        "s3", "-f")
    assert third.exit_code == 0, third.stderr
    actual = json.loads((project.run_dir("s3") / "summary.json").read_text())["elapsed_s"]
    assert abs(estimate["duration_s"] - actual) <= 0.2 * actual, (estimate, actual)
    text = project.ops("run", "submit", "-p", "sleeper", "--dry-run")
    assert "estimate:" in text.stdout and "nothing launched" in text.stdout


def test_the_estimate_scales_the_workload_not_the_set_up_before_it(project: Project) -> None:
    """A run's set-up (wrapper start to workload start: snapshots, interpreter) does not grow
    with its steps; only the workload's own seconds are scaled."""
    _config(project, sleeper=SLEEPER)
    done = project.ops("run", "submit", "-p", "sleeper", "--set", "steps=1", "--run-id", "q1",
                       "-f")
    assert done.exit_code == 0, done.stderr
    run_dir = project.run_dir("q1")
    meta = json.loads((run_dir / "run_metadata.json").read_text())
    elapsed = json.loads((run_dir / "summary.json").read_text())["elapsed_s"]
    started = datetime.fromisoformat(meta["started_at"].replace("Z", "+00:00")).timestamp()
    setup = round(elapsed / 2, 3)  # a set-up of exactly half the run, written in its record
    meta["process"]["workload_start_time"] = started + setup
    (run_dir / "run_metadata.json").write_text(json.dumps(meta))
    dry = project.ops("run", "submit", "-p", "sleeper", "--set", "steps=3", "--dry-run",
                      "--json")
    assert dry.exit_code == 0, dry.stderr
    expected = setup + (elapsed - setup) * 3
    assert dry.json()["estimate"]["duration_s"] == pytest.approx(expected, abs=0.02)


def test_a_slurm_host_needs_sbatch_not_tmux(tmp_path: Path) -> None:
    bare = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)}  # no tmux, sbatch
    result = subprocess.run([sys.executable, "-m", "runner", "preflight", "--json",
                             "--outputs-root", str(tmp_path), "--launcher", "slurm"],
                            capture_output=True, text=True, env=bare, check=False)
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert "tmux" not in checks
    assert checks["sbatch"]["status"] == "fail" and "SLURM" in checks["sbatch"]["hint"]
    plain = subprocess.run([sys.executable, "-m", "runner", "preflight", "--json",
                            "--outputs-root", str(tmp_path)],
                           capture_output=True, text=True, env=bare, check=False)
    assert {c["name"]: c["status"] for c in json.loads(plain.stdout)["checks"]}["tmux"] == "fail"
