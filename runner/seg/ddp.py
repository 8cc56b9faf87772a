"""Data-parallel training of the monai_seg trainer: one process a rank, DistributedDataParallel.

A run is distributed when its launcher gave it a world: ``WORLD_SIZE`` > 1 with ``RANK`` and
``LOCAL_RANK`` (torchrun on a pod, the wrapper's ``srun`` line on SLURM; see
``runner.workload_command``). Then every rank builds the same network from the same seed, the
process group is gloo on the CPU and NCCL on CUDA (one device a local rank) with a timeout, and:

- training volumes are partitioned: rank r trains on ``train[r::world]`` of the fold (its own
  cache: the runtime cache loads only what a rank reads), every rank takes the same number of
  optimizer steps an epoch, gradients are averaged by DDP;
- the per-rank batch is the batch the compute profile resolved for one device, so the global
  batch is ``world`` times larger and the learning rate is scaled (``lr_scaling``: linear by
  default, sqrt, or none);
- validation volumes are partitioned too and the rows gathered, so every rank knows the same
  mean DSC (the weights are identical) and takes the same best-epoch decision;
- rank 0 alone writes: metrics and events (``runner.track``), checkpoints, splits.json,
  derived.json, per-volume rows and the CV summary; the other ranks wait for it where it matters.

One rank dying ends the others: a peer's closed connection fails their next collective at
once, torchrun (or srun ``--kill-on-bad-exit``) stops the rest, and the process-group timeout
(``dist_timeout``) bounds a collective that waits on a rank that hangs instead.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

T = TypeVar("T")


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "")
    return int(text) if text.isdigit() else default


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run (a single process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> World:
        env = os.environ if env is None else env
        size = _env_int(env, "WORLD_SIZE", 1)
        rank = _env_int(env, "RANK", 0)
        if size <= 1 or not 0 <= rank < size:
            return cls()
        local_rank = _env_int(env, "LOCAL_RANK", 0)
        return cls(rank, size, local_rank, max(1, _env_int(env, "LOCAL_WORLD_SIZE", size)))

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    # -- process group -----------------------------------------------------------------------
    def start(self, device: str, timeout_s: float) -> str | None:
        """Join the process group (gloo on the CPU, NCCL on CUDA); the backend, or None alone."""
        if not self.distributed:
            return None
        import torch.distributed as dist

        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(self.local_rank)
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        return backend

    def stop(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        found: list[Any] = [None] * self.size
        dist.all_gather_object(found, obj)
        return found

    def mean(self, value: torch.Tensor) -> float:
        """The mean of a scalar over the ranks (every rank gets the same number)."""
        if not self.distributed:
            return float(value.detach())
        import torch.distributed as dist

        total = value.detach().clone().float().reshape(1)
        dist.all_reduce(total)
        return float(total) / self.size

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The model DDP trains (the module itself when alone)."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" and device.index is not None else None
        return DistributedDataParallel(model, device_ids=ids)

    # -- data --------------------------------------------------------------------------------
    def shard(self, items: Sequence[T]) -> list[T]:
        return list(items[self.rank::self.size])

    def shards(self, items: Sequence[T]) -> list[list[T]]:
        return [list(items[r::self.size]) for r in range(self.size)]

    def seed(self, seed: int) -> int:
        """A rank's own seed for its crops; a single process keeps the seed as it is."""
        if not self.distributed:
            return seed
        import numpy as np

        return int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0])


def lr_factor(scaling: str, world: int) -> float:
    if world <= 1 or scaling == "none":
        return 1.0
    return float(world) if scaling == "linear" else math.sqrt(world)


def rank_device(device: str, world: World) -> str:
    """``cuda`` becomes this rank's own device, ``cuda:LOCAL_RANK``."""
    return f"cuda:{world.local_rank}" if world.distributed and device == "cuda" else device


def plan_for_rank(plan: Any, world: World, threads_given: bool) -> Any:
    """The resolved plan on this rank: its own GPU, and its share of the CPU threads."""
    if not world.distributed:
        return plan
    threads = plan.num_threads if threads_given else max(1, plan.num_threads // world.local_size)
    return dataclasses.replace(plan, device=rank_device(plan.device, world),
                               cache_device=rank_device(plan.cache_device, world),
                               num_threads=threads)


def describe(world: World, backend: str | None, *, batch_size: int, lr: float, scaling: str,
             timeout_s: float, shards: Mapping[int, list[list[str]]]) -> dict[str, Any]:
    """What derived.json (and so config_effective.json) says about the ranks."""
    factor = lr_factor(scaling, world.size)
    return {"world_size": world.size, "local_world_size": world.local_size,
            "backend": backend, "per_rank_batch_size": batch_size,
            "global_batch_size": batch_size * world.size, "lr_base": lr,
            "lr_scaling": scaling if world.distributed else "none", "lr_factor": factor,
            "lr_effective": lr * factor, "timeout_s": timeout_s,
            "shards": {f"fold{k}": [{"rank": r, "volumes": names}
                                    for r, names in enumerate(per_rank)]
                       for k, per_rank in shards.items()}}
