"""``python -m runner.seg.evaluate --parent=RUN_DIR``: score a monai_seg run's best checkpoints.

The workload of the flagship's `eval` preset (``ops run submit -p dice_ce_demo_eval --from
RUN``). It rebuilds the parent run's trainer exactly as that run resolved it (its argv from
config_effective.json, the auto values it derived, its splits.json), loads each fold's
``fold{k}_ckpt_best.pt`` and runs the same sliding-window validation on the same held-out
volumes. Output:

- ``results.jsonl`` (``$OPS_RESULTS_FILE``): one record per volume (fold, name, the epoch of the
  checkpoint, DSC, clDice, MASD, HD95, ...) with the DSC the parent recorded for that volume
  (``parent_dsc``) and the difference;
- metrics, per fold and overall, with the same names and bootstrap CIs as training
  (``dsc_mean``, ``fold0/dsc_ci_low`` ...), plus ``dsc_max_abs_diff_vs_parent``;
- ``per_volume.json``/``.csv`` in ``$OPS_OUT_DIR``, as training writes them.

``--checkpoint`` is a directory of per-fold best checkpoints (the default: the parent's
``checkpoints/``) or one checkpoint file (its fold only). ``--data_dir`` scores the volumes of
that directory instead of the parent's (same names). Exit codes: 0 done, 2 the checkpoint does
not fit the parent's network or split, 4 a checkpoint or parent file is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from runner import contract
from runner.seg import checkpoints as ckpt
from runner.seg import metrics, splits
from runner.seg.compute import GuardError, detect_hardware, resolve
from runner.seg.data import case_records, val_loader, volume_cache
from runner.seg.fold import FoldTrainer, ResumeMismatch, RunContext
from runner.seg.params import TrainParams, parse_params
from runner.seg.train import RunDirs, Trainer, configure_torch, rows_csv
from runner.seg.wandb_log import WandbRun
from runner.track import Tracker

TRAINER_MODULE = "runner.seg.train"


class MissingInput(FileNotFoundError):
    """A file the eval needs from the parent run is not there."""


def parent_params(parent: Path, data_dir: str | None, device: str | None) -> TrainParams:
    """The params the parent ran with (its recorded argv), pointed at the parent for the
    network size and splits, without W&B."""
    effective = contract.read_json_or_none(parent / contract.CONFIG_EFFECTIVE)
    argv = (effective or {}).get("derived", {}).get("argv") if isinstance(effective, dict) \
        else None
    if not isinstance(argv, list) or TRAINER_MODULE not in argv:
        raise MissingInput(f"{parent / contract.CONFIG_EFFECTIVE}: no monai_seg trainer argv "
                           "recorded; is it a monai_seg run directory?")
    args = [str(a) for a in argv[argv.index(TRAINER_MODULE) + 1:]]
    params = parse_params(args).effective()
    changes: dict[str, Any] = {"resume_from": str(parent), "wandb": "disabled"}
    if data_dir:
        changes["data_dir"] = data_dir
    if device:
        changes["device"] = device
    return dataclasses.replace(params, **changes)


def checkpoint_for(checkpoint: Path, fold: int) -> Path | None:
    """The best checkpoint of ``fold``: inside a directory, or the file given (its own fold)."""
    if checkpoint.is_dir():
        path = ckpt.best_path(checkpoint, fold)
        return path if path.is_file() else None
    return checkpoint if checkpoint.is_file() else None


def parent_rows(parent: Path) -> dict[tuple[int, str], float]:
    """(fold, volume) -> the DSC the parent recorded for it at its best epoch."""
    doc = contract.read_json_or_none(parent / contract.OUT_DIR / "per_volume.json") or {}
    found: dict[tuple[int, str], float] = {}
    for row in doc.get("rows", []) if isinstance(doc.get("rows"), list) else []:
        if isinstance(row, dict) and isinstance(row.get("fold"), int) \
                and isinstance(row.get("dsc"), (int, float)):
            found[(row["fold"], str(row.get("name")))] = float(row["dsc"])
    return found


class Evaluator:
    def __init__(self, parent: Path, checkpoint: Path, params: TrainParams, dirs: RunDirs,
                 tracker: Tracker) -> None:
        self.parent, self.checkpoint = parent, checkpoint
        self.dirs, self.tracker = dirs, tracker
        self.trainer = Trainer(params, dirs, tracker)

    def run(self) -> list[dict[str, Any]]:
        trainer, tracker = self.trainer, self.tracker
        tracker.phase("setup")
        profile = trainer._profile()  # the parent's volumes, chosen as it chose
        trainer.params = trainer._pin_from_previous(trainer.params)
        plan = resolve(trainer.params, profile, detect_hardware())
        torch.set_num_threads(plan.num_threads)
        split = trainer._splits(profile)  # the parent's splits.json, checked
        records = case_records(profile)
        ctx = RunContext(trainer.params, plan, tracker, WandbRun(), self.dirs.checkpoints,
                         volume_cache(records, plan.cache_rate, plan.cache_device), records)
        index = {r["name"]: i for i, r in enumerate(records)}
        rows: list[dict[str, Any]] = []
        for fold in self._folds(trainer.params):
            tracker.phase(f"fold{fold}/eval", fold=fold)
            rows += self._fold(ctx, split, index, fold)
        return rows

    def _folds(self, params: TrainParams) -> list[int]:
        folds = params.fold_list()
        if self.checkpoint.is_file():
            state = ckpt.load(self.checkpoint)
            return [int(state.get("fold", folds[0]))]
        return folds

    def _fold(self, ctx: RunContext, split: splits.Splits, index: dict[str, int],
              fold: int) -> list[dict[str, Any]]:
        path = checkpoint_for(self.checkpoint, fold)
        if path is None:
            raise MissingInput(f"no best checkpoint of fold {fold} under {self.checkpoint}")
        state = ckpt.load(path)
        if state.get("network") != ctx.plan.network.to_json():
            raise ResumeMismatch(f"{path}: its network {state.get('network')} is not the "
                                 f"parent's {ctx.plan.network.to_json()}")
        val = [index[n] for n in split.folds[fold].val]
        train = [index[n] for n in split.folds[fold].train]
        scorer = FoldTrainer(ctx, fold, train, val, global_step=0)
        try:
            scorer.net.load_state_dict(state["model"])
            scorer.net.eval()
            epoch = int(state.get("epoch", -1))
            rows = [scorer._evaluate(item, epoch)  # training's own scoring
                    for item in val_loader(ctx.cache, val)]
        finally:
            scorer.close()
        self.tracker.event("fold_eval", fold=fold, checkpoint=str(path), epoch=epoch,
                           n_volumes=len(rows))
        return rows


def compare(rows: list[dict[str, Any]], parent: dict[tuple[int, str], float]) -> float | None:
    """Add the parent's DSC to each row; the largest absolute difference (None: no pairs)."""
    worst: float | None = None
    for row in rows:
        recorded = parent.get((int(row["fold"]), str(row["name"])))
        row["parent_dsc"] = recorded
        dsc = row.get("dsc")
        if recorded is None or not isinstance(dsc, (int, float)) or not math.isfinite(dsc):
            row["dsc_diff"] = None
            continue
        row["dsc_diff"] = float(dsc) - recorded
        worst = max(worst or 0.0, abs(row["dsc_diff"]))
    return worst


def report(rows: list[dict[str, Any]], seed: int, worst: float | None, dirs: RunDirs,
           tracker: Tracker) -> dict[str, float]:
    """results.jsonl, per_volume files and the metrics, named as training names them."""
    results = Path(os.environ.get("OPS_RESULTS_FILE") or dirs.out / "results.jsonl")
    lines = b"".join(json.dumps(row, sort_keys=True, allow_nan=False).encode() + b"\n"
                     for row in rows)
    contract.atomic_write_bytes(results, lines)
    summary = metrics.summarize(rows, seed)
    final: dict[str, float] = {}
    for fold in summary["folds"]:
        final.update(metrics.flatten(fold, prefix=f"fold{fold['fold']}/"))
    final.update(metrics.flatten(summary["overall"]))
    final.update(n_val_volumes=len(rows))
    if worst is not None:
        final["dsc_max_abs_diff_vs_parent"] = worst
    tracker.log(final, step=0)
    contract.atomic_write_json(dirs.out / "per_volume.json", {
        "schema": contract.schema_tag("seg_per_volume"), "rows": rows})
    contract.atomic_write_bytes(dirs.out / "per_volume.csv", rows_csv(rows))
    tracker.event("eval", n_volumes=len(rows), **{k: v for k, v in final.items() if "/" not in k})
    print(" ".join(f"{k} {v:.4g}" for k, v in final.items() if "/" not in k), flush=True)
    return final


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runner.seg.evaluate",
                                     description="Score a monai_seg run's best checkpoints.")
    parser.add_argument("--parent", required=True, help="The parent run directory.")
    parser.add_argument("--checkpoint", default=None,
                        help="A checkpoints directory or one checkpoint file "
                             "(default: PARENT/checkpoints).")
    parser.add_argument("--data_dir", default=None, help="Dataset (default: the parent's).")
    parser.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parent = Path(args.parent)
    dirs = RunDirs.from_env()
    tracker = Tracker(dirs.run_dir)
    try:
        params = parent_params(parent, args.data_dir, args.device)
        configure_torch(params)
        checkpoint = Path(args.checkpoint) if args.checkpoint else \
            parent / contract.CHECKPOINTS_DIR
        rows = Evaluator(parent, checkpoint, params, dirs, tracker).run()
        worst = compare(rows, parent_rows(parent))
        report(rows, params.seed, worst, dirs, tracker)
    except (GuardError, ResumeMismatch, splits.SplitsMismatch) as exc:
        return _fail(tracker, "guard", exc, 2)
    except (MissingInput, OSError, contract.ContractError) as exc:
        return _fail(tracker, "data", exc, 4)
    tracker.phase("done")
    return 0


def _fail(tracker: Tracker, kind: str, exc: BaseException, code: int) -> int:
    print(f"error: {exc}", file=sys.stderr, flush=True)
    tracker.event("failure", failure_class=kind, message=str(exc))
    return code


if __name__ == "__main__":
    sys.exit(main())
