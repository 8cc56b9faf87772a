"""Synthetic run dirs for the report tests, written with the contract's own helpers.

A finished run gets the files a reader needs (spec, metadata, effective config, env snapshot,
dataset manifest, command.sh, heartbeat, metrics.jsonl, summary) and, for a segmentation run,
out/per_volume.json and out/splits.json. Fast: no processes, no fsync-heavy loops beyond the
contract's atomic writes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner import contract

STARTED = "2026-01-02T10:00:00.000Z"
ENDED = "2026-01-02T10:05:00.000Z"
CASES = tuple(f"vol_{i:02d}" for i in range(8))
SPLITS_2 = [list(CASES[0::2]), list(CASES[1::2])]


@dataclass
class FakeRun:
    run_id: str
    preset: str = "seg"
    status: str | None = "completed"
    overrides: Mapping[str, Any] = field(default_factory=dict)
    metrics_final: Mapping[str, Any] = field(default_factory=dict)
    metrics_best: Mapping[str, Any] = field(default_factory=dict)
    best: Mapping[str, str] = field(default_factory=lambda: {"dsc_mean": "max"})
    series: Sequence[Mapping[str, float]] = ()
    per_volume: Sequence[Mapping[str, Any]] | None = None
    splits: Sequence[Sequence[str]] | None = None
    failure: Mapping[str, Any] | None = None
    commit: str = "a" * 40
    dirty: bool = False
    started_at: str = STARTED
    dataset_files: Mapping[str, tuple[int, str]] = field(
        default_factory=lambda: {"a.nii.gz": (10, "1" * 64)})
    packages: Sequence[str] = ("numpy==2.0.0", "torch==2.3.0")


def _tagged(schema: str, run_id: str, **doc: Any) -> dict[str, Any]:
    return {"schema": contract.schema_tag(schema), "run_id": run_id, **doc}


def write_run(root: Path, run: FakeRun) -> Path:
    run_dir = contract.make_run_dir(root, run.run_id)
    rid = run.run_id
    config = {"kind": "command", "description": f"{run.preset} preset",
              "command": ["{python}", "train.py"], "overrides": dict(run.overrides),
              "best": dict(run.best), "limits": {"grace_sec": 1.0}}
    contract.atomic_write_json(run_dir / contract.SPEC, _tagged(
        "spec", rid, project="p", preset=run.preset, kind="command", created_at=STARTED,
        parent_run_id=None, sweep_id=None, config=config, overrides={},
        metrics={"from_stdout": [], "summary_from": None, "best": dict(run.best)},
        heartbeat={"interval_s": 1.0, "stall_after_intervals": 3}, tmux={"socket": "none"}))
    contract.atomic_write_json(run_dir / contract.METADATA, _tagged(
        "run_metadata", rid, project="p", preset=run.preset, kind="command",
        created_at=STARTED, started_at=run.started_at,
        git={"commit": run.commit, "ref": "main", "branch": "main", "dirty": run.dirty,
             "base_commit": run.commit},
        host={"hostname": "h", "pod_id": None, "boot_id": "00000000-dead"},
        process={"pid": 1, "pid_start_time": 0.0, "pgid": 1},
        wandb={"mode": "offline", "project": "p", "run_id": f"wb-{rid}", "url": None}))
    contract.atomic_write_json(run_dir / contract.CONFIG_EFFECTIVE, _tagged(
        "config_effective", rid, preset=run.preset, kind="command", config=config,
        overrides=dict(run.overrides), derived={"argv": ["python", "train.py"],
                                                "placeholders": {"run_dir": str(run_dir)}}))
    _write_env_and_data(run_dir, run)
    (run_dir / contract.COMMAND).write_text(
        f"#!/bin/sh\nexport OPS_RUN_DIR={run_dir}\nexec python train.py " +
        " ".join(f"--{k}={v}" for k, v in run.overrides.items()) + "\n")
    (run_dir / contract.STDOUT_LOG).write_text("".join(f"line {i}\n" for i in range(30)))
    _write_series(run_dir, run)
    _write_out(run_dir, run)
    contract.atomic_write_json(run_dir / contract.HEARTBEAT, _tagged(
        "heartbeat", rid, seq=3, ts=ENDED, interval_s=1.0, pid=1, phase="done",
        step=len(run.series), last_step_at=ENDED))
    if run.status is not None:
        contract.atomic_write_json(run_dir / contract.SUMMARY, _tagged(
            "summary", rid, status=run.status, ok=run.status == "completed",
            exit_code=0 if run.status == "completed" else 1, started_at=run.started_at,
            ended_at=ENDED, elapsed_s=300.0, metrics_final=dict(run.metrics_final),
            metrics_best=dict(run.metrics_best), failure=run.failure, written_by="wrapper"))
    return run_dir


def _write_env_and_data(run_dir: Path, run: FakeRun) -> None:
    contract.atomic_write_json(run_dir / contract.ENV_SNAPSHOT, _tagged(
        "env_snapshot", run.run_id, python={"version": "3.11.7"},
        platform={"system": "Linux", "release": "6.1"},
        packages={"list": list(run.packages), "sha256": "0" * 64},
        torch={"version": "2.3.0", "cuda": None, "cudnn": None}, driver=None, gpus=[]))
    files = [{"path": p, "size": size, "mtime": STARTED, "sha256": sha}
             for p, (size, sha) in run.dataset_files.items()]
    contract.atomic_write_json(run_dir / contract.DATASET_MANIFEST, _tagged(
        "dataset_manifest", run.run_id, name="vessels", root="/data/vessels",
        created_at=STARTED, hash_algorithm="sha256", files=files,
        totals={"files": len(files), "bytes": sum(f["size"] for f in files)}))


def _write_series(run_dir: Path, run: FakeRun) -> None:
    with open(run_dir / contract.METRICS, "wb") as fh:
        for step, metrics in enumerate(run.series, start=1):
            fh.write(contract.json_line({"ts": STARTED, "step": step, "metrics": dict(metrics)}))


def _write_out(run_dir: Path, run: FakeRun) -> None:
    out = run_dir / contract.OUT_DIR
    out.mkdir()
    if run.per_volume is not None:
        contract.atomic_write_json(out / "per_volume.json", {
            "schema": contract.schema_tag("seg_per_volume"), "rows": list(run.per_volume)})
    if run.splits is not None:
        contract.atomic_write_json(out / "splits.json", {
            "schema": contract.schema_tag("splits"), "k": len(run.splits), "seed": 0,
            "n": sum(len(v) for v in run.splits), "cases": sorted(CASES),
            "folds": [{"train": [], "val": list(v)} for v in run.splits]})


def seg_volumes(offset: float, splits: Sequence[Sequence[str]] = SPLITS_2
                ) -> list[dict[str, Any]]:
    """Per-volume rows: DSC 0.6 + 0.02 i + about ``offset`` (90% of it on even volumes, 110% on
    odd ones), the distances falling as DSC rises."""
    rows = []
    for fold, names in enumerate(splits):
        for name in names:
            i = CASES.index(name)
            dsc = 0.6 + 0.02 * i + offset * (0.9 if i % 2 == 0 else 1.1)  # mean: offset
            rows.append({"fold": fold, "name": name, "epoch": 1, "dsc": dsc,
                         "cldice": dsc - 0.05, "masd": 2.0 - dsc, "hd95": 8.0 - 4 * dsc})
    return rows


def seg_run(run_id: str, loss: str, offset: float, **extra: Any) -> FakeRun:
    """A finished segmentation run of the sweep: loss as its one differing override."""
    rows = seg_volumes(offset, extra.pop("splits", SPLITS_2))
    mean = sum(r["dsc"] for r in rows) / len(rows)
    finals = {"dsc_mean": mean, "dsc_ci_low": mean - 0.03, "dsc_ci_high": mean + 0.03,
              "fold0/dsc_mean": mean - 0.01, "fold1/dsc_mean": mean + 0.01}
    splits = [sorted({r["name"] for r in rows if r["fold"] == k}) for k in (0, 1)]
    return FakeRun(run_id, preset=f"{loss}_2fold", overrides={"loss": loss, "folds": 2},
                   metrics_final=finals, metrics_best={"dsc_mean": mean}, per_volume=rows,
                   splits=splits, series=[{"train_loss": 2.0 / s} for s in range(1, 11)],
                   **extra)


def make_fifo(path: Path) -> None:
    os.mkfifo(path)
