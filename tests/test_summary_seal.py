"""A summary ends a run only when it is the runner's, sealed, and its wrapper is gone (issue 7,
item 1, reader side). The "wrapper" is a real `sleep` process: its pid and start time."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from runner import contract, seal, status
from runner.validate import validate_run_dir

from .test_validate import RUN_ID, valid_files, write_run_dir

KEY = seal.new_key()


def _process(pid: int) -> dict[str, Any]:
    return {"pid": pid, "pid_start_time": psutil.Process(pid).create_time(), "pgid": pid,
            "workload_pid": None, "tmux_session": None, "tmux_socket": None}


def make_run(tmp_path: Path, pid: int, *, summary: dict[str, Any] | None,
             sealed: bool = True) -> Path:
    files = valid_files(DATA)
    files[contract.SPEC]["seal"] = {"sha256": seal.commitment(KEY)} if sealed else None
    files[contract.SPEC]["tmux"] = {"socket": "ops-test-none", "session": None}
    files[contract.METADATA]["process"] = _process(pid)
    files[contract.METADATA]["host"]["boot_id"] = contract.boot_id()
    files[contract.HEARTBEAT].update(pid=pid, ts=contract.iso())
    files.pop(contract.SUMMARY)
    run_dir = write_run_dir(tmp_path / "runs", files)
    if summary is not None:
        contract.atomic_write_json(run_dir / contract.SUMMARY, summary)
    return run_dir


def summary(**extra: Any) -> dict[str, Any]:
    doc = valid_files(DATA)[contract.SUMMARY]
    return {**doc, "metrics_final": {"dice": 0.99}, **extra}


DATA = Path(__file__).parent / "workloads"  # any directory: the manifest is not checked here


@pytest.fixture(autouse=True)
def data(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()


def test_forged_summary_of_a_live_run_is_ignored(tmp_path: Path,
                                                 wrapper: subprocess.Popen[bytes]) -> None:
    for forged in (summary(), summary(seal="0" * 64), summary(seal=["x"])):
        run_dir = make_run(tmp_path / str(len(str(forged.get("seal")))), wrapper.pid,
                           summary=forged)
        info = status.run_status(run_dir)
        assert info["status"] == "running", info
        assert "metrics_final" not in info
        assert any("summary.json ignored" in n and "seal" in n for n in info["notes"]), info
        assert contract.read_runner_summary(run_dir) is None
        assert status.final_summary(run_dir) is None


def test_forged_summary_of_a_dead_run_reads_dead(tmp_path: Path,
                                                 wrapper: subprocess.Popen[bytes]) -> None:
    run_dir = make_run(tmp_path, wrapper.pid, summary=summary())
    wrapper.kill()
    wrapper.wait()
    info = status.run_status(run_dir)
    assert info["status"] == "dead", info


def test_sealed_summary_counts_only_once_the_wrapper_is_gone(
        tmp_path: Path, wrapper: subprocess.Popen[bytes]) -> None:
    run_dir = make_run(tmp_path, wrapper.pid, summary=summary(seal=KEY))
    info = status.run_status(run_dir)
    assert info["status"] == "running"
    assert status.SUMMARY_WHILE_ALIVE in info["notes"]
    assert status.final_summary(run_dir) is None
    assert contract.read_runner_summary(run_dir) is not None  # sealed; liveness is not its job
    wrapper.kill()
    wrapper.wait()
    info = status.run_status(run_dir)
    assert info["status"] == "completed" and info["metrics_final"] == {"dice": 0.99}
    final = status.final_summary(run_dir)
    assert final is not None and final["seal"] == KEY


def test_launch_failure_summary_counts_without_a_wrapper(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, 1, summary=summary(
        seal=KEY, status="failed", ok=False, exit_code=None, written_by="runner",
        failure={"class": "launch", "message": "tmux launch failed"}))
    (run_dir / contract.METADATA).unlink()
    (run_dir / contract.HEARTBEAT).unlink()
    assert status.final_summary(run_dir) is not None
    info = status.run_status(run_dir)
    assert info["status"] == "failed" and info["failure"]["class"] == "launch"


def test_legacy_spec_without_commitment_accepts_the_summary(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, 1, summary=summary(), sealed=False)
    assert status.run_status(run_dir)["status"] == "completed"
    rules = {v.rule for v in validate_run_dir(run_dir).violations}
    assert "L3.summary-seal" not in rules


def test_validate_reports_a_forged_summary(tmp_path: Path) -> None:
    (tmp_path / "data" / "a.bin").write_bytes(b"x")
    files = valid_files(tmp_path / "data")
    files[contract.SPEC]["seal"] = {"sha256": seal.commitment(KEY)}
    run_dir = write_run_dir(tmp_path / "runs", files)
    rules = {(v.file, v.rule) for v in validate_run_dir(run_dir).violations}
    assert (contract.SUMMARY, "L3.summary-seal") in rules
    sealed = {**files, contract.SUMMARY: {**files[contract.SUMMARY], "seal": KEY}}
    good = write_run_dir(tmp_path / "runs2", sealed)
    assert validate_run_dir(good).ok, validate_run_dir(good).render_text()


def test_metadata_error_is_kept_when_liveness_comes_from_the_heartbeat(
        tmp_path: Path, wrapper: subprocess.Popen[bytes]) -> None:
    run_dir = make_run(tmp_path, wrapper.pid, summary=None)
    beat = contract.read_json(run_dir / contract.HEARTBEAT)
    beat.update(pid_start_time=psutil.Process(wrapper.pid).create_time(),
                boot_id=contract.boot_id(), ts=contract.iso())
    contract.atomic_write_json(run_dir / contract.HEARTBEAT, beat)
    (run_dir / contract.METADATA).write_text("{not json")
    info = status.run_status(run_dir, now=time.time())
    assert info["status"] == "running", info
    note = next(n for n in info["notes"] if n.startswith("liveness from heartbeat.json"))
    assert "run_metadata.json: not valid JSON" in note
    assert run_dir.name == RUN_ID
