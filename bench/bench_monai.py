"""The `monai_seg` training pipeline against the naive MONAI loop, same data, model and patch.

    .venv/bin/python bench/bench_monai.py                      # CPU-sized: 8 x 64x64xZ, 3 epochs
    .venv/bin/python bench/bench_monai.py --size 256 --n 24    # on a GPU machine
    .venv/bin/python bench/bench_monai.py --data DIR --patch 128x128x6 --batch 16

Both pipelines train the same DynUNet (the plan ``runner.seg.compute`` derives for this dataset
and machine, or the --patch/--batch/--filters given) with DiceCE on the same synthetic volumes,
one process each (so peak RSS is each pipeline's own):

* ``naive``: what a MONAI tutorial does: ``monai.data.Dataset`` (every volume loaded and
  normalised again on every visit), ``RandCropByPosNegLabeld`` + ``RandFlipd`` in the
  transform chain, a ``DataLoader`` with worker processes, float32.
* ``ours``: ``runner.seg.fold.FoldTrainer.train_epoch``: the runtime ``CacheDataset`` (on the
  GPU when it fits), ``VesselCrops`` on cached tensors, ``ThreadDataLoader``, autocast (bf16
  where the GPU has it), the finite-loss check and track logging of every step.

An epoch is one pass over the volumes, ``num_samples`` crops each, for both. The first epoch
(loading, cache filling, cuDNN warm-up) is not timed. Figures: seconds per epoch, training
patches per second, the share of wall time spent waiting for the next batch, peak RSS of the
process and its workers, and on a GPU the mean utilisation (NVML, sampled every 50 ms) and the
peak memory torch allocated. Targets (issue 4, GPU): ours >= 8x the naive patches/s, GPU busy
above 90 %.

On a lent GPU machine (issue 12: these figures have not been measured yet), record the whole
output of ``bench/bench_monai.py --size 256 --n 24`` (s/epoch, patches/s of both pipelines and
their ratio, GPU busy %, peak GPU MiB, the compute profile line), then the flagship itself:
``ops data synth --out data/vessels --n 24 --size 256`` and ``ops run submit -p dice_ce_3fold
--set max_epochs=2 --set fold_indices=0 --follow``, reading ``fold0/epoch_seconds`` and
``fold0/patches_per_s`` from its metrics.jsonl and ``derived.workload.compute_profile`` from
its config_effective.json. On a
CPU the bench runs at any size (``--size 32 --n 4 --epochs 2 --workers 1 --threads 1`` takes
seconds) but says nothing about the GPU targets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
from _common import REPO, table

PIPELINES = ("naive", "ours")


class Monitor(threading.Thread):
    """Samples RSS (process + children) and GPU utilisation until stopped."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak_rss, self.gpu_busy = interval, 0, list[float]()
        self.sampling_gpu = False
        self._stop_event = threading.Event()
        self._nvml = _nvml_handle()

    def run(self) -> None:
        me = psutil.Process()
        while not self._stop_event.wait(self.interval):
            with contextlib.suppress(psutil.Error):
                rss = me.memory_info().rss + sum(c.memory_info().rss
                                                 for c in me.children(recursive=True))
                self.peak_rss = max(self.peak_rss, rss)
            if self._nvml is not None and self.sampling_gpu:
                pynvml, handle = self._nvml
                self.gpu_busy.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _nvml_handle() -> tuple[Any, Any] | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:  # noqa: BLE001 - no NVML, no GPU: utilisation is simply not reported
        return None


# -- one pipeline, in its own process -----------------------------------------------------
def setup(args: argparse.Namespace) -> tuple[Any, Any, list[dict[str, Any]]]:
    from runner.seg import compute
    from runner.seg.data import case_records
    from runner.seg.params import TrainParams, auto_int_list, auto_patch
    from runner.seg.profile import profile_dataset

    params = TrainParams(data_dir=args.data, patch_size=auto_patch(args.patch),
                         batch_size=args.batch, filters=auto_int_list(args.filters),
                         num_samples=args.num_samples, cache_rate=1.0, deterministic=False)
    profile = profile_dataset(Path(args.data))
    plan = compute.resolve(params, profile, compute.detect_hardware())
    return params, plan, case_records(profile)


Epoch = tuple[int, float, float]  # patches, seconds, seconds waiting for data


def naive_epochs(args: argparse.Namespace, plan: Any,
                 records: list[dict[str, Any]]) -> Iterator[Epoch]:
    import torch
    from monai.data.dataloader import DataLoader
    from monai.data.dataset import Dataset
    from monai.losses.dice import DiceCELoss
    from monai.transforms.compose import Compose
    from monai.transforms.croppad.dictionary import RandCropByPosNegLabeld, SpatialPadd
    from monai.transforms.intensity.dictionary import NormalizeIntensityd
    from monai.transforms.io.dictionary import LoadImaged
    from monai.transforms.spatial.dictionary import RandFlipd
    from monai.transforms.utility.dictionary import EnsureChannelFirstd

    from runner.seg.model import build_model

    keys = ["image", "label"]
    chain = Compose([LoadImaged(keys, image_only=True),
                     EnsureChannelFirstd(keys, channel_dim="no_channel"),
                     NormalizeIntensityd("image"), SpatialPadd(keys, plan.patch_size),
                     RandCropByPosNegLabeld(keys, "label", plan.patch_size, pos=1, neg=1,
                                            num_samples=plan.num_samples),
                     *[RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(3)]])
    loader = DataLoader(Dataset([{k: r[k] for k in keys} for r in records], chain),
                        batch_size=max(1, plan.batch_size // plan.num_samples), shuffle=True,
                        num_workers=args.workers)
    device = torch.device(plan.device)
    model = build_model(plan.network).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)
    for _ in range(args.epochs):
        patches, waited, started = 0, 0.0, time.perf_counter()
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            waited += time.perf_counter() - t0
            if batch is None:
                break
            image, label = batch["image"].to(device), batch["label"].to(device)
            loss = loss_fn(model(image), label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            float(loss.detach())
            patches += int(image.shape[0])
        yield patches, time.perf_counter() - started, waited


def ours_epochs(args: argparse.Namespace, params: Any, plan: Any,
                records: list[dict[str, Any]]) -> Iterator[Epoch]:
    from runner.seg.data import volume_cache
    from runner.seg.fold import FoldTrainer, RunContext
    from runner.seg.wandb_log import WandbRun
    from runner.track import Tracker

    cache = volume_cache(records, plan.cache_rate, plan.cache_device)
    ctx = RunContext(params, plan, Tracker(None), WandbRun(), Path(tempfile.mkdtemp()), cache,
                     records)
    trainer = FoldTrainer(ctx, 0, list(range(len(records))), [], global_step=0)
    for epoch in range(args.epochs):
        started = time.perf_counter()
        stats = trainer.train_epoch(epoch)
        yield stats.patches, time.perf_counter() - started, stats.data_wait_s


def run_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(max(1, int(args.threads)))
    params, plan, records = setup(args)
    monitor = Monitor()
    monitor.start()
    epochs = naive_epochs(args, plan, records) if args.pipeline == "naive" \
        else ours_epochs(args, params, plan, records)
    timed: list[Epoch] = []
    for index, epoch in enumerate(epochs):
        if index > 0:
            timed.append(epoch)
        monitor.sampling_gpu = True  # from the second epoch on
    monitor.stop()
    patches = sum(t[0] for t in timed)
    seconds = sum(t[1] for t in timed)
    return {"pipeline": args.pipeline, "device": plan.device, "amp": plan.amp
            if args.pipeline == "ours" else "none", "profile": plan.profile,
            "filters": list(plan.network.filters), "gpu": plan.hardware.gpu_name,
            "padded_volumes": plan.padding.get("n_padded"), "patch": list(plan.patch_size),
            "batch": plan.batch_size, "epochs_timed": len(timed),
            "s_per_epoch": seconds / max(1, len(timed)), "patches_per_s": patches / seconds,
            "data_wait": sum(t[2] for t in timed) / seconds, "peak_rss_mib": monitor.peak_rss
            / (1 << 20), "gpu_busy": (sum(monitor.gpu_busy) / len(monitor.gpu_busy))
            if monitor.gpu_busy else None,
            "peak_gpu_mib": torch.cuda.max_memory_allocated() / (1 << 20)
            if plan.device == "cuda" else None}


# -- the comparison -----------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="an existing dataset (default: synthesize one)")
    parser.add_argument("--size", type=int, default=64, help="synthetic XY size")
    parser.add_argument("--n", type=int, default=8, help="synthetic volumes")
    parser.add_argument("--epochs", type=int, default=3, help="epochs, the first untimed")
    parser.add_argument("--patch", default="auto", help="XxYxZ or auto (compute profile)")
    parser.add_argument("--batch", type=int, default=None, help="patches per step (auto)")
    parser.add_argument("--filters", default="auto", help="e.g. 32,64,128,256 (auto)")
    parser.add_argument("--num-samples", type=int, default=4, help="crops per volume visit")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="DataLoader worker processes of the naive loop")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch CPU threads")
    parser.add_argument("--pipeline", choices=PIPELINES, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args()


def child_argv(args: argparse.Namespace, pipeline: str) -> list[str]:
    argv = [sys.executable, __file__, "--pipeline", pipeline, "--data", args.data,
            "--epochs", str(args.epochs), "--patch", args.patch, "--filters", args.filters,
            "--num-samples", str(args.num_samples), "--workers", str(args.workers),
            "--threads", str(args.threads)]
    return argv + (["--batch", str(args.batch)] if args.batch else [])


def compare(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for pipeline in PIPELINES:
        proc = subprocess.run(child_argv(args, pipeline), capture_output=True, text=True,
                              check=False, cwd=REPO)
        if proc.returncode != 0:
            sys.exit(f"{pipeline} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def render(results: list[dict[str, Any]]) -> str:
    def cell(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    rows = [[r["pipeline"], f"{r['device']}/{r['amp']}", cell(r["s_per_epoch"], ".2f"),
             cell(r["patches_per_s"], ".1f"), cell(100 * r["data_wait"], ".0f"),
             cell(r["peak_rss_mib"], ".0f"), cell(r["gpu_busy"], ".0f"),
             cell(r["peak_gpu_mib"], ".0f")] for r in results]
    naive, ours = results
    first = results[0]
    return "\n".join([
        f"compute profile {first['profile']} ({first['gpu'] or 'no GPU'}): patch "
        f"{'x'.join(map(str, first['patch']))}, batch {first['batch']}, filters "
        f"{first['filters']}, {first['padded_volumes']} volume(s) padded to the patch, "
        f"{first['epochs_timed']} timed epochs",
        table(rows, ["pipeline", "device", "s/epoch", "patches/s", "wait %", "RSS MiB",
                     "GPU %", "GPU MiB"], left=2),
        f"ours / naive patches/s: {ours['patches_per_s'] / naive['patches_per_s']:.2f}x "
        "(target on a GPU: >= 8x, GPU busy > 90 %)"])


def main() -> None:
    args = parse_args()
    sys.path.insert(0, str(REPO))
    if args.pipeline:
        print(json.dumps(run_pipeline(args)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-monai-") as tmp:
        if not args.data:
            from runner.seg.synth import synthesize

            args.data = str(Path(tmp) / "data")
            synthesize(Path(args.data), n=args.n, size=args.size, seed=0)
        results = compare(args)
    print(json.dumps(results, indent=2) if args.json else render(results))


if __name__ == "__main__":
    main()
