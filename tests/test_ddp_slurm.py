"""Ranks on SLURM: a distributed preset in a job with more than one GPU or node runs its ranks
as the tasks of one `srun` step (one task a rank, RANK/LOCAL_RANK/WORLD_SIZE from SLURM's
numbering, the wrapper's node as the rendezvous), while the wrapper stays the batch step.

The unit tests pin the launcher table and the argv; the slurm-tier tests train the monai_seg
trainer on 2 CPU tasks of the test cluster (it has 2 fake GPUs, so `gpus: 2` is schedulable)
and kill one task.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from runner import slurm
from runner import workload_command as wc
from runner.seg import synth

from .conftest import Project, base_config
from .slurm_fixture import SlurmCluster, slurm_cluster  # noqa: F401 - a fixture
from .sshd_fixture import SshAlias

TWO = {"command": ["{python}", "-m", "runner.seg.train"], "distributed": {"nproc_per_node": 2}}
VALUES = {"python": "/venv/bin/python", "run_dir": "/r", "run_id": "r", "out_dir": "/r/out",
          "checkpoints_dir": "/r/checkpoints", "code_dir": "/c", "data_dir": ""}


@pytest.mark.parametrize(("options", "launcher", "world"), [
    (None, "torchrun", 2),  # a pod
    ({}, "torchrun", 2),  # one SLURM task, its CPUs: torchrun inside it
    ({"gpus": 1}, "torchrun", 2),
    ({"gpus": 2}, "srun", 2),
    ({"gpus": "a100:4"}, "srun", 2),
    ({"gpus_per_node": 2}, "srun", 2),
    ({"nodes": 2}, "srun", 4),
    ({"gpus": True}, "torchrun", 2),
], ids=["pod", "slurm-cpu", "one-gpu", "two-gpus", "typed-gpus", "per-node", "two-nodes",
        "nonsense"])
def test_which_launcher_starts_the_ranks(options: dict[str, Any] | None, launcher: str,
                                         world: int) -> None:
    assert wc.rank_launcher(TWO, options) == launcher
    assert wc.world_size(TWO, options) == world
    assert wc.rank_launcher({**TWO, "distributed": None}, options) is None


def test_srun_argv_maps_slurm_numbering_to_torch_ranks() -> None:
    argv = wc.build_argv(TWO, VALUES, {"gpus": 4, "nodes": 2})
    shim = argv.index("/bin/sh")
    assert argv[:shim] == ["srun", "--nodes=2", "--ntasks=4", "--ntasks-per-node=2",
                           "--kill-on-bad-exit=1", "--quit-on-interrupt", "--input=none"]
    assert argv[shim + 3:] == ["ops-rank", "/venv/bin/python", "-m", "runner.seg.train"]
    env = {"SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NTASKS": "4", "PATH": "/usr/bin:/bin"}
    shown = subprocess.run([*argv[shim:shim + 4], "sh", "-c",
                            'echo "$RANK $LOCAL_RANK $WORLD_SIZE $LOCAL_WORLD_SIZE"'],
                           env=env, capture_output=True, text=True, check=True).stdout
    assert shown.split() == ["3", "1", "4", "2"]


def test_sbatch_asks_for_a_task_a_rank_only_for_srun() -> None:
    spec: dict[str, Any] = {"run_id": "r1", "launcher": "slurm", "workload": TWO,
            "slurm": {"options": {"gpus": 2, "cpus_per_task": 1}}}
    argv = slurm.sbatch_argv(Path("/runs/r1"), spec)
    assert "--ntasks-per-node=2" in argv and "--gpus=2" in argv
    spec["slurm"]["options"] = {"cpus_per_task": 2}  # torchrun inside one task
    assert not [a for a in slurm.sbatch_argv(Path("/runs/r1"), spec) if "ntasks" in a]
    spec["slurm"]["options"] = {"gpus": 2, "ntasks_per_node": 1}  # the user's own choice wins
    assert [a for a in slurm.sbatch_argv(Path("/runs/r1"), spec) if "ntasks" in a] == [
        "--ntasks-per-node=1"]


def test_rank_env_names_this_job_and_a_rendezvous(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURMD_NODENAME", "node7")
    assert wc.rank_env("torchrun") == {} and wc.rank_env(None) == {}
    env = wc.rank_env("srun")
    assert env["SLURM_JOB_ID"] == "42" and env["MASTER_ADDR"] == "node7"
    assert 0 < int(env["MASTER_PORT"]) < 65536


# -- on the test cluster ------------------------------------------------------------------------
SMALL = {"filters": "4,8,16", "patch_size": "16x16x4", "num_threads": 1, "device": "cpu"}


@pytest.fixture
def ddp_cluster(project: Project, ssh_alias: SshAlias, tmp_path: Path,
                slurm_cluster: SlurmCluster) -> Iterator[Project]:  # noqa: F811 - above
    """Host `cluster` (this machine's SLURM, its login node over sshd) and monai_seg presets
    on 2 tasks x 1 CPU with the node's 2 fake GPUs."""
    pytest.importorskip("monai")
    data = tmp_path / "vessels"
    synth.synthesize(data, n=6, size=32, seed=0)
    doc = base_config(project.runs, project.socket)
    doc["hosts"] = {"cluster": {
        "address": ssh_alias.name, "launcher": "slurm", "python": sys.executable,
        "outputs_dir": str(tmp_path / "cluster-runs"), "ops_home": str(tmp_path / "home"),
        "slurm": {"time": "00:05:00"}}}
    doc["project"]["default_host"] = "cluster"
    common = {"kind": "monai_seg", "dataset": {"name": "vessels", "dir": str(data)},
              "distributed": {"nproc_per_node": 2}, "limits": {"grace_sec": 2},
              "resources": {"gpus": 2, "cpus_per_task": 1}}
    doc["presets"]["seg2"] = {**common, "overrides": SMALL}
    doc["presets"]["seg2_long"] = {**common, "overrides": {
        **SMALL, "folds": 2, "max_epochs": 50, "steps_per_epoch": 100000, "val_interval": 50}}
    project.write_config(doc)
    project.runs = tmp_path / "cluster-runs"
    (project.root / "README").write_text("x\n")
    git_env = {**os.environ, **{f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                                for what, value in (("NAME", "t"), ("EMAIL", "t@x.invalid"))}}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "x"]):
        subprocess.run(["git", *args], cwd=project.root, check=True, capture_output=True,
                       env=git_env)
    yield project
    slurm_cluster.clear()


def _submit(p: Project, *args: str) -> None:
    result = p.ops("run", "submit", *args, "--skip-preflight", timeout=120)
    assert result.exit_code == 0, result.stdout[-2000:] + result.stderr


def _wait_summary(p: Project, run_id: str, timeout: float) -> dict[str, Any]:
    path = p.runs / run_id / "summary.json"
    p.wait_for(path.exists, timeout=timeout)
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def _run_processes(run_id: str) -> dict[int, int]:
    """{pid: RANK} of the live workload processes of a run (by their OPS_RUN_ID)."""
    found = {}
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
            if env.get("OPS_RUN_ID") == run_id and "RANK" in env \
                    and proc.status() != psutil.STATUS_ZOMBIE:
                found[proc.pid] = int(env["RANK"])
        except (psutil.Error, ValueError):
            continue
    return found


@pytest.mark.slurm
@pytest.mark.ssh
@pytest.mark.tmux
@pytest.mark.timeout(400)  # two interpreters importing torch and monai on a loaded node
def test_two_srun_tasks_train_their_shards(ddp_cluster: Project) -> None:
    _submit(ddp_cluster, "-p", "seg2", "--debug", "--run-id", "srun-1")
    summary = _wait_summary(ddp_cluster, "srun-1", timeout=300)
    run_dir = ddp_cluster.runs / "srun-1"
    assert summary["status"] == "completed", (run_dir / "stdout.log").read_text()[-3000:]
    derived = json.loads((run_dir / "config_effective.json").read_text())["derived"]
    assert derived["rank_launcher"] == "srun" and derived["world_size"] == 2
    assert derived["argv"][:3] == ["srun", "--nodes=1", "--ntasks=2"]
    assert derived["workload"]["distributed"]["world_size"] == 2
    spec = json.loads((run_dir / "spec.json").read_text())
    assert "--ntasks-per-node=2" in spec["slurm"]["argv"] and "--gpus=2" in spec["slurm"]["argv"]
    for k in (0, 1):
        done = json.loads((run_dir / "checkpoints" / f"fold{k}_done.json").read_text())
        shards = [set(r["volumes"]) for r in done["ranks"]]
        assert len({r["pid"] for r in done["ranks"]}) == 2 and not shards[0] & shards[1]
    assert (run_dir / "stdout.log").read_text().count("dsc_mean ") == 1


@pytest.mark.slurm
@pytest.mark.ssh
@pytest.mark.tmux
@pytest.mark.timeout(400)  # two interpreters importing torch and monai on a loaded node
def test_a_killed_srun_task_fails_the_run_and_ends_every_task(ddp_cluster: Project) -> None:
    _submit(ddp_cluster, "-p", "seg2_long", "--run-id", "srun-k")
    metrics = ddp_cluster.runs / "srun-k" / "metrics.jsonl"
    ddp_cluster.wait_for(lambda: metrics.exists() and "train_loss" in metrics.read_text(),
                         timeout=150)
    ranks = {rank: pid for pid, rank in _run_processes("srun-k").items()}
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[1], signal.SIGKILL)
    summary = _wait_summary(ddp_cluster, "srun-k", timeout=90)
    assert summary["status"] == "failed", summary
    deadline = time.time() + 30
    while _run_processes("srun-k") and time.time() < deadline:
        time.sleep(0.2)
    assert _run_processes("srun-k") == {}
    assert not [p for p in ranks.values() if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slurm
@pytest.mark.ssh
@pytest.mark.tmux
@pytest.mark.timeout(400)
def test_cancel_ends_every_srun_task_and_reads_killed(ddp_cluster: Project) -> None:
    _submit(ddp_cluster, "-p", "seg2_long", "--run-id", "srun-c")
    metrics = ddp_cluster.runs / "srun-c" / "metrics.jsonl"
    ddp_cluster.wait_for(lambda: metrics.exists() and "train_loss" in metrics.read_text(),
                         timeout=150)
    pids = list(_run_processes("srun-c"))
    assert len(pids) == 2, pids
    cancelled = ddp_cluster.ops("run", "cancel", "srun-c", "--json", timeout=120)
    assert cancelled.exit_code == 0, cancelled.stderr
    summary = _wait_summary(ddp_cluster, "srun-c", timeout=60)
    assert summary["status"] == "killed" and summary["written_by"] == "wrapper", summary
    deadline = time.time() + 30
    while _run_processes("srun-c") and time.time() < deadline:
        time.sleep(0.2)
    assert _run_processes("srun-c") == {}
