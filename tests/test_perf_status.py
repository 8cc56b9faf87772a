"""The status of many runs is the runner reading each run dir once (issue 14): every contract
file of a run is read at most once per listing, and a wrapper pid long gone is found in one
read of the process table, not asked about run by run. Counted, not timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from runner import contract, fields, status, untrusted

from .report_runs import FakeRun, write_run


def _dead_pid() -> int:
    """A pid no process has: above the kernel's pid_max when the contract allows one, else
    a child that has exited (its number is not handed out again within the test)."""
    limit = int(Path("/proc/sys/kernel/pid_max").read_text())
    if limit < fields.PID_MAX:
        return limit + 1
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _ended_runs(root: Path, count: int) -> tuple[list[str], int]:
    """``count`` completed runs whose wrapper (a pid that has exited) started long ago; their
    ids and that pid."""
    pid = _dead_pid()
    ids = []
    for i in range(count):
        run_dir = write_run(root, FakeRun(f"done-{i}", metrics_best={"dsc_mean": 0.5},
                                          series=[{"step": 1, "dsc_mean": 0.5}]))
        meta = json.loads((run_dir / contract.METADATA).read_text())
        meta["host"]["boot_id"] = contract.boot_id()
        meta["process"] = {"pid": pid, "pid_start_time": time.time() - 3600, "pgid": pid}
        contract.atomic_write_json(run_dir / contract.METADATA, meta)
        ids.append(run_dir.name)
    return ids, pid


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str, str]]:
    """(run id, file name) -> how many times a reader parsed it."""
    counted: Counter[tuple[str, str]] = Counter()
    real = untrusted.read_json

    def read_json(path: Path, limit: int | None = None) -> dict[str, Any]:
        counted[(Path(path).parent.name, Path(path).name)] += 1
        return real(path, limit)

    monkeypatch.setattr(untrusted, "read_json", read_json)
    monkeypatch.setattr(contract, "read_json", read_json)
    return counted


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids psutil was asked about one by one (the process table's scan asks too)."""
    pids: list[int] = []
    real = psutil.Process

    def process(pid: int | None = None) -> psutil.Process:
        pids.append(pid or 0)
        return real(pid)

    monkeypatch.setattr(status.psutil, "Process", process)
    return pids


def test_a_listing_reads_each_file_of_a_run_once_and_asks_no_gone_pid(
        tmp_path: Path, reads: Counter[tuple[str, str]], asked: list[int]) -> None:
    ids, gone = _ended_runs(tmp_path, 5)
    reads.clear()
    found = status.list_runs(tmp_path, tidy=True)
    assert [r["run_id"] for r in found] == ids
    assert {r["status"] for r in found} == {"completed"}
    assert all(r["step"] == 1 and r["headline"]["value"] == 0.5 for r in found)
    assert reads and max(reads.values()) == 1, reads.most_common(3)
    assert {name for _, name in reads} == {contract.SPEC, contract.METADATA,
                                           contract.HEARTBEAT, contract.SUMMARY}
    assert gone not in asked


def test_no_run_dir_path_is_resolved_when_no_wrapper_of_that_name_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _ended_runs(tmp_path, 3)
    resolved: list[str] = []
    real = os.path.realpath

    def realpath(path: Any, **kwargs: Any) -> str:
        if str(path).startswith(str(tmp_path)):
            resolved.append(str(path))
        return real(path, **kwargs)

    monkeypatch.setattr(os.path, "realpath", realpath)
    assert {r["status"] for r in status.list_runs(tmp_path)} == {"completed"}
    assert resolved == []
    sessions = status.SessionCache()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "done-0")
    assert not sessions.wrapper_running(link) and resolved == [str(link)]  # a link: resolved


def test_a_run_whose_runner_exec_process_runs_is_still_found_live(tmp_path: Path) -> None:
    """The shortcut above skips only names no wrapper has: a `runner exec RUN_DIR` process in
    the table (its metadata naming a gone pid) still makes the run live."""
    ids, _ = _ended_runs(tmp_path, 2)
    (tmp_path / ids[0] / contract.SUMMARY).unlink()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)",
                               "-m", "runner", "exec", str(tmp_path / ids[0])])
    try:
        deadline = time.time() + 10
        while not status.SessionCache().wrapper_running(tmp_path / ids[0]):
            assert time.time() < deadline, "the process table never showed the holder"
            time.sleep(0.05)
        found = {r["run_id"]: r for r in status.list_runs(tmp_path)}
        assert found[ids[0]]["status"] not in ("dead", "completed", "invalid")
        assert any("runner exec" in note for note in found[ids[0]]["notes"])
        assert found[ids[1]]["status"] == "completed"
    finally:
        holder.kill()
        holder.wait()
    assert status.list_runs(tmp_path)[0]["status"] == "dead"


def test_a_wrapper_that_started_after_the_process_table_was_read_is_asked_directly(
        asked: list[int]) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        snapshot = status.LivePids(frozenset(), time.time() - 5)  # read before it started
        started = psutil.Process(proc.pid).create_time()
        asked.clear()
        process = {"pid": proc.pid, "pid_start_time": started}
        assert status.wrapper_alive(process, None, None, pids=snapshot) == (True,
                                                                              "wrapper alive")
        assert asked == [proc.pid]
        long_ago = {"pid": proc.pid, "pid_start_time": started - 60}  # a forged start time
        alive, why = status.wrapper_alive(long_ago, None, None, pids=snapshot)
        assert not alive and "gone" in why and asked == [proc.pid]
        fresh = status.LivePids.now()  # in the table: asked, and the start time decides
        assert status.wrapper_alive(long_ago, None, None, pids=fresh)[0] is False
        assert status.wrapper_alive(process, None, None, pids=fresh)[0] is True
    finally:
        proc.kill()
        proc.wait()


def test_a_run_without_a_usable_start_time_is_asked_about_directly(asked: list[int]) -> None:
    pid = _dead_pid()
    snapshot = status.LivePids.now()
    alive, _ = status.wrapper_alive({"pid": pid, "pid_start_time": "soon"}, None, None,
                                    pids=snapshot)
    assert not alive and asked == [pid]
