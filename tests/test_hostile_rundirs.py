"""One malformed run dir never takes down `runner status`, `ops run list` or `ops run status`
(issue 7, item 10): each is listed as invalid (or read from what is still usable) with the
reason, and every other run is listed as before. Real files, a real `sleep` as the wrapper."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from ops.cli import render
from ops.errors import HostError
from ops.services import runs as runs_service
from runner import contract, status
from runner.validate import validate_run_dir

from .conftest import REPO, Project
from .test_validate import RUN_ID, valid_files

pytestmark = pytest.mark.timeout(60)

NESTED = "[" * 3000 + "]" * 3000
OLD = time.time() - 3600  # well past the launch window
Mutation = Callable[[Path], None]


def write_run(root: Path, run_id: str, pid: int, *, ended: bool = False) -> Path:
    """A run as the runner leaves it: live (fresh heartbeat, wrapper ``pid``) or ended."""
    files = valid_files(Path(__file__).parent / "workloads")
    files[contract.SPEC]["tmux"] = {"socket": "ops-test-none", "session": None}
    process = {"pid": pid, "pid_start_time": psutil.Process(pid).create_time()}
    files[contract.METADATA]["process"] = process
    files[contract.METADATA]["host"]["boot_id"] = contract.boot_id()
    files[contract.HEARTBEAT].update(process, ts=contract.iso(), boot_id=contract.boot_id())
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    for name, doc in files.items():
        if name.endswith(".json") and (ended or name != contract.SUMMARY):
            contract.atomic_write_json(run_dir / name, {**doc, "run_id": run_id})
    os.utime(run_dir / contract.SPEC, (OLD, OLD))
    return run_dir


def _edit(name: str, **changes: Any) -> Mutation:
    def apply(run_dir: Path) -> None:
        doc = json.loads((run_dir / name).read_text())
        for dotted, value in changes.items():
            *parents, last = dotted.split("__")
            node = doc
            for part in parents:
                node = node[part]
            node[last] = value
        (run_dir / name).write_text(json.dumps(doc))
    return apply


def _raw(name: str, text: str) -> Mutation:
    return lambda run_dir: (run_dir / name).write_text(text)


def _both(*mutations: Mutation) -> Mutation:
    def apply(run_dir: Path) -> None:
        for mutation in mutations:
            mutation(run_dir)
    return apply


def _replace_with_dir(name: str) -> Mutation:
    def apply(run_dir: Path) -> None:
        (run_dir / name).unlink(missing_ok=True)
        (run_dir / name).mkdir()
    return apply


def _legacy_summary(**changes: Any) -> Mutation:
    def apply(run_dir: Path) -> None:
        doc = valid_files(Path(__file__).parent / "workloads")[contract.SUMMARY]
        (run_dir / contract.SUMMARY).write_text(json.dumps({**doc, **changes}))
    return apply


META, BEAT, SPEC = contract.METADATA, contract.HEARTBEAT, contract.SPEC
GONE = _edit(META, process__pid_start_time=1.0)  # the recorded wrapper is not the live process
# name -> (mutation of a live run, expected status, a phrase of the reason)
CASES: dict[str, tuple[Mutation, str, str]] = {
    "tmux-null": (_edit(SPEC, tmux=None), "invalid", "tmux is null, expected an object"),
    "interval-x": (_edit(SPEC, heartbeat__interval_s="x"), "invalid", "interval_s is the string"),
    "spec-nested": (_raw(SPEC, '{"a": ' + NESTED + "}"), "invalid", "spec.json"),
    "spec-list": (_raw(SPEC, "[1, 2]"), "invalid", "expected a JSON object"),
    "spec-dir": (_replace_with_dir(SPEC), "invalid", "is a directory"),
    "process-string": (_both(_edit(META, process="x"), _edit(BEAT, pid=True)), "invalid",
                       "process is the string 'x'"),
    "host-number": (_both(_edit(META, host=5), _raw(BEAT, "[]")), "invalid", "host is 5"),
    "pid-minus-one": (_both(_edit(META, process__pid=-1), _edit(BEAT, pid=-1)), "invalid",
                      "pid is -1"),
    "pid-huge": (_both(_edit(META, process__pid=10**30), _raw(BEAT, NESTED)), "invalid",
                 "pid is"),
    "pid-bool": (_both(_edit(META, process__pid=True), _edit(BEAT, pid=0)), "invalid",
                 "pid is true"),
    "start-time-huge": (_both(_edit(META, process__pid_start_time=10**300),
                              _edit(BEAT, pid_start_time="x")), "invalid", "301 digits"),
    "meta-bad-beat-good": (_edit(META, process__pid="12"), "running", ""),
    "beat-step-dict": (_edit(BEAT, step={"a": 1}), "stalled", "step is an object"),
    "beat-nested": (_raw(BEAT, '{"step": ' + NESTED + "}"), "stalled", "heartbeat.json"),
    "beat-dir": (_replace_with_dir(BEAT), "stalled", "is a directory"),
    "failure-string": (_both(_edit(SPEC, seal=None), GONE, _legacy_summary(failure="boom")),
                       "invalid", "failure is the string 'boom'"),
    "summary-nested": (_raw(contract.SUMMARY, NESTED), "running", ""),
    "summary-status-list": (_both(GONE, _legacy_summary(status=["completed"])), "invalid",
                            "unknown status"),
    "summary-nested-dead": (_both(GONE, _raw(contract.SUMMARY, NESTED)), "dead", "another"),
    "stdout-dir": (_replace_with_dir(contract.STDOUT_LOG), "running", ""),
    "huge-strings": (_edit(SPEC, preset="p" * 200_000, kind="\x1b[2J" * 1000), "running", ""),
}


def _make_all(root: Path, pid: int) -> dict[str, Path]:
    dirs = {"good-1": write_run(root, "good-1", pid), "good-2": write_run(root, "good-2", pid)}
    for name, (mutate, _status, _phrase) in CASES.items():
        dirs[name] = write_run(root, name, pid)
        mutate(dirs[name])
    return dirs


def _check(found: dict[str, dict[str, Any]]) -> None:
    assert found["good-1"]["status"] == "running", found["good-1"]
    assert found["good-2"]["status"] == "running"
    for name, (_mutate, expected, phrase) in CASES.items():
        info = found[name]
        assert info["status"] == expected, (name, info)
        assert phrase in str(info.get("reason")), (name, info)
        assert len(json.dumps(info)) < 5000, name


def test_list_runs_survives_every_malformed_run_dir(tmp_path: Path,
                                                    wrapper: subprocess.Popen[bytes]) -> None:
    _make_all(tmp_path / "runs", wrapper.pid)
    _check({r["run_id"]: r for r in status.list_runs(tmp_path / "runs")})


def test_runner_status_verb_survives_them(tmp_path: Path,
                                          wrapper: subprocess.Popen[bytes]) -> None:
    dirs = _make_all(tmp_path / "runs", wrapper.pid)
    cmd = [sys.executable, "-m", "runner", "status", "--json", str(tmp_path / "runs")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    _check({r["run_id"]: r for r in json.loads(proc.stdout)["runs"]})
    one = subprocess.run([*cmd, "pid-huge"], capture_output=True, text=True, cwd=REPO,
                         timeout=30, check=False)
    assert one.returncode == 0 and json.loads(one.stdout)["runs"][0]["status"] == "invalid"
    assert dirs["pid-huge"].is_dir()


def test_a_symlinked_run_dir_is_listed_invalid(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "runs" / RUN_ID).symlink_to(elsewhere)
    [info] = status.list_runs(tmp_path / "runs")
    assert info["status"] == "invalid" and "symbolic link" in info["reason"]


def test_ops_run_list_and_status_survive_them(project: Project,
                                              wrapper: subprocess.Popen[bytes]) -> None:
    _make_all(project.runs, wrapper.pid)
    listed = project.ops("run", "list")
    assert listed.exit_code == 0, listed.stderr
    rows = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines()[1:]}
    assert rows["good-1"] == "running" and rows["tmux-null"] == "invalid"
    assert len(rows) == len(CASES) + 2
    assert "\x1b" not in listed.stdout
    for run_id in ("failure-string", "beat-step-dict", "huge-strings", "pid-huge"):
        shown = project.ops("run", "status", run_id)
        assert shown.exit_code == 0, (run_id, shown.stderr)
        assert "Traceback" not in shown.stderr
    as_json = project.ops("run", "list", "--json")
    assert as_json.exit_code == 0 and len(as_json.json()["runs"]) == len(CASES) + 2


HOSTILE_ANSWERS = [
    {"run_id": "r", "status": {"x": 1}, "step": {"deep": [1]}, "preset": "p" * 10_000,
     "failure": "boom", "metrics_final": {"loss": "x", "dice": 0.5}, "notes": "not a list",
     "started_at": ["x"], "tmux_alive": "yes", "exit_code": 10**40},
    {"run_id": "r\x1b[2J\nsecond line", "status": None, "failure": {"class": ["x"]},
     "metrics_final": [1, 2], "notes": [{"a": 1}, "ok"], "reason": "\x07" * 500},
]


@pytest.mark.parametrize("run", HOSTILE_ANSWERS, ids=["wrong-types", "control-characters"])
def test_rendering_survives_hostile_values(run: dict[str, Any]) -> None:
    for text in (render.runs_table([run]), render.run_detail(run)):
        assert "\x1b" not in text and "\x07" not in text
        assert all(len(line) < 400 for line in text.splitlines())


@pytest.mark.parametrize("answer", [{}, {"runs": None}, {"runs": "x"}, {"runs": [1]},
                                    {"runs": [{"run_id": 5}]}])
def test_a_hostile_status_answer_is_a_host_error(answer: dict[str, Any]) -> None:
    with pytest.raises(HostError, match="answered status"):
        runs_service.checked_runs(answer)


def test_validate_reports_every_malformed_run_dir(tmp_path: Path,
                                                  wrapper: subprocess.Popen[bytes]) -> None:
    dirs = _make_all(tmp_path / "runs", wrapper.pid)
    for name, run_dir in dirs.items():
        report = validate_run_dir(run_dir, deep=True)
        json.dumps(report.to_json())
        if name in ("spec-nested", "spec-dir", "beat-nested", "beat-dir", "stdout-dir",
                    "summary-nested"):
            assert not report.ok, name
    rules = {(v.file, v.rule) for v in validate_run_dir(dirs["spec-dir"]).violations}
    assert (contract.SPEC, "L0.file-kind") in rules
