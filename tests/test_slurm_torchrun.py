"""`distributed.nproc_per_node` on one machine: the workload runs under torchrun (2 CPU ranks,
gloo), rank 0 alone reports metrics, and the ranks stop together on a cancel or a rank's failure.
"""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from runner import workload_command as wc

from .conftest import WORKLOADS, Project, base_config

DDP = str(WORKLOADS / "ddp_toy.py")
VALUES = {"python": "/venv/bin/python", "run_dir": "/r", "run_id": "r", "out_dir": "/r/out",
          "checkpoints_dir": "/r/checkpoints", "code_dir": "/c", "data_dir": ""}


def test_a_python_command_becomes_torchruns_script() -> None:
    workload = {"command": ["{python}", "-u", "train.py"], "overrides": {"lr": 0.1},
                "distributed": {"nproc_per_node": 2}}
    assert wc.build_argv(workload, VALUES) == [
        "/venv/bin/python", "-m", "torch.distributed.run", "--standalone",
        "--nproc_per_node=2", "train.py", "--lr=0.1"]


def test_a_module_and_a_non_python_command_under_torchrun() -> None:
    module = {"command": ["{python}", "-m", "pkg.train"], "distributed": {"nproc_per_node": 4}}
    assert wc.build_argv(module, VALUES)[-3:] == ["--nproc_per_node=4", "-m", "pkg.train"]
    binary = {"command": ["./train.sh", "x"], "distributed": {"nproc_per_node": 2}}
    assert wc.build_argv(binary, VALUES)[-3:] == ["--no-python", "./train.sh", "x"]


def test_one_process_or_a_bad_count_is_the_plain_command() -> None:
    for block in ({"nproc_per_node": 1}, {"nproc_per_node": True}, {"nproc_per_node": 999},
                  "2", None):
        workload = {"command": ["{python}", "t.py"], "distributed": block}
        assert wc.build_argv(workload, VALUES) == ["/venv/bin/python", "t.py"]


@pytest.fixture
def ddp(project: Project) -> Project:
    pytest.importorskip("torch")
    doc = base_config(project.runs, project.socket)
    common = {"kind": "command", "command": ["{python}", DDP], "limits": {"grace_sec": 2},
              "distributed": {"nproc_per_node": 2}}
    doc["presets"].update(
        ddp={**common, "overrides": {"steps": 5}},
        ddp_long={**common, "overrides": {"steps": 100000, "sleep": 0.05}},
        ddp_fail={**common, "overrides": {"steps": 100000, "sleep": 0.05, "fail_rank": 1,
                                          "fail_at": 10}})
    project.write_config(doc)
    return project


def _pids(run_dir: Path) -> list[int]:
    return [int(p.read_text()) for p in sorted((run_dir / "out").glob("rank*.pid"))]


@pytest.mark.tmux
def test_two_ranks_train_and_rank_zero_alone_reports(ddp: Project) -> None:
    done = ddp.ops("run", "submit", "-p", "ddp", "--run-id", "ddp-ok", "-f", timeout=120)
    assert done.exit_code == 0, done.stderr + done.stdout
    run_dir = ddp.run_dir("ddp-ok")
    assert ddp.summary("ddp-ok")["status"] == "completed"
    shards = [(run_dir / "out" / f"rank{r}.shard").read_text().split() for r in (0, 1)]
    assert shards[0] and shards[1] and not set(shards[0]) & set(shards[1])  # own shard each
    steps = [json.loads(line)["step"] for line in
             (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]  # once a step: rank 1 writes nothing
    argv = json.loads((run_dir / "config_effective.json").read_text())["derived"]["argv"]
    assert argv[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert "world 2" in (run_dir / "stdout.log").read_text()


@pytest.mark.tmux
def test_cancel_stops_every_rank(ddp: Project) -> None:
    assert ddp.ops("run", "submit", "-p", "ddp_long", "--run-id", "ddp-c").exit_code == 0
    run_dir = ddp.run_dir("ddp-c")
    ddp.wait_for(lambda: len(_pids(run_dir)) == 2 and (run_dir / "metrics.jsonl").exists(),
                 timeout=60)
    pids = _pids(run_dir)
    cancelled = ddp.ops("run", "cancel", "ddp-c", "--json")
    assert cancelled.exit_code == 0, cancelled.stderr
    assert ddp.summary("ddp-c")["status"] == "killed"
    assert not [p for p in pids if psutil.pid_exists(p)]


@pytest.mark.tmux
def test_a_failing_rank_ends_the_run_failed_with_every_rank_gone(ddp: Project) -> None:
    result = ddp.ops("run", "submit", "-p", "ddp_fail", "--run-id", "ddp-f", "-f", timeout=120)
    assert result.exit_code != 0
    run_dir = ddp.run_dir("ddp-f")
    assert ddp.summary("ddp-f")["status"] == "failed"
    assert "rank 1 fails at step 10" in (run_dir / "stdout.log").read_text()
    assert not [p for p in _pids(run_dir) if psutil.pid_exists(p)]
