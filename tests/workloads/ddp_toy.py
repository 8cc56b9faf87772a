"""A two-rank CPU training loop for the torchrun tests: gloo, one all_reduce a step.

Every rank records its pid in $OPS_OUT_DIR/rank<R>.pid and the steps it trained on in
rank<R>.steps; only rank 0 reports metrics (runner.track is inactive on other ranks).
`--fail_rank R --fail_at N` makes rank R exit 3 at step N; `--steps` and `--sleep` size it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from runner import track


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--fail_rank", type=int, default=-1)
    parser.add_argument("--fail_at", type=int, default=-1)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    out = Path(os.environ["OPS_OUT_DIR"])
    (out / f"rank{rank}.pid").write_text(str(os.getpid()))
    shard = list(range(rank, 8 * world, world))  # this rank's items: a DistributedSampler's split
    (out / f"rank{rank}.shard").write_text(" ".join(map(str, shard)))
    weight = torch.zeros(1)
    for step in range(1, args.steps + 1):
        if rank == args.fail_rank and step == args.fail_at:
            print(f"rank {rank} fails at step {step}", flush=True)
            return 3
        grad = torch.tensor([float(sum(shard))])
        dist.all_reduce(grad)
        weight -= 0.001 * grad
        if rank == 0:
            print(f"step {step}: w {weight.item():.4f} world {world}", flush=True)
            track.log({"w": weight.item()}, step=step)
        time.sleep(args.sleep)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
