"""Temp files of an interrupted write and a dead run's secret store (issue 7, items 13 and 9):
`runner status` removes them once the wrapper is gone, never while it lives; validate warns
about temp files and does not count them as violations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner import contract, status
from runner.validate import validate_run_dir

from .conftest import REPO
from .test_hostile_rundirs import write_run

pytestmark = pytest.mark.timeout(60)
OLD = time.time() - 3600


def _temp(path: Path, *, old: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"schema": "ops.summary/1", "run_id": "half')
    if old:
        os.utime(path, (OLD, OLD))
    return path


def _not_the_wrapper(run_dir: Path) -> None:
    """Point run_metadata.json at a process that is not the run's wrapper: the run is over."""
    meta = contract.read_json(run_dir / contract.METADATA)
    contract.atomic_write_json(run_dir / contract.METADATA,
                               {**meta, "process": {"pid": 2, "pid_start_time": 1.0}})


def _status_verb(root: Path) -> dict[str, dict[str, object]]:
    proc = subprocess.run([sys.executable, "-m", "runner", "status", "--json", str(root)],
                          capture_output=True, text=True, cwd=REPO, timeout=30, check=True)
    return {run["run_id"]: run for run in json.loads(proc.stdout)["runs"]}


def test_status_removes_stale_temp_files_of_an_ended_run_only(
        tmp_path: Path, wrapper: subprocess.Popen[bytes]) -> None:
    root = tmp_path / "runs"
    ended = write_run(root, "ended", wrapper.pid, ended=True)
    _not_the_wrapper(ended)
    live = write_run(root, "live", wrapper.pid)
    stale = [_temp(ended / ".summary.json.k3j_9x0a.tmp"),
             _temp(ended / "checkpoints" / "fold0" / ".ckpt_last.pt.abcdefgh.tmp")]
    fresh = _temp(ended / ".heartbeat.json.zzzzzzzz.tmp", old=False)
    kept = _temp(live / ".summary.json.k3j_9x0a.tmp")
    report = validate_run_dir(ended)
    assert not any(v.rule == "L0.temp-file" for v in report.violations)
    assert ("L0.temp-file", ".summary.json.k3j_9x0a.tmp") in \
        {(w.rule, w.file) for w in report.warnings}
    assert status.run_status(ended)["status"] == "completed"
    assert all(p.exists() for p in stale)  # a library read changes nothing
    found = _status_verb(root)
    assert found["ended"]["status"] == "completed"
    assert "removed 2 temp file(s) left by an interrupted write" in found["ended"]["notes"]
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and kept.exists()
    assert found["live"]["status"] == "running"


def test_status_removes_the_secret_store_of_a_dead_run(tmp_path: Path,
                                                       wrapper: subprocess.Popen[bytes]) -> None:
    root = tmp_path / "runs"
    precious = tmp_path / "precious.json"
    precious.write_text("keep me")
    stores = {}
    for run_id, store in (("dead", tmp_path / "home" / "secrets" / "dead.json"),
                          ("live", tmp_path / "home" / "secrets" / "live.json"),
                          ("liar", precious)):
        run_dir = write_run(root, run_id, wrapper.pid)
        spec = contract.read_json(run_dir / contract.SPEC)
        contract.atomic_write_json(run_dir / contract.SPEC,
                                   {**spec, "secrets": {"store": str(store)}})
        store.parent.mkdir(parents=True, exist_ok=True)
        if run_id != "liar":
            store.write_text('{"env": {"TOKEN": "hunter22"}}')
        stores[run_id] = store
        if run_id != "live":
            _not_the_wrapper(run_dir)
    found = _status_verb(root)
    assert found["dead"]["status"] == "dead" and found["liar"]["status"] == "dead"
    assert not stores["dead"].exists()
    assert "removed the run's secret store: its wrapper is gone" in found["dead"]["notes"]
    assert stores["live"].exists() and found["live"]["status"] == "running"
    assert precious.read_text() == "keep me"
