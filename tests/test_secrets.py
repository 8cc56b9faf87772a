"""A planted canary secret never lands in the run dir, in argv, or in the tmux environment."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psutil
import pytest

from .conftest import WORKLOADS, Project, base_config

pytestmark = pytest.mark.tmux

FORWARDED = "canary-forwarded-7f3a9c1e"
UNFORWARDED = "canary-unforwarded-41d2b8"
IN_FILE = "canary-credfile-c09e77aa"


def _leaky_project(project: Project, tmp_path: Path) -> Path:
    creds = tmp_path / "creds.env"
    creds.write_text(f"# test credentials\nAPI_KEY={IN_FILE}\n")
    doc = base_config(project.runs, project.socket)
    doc["secrets"] = {"env": ["OPS_TEST_TOKEN"], "files": []}
    doc["presets"]["leaky"] = {  # leaky.py CREDS_FILE LINGER_SECONDS
        "kind": "command", "command": ["{python}", str(WORKLOADS / "leaky.py"), str(creds), "3"],
        "secrets_env": ["OPS_TEST_TOKEN"], "secrets_files": [str(creds)],
        "limits": {"grace_sec": 1},
    }
    project.write_config(doc)
    return creds


def _processes_mentioning(needles: list[str]) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        found += [f"{proc.info['pid']}: {cmdline}" for n in needles if n in cmdline]
    return found


def test_canary_never_leaks(project: Project, tmp_path: Path) -> None:
    _leaky_project(project, tmp_path)
    env = {"OPS_TEST_TOKEN": FORWARDED, "OPS_OTHER_SECRET": UNFORWARDED}
    result = project.ops("run", "submit", "-p", "leaky", "--run-id", "leak", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    run_dir = project.run_dir("leak")
    project.wait_for(lambda: b"lingering" in _read(run_dir / "stdout.log"))
    needles = [FORWARDED, UNFORWARDED, IN_FILE]

    # while it runs: no process argv, no tmux environment (global or session) holds a canary
    assert _processes_mentioning(needles) == []
    for scope in (["-g"], ["-t", "ops-leak"]):
        shown = subprocess.run(["tmux", "-L", project.socket, "show-environment", *scope],
                               capture_output=True, text=True, check=True).stdout
        assert not any(n in shown for n in needles), shown

    project.wait_for((run_dir / "summary.json").exists)
    assert project.summary("leak")["status"] == "completed"
    log = _read(run_dir / "stdout.log").decode()
    assert "token from env: [REDACTED]" in log
    assert "split across writes: [REDACTED] end" in log
    assert "stderr also: [REDACTED]" in log
    assert "\nAPI_KEY=[REDACTED]\n" in log
    assert "unforwarded: <not forwarded>" in log  # the scrubbed env never carried it
    for path in [p for p in run_dir.rglob("*") if p.is_file()]:
        data = path.read_bytes()
        assert not any(n.encode() in data for n in needles), path
    # the per-run store was consumed and removed
    store = json.loads((run_dir / "spec.json").read_text())["secrets"]["store"]
    assert store and not Path(store).exists()
    assert json.loads((run_dir / "spec.json").read_text())["secrets"]["env_names"] == [
        "OPS_TEST_TOKEN"]


def test_missing_required_secret_is_refused_before_anything_is_written(project: Project,
                                                                       tmp_path: Path) -> None:
    _leaky_project(project, tmp_path)
    result = project.ops("run", "submit", "-p", "leaky", "--run-id", "nosecret")
    assert result.exit_code == 2
    assert "needs OPS_TEST_TOKEN" in result.stderr
    assert not project.run_dir("nosecret").exists()


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""
