"""The `service` kind on the local host: a real HTTP server under the wrapper, in real tmux.

The preset is the project's own `service_demo` (configs/ops/project.json) on a free port: the
health probe moves the status from starting to serving, `ops run open` gives a URL that answers,
a server stopped from outside reads unhealthy and, killed, failed; cancel ends it killed with
the uptime and the request count the server reported; a server never healthy ends not_ready.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from runner import contract
from runner.status import run_status

from .conftest import REPO, Project, base_config
from .sshd_fixture import free_port

pytestmark = pytest.mark.tmux


def demo_service(port: int, **service: Any) -> dict[str, Any]:
    """The project's own service example, on ``port``, probed often (a fast test)."""
    doc = json.loads((REPO / "configs" / "ops" / "project.json").read_text())
    preset: dict[str, Any] = dict(doc["presets"]["service_demo"])
    preset["service"] = {**preset["service"], "port": port, "probe_interval_sec": 0.2,
                         "probe_timeout_sec": 0.5, **service}
    preset["limits"] = {"grace_sec": 2}
    return preset


def with_service(project: Project, **presets: dict[str, Any]) -> Project:
    doc = base_config(project.runs, project.socket)
    doc["presets"].update(presets)
    project.write_config(doc)
    (project.root / "examples").mkdir(exist_ok=True)
    shutil.copy(REPO / "examples" / "health_server.py", project.root / "examples")
    return project


def status(project: Project, run_id: str) -> dict[str, Any]:
    result = project.ops("run", "status", "--json")
    assert result.exit_code == 0, result.stderr
    found: dict[str, Any] = next(r for r in result.json()["runs"] if r["run_id"] == run_id)
    return found


def wait_status(project: Project, run_id: str, wanted: str, timeout: float = 30) -> dict[str, Any]:
    seen: list[str] = []

    def reached() -> bool:
        seen.append(str(status(project, run_id)["status"]))
        return seen[-1] == wanted

    try:
        project.wait_for(reached, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"never {wanted}; seen {seen[-5:]}") from None
    return status(project, run_id)


def get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - a local test URL
        assert answer.status == 200
        doc: dict[str, Any] = json.loads(answer.read())
        return doc


def submit(project: Project, preset: str, run_id: str, *extra: str) -> None:
    result = project.ops("run", "submit", "-p", preset, "--run-id", run_id, *extra)
    assert result.exit_code == 0, result.stderr


def workload_pid(project: Project, run_id: str) -> int:
    meta = json.loads((project.run_dir(run_id) / contract.METADATA).read_text())
    pid: int = meta["process"]["workload_pid"]
    return pid


def test_service_starts_serves_opens_and_cancels_killed(project: Project) -> None:
    port = free_port()
    preset = demo_service(port)
    preset["command"] = [*preset["command"], "--start-delay=6"]  # a model that loads
    with_service(project, web=preset)
    submit(project, "web", "web-1")
    # the host's own status verb, polled fast: the first status past launching is starting
    run_dir = project.run_dir("web-1")
    project.wait_for(lambda: run_status(run_dir)["status"] not in ("launching", None))
    first = run_status(run_dir)
    assert first["status"] == "starting", first
    serving = wait_status(project, "web-1", "serving")
    assert serving["service"]["last_status_code"] == 200
    assert serving["service"]["last_latency_ms"] >= 0
    opened = project.ops("run", "open", "web-1")
    assert opened.exit_code == 0, opened.stderr
    url = opened.stdout.strip().splitlines()[-1]
    assert url == f"http://127.0.0.1:{port}/"
    assert get(url + "echo?x=1") == {"query": "x=1"}
    assert get(url)["hello"] == "from a pod-ops service"
    project.wait_for(lambda: status(project, "web-1")["service"]["requests"] == 2)
    beat = json.loads((project.run_dir("web-1") / contract.HEARTBEAT).read_text())
    assert beat["service"]["state"] == "serving" and beat["service"]["last_status_code"] == 200
    cancelled = project.ops("run", "cancel", "web-1", "--json")
    assert cancelled.exit_code == 0, cancelled.stderr
    summary = project.summary("web-1")
    assert summary["status"] == "killed" and summary["failure"]["class"] == "cancelled"
    service = summary["service"]
    assert service["requests"] == 2 and service["uptime_s"] > 0
    assert service["ready_after_s"] >= 5.5  # the 6 s the server took to listen
    assert project.ops("validate", str(project.run_dir("web-1"))).exit_code == 0


def test_server_stopped_from_outside_reads_unhealthy_then_failed(project: Project) -> None:
    with_service(project, web=demo_service(free_port()))
    submit(project, "web", "web-2")
    wait_status(project, "web-2", "serving")
    pid = workload_pid(project, "web-2")
    os.kill(pid, signal.SIGSTOP)  # alive but not answering: a hung server
    unhealthy = wait_status(project, "web-2", "unhealthy")
    assert "health probe failing" in unhealthy["reason"]
    assert unhealthy["service"]["last_status_code"] is None
    os.kill(pid, signal.SIGKILL)
    project.wait_for((project.run_dir("web-2") / contract.SUMMARY).exists)
    ended = wait_status(project, "web-2", "failed")
    assert ended["failure"]["class"] == "signal"
    summary = project.summary("web-2")
    assert summary["service"]["state_at_end"] == "unhealthy"
    assert summary["service"]["failures"] >= 1


def test_server_never_healthy_fails_not_ready(project: Project) -> None:
    preset = demo_service(free_port(), health="/missing", ready_timeout_sec=1.5)
    with_service(project, web=preset)
    result = project.ops("run", "submit", "-p", "web", "--run-id", "web-3", "-f")
    assert result.exit_code == 10, result.stderr  # tail --follow: the run failed
    summary = project.summary("web-3")
    assert summary["status"] == "failed" and summary["failure"]["class"] == "not_ready"
    assert "HTTP 404" in summary["failure"]["message"]
    assert summary["service"]["ready_at"] is None and summary["service"]["uptime_s"] is None
    assert status(project, "web-3")["status"] == "failed"


def test_open_refuses_a_run_that_is_not_a_service(project: Project) -> None:
    submit(project, "printer", "plain-1", "-f")
    result = project.ops("run", "open", "plain-1")
    assert result.exit_code == 2
    assert "is not a service" in result.stderr and "Traceback" not in result.stderr


def test_service_port_out_of_range_is_a_config_error(project: Project, tmp_path: Path) -> None:
    with_service(project, web=demo_service(70000))
    result = project.ops("run", "submit", "-p", "web")
    assert result.exit_code == 2 and "port" in result.stderr
    assert "Traceback" not in result.stderr
    assert not project.runs.exists() or not any(project.runs.iterdir())


def test_a_service_refuses_the_step_watchdog(project: Project) -> None:
    preset = demo_service(free_port())
    preset["limits"] = {"no_progress_sec": 60}
    with_service(project, web=preset)
    result = project.ops("config", "validate")
    assert result.exit_code == 2 and "no_progress_sec cannot apply to a service" in result.stderr
