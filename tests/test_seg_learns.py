"""A shortened run of the real trainer learns: validation DSC climbs well above the first epoch's.

The guard against a regression that leaves every other test green (the data misaligned with its
labels, a loss that no longer pulls the right way, a crop that never sees a vessel, a learning
rate schedule that starts at zero): one fold, 6 epochs of 4 steps on the 6-volume test set,
validated after every epoch, about 10 s of one CPU core. The volumes with fewer slices than the
patch are padded (the auto patch is not capped by them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner import contract
from runner.seg import synth

from .test_seg_train import run_train

RECIPE = ["--folds=2", "--fold_indices=0", "--max_epochs=6", "--steps_per_epoch=4",
          "--val_interval=1", "--lr=3e-3", "--filters=8,16,32", "--patch_size=32x32x8",
          "--batch_size=4", "--num_samples=4", "--num_threads=1"]


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("learns")
    synth.synthesize(root / "data", n=6, size=32, seed=0)
    run_dir = root / "run"
    assert run_train(run_dir, f"--data_dir={root / 'data'}", *RECIPE) == 0
    return run_dir


def curve(run_dir: Path, name: str) -> list[float]:
    return [r["metrics"][name] for r in contract.read_jsonl(run_dir / contract.METRICS).records
            if name in r["metrics"]]


def test_a_short_run_learns(learned: Path) -> None:
    dsc, loss = curve(learned, "fold0/val_dsc"), curve(learned, "fold0/epoch_loss")
    assert len(dsc) == 6 and len(loss) == 6
    assert dsc[-1] >= dsc[0] + 0.2, dsc
    assert dsc[-1] >= 0.65, dsc
    assert loss[-1] < 0.8 * loss[0], loss
    assert curve(learned, "fold0/val_cldice")[-1] >= 0.5


def test_the_thin_volume_is_padded_and_recorded(learned: Path) -> None:
    derived = json.loads((learned / "out" / "derived.json").read_text())
    padding = derived["padding"]
    assert derived["patch_size"] == [32, 32, 8]
    assert padding["n_padded"] == 1
    assert padding["volumes"] == [{"name": "vessel_001", "shape": [32, 32, 5],
                                   "pad": [0, 0, 3]}]


def test_the_demo_preset_is_a_valid_trainer_command_that_keeps_its_size() -> None:
    """`make demo` runs dice_ce_demo: ops accepts it, the trainer parses it, and its size is
    the one measured (2 folds x 4 epochs x 15 steps at lr 3e-3, one thread)."""
    from ops.config.loader import load_config, resolve_preset
    from runner.seg.params import parse_params

    repo = Path(__file__).resolve().parent.parent
    loaded = load_config(repo / "configs" / "ops" / "project.json")
    preset = resolve_preset(loaded.config, "dice_ce_demo").preset
    argv = [f"--{key}={value}" for key, value in preset.overrides.items()]
    params = parse_params(["--data_dir=/data", *argv]).effective()
    assert (params.loss, params.folds, params.max_epochs, params.steps_per_epoch) == \
        ("dice_ce", 2, 4, 15)
    assert (params.lr, params.val_interval, params.num_threads) == (3e-3, 2, 1)
    assert not params.debug and params.patch_size is None  # auto: the padded 64x64x8
    full = resolve_preset(loaded.config, "dice_ce_3fold").preset.overrides
    assert (full["max_epochs"], full["steps_per_epoch"]) == (50, 250)  # the flagship unchanged
