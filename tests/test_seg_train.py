"""The `monai_seg` trainer on CPU, small: debug run, losses, determinism, guards, resume, W&B.

Runs call ``runner.seg.train.main`` in-process (torch is imported once for the file) with the
run-directory environment the wrapper would set. The dataset is 6 synthetic volumes of
32 x 32 x Z; the network has filters 4, 8, 16 and 16 x 16 x 4 crops, so a 2-fold run takes
about a second.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from runner import contract
from runner.seg import checkpoints as ckpt
from runner.seg import compute, synth, train, wandb_log
from runner.seg.data import VesselCrops, case_records, train_dataset, train_loader, volume_cache
from runner.seg.losses import LOSSES, build_loss
from runner.seg.model import build_model
from runner.seg.params import TrainParams, parse_params
from runner.seg.profile import profile_dataset
from runner.track import Tracker

SMALL = ["--filters=4,8,16", "--patch_size=16x16x4", "--num_threads=1"]
CV_METRICS = ("dsc", "cldice", "masd", "hd95")
TIMING = ("epoch_seconds", "patches_per_s", "data_wait")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seg") / "data"
    synth.synthesize(out, n=6, size=32, seed=0)
    return out


def run_train(run_dir: Path, *args: str) -> int:
    """main() with the environment the wrapper sets for a run directory."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPS_RUN_DIR", str(run_dir))
        mp.setenv("OPS_OUT_DIR", str(run_dir / "out"))
        mp.setenv("OPS_CHECKPOINTS_DIR", str(run_dir / "checkpoints"))
        return train.main(list(args))


def final_metrics(run_dir: Path) -> dict[str, float]:
    """What summary.json's metrics_final would hold: the last value of each metric."""
    final: dict[str, float] = {}
    for record in contract.read_jsonl(run_dir / contract.METRICS).records:
        final.update(record["metrics"])
    return {k: v for k, v in final.items() if not k.endswith(TIMING)}


def events(run_dir: Path, type_: str) -> list[dict[str, Any]]:
    return [e for e in contract.read_jsonl(run_dir / contract.EVENTS).records
            if e["type"] == type_]


@pytest.fixture(scope="module")
def debug_runs(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    root = tmp_path_factory.mktemp("debug")
    runs = [root / "a", root / "b"]
    for run_dir in runs:
        assert run_train(run_dir, f"--data_dir={dataset}", "--debug", *SMALL) == 0
    yield runs


def test_debug_run_reports_cv_metrics_with_cis(debug_runs: list[Path]) -> None:
    run_dir = debug_runs[0]
    final = final_metrics(run_dir)
    for prefix in ("fold0/", "fold1/", ""):
        for name in CV_METRICS:
            low, mean, high = (final[f"{prefix}{name}_{k}"] for k in ("ci_low", "mean",
                                                                       "ci_high"))
            assert low <= mean <= high, (prefix, name)
    assert final["folds_completed"] == 2
    assert final["n_val_volumes"] == 6
    rows = (run_dir / "out" / "per_volume.csv").read_text().splitlines()
    assert rows[0].startswith("fold,name,epoch,dsc,cldice,masd,hd95") and len(rows) == 7
    derived = json.loads((run_dir / "out" / "derived.json").read_text())
    assert derived["compute_profile"] == "cpu" and derived["patch_size"] == [16, 16, 4]
    assert derived["network"]["divisor"] == [4, 4, 1]
    assert events(run_dir, "derived")[0]["batch_size"] == derived["batch_size"]
    for k in (0, 1):
        for path in (ckpt.last_path, ckpt.best_path, ckpt.done_path):
            assert path(run_dir / "checkpoints", k).is_file()
    phases = [e["phase"] for e in events(run_dir, "phase")]
    assert phases[0] == "setup" and "fold1/val" in phases and phases[-1] == "done"
    steps = [r["step"] for r in contract.read_jsonl(run_dir / contract.METRICS).records]
    assert steps == sorted(steps) and steps[-1] > 0  # the heartbeat's progress


def test_same_seed_gives_identical_metrics(debug_runs: list[Path]) -> None:
    first, second = (final_metrics(r) for r in debug_runs)
    assert first == second
    rows = [json.loads((r / "out" / "per_volume.json").read_text())["rows"] for r in debug_runs]
    assert rows[0] == rows[1]


@pytest.mark.parametrize("loss", LOSSES)
def test_each_loss_takes_one_finite_step(dataset: Path, loss: str) -> None:
    params = TrainParams(data_dir=str(dataset), patch_size=(16, 16, 4), filters=(4, 8, 16),
                         cache_rate=1.0)
    profile = profile_dataset(dataset)
    plan = compute.resolve(params, profile, compute.detect_hardware(with_gpu=False))
    cache = volume_cache(case_records(profile)[:2], 1.0, "cpu")
    crops = VesselCrops(plan.patch_size, num_samples=2)
    batch = next(iter(train_loader(train_dataset(cache, [0, 1], crops), 1, seed=0)))
    torch.manual_seed(0)
    model = build_model(plan.network)
    loss_fn = build_loss(loss, 0.5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    value = loss_fn(model(batch["image"]), batch["label"])
    value.backward()
    optimizer.step()
    assert torch.isfinite(value)
    assert torch.isfinite(loss_fn(torch.randn(2, 2, 16, 16, 4) * 50,
                                  torch.randint(0, 2, (2, 1, 16, 16, 4))))


@pytest.mark.parametrize(("patch", "message"), [
    ("18x16x4", "does not divide by the network's stride product 4x4x1: x=18 (divisor 4); "
                "use patch_size=16x16x4"),
    ("64x64x4", "patch_size 64x64x4 is larger than every volume: the largest, padded to the "
                "divisor, is 32x32x36; use patch_size=32x32x4"),
], ids=["indivisible", "too-large"])
def test_guard_refuses_impossible_patch(dataset: Path, tmp_path: Path, patch: str,
                                        message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_train(tmp_path / "run", f"--data_dir={dataset}", "--debug",
                     "--filters=4,8,16", f"--patch_size={patch}")
    assert code == 2
    assert message in capsys.readouterr().err
    failure = events(tmp_path / "run", "failure")[0]
    assert failure["failure_class"] == "guard" and message in failure["message"]


def test_auto_patch_pads_the_thin_volume_instead_of_shrinking_to_it(dataset: Path) -> None:
    """nnU-Net's rule: the median shape caps the auto patch, not the 5-slice volume, which
    is padded up to the patch (and the padding is recorded)."""
    profile = profile_dataset(dataset)
    assert min(v.shape[2] for v in profile.volumes) == 5
    plan = compute.resolve(TrainParams(data_dir=str(dataset)), profile,
                           compute.detect_hardware(with_gpu=False))
    assert plan.patch_size == (32, 32, 8)
    assert plan.padding["volumes"] == [{"name": "vessel_001", "shape": [32, 32, 5],
                                        "pad": [0, 0, 3]}]
    assert plan.to_json()["padding"]["n_padded"] == 1
    cache = volume_cache(case_records(profile), 1.0, "cpu")
    thin = cache[1]
    assert thin["name"] == "vessel_001"
    crops = VesselCrops(plan.patch_size, num_samples=4)
    crops.set_random_state(0)
    for crop in crops(thin):
        assert tuple(crop["image"].shape) == (1, 32, 32, 8)
        assert int(crop["label"].sum()) == int(thin["label"].sum())  # all of it, once
        flat = crop["image"].reshape(-1, 8).abs().sum(dim=0)
        assert int((flat == 0).sum()) == 3  # three slices of padding (z-scored zero)


def test_non_finite_loss_stops_the_run_with_a_clear_failure(
        dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "nan-data"
    shutil.copytree(dataset, broken)
    for path in sorted((broken / "imagesTr").glob("*.nii")):  # corrupt data: NaN intensities
        image = nib.load(path)
        synth.write_nifti(path, np.full(image.shape, np.nan, dtype=np.float32),
                          tuple(float(z) for z in image.header.get_zooms()[:3]))
    code = run_train(tmp_path / "run", f"--data_dir={broken}", "--debug", *SMALL)
    assert code == 3
    message = "fold 0 epoch 0 step 1: the dice_ce loss is nan; lower lr (now 0.001)"
    assert message in capsys.readouterr().err
    failure = events(tmp_path / "run", "failure")[0]
    assert failure["failure_class"] == "non_finite_loss" and message in failure["message"]
    assert not ckpt.last_path(tmp_path / "run" / "checkpoints", 0).exists()


def test_guard_refuses_oversized_cache(dataset: Path) -> None:
    profile = profile_dataset(dataset)
    small = compute.Hardware(cpus=2, ram_total=64 << 20, ram_available=100_000,
                             ram_source="cgroup v2")
    params = TrainParams(data_dir=str(dataset), patch_size=(16, 16, 4), filters=(4, 8, 16))
    with pytest.raises(compute.GuardError, match=r"cache_rate=1 needs 714\.0 KiB of RAM for the "
                       r"volume cache but the budget is 48\.8 KiB \(50% of 97\.7 KiB available, "
                       r"cgroup v2\); use cache_rate=0\.\d+ or cache_rate=auto"):
        compute.resolve(dataclasses.replace(params, cache_rate=1.0), profile, small)
    auto = compute.resolve(params, profile, small)  # auto caches what fits
    # floor(100 * 48.8 KiB / 714.0 KiB) / 100: what fits, in whole percent
    assert compute.cached_bytes(profile) == 714 * 1024 and auto.cache_rate == 0.06


def test_cgroup_v2_limits_beat_the_host(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    (root / "pod").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (root / "memory.max").write_text("max\n")
    (root / "pod" / "memory.max").write_text(f"{2 << 30}\n")
    (root / "pod" / "memory.current").write_text(f"{(2 << 30) - (64 << 20)}\n")
    (root / "pod" / "cpu.max").write_text("150000 100000\n")
    proc = tmp_path / "cgroup.proc"
    proc.write_text("0::/pod\n")
    hw = compute.detect_hardware(root, proc, with_gpu=False)
    assert hw.ram_source == "cgroup v2" and hw.ram_total == 2 << 30
    # 64 MiB left under the pod's limit, far less than this machine has free; 1.5 CPUs of quota
    assert hw.ram_available == 64 << 20
    assert hw.cpus == min(1.5, float(len(os.sched_getaffinity(0))))


def test_resume_skips_done_fold_and_matches_an_uninterrupted_run(dataset: Path,
                                                                 tmp_path: Path) -> None:
    args = [f"--data_dir={dataset}", "--folds=2", "--max_volumes=6", *SMALL]
    reference, partial, old, resumed = (tmp_path / n for n in ("ref", "part", "old", "new"))
    assert run_train(reference, *args, "--max_epochs=2") == 0
    assert run_train(partial, *args, "--max_epochs=1", "--fold_indices=1") == 0
    # the run that was killed in fold 1: fold 0 done, fold 1 checkpointed after 1 of 2 epochs
    (old / "checkpoints").mkdir(parents=True)
    shutil.copytree(reference / "out", old / "out")
    ckpt.adopt_fold(reference / "checkpoints", old / "checkpoints", 0)
    for path in (ckpt.last_path, ckpt.best_path):
        shutil.copy(path(partial / "checkpoints", 1), path(old / "checkpoints", 1))
    assert run_train(resumed, *args, "--max_epochs=2", f"--resume_from={old}") == 0
    assert [e["fold"] for e in events(resumed, "fold_skipped")] == [0]
    assert [e["resumed_from_epoch"] for e in events(resumed, "fold_start")] == [1]
    assert final_metrics(resumed) == final_metrics(reference)
    assert (resumed / "out" / "splits.json").read_bytes() == \
        (reference / "out" / "splits.json").read_bytes()
    assert ckpt.read_done(resumed / "checkpoints", 0) is not None  # adopted: self-contained


def test_sigkilled_run_resumes_to_the_same_fold_count(dataset: Path, tmp_path: Path) -> None:
    """A real SIGKILL in fold 1 (a subprocess), then --resume_from: same folds, same metrics."""
    args = [f"--data_dir={dataset}", "--folds=2", "--max_volumes=6", "--max_epochs=8",
            "--val_interval=8", *SMALL]
    killed, resumed, reference = (tmp_path / n for n in ("killed", "resumed", "ref"))
    killed.mkdir()
    env = {**os.environ, "OPS_RUN_DIR": str(killed), "OPS_OUT_DIR": str(killed / "out"),
           "OPS_CHECKPOINTS_DIR": str(killed / "checkpoints")}
    proc = subprocess.Popen([sys.executable, "-m", "runner.seg.train", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not ckpt.last_path(killed / "checkpoints", 1).exists() and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert ckpt.read_done(killed / "checkpoints", 0) is not None
    assert ckpt.read_done(killed / "checkpoints", 1) is None
    assert run_train(resumed, *args, f"--resume_from={killed}") == 0
    assert [e["fold"] for e in events(resumed, "fold_skipped")] == [0]
    assert 1 <= events(resumed, "fold_start")[0]["resumed_from_epoch"] < 8
    assert run_train(reference, *args) == 0
    assert final_metrics(resumed)["folds_completed"] == 2
    assert final_metrics(resumed) == final_metrics(reference)


@pytest.mark.parametrize(("argv", "message"), [
    (["--patch_size=abc"], "argument --patch_size: expected 'auto' or three positive sizes"),
    (["--loss=focal"], "argument --loss: invalid choice: 'focal'"),
    (["--fold_indices=3"], "--fold_indices [3] out of range for --folds=3"),
    (["--batch_size=0"], "argument --batch_size: expected an integer >= 1, got 0"),
], ids=["patch", "loss", "fold", "batch"])
def test_bad_params_exit_2_with_a_message(argv: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_params(["--data_dir=/data", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_params_parse_the_override_renderer_spelling() -> None:
    params = parse_params(["--data_dir=/d", "--debug=True", "--patch_size=", "--cache_rate=0.5",
                           "--fold_indices=all", "--deterministic=false"])
    assert params.debug and params.patch_size is None and params.cache_rate == 0.5
    assert params.fold_indices is None and not params.deterministic
    assert params.effective().max_epochs == 1 and params.effective().folds == 2
    assert json.loads(json.dumps(params.to_json()))["patch_size"] is None


def test_wandb_auto_mode_follows_netrc(tmp_path: Path) -> None:
    assert wandb_log.resolve_mode("auto", tmp_path) == ("offline", None)
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password secret-key\n")
    netrc.chmod(0o600)
    assert wandb_log.resolve_mode("auto", tmp_path) == ("online", None)
    mode, warning = wandb_log.resolve_mode("online", tmp_path / "elsewhere")
    assert mode == "offline" and warning and "credentials" in warning


@pytest.mark.slow
def test_wandb_offline_for_real(tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    tracker = Tracker(run_dir)
    run = wandb_log.start("offline", "pod-ops-test", run_dir, {"lr": 0.1}, tracker=tracker)
    run.log({"loss": 0.5}, step=1)
    run.finish()
    event = events(run_dir, "wandb")[0]
    assert event["mode"] == "offline" and event["wandb_run_id"] and event["url"] is None
    assert any((run_dir / "wandb").rglob("*.wandb"))
