"""One fold of the cross-validation: train, validate, checkpoint, and say so as it goes.

Per epoch: ``steps_per_epoch`` optimizer steps (default: one pass over the training volumes,
``num_samples`` crops each) under autocast, a finite-loss check on every step, the step
logged to metrics.jsonl (the heartbeat reads its progress from there), then every
``val_interval`` epochs (and after the last) a sliding-window validation of the whole held-out
volumes with DSC, clDice, MASD and HD95 per volume, and finally ``fold{k}_ckpt_last.pt``.
The rows of the best validation (by mean DSC) travel in the checkpoint, so a fold resumed
after a crash reports exactly what an uninterrupted one would.

With several ranks (``runner.seg.ddp``) the fold trains DDP on this rank's shard of the training
volumes, validates its shard of the held-out ones and gathers the rows; rank 0 alone writes.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data.dataset import CacheDataset
from monai.inferers.utils import sliding_window_inference

from runner.seg import checkpoints as ckpt
from runner.seg.compute import GuardError, Plan
from runner.seg.data import Item, VesselCrops, train_dataset, train_loader, val_loader
from runner.seg.ddp import World, lr_factor
from runner.seg.losses import build_loss
from runner.seg.metrics import volume_metrics
from runner.seg.model import build_model
from runner.seg.params import TrainParams
from runner.seg.wandb_log import WandbRun
from runner.track import Tracker

POLY_EXPONENT = 0.9  # nnU-Net's learning-rate decay
STITCH_ON_GPU_MAX_BYTES = 1 << 30  # larger sliding-window outputs are stitched on the CPU
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite; the fold cannot go on."""


class ResumeMismatch(ValueError):
    """A checkpoint does not belong to this run's network or data."""


@dataclass
class RunContext:
    """What every fold of a run shares."""

    params: TrainParams
    plan: Plan
    tracker: Tracker
    wandb: WandbRun
    checkpoints: Path
    cache: CacheDataset
    records: list[Item]
    world: World = field(default_factory=World)


@dataclass
class EpochStats:
    losses: list[float] = field(default_factory=list)
    patches: int = 0
    data_wait_s: float = 0.0  # time the loop blocked waiting for the next batch

    @property
    def loss(self) -> float:
        return float(np.mean(self.losses)) if self.losses else float("nan")


@dataclass
class FoldResult:
    fold: int
    rows: list[dict[str, Any]]
    global_step: int
    best_epoch: int
    best_dsc: float
    resumed_from_epoch: int = 0
    last_metrics: dict[str, float] = field(default_factory=dict)  # last value of each metric


def epoch_seed(seed: int, fold: int, epoch: int, cycle: int = 0) -> int:
    """A seed per (run seed, fold, epoch, cycle); epoch -1 seeds the model initialisation."""
    return int(np.random.SeedSequence([seed, fold, epoch + 1, cycle]).generate_state(1)[0])


def stitch_device(shape: torch.Size, plan: Plan) -> str:
    output_bytes = 2 * 4 * math.prod(shape[2:])  # two float32 logit channels
    return plan.device if output_bytes <= STITCH_ON_GPU_MAX_BYTES else "cpu"


class FoldTrainer:
    def __init__(self, ctx: RunContext, fold: int, train_idx: list[int], val_idx: list[int], *,
                 global_step: int, resume: dict[str, Any] | None = None) -> None:
        self.ctx, self.fold = ctx, fold
        self.params, self.plan = ctx.params, ctx.plan
        self.val_idx, self.world = val_idx, ctx.world
        if len(train_idx) < self.world.size:
            raise GuardError(f"fold {fold} has {len(train_idx)} training volumes for "
                             f"{self.world.size} ranks; use fewer ranks or more data")
        self.device = torch.device(self.plan.device)
        self.lr = self.params.lr * lr_factor(self.params.lr_scaling, self.world.size)
        torch.manual_seed(epoch_seed(self.params.seed, fold, -1))
        self.net = build_model(self.plan.network).to(self.device)
        self.model = self.world.wrap(self.net, self.device)  # the net itself when alone
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=self.lr,
                                           weight_decay=self.params.weight_decay,
                                           fused=self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.plan.amp == "fp16")
        self.loss_fn = build_loss(self.params.loss, self.params.topo_weight)
        self.crops = VesselCrops(self.plan.patch_size, self.plan.num_samples)
        self.shard = self.world.shard(train_idx)  # every volume when alone
        self.dataset = train_dataset(ctx.cache, self.shard, self.crops)
        self.volumes_per_step = max(1, self.plan.batch_size // self.plan.num_samples)
        # the same count on every rank: one pass over the largest shard
        largest = math.ceil(len(train_idx) / self.world.size)
        self.steps = self.params.steps_per_epoch or math.ceil(largest / self.volumes_per_step)
        self.global_step, self.start_epoch = global_step, 0
        self.best_dsc, self.best_epoch, self.best_rows = -1.0, -1, list[dict[str, Any]]()
        self.last_metrics: dict[str, float] = {}
        if resume is not None:
            self._restore(resume)

    # -- state ---------------------------------------------------------------------------
    def _state(self, epochs_done: int) -> dict[str, Any]:
        return {"fold": self.fold, "epoch": epochs_done, "global_step": self.global_step,
                "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": ckpt.rng_state(),
                "best_dsc": self.best_dsc, "best_epoch": self.best_epoch,
                "best_rows": self.best_rows, "last_metrics": self.last_metrics,
                "network": self.plan.network.to_json(),
                "patch_size": list(self.plan.patch_size)}

    def _restore(self, state: dict[str, Any]) -> None:
        if state.get("network") != self.plan.network.to_json():
            raise ResumeMismatch(f"fold {self.fold}: the checkpoint's network "
                                 f"{state.get('network')} differs from this run's "
                                 f"{self.plan.network.to_json()}; resume with the same "
                                 "patch_size and filters")
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        ckpt.restore_rng(state["rng"])
        self.start_epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.best_dsc, self.best_epoch = float(state["best_dsc"]), int(state["best_epoch"])
        self.best_rows = list(state["best_rows"])
        self.last_metrics = dict(state.get("last_metrics", {}))

    # -- loop ----------------------------------------------------------------------------
    def run(self) -> FoldResult:
        tracker, k = self.ctx.tracker, self.fold
        for epoch in range(self.start_epoch, self.params.max_epochs):
            tracker.phase(f"fold{k}/train", fold=k, epoch=epoch)
            started = time.perf_counter()
            lr = self._set_lr(epoch)
            stats = self.train_epoch(epoch)
            seconds = time.perf_counter() - started
            epoch_metrics = {f"fold{k}/epoch_loss": stats.loss, f"fold{k}/lr": lr,
                             f"fold{k}/epoch_seconds": seconds,
                             f"fold{k}/patches_per_s": stats.patches / max(seconds, 1e-9),
                             f"fold{k}/data_wait": stats.data_wait_s / max(seconds, 1e-9)}
            if self._validates(epoch):
                tracker.phase(f"fold{k}/val", fold=k, epoch=epoch)
                epoch_metrics.update(self._validate(epoch))
            self._log(epoch_metrics)
            if not self.world.main:
                continue
            size = ckpt.save_atomic(self._state(epoch + 1), ckpt.last_path(self.ctx.checkpoints, k))
            tracker.event("checkpoint", fold=k, epoch=epoch, kind="last", bytes=size,
                          path=str(ckpt.last_path(self.ctx.checkpoints, k)))
            print(f"fold {k} epoch {epoch + 1}/{self.params.max_epochs} loss {stats.loss:.4f} "
                  + " ".join(f"{n.split('/')[1]} {v:.4g}" for n, v in epoch_metrics.items()
                             if "/val_" in n) + f" ({seconds:.1f} s)", flush=True)
        return FoldResult(k, self.best_rows, self.global_step, self.best_epoch, self.best_dsc,
                          self.start_epoch, self.last_metrics)

    def _log(self, values: dict[str, float]) -> None:
        self.ctx.tracker.log(values, step=self.global_step)
        self.ctx.wandb.log(values, step=self.global_step)
        self.last_metrics.update(values)

    def _validates(self, epoch: int) -> bool:
        last = epoch == self.params.max_epochs - 1
        return last or (epoch + 1) % self.params.val_interval == 0

    def _set_lr(self, epoch: int) -> float:
        lr = float(self.lr * (1 - epoch / self.params.max_epochs) ** POLY_EXPONENT)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.plan.amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.plan.amp])

    def _batches(self, epoch: int) -> Iterator[dict[str, Any]]:
        done, cycle = 0, 0
        while done < self.steps:
            seed = self.world.seed(epoch_seed(self.params.seed, self.fold, epoch, cycle))
            for batch in train_loader(self.dataset, self.volumes_per_step, seed):
                yield batch
                done += 1
                if done >= self.steps:
                    return
            cycle += 1

    def train_epoch(self, epoch: int) -> EpochStats:
        """One epoch of optimizer steps; how long the loop waited for data is measured."""
        self.model.train()
        stats = EpochStats()
        batches = self._batches(epoch)
        while True:
            waited = time.perf_counter()
            batch = next(batches, None)
            stats.data_wait_s += time.perf_counter() - waited
            if batch is None:
                return stats
            image = batch["image"].to(self.device, non_blocking=True)
            label = batch["label"].to(self.device, non_blocking=True)
            value = self._step(image, label, epoch)
            stats.losses.append(value)
            stats.patches += int(image.shape[0])
            self._log({f"fold{self.fold}/train_loss": value})

    def _step(self, image: torch.Tensor, label: torch.Tensor, epoch: int) -> float:
        with self._autocast():
            logits = self.model(image)
        loss = self.loss_fn(logits, label)
        value = self.world.mean(loss)  # every rank sees the same value and stops together
        if not math.isfinite(value):
            raise NonFiniteLoss(
                f"fold {self.fold} epoch {epoch} step {self.global_step + 1}: the "
                f"{self.params.loss} loss is {value}; lower lr (now {self.params.lr:g}), "
                "or use amp=none or bf16 instead of fp16")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.global_step += 1
        return value

    # -- validation ----------------------------------------------------------------------
    def _validate(self, epoch: int) -> dict[str, float]:
        self.model.eval()
        mine = self.world.shard(self.val_idx)
        rows = self._in_order([self._evaluate(item, epoch)
                               for item in val_loader(self.ctx.cache, mine)])
        means = {name: float(np.mean([r[name] for r in rows if r[name] is not None]))
                 for name in ("dsc", "cldice", "masd", "hd95")
                 if any(r[name] is not None for r in rows)}
        if means.get("dsc", 0.0) > self.best_dsc:
            self.best_dsc, self.best_epoch, self.best_rows = means.get("dsc", 0.0), epoch, rows
            if self.world.main:
                self._save_best(epoch)
        return {f"fold{self.fold}/val_{name}": value for name, value in means.items()}

    def _in_order(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every rank's rows, in the order of the fold's validation volumes (as one process
        scores them): rank r scored positions r, r + world, ..."""
        if not self.world.distributed:
            return rows
        shards = self.world.gather(rows)
        ordered: list[dict[str, Any]] = []
        for j in range(max(len(s) for s in shards)):
            ordered += [s[j] for s in shards if j < len(s)]
        return ordered

    def _save_best(self, epoch: int) -> None:
        path = ckpt.best_path(self.ctx.checkpoints, self.fold)
        size = ckpt.save_atomic({"fold": self.fold, "epoch": epoch, "dsc": self.best_dsc,
                                 "model": self.net.state_dict(),
                                 "network": self.plan.network.to_json()}, path)
        self.ctx.tracker.event("checkpoint", fold=self.fold, epoch=epoch, kind="best",
                               bytes=size, path=str(path), dsc=self.best_dsc)

    def _evaluate(self, item: Item, epoch: int) -> dict[str, Any]:
        image = item["image"][None]
        with torch.inference_mode(), self._autocast():
            logits = sliding_window_inference(
                image, roi_size=self.plan.patch_size, sw_batch_size=self.params.sw_batch_size,
                predictor=self._predict, overlap=self.params.sw_overlap, mode="gaussian",
                sw_device=self.device, device=stitch_device(image.shape, self.plan))
        assert isinstance(logits, torch.Tensor)  # noqa: S101 - the predictor returns a tensor
        pred = logits.argmax(dim=1)[0].cpu().numpy()
        label = item["label"][0].cpu().numpy()
        row = volume_metrics(pred, label, item["spacing"])
        return {"fold": self.fold, "name": item["name"], "epoch": epoch, **row}

    def _predict(self, window: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(window.to(self.device)).float()
        return out

    def close(self) -> None:
        """Free the fold's model and optimizer before the next fold starts."""
        del self.model, self.net, self.optimizer, self.scaler, self.dataset
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
