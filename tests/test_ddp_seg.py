"""The monai_seg trainer on two ranks (torchrun, gloo on the CPU) under the full contract.

A preset with `distributed.nproc_per_node: 2` trains DistributedDataParallel: each rank on its
own shard of every fold (recorded with its pid), rank 0 alone writing metrics, checkpoints and
results; the saved checkpoint scored by the eval entry point in one process gives the DSC the
run reported; a rank killed by SIGKILL ends the run `failed` with no rank left behind.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from runner.seg import ddp, synth

from .conftest import Project, base_config

SMALL = {"filters": "4,8,16", "patch_size": "16x16x4", "num_threads": 1}
DDP = {"distributed": {"nproc_per_node": 2}, "limits": {"grace_sec": 2}}


# -- unit: the ranks' arithmetic --------------------------------------------------------------
@pytest.mark.parametrize(("env", "expected"), [
    ({}, ddp.World()),
    ({"WORLD_SIZE": "1", "RANK": "0"}, ddp.World()),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"},
     ddp.World(1, 2, 1, 2)),
    ({"WORLD_SIZE": "2", "RANK": "5"}, ddp.World()),  # nonsense is a single process
    ({"WORLD_SIZE": "x", "RANK": "1"}, ddp.World()),
], ids=["alone", "one", "rank1", "bad-rank", "bad-size"])
def test_world_from_the_launchers_environment(env: dict[str, str], expected: ddp.World) -> None:
    assert ddp.World.from_env(env) == expected


def test_shards_are_disjoint_and_cover_the_training_set() -> None:
    names = [f"v{i}" for i in range(7)]
    shards = ddp.World(0, 3, 0, 3).shards(names)
    assert sorted(n for s in shards for n in s) == names
    assert [len(s) for s in shards] == [3, 2, 2]
    assert ddp.World(2, 3, 2, 3).shard(names) == shards[2]
    assert ddp.World().shards(names) == [names]


def test_lr_scaling_and_the_single_process_seed() -> None:
    assert ddp.lr_factor("linear", 4) == 4.0 and ddp.lr_factor("sqrt", 4) == 2.0
    assert ddp.lr_factor("none", 4) == 1.0 and ddp.lr_factor("linear", 1) == 1.0
    assert ddp.World().seed(123) == 123  # one process draws exactly the crops it always did
    assert ddp.World(0, 2).seed(123) != ddp.World(1, 2).seed(123)


# -- two real ranks ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vessels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small synthetic dataset for the module: the runs only read it."""
    if importlib.util.find_spec("monai") is None:  # found, not imported: torch costs seconds
        pytest.skip("monai is not installed")
    data = tmp_path_factory.mktemp("ddp-data") / "vessels"
    synth.synthesize(data, n=6, size=32, seed=0)
    return data


@pytest.fixture
def seg_ddp(project: Project, vessels: Path) -> Project:
    doc = base_config(project.runs, project.socket)
    dataset = {"name": "vessels", "dir": str(vessels)}
    doc["presets"]["seg2"] = {"kind": "monai_seg", "dataset": dataset,
                              "overrides": {"loss": "dice_ce", **SMALL}, **DDP}
    doc["presets"]["seg2_long"] = {
        "kind": "monai_seg", "dataset": dataset, **DDP,
        "overrides": {"folds": 2, "max_epochs": 50, "steps_per_epoch": 100000,
                      "val_interval": 50, **SMALL}}
    project.write_config(doc)
    return project


def _run_dir(project: Project, run_id: str) -> Path:
    run_dir = project.run_dir(run_id)
    assert run_dir.is_dir(), f"no run dir for {run_id} in {run_dir.parent}"
    return run_dir


def _summary(run_dir: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    return doc


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _check_shards(run_dir: Path) -> list[int]:
    """Each fold's done record: two ranks (two pids), disjoint shards covering the fold's
    training volumes; returns the rank pids."""
    folds = json.loads((run_dir / "out" / "splits.json").read_text())["folds"]
    pids = set()
    for k, fold in enumerate(folds):
        done = json.loads((run_dir / "checkpoints" / f"fold{k}_done.json").read_text())
        ranks = done["ranks"]
        assert done["world_size"] == 2 and [r["rank"] for r in ranks] == [0, 1]
        shards = [set(r["volumes"]) for r in ranks]
        assert shards[0] and shards[1] and not shards[0] & shards[1]
        assert shards[0] | shards[1] == set(fold["train"])
        pids |= {r["pid"] for r in ranks}
    assert len(pids) == 2
    return sorted(pids)


def _check_written_once(run_dir: Path) -> None:
    metrics = _jsonl(run_dir / "metrics.jsonl")
    losses = [m["step"] for m in metrics if any(n.endswith("/train_loss") for n in m["metrics"])]
    # one record a step (rank 1 logs nothing): 2 folds x one pass over the 2-volume shard
    assert losses == [1, 2, 3, 4]
    assert sum("dsc_mean" in m["metrics"] for m in metrics) == 1
    events = Counter((e["type"], e.get("fold"), e.get("kind")) for e in
                     _jsonl(run_dir / "events.jsonl") if e["source"] == "track")
    for k in (0, 1):
        assert events[("checkpoint", k, "last")] == 1 and events[("checkpoint", k, "best")] == 1
        assert events[("fold_end", k, None)] == 1
    assert events[("derived", None, None)] == 1 and events[("eval", None, None)] == 1
    assert len(json.loads((run_dir / "out" / "per_volume.json").read_text())["rows"]) == 6
    assert (run_dir / "stdout.log").read_text().count("dsc_mean ") == 1


def _evaluate_in_one_process(parent: Path, out: Path) -> dict[str, float]:
    """runner.seg.evaluate (the eval kind's entry point) in this process, on the best
    checkpoints; the metrics it logged."""
    from runner.seg import evaluate

    env = {"OPS_RUN_DIR": str(out), "OPS_OUT_DIR": str(out / "out"),
           "OPS_CHECKPOINTS_DIR": str(out / "checkpoints"),
           "OPS_RESULTS_FILE": str(out / "results.jsonl")}
    out.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        assert evaluate.main([f"--parent={parent}"]) == 0
    final: dict[str, float] = {}
    for record in _jsonl(out / "metrics.jsonl"):
        final.update(record["metrics"])
    return final


@pytest.mark.timeout(300)  # three interpreters import torch and monai; slow on a loaded machine
def test_two_ranks_train_own_shards_and_rank_zero_writes_once(seg_ddp: Project,
                                                              tmp_path: Path) -> None:
    result = seg_ddp.ops("run", "submit", "-p", "seg2", "--debug", "--run-id", "ddp-1", "-f",
                         timeout=240)
    assert result.exit_code == 0, result.stdout[-3000:] + result.stderr
    run_dir = _run_dir(seg_ddp, "ddp-1")
    summary = _summary(run_dir)
    assert summary["status"] == "completed"
    effective = json.loads((run_dir / "config_effective.json").read_text())["derived"]
    assert effective["world_size"] == 2
    assert effective["argv"][1:5] == ["-m", "torch.distributed.run", "--standalone",
                                      "--nproc_per_node=2"]
    world = effective["workload"]["distributed"]
    assert world["world_size"] == 2 and world["backend"] == "gloo"
    assert world["global_batch_size"] == 2 * world["per_rank_batch_size"]
    assert world["lr_scaling"] == "linear" and world["lr_effective"] == 2 * world["lr_base"]
    assert set(world["shards"]) == {"fold0", "fold1"}
    _check_shards(run_dir)
    _check_written_once(run_dir)
    # the checkpoint rank 0 saved, scored by one process, gives the DSC the run reported
    final = _evaluate_in_one_process(run_dir, tmp_path / "eval")
    reported = summary["metrics_final"]
    # the CIs too: the gathered rows are in the order one process scores them (bootstrap)
    for name in ("dsc_mean", "dsc_ci_low", "dsc_ci_high", "fold0/dsc_mean", "fold1/dsc_mean",
                 "cldice_mean"):
        assert final[name] == pytest.approx(reported[name], abs=1e-6), name
    assert final["dsc_max_abs_diff_vs_parent"] < 1e-6


def _ranks(run_dir: Path) -> tuple[list[int], dict[int, int]]:
    """(wrapper and torchrun pids, {rank: pid}) from the process tree of the run's wrapper."""
    meta = json.loads((run_dir / "run_metadata.json").read_text())
    launcher = meta["process"]["workload_pid"]
    ranks = {}
    for child in psutil.Process(launcher).children(recursive=True):
        try:
            if "runner.seg.train" in child.cmdline():
                ranks[int(child.environ()["RANK"])] = child.pid
        except (psutil.Error, KeyError):
            continue
    return [meta["process"]["pid"], launcher], ranks


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _run_processes(run_id: str) -> list[int]:
    """Live processes of this run anywhere on the machine (by their OPS_RUN_ID)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("OPS_RUN_ID") == run_id and _alive(proc.pid):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


@pytest.mark.timeout(300)
def test_a_killed_rank_fails_the_run_and_leaves_no_rank(seg_ddp: Project) -> None:
    started = seg_ddp.ops("run", "submit", "-p", "seg2_long", "--run-id", "ddp-k")
    assert started.exit_code == 0, started.stderr
    seg_ddp.wait_for(lambda: bool(list(seg_ddp.root.glob("runs/*/ddp-k")))
                     or seg_ddp.run_dir("ddp-k").is_dir(), timeout=30)
    run_dir = _run_dir(seg_ddp, "ddp-k")
    metrics = run_dir / "metrics.jsonl"
    seg_ddp.wait_for(lambda: metrics.exists() and "train_loss" in metrics.read_text(),
                     timeout=120)  # both ranks are in the process group and training
    launchers, ranks = _ranks(run_dir)
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[1], signal.SIGKILL)
    seg_ddp.wait_for((run_dir / "summary.json").exists, timeout=90)
    summary = _summary(run_dir)
    assert summary["status"] == "failed", summary
    pids = [*launchers, *ranks.values()]
    seg_ddp.wait_for(lambda: not [p for p in pids if _alive(p)], timeout=30)
    assert _run_processes("ddp-k") == []
    assert not (run_dir / "checkpoints" / "fold0_done.json").exists()


@pytest.mark.timeout(300)
def test_cancel_stops_both_ranks_together(seg_ddp: Project) -> None:
    started = seg_ddp.ops("run", "submit", "-p", "seg2_long", "--run-id", "ddp-c")
    assert started.exit_code == 0, started.stderr
    seg_ddp.wait_for(lambda: bool(list(seg_ddp.root.glob("runs/*/ddp-c")))
                     or seg_ddp.run_dir("ddp-c").is_dir(), timeout=30)
    run_dir = _run_dir(seg_ddp, "ddp-c")
    metrics = run_dir / "metrics.jsonl"
    seg_ddp.wait_for(lambda: metrics.exists() and "train_loss" in metrics.read_text(),
                     timeout=120)
    launchers, ranks = _ranks(run_dir)
    assert sorted(ranks) == [0, 1], ranks
    cancelled = seg_ddp.ops("run", "cancel", "ddp-c", "--json", timeout=60)
    assert cancelled.exit_code == 0, cancelled.stderr
    assert _summary(run_dir)["status"] == "killed"
    pids = [*launchers, *ranks.values()]
    seg_ddp.wait_for(lambda: not [p for p in pids if _alive(p)], timeout=30)
    assert _run_processes("ddp-c") == []


@pytest.mark.timeout(300)
def test_a_hung_rank_times_out_the_process_group_and_fails_the_run(seg_ddp: Project) -> None:
    """A rank that stops answering (SIGSTOP) does not hold the others in a collective forever:
    after dist_timeout the waiting rank fails, torchrun ends the rest, the run reads failed.

    Once torchrun has sent the stopped rank its SIGTERM, the test lets the rank go on (SIGCONT)
    so the signal is acted on at once; left stopped, torchrun would SIGKILL it 30 s later (its
    fixed timeout on this path; `--shutdown_timeout` does not reach it). dist_timeout also
    bounds the ranks' meeting at start-up, where a loaded machine can keep one rank importing
    torch seconds longer than the other: 20 s, not less."""
    started = seg_ddp.ops("run", "submit", "-p", "seg2_long", "--run-id", "ddp-h",
                          "--set", "dist_timeout=20")
    assert started.exit_code == 0, started.stderr
    seg_ddp.wait_for(lambda: bool(list(seg_ddp.root.glob("runs/*/ddp-h")))
                     or seg_ddp.run_dir("ddp-h").is_dir(), timeout=30)
    run_dir = _run_dir(seg_ddp, "ddp-h")
    metrics = run_dir / "metrics.jsonl"
    seg_ddp.wait_for(lambda: metrics.exists() and "train_loss" in metrics.read_text(),
                     timeout=120)
    launchers, ranks = _ranks(run_dir)
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[1], signal.SIGSTOP)
    log = run_dir / "stdout.log"
    stopping = f"Sending process {ranks[1]} closing signal SIGTERM"
    seg_ddp.wait_for(lambda: stopping in log.read_text(), timeout=120)
    assert "Timed out" in log.read_text()  # rank 0 gave up on the collective first
    assert not (run_dir / "summary.json").exists()  # the stopped rank still holds the run
    os.kill(ranks[1], signal.SIGCONT)
    seg_ddp.wait_for((run_dir / "summary.json").exists, timeout=60)
    assert _summary(run_dir)["status"] == "failed"
    pids = [*launchers, *ranks.values()]
    seg_ddp.wait_for(lambda: not [p for p in pids if _alive(p)], timeout=30)
    assert _run_processes("ddp-h") == []
