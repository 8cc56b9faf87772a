"""A planted canary secret never lands in the run dir, in argv, or in the tmux environment."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest

from .conftest import WORKLOADS, Project, base_config
from .secret_scan import leaks, workload_holding

pytestmark = pytest.mark.tmux

# unique to each session: another run of this suite on the same machine (its processes are
# scanned too) never holds these values
FORWARDED = f"canary-forwarded-{secrets.token_hex(6)}"
UNFORWARDED = f"canary-unforwarded-{secrets.token_hex(6)}"
IN_FILE = f"canary-credfile-{secrets.token_hex(6)}"


def _leaky_project(project: Project, tmp_path: Path) -> Path:
    """A `leaky` preset that lingers until tmp_path/release exists."""
    creds = tmp_path / "creds.env"
    creds.write_text(f"# test credentials\nAPI_KEY={IN_FILE}\n")
    doc = base_config(project.runs, project.socket)
    doc["secrets"] = {"env": ["OPS_TEST_TOKEN"], "files": []}
    doc["presets"]["leaky"] = {  # leaky.py CREDS_FILE RELEASE_PATH
        "kind": "command",
        "command": ["{python}", str(WORKLOADS / "leaky.py"), str(creds), str(tmp_path / "release")],
        "secrets_env": ["OPS_TEST_TOKEN"], "secrets_files": [str(creds)],
        "limits": {"grace_sec": 1},
    }
    project.write_config(doc)
    return creds


def test_canary_never_leaks(project: Project, tmp_path: Path) -> None:
    _leaky_project(project, tmp_path)
    env = {"OPS_TEST_TOKEN": FORWARDED, "OPS_OTHER_SECRET": UNFORWARDED}
    result = project.ops("run", "submit", "-p", "leaky", "--run-id", "leak", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    run_dir = project.run_dir("leak")
    project.wait_for(lambda: b"lingering" in _read(run_dir / "stdout.log"))
    needles = [FORWARDED, UNFORWARDED, IN_FILE]
    workload = workload_holding(tmp_path / "release")
    assert FORWARDED in json.dumps(workload.environ())  # the scan can see what it looks for

    # while it runs (checked before and after): no process argv or environment but the
    # workload's own, no tmux environment (global or session) holds a canary
    assert leaks(workload, needles) == []
    for scope in (["-g"], ["-t", "ops-leak"]):
        shown = subprocess.run(["tmux", "-L", project.socket, "show-environment", *scope],
                               capture_output=True, text=True, check=True).stdout
        assert not any(n in shown for n in needles), shown
    assert workload.is_running()
    (tmp_path / "release").touch()

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
