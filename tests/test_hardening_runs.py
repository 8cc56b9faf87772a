"""A hostile workload against the wrapper, status and cancel, with a real tmux server.

Each test is one way for a run to lie about its outcome, outlive its record, hit a stranger or
leak a secret (issue 7); each failed on the code before the fix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from runner import contract, seal, verbs

from .conftest import REPO, WORKLOADS, Project, base_config

pytestmark = pytest.mark.tmux
HOSTILE = str(WORKLOADS / "hostile.py")
PEM = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9u\n"
       "ZQAAAAAAAAABAAAAMwAAAAtzc2gtZWQyNTUxOQAAACBxq1\n-----END OPENSSH PRIVATE KEY-----\n")


def hostile(mode: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "command", "command": ["{python}", HOSTILE], "overrides": {"mode": mode},
            "limits": {"grace_sec": 1}, **extra}


@pytest.fixture
def hproject(project: Project) -> Project:
    doc = base_config(project.runs, project.socket)
    presets = doc["presets"]
    for mode in ("forge_then_sleep", "forge_everything", "forge_then_exit3", "orphan_rewriter",
                 "setsid_daemon",
                 "rt_signal", "nested_metrics", "print_home"):
        presets[mode] = hostile(mode)
    presets["pem"] = hostile("print_secret_lines", secrets_env=["PEM_KEY"])
    names = "sorted(k for k in os.environ if k.startswith('SECRET_'))"
    for letter in "ab":
        presets[f"s{letter}"] = {"kind": "command", "limits": {"grace_sec": 1},
                                 "secrets_env": [f"SECRET_{letter.upper()}"],
                                 "command": ["{python}", "-c", f"import os; print({names})"]}
    presets["ab"] = {"kind": "sweep", "members": ["sa", "sb"]}
    presets["tracked"] = {"kind": "command", "command": ["{python}", "-c", (
        "from pathlib import Path; from runner import track; "
        "track.log(loss=0.5, step=1); track.log({'acc': 0.25}, step=2, loss=0.4); "
        "track.event('saved', path=Path('/tmp/x.pt'))")]}
    project.write_config(doc)
    return project


def submit(project: Project, preset: str, *extra: str, env: dict[str, str] | None = None) -> str:
    result = project.ops("run", "submit", "--preset", preset, "--json", *extra, env=env)
    assert result.exit_code == 0, result.stderr
    run_id: str = result.json()["run_id"]
    return run_id


def status_of(project: Project, run_id: str) -> dict[str, Any]:
    result = project.ops("run", "status", run_id, "--json")
    assert result.exit_code == 0, result.stderr
    run: dict[str, Any] = result.json()["runs"][0]
    return run


def events(project: Project, run_id: str, kind: str) -> list[dict[str, Any]]:
    records = contract.read_jsonl(project.run_dir(run_id) / "events.jsonl").records
    return [r for r in records if r.get("type") == kind]


def wait_ended(project: Project, run_id: str, timeout: float = 30) -> dict[str, Any]:
    from runner.status import final_summary

    project.wait_for(lambda: final_summary(project.run_dir(run_id)) is not None, timeout)
    return project.summary(run_id)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- 1. a forged summary never ends a live run ------------------------------------------------
def test_forged_summary_while_live_is_ignored_and_cancel_still_works(hproject: Project) -> None:
    run_id = submit(hproject, "forge_then_sleep")
    run_dir = hproject.run_dir(run_id)
    hproject.wait_for(lambda: b"forged" in (run_dir / "stdout.log").read_bytes()
                      if (run_dir / "stdout.log").exists() else False)
    hproject.wait_for((run_dir / "heartbeat.json").exists)
    live = status_of(hproject, run_id)
    assert live["status"] in ("running", "launching"), live
    assert live.get("metrics_final") in (None, {}), live
    cancelled = hproject.ops("run", "cancel", run_id, "--json")
    assert cancelled.exit_code == 0, cancelled.stderr
    assert cancelled.json()["cancelled"] is True
    summary = hproject.summary(run_id)
    assert summary["status"] == "killed" and summary["written_by"] == "wrapper"
    spec = json.loads((run_dir / "spec.json").read_text())
    assert seal.problem(summary, spec) is None and "seal" in summary
    assert summary["metrics_final"] == {}
    assert (run_dir / "out" / ".displaced" / "summary.json").exists()


def test_a_forgery_that_rewrites_spec_and_metadata_too_is_ignored(hproject: Project) -> None:
    run_id = submit(hproject, "forge_everything")
    run_dir = hproject.run_dir(run_id)
    hproject.wait_for(lambda: (run_dir / "stdout.log").exists()
                      and b"forged" in (run_dir / "stdout.log").read_bytes())
    live = status_of(hproject, run_id)
    assert live["status"] in ("running", "stalled", "launching"), live
    assert live.get("metrics_final") in (None, {}), live
    cancelled = hproject.ops("run", "cancel", run_id, "--json")
    assert cancelled.exit_code == 0 and cancelled.json()["cancelled"] is True, cancelled.stdout
    summary = hproject.summary(run_id)
    assert summary["status"] == "killed" and summary["written_by"] == "wrapper"
    restored = json.loads((run_dir / "spec.json").read_text())
    assert seal.problem(summary, restored) is None and "seal" in restored


def test_follow_is_not_fooled_by_a_forged_summary(hproject: Project) -> None:
    result = hproject.ops("run", "submit", "--preset", "forge_then_exit3", "--follow")
    assert result.exit_code != 0, result.stdout
    assert "status failed" in result.stderr
    run_id = next(p.name for p in hproject.runs.iterdir() if p.name.startswith("forge"))
    summary = hproject.summary(run_id)
    assert summary["status"] == "failed" and summary["exit_code"] == 3


# -- 2. nothing the workload started outlives the run -----------------------------------------
def test_a_child_with_its_output_elsewhere_cannot_rewrite_the_outcome(hproject: Project) -> None:
    run_id = submit(hproject, "orphan_rewriter")
    summary = wait_ended(hproject, run_id)
    assert summary["status"] == "failed"
    child = int((hproject.run_dir(run_id) / "out" / "child.pid").read_text())
    assert gone(child)
    time.sleep(2.0)  # the child would have rewritten summary.json by now
    assert not (hproject.run_dir(run_id) / "out" / "rewrote").exists()
    assert status_of(hproject, run_id)["status"] == "failed"
    killed = events(hproject, run_id, "leftover_processes")
    assert any(p["pid"] == child for e in killed for p in e["processes"]), killed


def test_cancel_ends_a_setsid_daemon(hproject: Project) -> None:
    run_id = submit(hproject, "setsid_daemon")
    pid_file = hproject.run_dir(run_id) / "out" / "daemon.pid"
    hproject.wait_for(lambda: pid_file.exists() and pid_file.read_text() != "")
    daemon = int(pid_file.read_text())
    assert os.getpgid(daemon) != os.getpgid(int(
        json.loads((hproject.run_dir(run_id) / "run_metadata.json").read_text())
        ["process"]["workload_pid"]))
    assert hproject.ops("run", "cancel", run_id).exit_code == 0
    assert hproject.summary(run_id)["status"] == "killed"
    assert gone(daemon)
    killed = [p["pid"] for e in events(hproject, run_id, "leftover_processes")
              for p in e["processes"]]
    assert daemon in killed


def test_a_killed_wrappers_leftovers_are_ended_by_cancel(hproject: Project) -> None:
    run_id = submit(hproject, "setsid_daemon")
    run_dir = hproject.run_dir(run_id)
    pid_file = run_dir / "out" / "daemon.pid"
    hproject.wait_for(lambda: pid_file.exists() and pid_file.read_text() != "")
    hproject.wait_for((run_dir / "run_metadata.json").exists)
    process = json.loads((run_dir / "run_metadata.json").read_text())["process"]
    os.kill(process["pid"], signal.SIGKILL)
    hproject.wait_for(lambda: gone(process["workload_pid"]))  # dies with its wrapper
    daemon = int(pid_file.read_text())
    assert not gone(daemon)
    result = hproject.ops("run", "cancel", run_id, "--json")
    assert result.exit_code == 0, result.stderr
    assert "process(es) it left behind" in result.json()["message"]
    hproject.wait_for(lambda: gone(daemon), 5)
    killed = [p["pid"] for e in events(hproject, run_id, "leftover_processes")
              for p in e["processes"]]
    assert daemon in killed
    assert status_of(hproject, run_id)["status"] == "dead"


# -- 3. odd endings are recorded, not misfiled as a runner failure ---------------------------
def test_real_time_signal_is_recorded_by_name(hproject: Project) -> None:
    run_id = submit(hproject, "rt_signal")
    summary = wait_ended(hproject, run_id)
    assert summary["status"] == "failed" and summary["signal"] == "SIGRTMIN+1"
    assert summary["failure"]["class"] == "signal"
    exit_doc = json.loads((hproject.run_dir(run_id) / "exit.json").read_text())
    assert exit_doc["signal"] == "SIGRTMIN+1" and exit_doc["exit_code"] is None


def test_deeply_nested_metrics_line_does_not_crash_the_wrapper(hproject: Project) -> None:
    run_id = submit(hproject, "nested_metrics")
    summary = wait_ended(hproject, run_id)
    assert summary["status"] == "completed", summary["failure"]
    assert hproject.ops("validate", str(hproject.run_dir(run_id))).exit_code in (0, 1)


# -- 4. one run, one tmux session --------------------------------------------------------------
def test_run_ids_differing_in_dot_and_underscore_get_their_own_sessions(
        hproject: Project) -> None:
    first = submit(hproject, "slow", "--run-id", "col.1")
    second = submit(hproject, "slow", "--run-id", "col_1")
    sessions = {status_of(hproject, r)["tmux_session"] for r in (first, second)}
    assert len(sessions) == 2
    for run_id in (first, second):
        hproject.wait_for((hproject.run_dir(run_id) / "heartbeat.json").exists)
        assert status_of(hproject, run_id)["tmux_alive"] is True
        assert hproject.ops("run", "cancel", run_id).exit_code == 0


# -- 5. a run's environment is its own submit's ------------------------------------------------
def test_environment_comes_from_the_runs_own_submit(hproject: Project, tmp_path: Path) -> None:
    home_a, home_b = tmp_path / "home-a", tmp_path / "home-b"
    home_a.mkdir()
    home_b.mkdir()
    first = submit(hproject, "print_home", env={"HOME": str(home_a), "HOSTILE_SLEEP": "30"})
    second = submit(hproject, "print_home", env={"HOME": str(home_b)})
    wait_ended(hproject, second)
    assert f"HOME={home_b}" in (hproject.run_dir(second) / "stdout.log").read_text()
    hproject.ops("run", "cancel", first)


# -- 6. cancel never signals a stranger --------------------------------------------------------
@pytest.mark.parametrize("boot", ["another-boot", "this-boot"])
def test_cancel_of_a_dead_run_never_signals_a_stranger(hproject: Project, boot: str) -> None:
    run_id = submit(hproject, "toy")
    wait_ended(hproject, run_id)
    run_dir = hproject.run_dir(run_id)
    (run_dir / "summary.json").unlink()  # as if the wrapper died before writing it
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        meta = json.loads((run_dir / "run_metadata.json").read_text())
        meta["host"]["boot_id"] = boot if boot == "another-boot" else contract.boot_id()
        # the stranger now holds the recorded pgid and workload pid, but started later
        meta["process"].update(pgid=stranger.pid, workload_pid=stranger.pid,
                               workload_start_time=psutil.Process(stranger.pid).create_time()
                               - 100)
        (run_dir / "run_metadata.json").write_text(json.dumps(meta))
        result = verbs.cancel(run_dir, wait_s=1)
        assert result["status"] == "dead" and result["cancelled"] is False
        time.sleep(0.3)
        assert stranger.poll() is None, "cancel killed a process that was not the run's"
    finally:
        stranger.kill()
        stranger.wait()


# -- 7, 8. secrets -----------------------------------------------------------------------------
def test_multi_line_secret_printed_line_by_line_is_redacted(hproject: Project) -> None:
    run_id = submit(hproject, "pem", env={"PEM_KEY": PEM})
    wait_ended(hproject, run_id)
    log = (hproject.run_dir(run_id) / "stdout.log").read_text()
    for line in PEM.splitlines():
        assert line not in log
    assert [f"line {n}: [REDACTED]" in log for n in range(4)] == [True] * 4, log


def test_sweep_members_get_only_their_own_secrets(hproject: Project) -> None:
    result = hproject.ops("run", "submit", "--preset", "ab", "--json",
                          env={"SECRET_A": "value-of-a-1234", "SECRET_B": "value-of-b-5678"})
    assert result.exit_code == 0, result.stderr
    run_ids = result.json()["run_ids"]
    for run_id in run_ids:
        wait_ended(hproject, run_id, timeout=60)
    logs = [(hproject.run_dir(r) / "stdout.log").read_text() for r in run_ids]
    assert "['SECRET_A']" in logs[0] and "['SECRET_B']" in logs[1], logs


# -- 9. the secret store never outlives its run and never blocks the next ----------------------
def test_a_stale_store_does_not_block_a_submit(hproject: Project) -> None:
    first = submit(hproject, "toy")
    wait_ended(hproject, first)
    store_dir = Path(json.loads((hproject.run_dir(first) / "spec.json").read_text())
                     ["secrets"]["store"]).parent
    store_dir.mkdir(parents=True, exist_ok=True)
    (store_dir / "next-1.json").write_text('{"env": {}, "seal": "left by a killed wrapper"}')
    run_id = submit(hproject, "toy", "--run-id", "next-1")
    assert wait_ended(hproject, run_id)["status"] == "completed"
    assert not (store_dir / "next-1.json").exists()


# -- 16. runner.track -----------------------------------------------------------------------
def test_track_keywords_and_paths_inside_a_run(hproject: Project) -> None:
    run_id = submit(hproject, "tracked")
    summary = wait_ended(hproject, run_id)
    assert summary["status"] == "completed", summary["failure"]
    records = contract.read_jsonl(hproject.run_dir(run_id) / "metrics.jsonl").records
    assert [r["metrics"] for r in records] == [{"loss": 0.5}, {"acc": 0.25, "loss": 0.4}]
    saved = events(hproject, run_id, "saved")
    assert saved and saved[0]["path"] == "/tmp/x.pt"


def test_track_outside_a_run_accepts_the_same_calls() -> None:
    from runner.track import Tracker

    tracker = Tracker(None)
    tracker.log(loss=0.1, step=3)
    tracker.event("saved", path=Path("/tmp/x.pt"))
    with pytest.raises(ValueError, match="finite"):
        tracker.log(loss=float("nan"))



# -- 3. a pattern the runner cannot compile fails the run before it starts ---------------------
def test_an_uncompilable_pattern_in_spec_fails_the_run_cleanly(tmp_path: Path) -> None:
    from .test_kill_safety import make_run

    run_dir = make_run(tmp_path / "t", "bad-pattern")
    spec = json.loads((run_dir / "spec.json").read_text())
    spec["metrics"]["from_stdout"] = [{"pattern": r"(?u)loss (?P<loss>\d+)"}]  # hand-edited
    (run_dir / "spec.json").write_text(json.dumps(spec))
    # the budget of the test's hang guard: even a run that never starts takes its env snapshot
    # (pip freeze, a torch probe), over a minute on a loaded machine
    done = subprocess.run([sys.executable, "-m", "runner", "exec", str(run_dir)],
                          capture_output=True, check=False, timeout=110)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["written_by"] == "wrapper", done.stderr
    assert summary["failure"]["class"] == "launch"
    assert "metrics_from_stdout pattern" in summary["failure"]["message"]
    assert not Path(spec["secrets"]["store"]).exists()


def test_a_term_while_the_run_is_set_up_ends_it_killed(tmp_path: Path) -> None:
    """The handlers are up before the workload exists: an early TERM (SLURM's, a quick
    cancel) is an orderly stop with a sealed summary, not a dead wrapper."""
    from .test_kill_safety import make_run

    run_dir = make_run(tmp_path / "t", "early-term")
    store = Path(json.loads((run_dir / "spec.json").read_text())["secrets"]["store"])
    wrapper = subprocess.Popen([sys.executable, "-m", "runner", "exec", str(run_dir)],
                               stdin=subprocess.DEVNULL)
    deadline = time.time() + 30
    while store.exists() and time.time() < deadline:  # the wrapper has taken its store
        time.sleep(0.002)
    time.sleep(0.01)
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=30) != -signal.SIGTERM
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "killed" and summary["written_by"] == "wrapper"
    assert summary["failure"]["class"] == "cancelled"


def test_a_term_that_arrived_before_the_wrapper_was_ready_is_replayed(tmp_path: Path) -> None:
    """`python -m runner exec` holds stop signals from its first line; the wrapper acts on one
    that arrived while it was still loading (here: sent before the wrapper is even imported)
    instead of running the workload to the end."""
    from .test_kill_safety import make_run

    run_dir = make_run(tmp_path / "t", "held-term")
    script = ("import os, signal, sys\n"
              "from pathlib import Path\n"
              "from runner import early_signals\n"
              "early_signals.hold()\n"
              "os.kill(os.getpid(), signal.SIGTERM)\n"
              "from runner.wrapper import exec_run\n"
              "sys.exit(exec_run(Path(sys.argv[1])))\n")
    done = subprocess.run([sys.executable, "-c", script, str(run_dir)], cwd=REPO,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    assert done.returncode != -signal.SIGTERM, done.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "killed" and summary["failure"]["class"] == "cancelled"
    assert summary["failure"]["message"] == "stopped on SIGTERM"
