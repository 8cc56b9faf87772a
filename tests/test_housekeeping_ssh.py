"""`ops run rm` and `ops run gc` on a host reached only through a real sshd on 127.0.0.1: the
runner's housekeeping verb answers over the same transport as every other command."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Project, git, pod_config
from .sshd_fixture import SshAlias

pytestmark = [pytest.mark.ssh, pytest.mark.tmux]


@pytest.fixture
def pod(project: Project, ssh_alias: SshAlias, tmp_path: Path) -> Project:
    doc = pod_config(project, ssh_alias.name, tmp_path)
    doc["presets"]["quick"] = {"kind": "command", "limits": {"grace_sec": 1},
                               "command": ["sh", "-c", "echo done"]}
    doc["presets"]["held"] = {"kind": "command", "limits": {"grace_sec": 1},
                              "command": ["sh", "-c", f"while [ ! -e {tmp_path / 'go'} ]; do "
                                                      "sleep 0.05; done"]}
    project.write_config(doc)
    project.runs = tmp_path / "pod-runs"
    git(project.root, "init", "-q", "-b", "main")
    git(project.root, "add", "-A")
    git(project.root, "commit", "-q", "-m", "start")
    return project


def test_rm_and_gc_over_ssh(pod: Project, tmp_path: Path) -> None:
    assert pod.ops("run", "submit", "-p", "quick", "--run-id", "old-1", "-f",
                   "--skip-preflight").exit_code == 0
    live = pod.ops("run", "submit", "-p", "held", "--run-id", "live-1", "--skip-preflight")
    assert live.exit_code == 0, live.stderr
    (tmp_path / "elsewhere").mkdir()
    (pod.runs / "link-1").symlink_to(tmp_path / "elsewhere")
    try:
        refused = pod.ops("run", "rm", "--yes", "live-1")
        assert refused.exit_code == 4 and "live-1 is" in refused.stderr, refused.stderr
        linked = pod.ops("run", "rm", "--yes", "link-1")
        assert linked.exit_code == 2 and "symbolic link" in linked.stderr
        plan = pod.ops("run", "gc", "--older-than", "0s", "--scope", "host", "--dry-run",
                       "--json")
        assert plan.exit_code == 0, plan.stderr
        (place,) = plan.json()["places"]
        assert place["where"] == "host pod" and [r["run_id"] for r in place["runs"]] == ["old-1"]
        gone = pod.ops("run", "gc", "--older-than", "0s", "--scope", "host", "--yes")
        assert gone.exit_code == 0 and "removed 1 run(s)" in gone.stdout, gone.stderr
        assert not (pod.runs / "old-1").exists()
        assert (pod.runs / "live-1").is_dir() and (pod.runs / "link-1").is_symlink()
        assert (tmp_path / "elsewhere").is_dir()
    finally:
        (tmp_path / "go").touch()
