"""End to end on the local host with a real tmux server: submit, follow, status, cancel."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from runner import contract

from .conftest import Project

pytestmark = pytest.mark.tmux


def submit(project: Project, preset: str, *extra: str) -> str:
    result = project.ops("run", "submit", "--preset", preset, "--json", *extra)
    assert result.exit_code == 0, result.stderr
    run_id: str = result.json()["run_id"]
    return run_id


def wait_summary(project: Project, run_id: str, timeout: float = 30) -> dict[str, object]:
    project.wait_for((project.run_dir(run_id) / "summary.json").exists, timeout)
    return project.summary(run_id)


def test_completed_run_passes_deep_validation(project: Project) -> None:
    result = project.ops("run", "submit", "--preset", "toy", "--run-id", "ok-1", "--follow")
    assert result.exit_code == 0, result.stderr
    assert "iter 15: loss" in result.stdout
    summary = project.summary("ok-1")
    assert summary["status"] == "completed" and summary["ok"] is True
    assert summary["exit_code"] == 0 and summary["written_by"] == "wrapper"
    assert summary["metrics_final"]["loss"] < summary["metrics_final"]["w"]
    assert summary["metrics_best"]["loss"] <= summary["metrics_final"]["loss"]
    assert "checkpoints/ckpt_best.json" in summary["files"]
    checked = project.ops("validate", "--deep", "--json", str(project.run_dir("ok-1")))
    assert checked.exit_code == 0, checked.stdout
    assert checked.json()["ok"] is True
    run_dir = project.run_dir("ok-1")
    assert os.access(run_dir / "command.sh", os.X_OK)
    manifest = json.loads((run_dir / "dataset_manifest.json").read_text())
    assert manifest["files"][0]["path"] == "points.csv" and manifest["files"][0]["sha256"]
    types = [e["type"] for e in contract.read_jsonl(run_dir / "events.jsonl").records]
    assert types[0] == "run_start" and "run_end" in types and "checkpoint" in types
    steps = [r["step"] for r in contract.read_jsonl(run_dir / "metrics.jsonl").records]
    assert steps == list(range(1, 16))


def test_failing_run_is_failed_with_its_exit_code(project: Project) -> None:
    result = project.ops("run", "submit", "--preset", "exit3", "--run-id", "bad-1", "--follow")
    assert result.exit_code == 10, (result.stdout, result.stderr)
    assert "status failed" in result.stderr
    summary = project.summary("bad-1")
    assert summary["status"] == "failed" and summary["exit_code"] == 3
    assert summary["failure"]["class"] == "exit_code"
    assert "iter 3" in summary["failure"]["traceback_tail"]
    status = project.ops("run", "status", "bad-1", "--json").json()["runs"][0]
    assert status["status"] == "failed"


def test_cancel_gives_killed(project: Project) -> None:
    run_id = submit(project, "slow")
    project.wait_for((project.run_dir(run_id) / "heartbeat.json").exists)
    result = project.ops("run", "cancel", run_id, "--json")
    assert result.exit_code == 0, result.stderr
    summary = project.summary(run_id)
    assert summary["status"] == "killed" and summary["failure"]["class"] == "cancelled"
    assert summary["written_by"] == "wrapper"
    assert project.ops("validate", str(project.run_dir(run_id))).exit_code == 0


def test_workload_ignoring_sigint_still_ends_killed(project: Project) -> None:
    run_id = submit(project, "stubborn")
    project.wait_for(lambda: b"ignoring" in _log(project, run_id))
    assert project.ops("run", "cancel", run_id).exit_code == 0
    summary = project.summary(run_id)
    assert summary["status"] == "killed" and summary["signal"] == "SIGKILL"
    stops = [e for e in _events(project, run_id) if e["type"] == "stop"]
    assert [e["signal"] for e in stops] == ["SIGINT", "SIGTERM", "SIGKILL"]
    # each signal a grace (1 s) after the one before, read from the run's own record: the
    # clock of this test process also counts `ops` starting on a loaded machine
    at = [datetime.fromisoformat(str(e["ts"]).replace("Z", "+00:00")).timestamp() for e in stops]
    assert all(1.0 <= later - earlier < 4.0 for earlier, later in itertools.pairwise(at)), at


def test_sigkill_of_wrapper_and_workload_reads_dead(project: Project) -> None:
    run_id = submit(project, "slow")
    run_dir = project.run_dir(run_id)
    project.wait_for((run_dir / "heartbeat.json").exists)
    meta = json.loads((run_dir / "run_metadata.json").read_text())
    os.kill(meta["process"]["pid"], signal.SIGKILL)
    os.killpg(meta["process"]["pgid"], signal.SIGKILL)
    project.wait_for(lambda: not _alive(meta["process"]["pid"]))
    # a heartbeat that still looks fresh for an hour: "dead" must come from the process table
    # at once, not from a heartbeat going stale (no wall-clock budget, whatever the load)
    beat = contract.read_json(run_dir / "heartbeat.json")
    now = time.time()
    contract.atomic_write_json(run_dir / "heartbeat.json",
                               {**beat, "ts": contract.iso(now),
                                "deadline": contract.iso(now + 3600)})
    runs = project.ops("run", "status", "--json").json()["runs"]
    assert [r["status"] for r in runs if r["run_id"] == run_id] == ["dead"]
    for path in run_dir.iterdir():
        if path.suffix == ".json":
            contract.read_json(path)  # every JSON file still parses
    assert not (run_dir / "summary.json").exists()


def test_stdout_metrics(project: Project) -> None:
    assert project.ops("run", "submit", "-p", "printer", "--run-id", "pr-1", "-f").exit_code == 0
    records = contract.read_jsonl(project.run_dir("pr-1") / "metrics.jsonl").records
    assert [(r["step"], r["metrics"]["loss"]) for r in records] == [
        (1, 1.0), (2, 0.5), (3, 0.333), (4, 0.25), (5, 0.2)]
    assert project.summary("pr-1")["metrics_final"] == {"loss": 0.2}


@pytest.mark.parametrize("exit_code", [0, 3], ids=["exit0", "exit3"])
def test_workload_writing_contract_files_is_caught(project: Project, exit_code: int) -> None:
    result = project.ops("run", "submit", "-p", "impostor", "--run-id", "imp", "-f",
                         "--set", f"exit={exit_code}")
    summary = project.summary("imp")
    assert summary["written_by"] == "wrapper"
    assert summary["status"] == ("completed" if exit_code == 0 else "failed")
    assert result.exit_code == (0 if exit_code == 0 else 10)
    replaced = {v["file"] for v in summary["contract_violations"]}
    assert replaced == {"summary.json", "run_metadata.json"}
    meta = json.loads((project.run_dir("imp") / "run_metadata.json").read_text())
    assert meta["run_id"] == "imp"  # the runner's copy is back
    kept = project.run_dir("imp") / "out" / ".displaced" / "summary.json"
    assert json.loads(kept.read_text()) == {"status": "completed", "ok": True}
    checked = project.ops("validate", str(project.run_dir("imp")))
    assert checked.exit_code == 1
    assert "summary.json: L3.contract-file-replaced" in checked.stdout
    assert "run_metadata.json: L3.contract-file-replaced" in checked.stdout


def test_rss_limit_aborts(project: Project) -> None:
    result = project.ops("run", "submit", "-p", "hog", "--run-id", "hog-1", "-f")
    assert result.exit_code == 13, result.stderr
    summary = project.summary("hog-1")
    assert summary["status"] == "aborted" and summary["failure"]["class"] == "memory"
    assert project.ops("validate", str(project.run_dir("hog-1"))).exit_code == 0


def test_tail_last_lines_and_status_listing(project: Project) -> None:
    assert project.ops("run", "submit", "-p", "toy", "--run-id", "t-1", "-f").exit_code == 0
    tail = project.ops("run", "tail", "t-1", "-n", "2")
    assert tail.exit_code == 0
    # the expected lines come from the run's own log, never from the output under test
    log_lines = (project.run_dir("t-1") / "stdout.log").read_text().splitlines()
    assert log_lines[-2].startswith("iter 15: loss ") and log_lines[-1].startswith("done:")
    assert tail.stdout.splitlines() == log_lines[-2:]
    follow = project.ops("run", "tail", "t-1", "--follow")
    assert follow.exit_code == 0 and follow.stdout.count("iter ") == 15
    listing = project.ops("run", "list")
    assert listing.exit_code == 0 and "t-1" in listing.stdout and "completed" in listing.stdout


def test_torn_metrics_line_is_reported_not_fatal(project: Project) -> None:
    assert project.ops("run", "submit", "-p", "toy", "--run-id", "torn", "-f").exit_code == 0
    with open(project.run_dir("torn") / "metrics.jsonl", "ab") as fh:
        fh.write(b'{"ts": "2026-01-01T00:00:00.000Z", "step": 99, "metr')
    checked = project.ops("validate", "--json", str(project.run_dir("torn")))
    report = checked.json()
    assert any("torn" in w["message"] or "incomplete" in w["message"]
               for w in report["warnings"]), report
    status = project.ops("run", "status", "torn", "--json")
    assert status.exit_code == 0 and status.json()["runs"][0]["status"] == "completed"


def _log(project: Project, run_id: str) -> bytes:
    path = project.run_dir(run_id) / "stdout.log"
    return path.read_bytes() if path.exists() else b""


def _events(project: Project, run_id: str) -> list[dict[str, object]]:
    return contract.read_jsonl(project.run_dir(run_id) / "events.jsonl").records


def test_workload_runs_in_own_group_with_devnull_stdin(project: Project) -> None:
    run_id = submit(project, "stubborn")
    run_dir = project.run_dir(run_id)
    project.wait_for((run_dir / "run_metadata.json").exists)
    meta = json.loads((run_dir / "run_metadata.json").read_text())
    workload = psutil.Process(meta["process"]["workload_pid"])
    assert os.getpgid(workload.pid) == workload.pid != os.getpgid(meta["process"]["pid"])
    assert Path(f"/proc/{workload.pid}/fd/0").resolve() == Path("/dev/null")
    project.ops("run", "cancel", run_id)


def test_frozen_wrapper_reads_stalled_then_running(project: Project) -> None:
    run_id = submit(project, "slow")
    run_dir = project.run_dir(run_id)
    project.wait_for((run_dir / "heartbeat.json").exists)
    wrapper = json.loads((run_dir / "run_metadata.json").read_text())["process"]["pid"]
    os.kill(wrapper, signal.SIGSTOP)  # alive, but its heartbeat stops
    try:
        project.wait_for(lambda: _status(project, run_id) == "stalled", timeout=10)
    finally:
        os.kill(wrapper, signal.SIGCONT)
    project.wait_for(lambda: _status(project, run_id) == "running", timeout=10)
    project.ops("run", "cancel", run_id)


def test_no_progress_watchdog_aborts(project: Project) -> None:
    doc = json.loads(project.config_path.read_text())
    doc["presets"]["stubborn"]["limits"]["no_progress_sec"] = 1.0
    project.write_config(doc)
    result = project.ops("run", "submit", "-p", "stubborn", "--run-id", "np", "-f")
    assert result.exit_code == 13
    summary = project.summary("np")
    assert summary["status"] == "aborted" and summary["failure"]["class"] == "no_progress"


def _status(project: Project, run_id: str) -> str:
    return str(project.ops("run", "status", run_id, "--json").json()["runs"][0]["status"])


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
