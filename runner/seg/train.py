"""``python -m runner.seg.train --key=value ...``: the `monai_seg` workload.

Runs inside the wrapper (``OPS_RUN_DIR``, ``OPS_OUT_DIR``, ``OPS_CHECKPOINTS_DIR``) or by hand
(files then go to ``./seg_out``). In order: profile the dataset from its headers, detect the
hardware and resolve every ``auto`` param (``runner.seg.compute``; guards refuse what cannot
work), write the derived values to ``$OPS_OUT_DIR/derived.json`` (and a ``derived`` event),
load or create ``splits.json``, then train and validate each fold (``runner.seg.fold``) and
report per-volume rows (``per_volume.csv``/``.json``) and, per fold and overall, the mean and
bootstrap CI of DSC, clDice, MASD and HD95 as metrics (``fold0/dsc_mean``, ``dsc_ci_low``...).

``--resume_from RUN_DIR`` continues a previous run as a new one: its splits.json is reused, a
fold with ``fold{k}_done.json`` in its checkpoints is skipped (its rows still reported), an
interrupted fold continues from ``fold{k}_ckpt_last.pt``. Auto params are pinned to the values
the previous run derived, so the network matches its checkpoints.

Reproducibility: with the same seed on CPU, two runs give identical metrics
(``torch.use_deterministic_algorithms``; model init, crops and volume order seeded per fold and
epoch). On CUDA ``deterministic`` is off by default (cuDNN autotuning is much faster for 3D
convolutions); turned on, it is ``warn_only``, as 3D pooling backward has no deterministic
CUDA kernel, so GPU runs are close but not bit-identical.

Several ranks (``distributed.nproc_per_node`` in the preset: torchrun on a pod, srun on
SLURM): DistributedDataParallel with per-rank shards of each fold, rank 0 alone writing
(``runner.seg.ddp``); derived.json says the world size, the per-rank and global batch, the
learning-rate scaling and which volumes each rank trains on, and each ``fold{k}_done.json``
records the shard every rank (by pid) trained on.

Exit codes: 0 done, 2 a guard or a resume/splits mismatch refused the settings, 3 the loss
became non-finite, 130 interrupted (SIGINT/SIGTERM; the last epoch's checkpoint is on disk).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import random
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch

from runner import contract
from runner.seg import checkpoints as ckpt
from runner.seg import metrics, splits
from runner.seg.compute import GuardError, Plan, detect_hardware, resolve
from runner.seg.data import case_records, volume_cache
from runner.seg.ddp import World, describe, plan_for_rank
from runner.seg.fold import FoldResult, FoldTrainer, NonFiniteLoss, ResumeMismatch, RunContext
from runner.seg.params import TrainParams, parse_params
from runner.seg.profile import DatasetProfile, profile_dataset
from runner.seg.wandb_log import WandbRun, start
from runner.track import Tracker

DERIVED_FILE = "derived.json"
ROW_FIELDS = ("fold", "name", "epoch", "dsc", "cldice", "masd", "hd95", "empty",
              "pred_voxels", "label_voxels")


@dataclasses.dataclass(frozen=True)
class RunDirs:
    run_dir: Path | None
    out: Path
    checkpoints: Path

    @classmethod
    def from_env(cls) -> RunDirs:
        run = os.environ.get("OPS_RUN_DIR")
        run_dir = Path(run) if run else None
        out = Path(os.environ.get("OPS_OUT_DIR") or (run_dir / contract.OUT_DIR if run_dir
                                                      else Path("seg_out")))
        checkpoints = Path(os.environ.get("OPS_CHECKPOINTS_DIR")
                           or (run_dir / contract.CHECKPOINTS_DIR if run_dir
                               else out / contract.CHECKPOINTS_DIR))
        for path in (out, checkpoints):
            path.mkdir(parents=True, exist_ok=True)
        return cls(run_dir, out, checkpoints)


class Trainer:
    def __init__(self, params: TrainParams, dirs: RunDirs, tracker: Tracker,
                 world: World | None = None) -> None:
        self.params, self.dirs, self.tracker = params, dirs, tracker
        self.world = world or World()
        self.previous = Path(params.resume_from) if params.resume_from else None
        self.wandb = WandbRun()

    def run(self) -> int:
        self.tracker.phase("setup")
        profile = self._profile()
        self.params = self._pin_from_previous(self.params)
        world = self.world
        plan = plan_for_rank(resolve(self.params, profile, detect_hardware()), world,
                             self.params.num_threads is not None)
        torch.set_num_threads(plan.num_threads)
        backend = world.start(plan.device, self.params.dist_timeout)
        split = self._shared_splits(profile)
        if world.main:
            self._write_derived(plan, profile, self._distributed(plan, backend, split))
            self.wandb = start(self.params.wandb, self.params.wandb_project,
                               self.dirs.run_dir or self.dirs.out, self.params.to_json(),
                               tracker=self.tracker, name=os.environ.get("OPS_RUN_ID"))
        records = case_records(profile)
        ctx = RunContext(self.params, plan, self.tracker, self.wandb, self.dirs.checkpoints,
                         volume_cache(records, plan.cache_rate, plan.cache_device), records,
                         world)
        results = self._folds(ctx, split)
        if world.main:
            self._report(results)
        world.barrier()  # the others end once rank 0 has written the run's results
        world.stop()
        self.wandb.finish(0)
        self.tracker.phase("done")
        return 0

    def _shared_splits(self, profile: DatasetProfile) -> splits.Splits:
        """splits.json, made (or taken from the resumed run) by rank 0, then read by all."""
        split = self._splits(profile) if self.world.main else None
        self.world.barrier()
        if split is not None:
            return split
        return splits.load_or_create(self.dirs.out / splits.SPLITS_JSON,
                                     [v.name for v in profile.volumes], self.params.folds,
                                     self.params.seed)

    def _distributed(self, plan: Plan, backend: str | None,
                     split: splits.Splits) -> dict[str, Any] | None:
        if not self.world.distributed:
            return None
        shards = {k: self.world.shards(split.folds[k].train) for k in self.params.fold_list()}
        return describe(self.world, backend, batch_size=plan.batch_size, lr=self.params.lr,
                        scaling=self.params.lr_scaling, timeout_s=self.params.dist_timeout,
                        shards=shards)

    # -- setup ---------------------------------------------------------------------------
    def _profile(self) -> DatasetProfile:
        profile = profile_dataset(Path(self.params.data_dir))
        if profile.problems:
            self.tracker.event("warning", topic="dataset", problems=profile.problems[:20])
        volumes = sorted((v for v in profile.volumes if v.label), key=lambda v: v.name)
        if self.params.max_volumes:
            volumes = volumes[:self.params.max_volumes]
        if len(volumes) < self.params.folds:
            raise GuardError(f"{len(volumes)} labelled volumes under {self.params.data_dir} "
                             f"cannot fill folds={self.params.folds}; lower folds or add data")
        return dataclasses.replace(profile, volumes=volumes)

    def _pin_from_previous(self, params: TrainParams) -> TrainParams:
        """Auto values the resumed run derived, so its checkpoints fit this network."""
        if self.previous is None:
            return params
        old = contract.read_json_or_none(self.previous / contract.OUT_DIR / DERIVED_FILE)
        if old is None:
            return params
        pinned = {"patch_size": tuple(old["patch_size"]),
                  "filters": tuple(old["network"]["filters"]), "batch_size": old["batch_size"]}
        keep = {k: v for k, v in pinned.items() if getattr(params, k) is None}
        if keep:
            self.tracker.event("pinned", reason="resume", **{k: list(v) if isinstance(v, tuple)
                                                             else v for k, v in keep.items()})
        return dataclasses.replace(params, **keep)

    def _splits(self, profile: DatasetProfile) -> splits.Splits:
        target = self.dirs.out / splits.SPLITS_JSON
        if self.previous is not None:
            for old in (self.previous / contract.OUT_DIR / splits.SPLITS_JSON,
                        self.previous / contract.CHECKPOINTS_DIR / splits.SPLITS_JSON):
                if old.is_file():
                    ckpt.copy_atomic(old, target)
                    break
            else:
                raise ResumeMismatch(f"{self.previous} has no {splits.SPLITS_JSON}: it is "
                                     "not a monai_seg run directory")
        names = [v.name for v in profile.volumes]
        return splits.load_or_create(target, names, self.params.folds, self.params.seed)

    def _write_derived(self, plan: Plan, profile: DatasetProfile,
                       distributed: dict[str, Any] | None = None) -> None:
        doc = {**plan.to_json(), "loss": self.params.loss, "folds": self.params.fold_list(),
               "k": self.params.folds, "max_epochs": self.params.max_epochs,
               "n_volumes": len(profile.volumes), "safe_patch": list(profile.safe_patch()),
               "median_spacing": profile.spacing_stats()["median"],
               "resumed_from": str(self.previous) if self.previous else None,
               "splits": str(self.dirs.out / splits.SPLITS_JSON)}
        if distributed is not None:
            doc["distributed"] = distributed
        contract.atomic_write_json(self.dirs.out / DERIVED_FILE, doc)
        self.tracker.event("derived", **doc)
        print(f"compute profile {plan.profile}: device {plan.device}, amp {plan.amp}, batch "
              f"{plan.batch_size} ({plan.num_samples} crops/volume), patch "
              f"{'x'.join(map(str, plan.patch_size))}, cache_rate {plan.cache_rate:g} on "
              f"{plan.cache_device}, filters {list(plan.network.filters)}", flush=True)

    # -- folds ---------------------------------------------------------------------------
    def _folds(self, ctx: RunContext, split: splits.Splits) -> list[FoldResult]:
        index = {r["name"]: i for i, r in enumerate(ctx.records)}
        results: list[FoldResult] = []
        step = 0
        for k in self.params.fold_list():
            done = self._previous_done(k)
            if done is not None:
                result = FoldResult(k, list(done["rows"]), int(done["global_step_end"]),
                                    int(done["best_epoch"]), float(done["best_dsc"]),
                                    last_metrics=dict(done.get("last_metrics", {})))
                self.tracker.event("fold_skipped", fold=k, reason=f"done in {self.previous}")
                self.tracker.log(result.last_metrics, step=result.global_step)
            else:
                fold = split.folds[k]
                result = self._train_fold(ctx, k, [index[n] for n in fold.train],
                                          [index[n] for n in fold.val], step)
            step = max(step, result.global_step)
            results.append(result)
            self._log_fold(result, step)
        return results

    def _previous_done(self, k: int) -> dict[str, Any] | None:
        if self.previous is None:
            return None
        old = self.previous / contract.CHECKPOINTS_DIR
        done = ckpt.read_done(old, k)
        if done is not None and self.world.main:
            ckpt.adopt_fold(old, self.dirs.checkpoints, k)
        return done

    def _train_fold(self, ctx: RunContext, k: int, train: list[int], val: list[int],
                    step: int) -> FoldResult:
        resume = None
        if self.previous is not None:
            old = ckpt.last_path(self.previous / contract.CHECKPOINTS_DIR, k)
            if old.is_file():
                resume = ckpt.load(old)
                if self.world.main:
                        ckpt.adopt_fold(self.previous / contract.CHECKPOINTS_DIR, ctx.checkpoints,
                                    k)
        self.tracker.event("fold_start", fold=k, n_train=len(train), n_val=len(val),
                           resumed_from_epoch=int(resume["epoch"]) if resume else None)
        trainer = FoldTrainer(ctx, k, train, val, global_step=step, resume=resume)
        try:
            result = trainer.run()
            shards = self._rank_shards(ctx, trainer.shard)
        finally:
            trainer.close()
        if self.world.main:
            ckpt.write_done(ctx.checkpoints, k, {
                "epochs": self.params.max_epochs, "best_epoch": result.best_epoch,
                "best_dsc": result.best_dsc, "global_step_end": result.global_step,
                "last_metrics": result.last_metrics, "rows": result.rows, **shards})
        self.tracker.event("fold_end", fold=k, best_epoch=result.best_epoch,
                           best_dsc=result.best_dsc, resumed_from_epoch=result.resumed_from_epoch)
        return result

    def _rank_shards(self, ctx: RunContext, shard: list[int]) -> dict[str, Any]:
        """Which volumes each rank (by pid) trained on in this fold; nothing when alone."""
        if not self.world.distributed:
            return {}
        mine = {"rank": self.world.rank, "pid": os.getpid(),
                "volumes": [str(ctx.records[i]["name"]) for i in shard]}
        return {"world_size": self.world.size, "ranks": self.world.gather(mine)}

    def _log_fold(self, result: FoldResult, step: int) -> None:
        agg = metrics.aggregate(result.rows, self.params.seed)
        values = metrics.flatten(agg, prefix=f"fold{result.fold}/")
        self.tracker.log(values, step=step)
        self.wandb.log(values, step=step)

    # -- report --------------------------------------------------------------------------
    def _report(self, results: list[FoldResult]) -> None:
        rows = [{**row, "fold": r.fold} for r in results for row in r.rows]
        summary = metrics.summarize(rows, self.params.seed)
        final: dict[str, float] = {}
        for fold in summary["folds"]:
            final.update(metrics.flatten(fold, prefix=f"fold{fold['fold']}/"))
        final.update(metrics.flatten(summary["overall"]))
        final.update(folds_completed=len(results), n_val_volumes=len(rows))
        step = max((r.global_step for r in results), default=0)
        self.tracker.log(final, step=step)
        self.wandb.log(final, step=step)
        self.wandb.summary(final)
        out = self.dirs.out
        contract.atomic_write_json(out / "per_volume.json", {
            "schema": contract.schema_tag("seg_per_volume"), "rows": rows})
        contract.atomic_write_bytes(out / "per_volume.csv", rows_csv(rows))
        contract.atomic_write_json(out / "cv_summary.json", {
            "schema": contract.schema_tag("seg_cv_summary"), **summary})
        self.tracker.event("eval", n_volumes=len(rows), folds=[r.fold for r in results],
                           **{k: v for k, v in final.items() if "/" not in k})
        print(" ".join(f"{k} {v:.4g}" for k, v in final.items() if "/" not in k), flush=True)


def rows_csv(rows: Sequence[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ROW_FIELDS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: ("" if row.get(k) is None else row.get(k)) for k in ROW_FIELDS}
                      for row in rows])
    return buffer.getvalue().encode()


def configure_torch(params: TrainParams) -> bool:
    """Seed everything; turn deterministic algorithms on or off. Returns whether on."""
    random.seed(params.seed)
    np.random.seed(params.seed)
    torch.manual_seed(params.seed)
    cuda = params.device != "cpu" and torch.cuda.is_available()
    deterministic = (not cuda) if params.deterministic is None else params.deterministic
    if deterministic and cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA starts
    torch.use_deterministic_algorithms(deterministic, warn_only=cuda)
    torch.backends.cudnn.benchmark = not deterministic
    return deterministic


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _fail(tracker: Tracker, kind: str, exc: BaseException, code: int) -> int:
    print(f"error: {exc}", file=sys.stderr, flush=True)
    tracker.event("failure", failure_class=kind, message=str(exc))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    params = parse_params(argv).effective()
    dirs = RunDirs.from_env()
    world = World.from_env()
    tracker = Tracker(dirs.run_dir if world.main else None)  # rank 0 alone writes the run
    deterministic = configure_torch(params)
    tracker.event("reproducibility", seed=params.seed, deterministic=deterministic)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    trainer = Trainer(params, dirs, tracker, world)
    try:
        return trainer.run()
    except (GuardError, ResumeMismatch, splits.SplitsMismatch) as exc:
        return _fail(tracker, "guard", exc, 2)
    except NonFiniteLoss as exc:
        trainer.wandb.finish(3)
        return _fail(tracker, "non_finite_loss", exc, 3)
    except KeyboardInterrupt as exc:
        trainer.wandb.finish(130)
        return _fail(tracker, "interrupted", exc, 130)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
