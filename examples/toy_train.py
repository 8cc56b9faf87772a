"""A tiny, dependency-free training loop used by the `smoke` preset and the tests.

It fits y = w*x + b to examples/data/points.csv by SGD, prints progress, reports metrics with
runner.track, and writes checkpoints into the run's checkpoints directory. Options use the
upstream nanoGPT style (--key=value).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from runner import track


def load_points(path: Path) -> list[tuple[float, float]]:
    rows = path.read_text().strip().splitlines()[1:]
    return [(float(x), float(y)) for x, y in (r.split(",") for r in rows)]


def save_checkpoint(directory: Path, name: str, state: dict[str, float]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{name}.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, directory / name)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--max_iters", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--exit_code", type=int, default=0)
    args = parser.parse_args()

    points = load_points(args.data)
    w, b, best = 0.0, 0.0, float("inf")
    ckpt_dir = Path(os.environ.get("OPS_CHECKPOINTS_DIR", "checkpoints"))
    track.phase("train")
    for step in range(1, args.max_iters + 1):
        gw = sum(2 * (w * x + b - y) * x for x, y in points) / len(points)
        gb = sum(2 * (w * x + b - y) for x, y in points) / len(points)
        w, b = w - args.lr * gw, b - args.lr * gb
        loss = sum((w * x + b - y) ** 2 for x, y in points) / len(points)
        print(f"iter {step}: loss {loss:.6f}")
        track.log({"loss": loss, "w": w, "b": b}, step=step)
        save_checkpoint(ckpt_dir, "ckpt_last.json", {"w": w, "b": b, "step": step})
        if loss < best:
            best = loss
            save_checkpoint(ckpt_dir, "ckpt_best.json", {"w": w, "b": b, "step": step})
            track.event("checkpoint", path="checkpoints/ckpt_best.json", step=step)
        time.sleep(args.sleep)
    print(f"done: w={w:.4f} b={b:.4f} best_loss={best:.6f}", file=sys.stderr)
    return args.exit_code


if __name__ == "__main__":
    sys.exit(main())
