"""The slurm launcher on a real one-node SLURM cluster, its login node reached over sshd.

`ops run submit -H cluster` syncs the code, sbatches the wrapper and records the job id;
status joins SLURM's view (queued with its reason, final state) to the contract's heartbeat;
cancel goes through scancel; a sweep's members are jobs chained with afterany.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO, Project, base_config
from .slurm_fixture import SlurmCluster, slurm_cluster  # noqa: F401 - a fixture
from .sshd_fixture import SshAlias

pytestmark = [pytest.mark.slurm, pytest.mark.ssh, pytest.mark.tmux]
TOY = str(REPO / "examples" / "toy_train.py")
DATA = str(REPO / "examples" / "data")


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def _toy(iters: int, sleep: float, **extra: Any) -> dict[str, Any]:
    return {"kind": "command", "command": ["{python}", TOY, "--data={data_dir}/points.csv"],
            "overrides": {"max_iters": iters, "sleep": sleep}, "limits": {"grace_sec": 1},
            "dataset": {"name": "points", "dir": DATA}, "best": {"loss": "min"}, **extra}


def _gated_toy(iters: int, gate: Path) -> dict[str, Any]:
    """The toy, started only once the test creates `gate` (a minute at most): the run is
    running, and holds the node, for as long as the test needs to look at it."""
    wait = (f'i=0; while [ ! -e "{gate}" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; '
            'exec "$0" "$@"')
    preset = _toy(iters, 0.0)
    return {**preset, "command": ["sh", "-c", wait, *preset["command"]], "python": True}


@pytest.fixture
def cluster(project: Project, ssh_alias: SshAlias, tmp_path: Path,
            slurm_cluster: SlurmCluster) -> Project:  # noqa: F811 - the fixture above
    """The test project with host `cluster`: a SLURM login node (this machine, over sshd)
    whose jobs take the whole node (2 CPUs each), so a second job waits for the first."""
    doc = base_config(project.runs, project.socket)
    doc["hosts"] = {"cluster": {
        "address": ssh_alias.name, "launcher": "slurm", "python": sys.executable,
        "outputs_dir": str(tmp_path / "cluster-runs"), "ops_home": str(tmp_path / "home"),
        "slurm": {"cpus_per_task": 2, "time": "00:05:00", "signal_before_s": 55,
                  "extra": ["--mem=100M"]}}}
    doc["project"]["default_host"] = "cluster"
    doc["presets"].update(
        steps=_gated_toy(80, tmp_path / "open-sl-a"), quick=_toy(5, 0.0),
        forever=_toy(100000, 0.05),
        limited=_toy(100000, 0.05, resources={"time": "00:01:00"}),
        chain={"kind": "sweep", "members": ["quick", "quick", "quick"]},
        half=_toy(5, 0.0, resources={"cpus_per_task": 1}),  # two fit on the node at once
        fan={"kind": "sweep", "members": ["half", "half"], "parallel": True})
    project.write_config(doc)
    project.runs = tmp_path / "cluster-runs"
    _git(project.root, "init", "-q", "-b", "main")
    (project.root / "README").write_text("x\n")
    _git(project.root, "add", "-A")
    _git(project.root, "commit", "-q", "-m", "x")
    yield project
    slurm_cluster.clear()


def _submit(p: Project, preset: str, run_id: str) -> dict[str, Any]:
    result = p.ops("run", "submit", "-p", preset, "--run-id", run_id, "--json",
                   "--skip-preflight")
    assert result.exit_code == 0, result.stderr
    doc: dict[str, Any] = result.json()
    return doc


def _statuses(p: Project) -> dict[str, dict[str, Any]]:
    result = p.ops("run", "status", "--json")
    assert result.exit_code == 0, result.stderr
    return {r["run_id"]: r for r in result.json()["runs"]}


def _wait_status(p: Project, want: dict[str, Any], timeout: float = 40.0) -> dict[str, Any]:
    """Poll `ops run status` (one round trip each) until each run id has a wanted status."""
    deadline = time.time() + timeout
    seen: dict[str, Any] = {}
    while time.time() < deadline:
        seen = _statuses(p)
        if all(seen.get(r, {}).get("status") in (w if isinstance(w, tuple) else (w,))
               for r, w in want.items()):
            return seen
        time.sleep(0.3)
    events = {r: _events_tail(p, r) for r in want}
    raise AssertionError(f"wanted {want}, last seen {json.dumps(seen, indent=1)[:3000]}\n"
                         f"events: {json.dumps(events, indent=1)[:3000]}")


def _events_tail(p: Project, run_id: str) -> list[str]:
    path = p.runs / run_id / "events.jsonl"
    return path.read_text(errors="replace").splitlines()[-12:] if path.exists() else []


def _spec(p: Project, run_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((p.runs / run_id / "spec.json").read_text())
    return doc


# the whole user story in one test: two SLURM jobs and a dozen or more `ops` processes (two
# submits, status polls, tail, fetch, validate; each a python start and an SSH connection),
# which on a loaded 2-core machine outlast the suite's 120 s hang guard (seen: stopped in
# `ops run fetch`, every step before it passed)
@pytest.mark.timeout(300)
def test_submit_queue_run_tail_fetch_validate(cluster: Project, tmp_path: Path) -> None:
    first = _submit(cluster, "steps", "sl-a")
    second = _submit(cluster, "quick", "sl-b")
    job_a = _spec(cluster, "sl-a")["slurm"]["job_id"]
    assert first["run_id"] == "sl-a" and job_a and second["run_id"] == "sl-b"
    assert first["slurm_job_ids"] == [job_a] and first["tmux_session"] is None
    # the node is full: the second job waits, and says why once SLURM has looked at it. sl-a
    # holds the node until the test opens its gate, so this is not a race with its run time;
    # the deadline is SLURM's scheduler's budget (a busy controller looks at a new job late)
    seen = _wait_status(cluster, {"sl-a": "running", "sl-b": "queued"})
    assert seen["sl-a"]["slurm"]["state"] == "RUNNING"
    deadline = time.time() + 30
    while "None" in seen["sl-b"]["reason"] or "waiting for" in seen["sl-b"]["reason"]:
        assert time.time() < deadline, seen["sl-b"]
        time.sleep(0.3)
        seen = _statuses(cluster)
    assert seen["sl-b"]["status"] == "queued" and "Resources" in seen["sl-b"]["reason"]
    assert seen["sl-a"]["status"] == "running"
    (tmp_path / "open-sl-a").touch()
    tail = cluster.ops("run", "tail", "sl-a", "--follow", timeout=60)
    assert tail.exit_code == 0, tail.stderr
    assert "79" in tail.stdout
    _wait_status(cluster, {"sl-a": "completed", "sl-b": "completed"})
    meta = json.loads((cluster.runs / "sl-a" / "run_metadata.json").read_text())
    assert meta["slurm"]["job_id"] == job_a
    events = (cluster.runs / "sl-a" / "events.jsonl").read_text()
    assert f'"job_id": "{job_a}"' in events or f'"job_id":"{job_a}"' in events
    argv = _spec(cluster, "sl-a")["slurm"]["argv"]
    for option in ("--parsable", "--job-name=ops-sl-a", "--no-requeue", "--signal=B:TERM@55",
                   "--cpus-per-task=2", "--time=00:05:00", "--mem=100M", "--open-mode=append"):
        assert option in argv
    fetched = cluster.ops("run", "fetch", "sl-a", "--json")
    assert fetched.exit_code == 0, fetched.stderr
    local = cluster.root / "artifacts" / "runs" / "sl-a"
    assert (local / "summary.json").exists() and list(local.glob("slurm-*.out"))
    valid = cluster.ops("validate", str(local), "--deep")
    assert valid.exit_code == 0, valid.stdout + valid.stderr


def test_time_limit_ends_timeout_with_a_runner_summary(cluster: Project) -> None:
    said = cluster.ops("run", "submit", "-p", "limited", "--run-id", "sl-limit",
                       "--skip-preflight")
    assert said.exit_code == 0, said.stderr
    job = _spec(cluster, "sl-limit")["slurm"]["job_id"]
    assert f"slurm:   job {job} (squeue -j {job})" in said.stdout and "tmux" not in said.stdout
    seen = _wait_status(cluster, {"sl-limit": "timeout"}, timeout=75)["sl-limit"]
    summary = cluster.summary("sl-limit")
    assert summary["written_by"] == "wrapper" and summary["status"] == "timeout"
    assert "SLURM time limit" in summary["failure"]["message"]
    said_slurm = [json.loads(line) for line in _events_tail(cluster, "sl-limit")
                  if '"slurm_term"' in line]
    assert said_slurm and said_slurm[0]["why"] == "time limit" and said_slurm[0]["job_id"] == job
    assert seen["slurm"]["state"] in ("COMPLETED", "COMPLETING", "FAILED")  # never TIMEOUT


def test_scancel_from_outside_reads_killed_with_the_slurm_state(
        cluster: Project, slurm_cluster: SlurmCluster) -> None:  # noqa: F811
    _submit(cluster, "forever", "sl-ext")
    _wait_status(cluster, {"sl-ext": "running"})
    slurm_cluster.cmd("scancel", _spec(cluster, "sl-ext")["slurm"]["job_id"])
    seen = _wait_status(cluster, {"sl-ext": ("killed", "dead")})["sl-ext"]
    assert seen["slurm"]["state"] == "CANCELLED"
    if seen["status"] == "killed":
        assert cluster.summary("sl-ext")["written_by"] == "wrapper"
    else:
        assert seen["failure"]["class"] == "CANCELLED"


def test_a_wrapper_killed_by_slurm_reads_dead_with_the_final_state(
        cluster: Project, slurm_cluster: SlurmCluster) -> None:  # noqa: F811
    _submit(cluster, "forever", "sl-kill")
    _wait_status(cluster, {"sl-kill": "running"})
    job = _spec(cluster, "sl-kill")["slurm"]["job_id"]
    slurm_cluster.cmd("scancel", "--batch", "--signal=KILL", job)  # no wrapper can survive it
    seen = _wait_status(cluster, {"sl-kill": "dead"})["sl-kill"]
    assert seen["failure"]["class"] == seen["slurm"]["state"] in ("FAILED", "CANCELLED")
    assert job in seen["reason"] and not (cluster.runs / "sl-kill" / "summary.json").exists()


def test_cancel_running_and_queued(cluster: Project) -> None:
    _submit(cluster, "forever", "sl-run")
    _submit(cluster, "quick", "sl-wait")
    _wait_status(cluster, {"sl-run": "running", "sl-wait": "queued"})
    queued = cluster.ops("run", "cancel", "sl-wait", "--json")
    assert queued.exit_code == 0, queued.stderr
    running = cluster.ops("run", "cancel", "sl-run", "--json")
    assert running.exit_code == 0, running.stderr
    seen = _statuses(cluster)
    assert seen["sl-wait"]["status"] == "killed" and seen["sl-run"]["status"] == "killed"
    assert cluster.summary("sl-run")["written_by"] == "wrapper"  # the wrapper ended it
    assert cluster.summary("sl-wait")["written_by"] == "runner"  # it never started
    # TERM went to the batch step only: the wrapper ended the job, no second scancel was needed
    assert seen["sl-run"]["slurm"]["state"] in ("COMPLETED", "FAILED")
    assert "then scancel" not in running.json()["message"]
    assert not (cluster.runs / "sl-wait" / "run_metadata.json").exists()


def test_a_sweep_of_three_runs_in_order_and_a_parallel_one(cluster: Project) -> None:
    result = cluster.ops("run", "submit", "-p", "chain", "--json", "--skip-preflight")
    assert result.exit_code == 0, result.stderr
    ids = result.json()["run_ids"]
    assert len(ids) == 3
    fan = cluster.ops("run", "submit", "-p", "fan", "--json", "--skip-preflight")
    assert fan.exit_code == 0, fan.stderr
    fan_ids = fan.json()["run_ids"]
    _wait_status(cluster, dict.fromkeys([*ids, *fan_ids], "completed"), timeout=90)
    assert [_spec(cluster, r)["slurm"]["dependency"] for r in fan_ids] == [None, None]
    jobs = [_spec(cluster, r)["slurm"] for r in ids]
    assert jobs[0]["dependency"] is None
    assert [j["dependency"] for j in jobs[1:]] == [f"afterany:{jobs[0]['job_id']}",
                                                  f"afterany:{jobs[1]['job_id']}"]
    summaries = [cluster.summary(r) for r in ids]
    for before, after in itertools.pairwise(summaries):
        assert before["ended_at"] <= after["started_at"]


def _runner_spec(run_id: str, root: Path, job_id: str | None = None) -> dict[str, Any]:
    return {"schema": "ops.spec/1", "run_id": run_id, "project": "p", "preset": "x",
            "kind": "command", "code": {"dir": str(REPO)},
            "workload": {"command": ["{python}", "-c", "import time; time.sleep(30)"],
                         "env": {}, "python": True},
            "config": {}, "overrides": {}, "limits": {"grace_sec": 1},
            "heartbeat": {"interval_s": 0.5, "stall_after_intervals": 3},
            "metrics": {"from_stdout": []}, "dataset": None,
            "secrets": {"env_names": [], "files": [],
                        "store": str(root / ".home" / f"{run_id}.json")},
            "tmux": {"socket": "ops-unused"}, "launcher": "slurm",
            "slurm": {"options": {"cpus_per_task": 2}, "job_id": job_id}}


def test_status_asks_slurm_once_for_every_run(
        tmp_path: Path, slurm_cluster: SlurmCluster) -> None:  # noqa: F811
    """Three live runs and two whose jobs SLURM has forgotten: one squeue call, and sacct (absent
    here: no slurmdbd) asked once, not once a run. A shim on PATH counts the real commands."""
    root = tmp_path / "runs"
    root.mkdir()
    shims = tmp_path / "bin"
    shims.mkdir()
    log = tmp_path / "calls.log"
    for name in ("squeue", "sacct"):
        (shims / name).write_text(f"#!/bin/sh\necho {name} >> {log}\nexec /usr/bin/{name} \"$@\"\n")
        (shims / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"}
    for index in range(3):
        payload = json.dumps({"spec": _runner_spec(f"once-{index}", root), "secrets": {}})
        subprocess.run([sys.executable, "-m", "runner", "submit", str(root)], input=payload,
                       text=True, check=True, capture_output=True, cwd=REPO)
    for index, job in enumerate(("999990", "999991")):
        gone = root / f"gone-{index}"
        gone.mkdir()
        (gone / "spec.json").write_text(json.dumps(_runner_spec(gone.name, root, job)))
    log.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", "runner", "status", str(root)], env=env,
                          text=True, check=True, capture_output=True, cwd=REPO)
    runs = {r["run_id"]: r for r in json.loads(done.stdout)["runs"]}
    assert log.read_text().split() == ["squeue", "sacct"]
    assert {runs[f"once-{i}"]["status"] for i in range(3)} <= {"queued", "launching", "running"}
    assert runs["gone-0"]["status"] == "dead" and "no longer known" in runs["gone-0"]["reason"]
