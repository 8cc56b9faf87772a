"""The `service` kind on a pod reached only through a real sshd on 127.0.0.1.

`ops run open` forwards a laptop port over the pod's SSH transport (direct-tcpip) and a real
HTTP request goes through it; a server that stops answering reads unhealthy, and once its
wrapper is killed from outside, dead; cancel of a serving one ends killed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from runner import contract

from .conftest import REPO, Project, git, pod_config
from .sshd_fixture import SshAlias, free_port
from .test_service import demo_service

pytestmark = [pytest.mark.ssh, pytest.mark.tmux]


@pytest.fixture
def spod(project: Project, ssh_alias: SshAlias, tmp_path: Path) -> Project:
    """The test project with the service example committed and host `pod` through sshd."""
    doc = pod_config(project, ssh_alias.name, tmp_path)
    doc["presets"]["web"] = demo_service(free_port())
    project.write_config(doc)
    project.runs = tmp_path / "pod-runs"
    (project.root / "examples").mkdir()
    shutil.copy(REPO / "examples" / "health_server.py", project.root / "examples")
    git(project.root, "init", "-q", "-b", "main")
    git(project.root, "add", "-A")
    git(project.root, "commit", "-q", "-m", "service")
    return project


def pod_status(pod: Project, run_id: str) -> dict[str, Any]:
    result = pod.ops("run", "status", "--json")
    assert result.exit_code == 0, result.stderr
    found: dict[str, Any] = next(r for r in result.json()["runs"] if r["run_id"] == run_id)
    return found


def wait_for_status(pod: Project, run_id: str, wanted: str) -> dict[str, Any]:
    seen: list[str] = []

    def reached() -> bool:
        seen.append(str(pod_status(pod, run_id)["status"]))
        return seen[-1] == wanted

    try:
        pod.wait_for(reached, timeout=45)
    except AssertionError:
        raise AssertionError(f"never {wanted}; seen {seen[-5:]}") from None
    return pod_status(pod, run_id)


def open_forward(pod: Project) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "OPS_PROJECT_CONFIG": str(pod.config_path)}
    proc = subprocess.Popen([sys.executable, "-m", "ops", "run", "open", "web-1"],
                            cwd=pod.root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("http://127.0.0.1:"), line + (proc.stderr.read() if proc.stderr
                                                         else "")
    return proc, line.split()[0]


def test_service_over_ssh_serves_through_the_forward_and_cancels_killed(spod: Project) -> None:
    submitted = spod.ops("run", "submit", "-p", "web", "--run-id", "web-1")
    assert submitted.exit_code == 0, submitted.stderr
    wait_for_status(spod, "web-1", "serving")
    proc, url = open_forward(spod)
    try:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert port != spod_port(spod)  # a laptop port of its own, not the pod's
        for query in ("a=1", "b=2"):
            with urllib.request.urlopen(f"{url}echo?{query}", timeout=10) as answer:  # noqa: S310
                assert json.loads(answer.read()) == {"query": query}
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert proc.returncode in (0, 130)
    spod.wait_for(lambda: pod_status(spod, "web-1")["service"]["requests"] == 2)
    cancelled = spod.ops("run", "cancel", "web-1")
    assert cancelled.exit_code == 0, cancelled.stderr
    summary = spod.summary("web-1")
    assert summary["status"] == "killed" and summary["service"]["requests"] == 2
    assert summary["service"]["uptime_s"] > 0


def test_service_over_ssh_unhealthy_then_dead(spod: Project) -> None:
    submitted = spod.ops("run", "submit", "-p", "web", "--run-id", "web-2")
    assert submitted.exit_code == 0, submitted.stderr
    wait_for_status(spod, "web-2", "serving")
    meta = json.loads((spod.runs / "web-2" / contract.METADATA).read_text())
    server, wrapper = meta["process"]["workload_pid"], meta["process"]["pid"]
    os.kill(server, signal.SIGSTOP)
    assert "health probe failing" in wait_for_status(spod, "web-2", "unhealthy")["reason"]
    os.kill(wrapper, signal.SIGKILL)  # the wrapper dies from outside; the server with it
    dead = wait_for_status(spod, "web-2", "dead")
    assert not (spod.runs / "web-2" / contract.SUMMARY).exists()
    assert "gone" in dead["reason"]


def spod_port(pod: Project) -> int:
    doc = json.loads(pod.config_path.read_text())
    port: int = doc["presets"]["web"]["service"]["port"]
    return port
