"""Every knob of the `monai_seg` trainer, its default, and the argparse CLI built from them.

The preset kind runs ``{python} -m runner.seg.train --key=value ...``: each field of
``TrainParams`` is one ``--key=value`` argument, parsed and type-checked here. A bad value
ends the process with exit code 2 and a line saying which argument and what is accepted.
``auto`` values are resolved later by ``runner.seg.compute`` from the hardware and the dataset;
an explicit value always wins over auto.

Memory limits (process RSS, GPU memory) are not here: the wrapper's watchdog enforces them.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

LOSSES = ("dice_ce", "dice_ce_cldice", "cbdice", "warp")
AMP_MODES = ("auto", "bf16", "fp16", "none")
DEVICES = ("auto", "cpu", "cuda")
WANDB_MODES = ("auto", "online", "offline", "disabled")
LR_SCALINGS = ("linear", "sqrt", "none")  # of lr by the number of ranks (runner.seg.ddp)
DEBUG_EPOCHS, DEBUG_FOLDS, DEBUG_VOLUMES = 1, 2, 6

Patch = tuple[int, int, int]


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def auto_bool(text: str) -> bool | None:
    return None if _is_auto(text) else parse_bool(text)


def _int(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
    return value


def _float(text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected a number in [{low}, {high}], got {value}")
    return value


def _is_auto(text: str) -> bool:
    return text.strip().lower() in ("auto", "none", "")


def positive_int(text: str) -> int:
    return _int(text, 1)


def non_negative_int(text: str) -> int:
    return _int(text, 0)


def auto_int(text: str) -> int | None:
    return None if _is_auto(text) else _int(text, 1)


def auto_fraction(text: str) -> float | None:
    return None if _is_auto(text) else _float(text, 0.0, 1.0)


def positive_float(text: str) -> float:
    return _float(text, 1e-12, 1e6)


def fraction(text: str) -> float:
    return _float(text, 0.0, 0.99)


def unit_float(text: str) -> float:
    return _float(text, 0.0, 1.0)


def weight(text: str) -> float:
    return _float(text, 0.0, 10.0)


def auto_patch(text: str) -> Patch | None:
    """``auto`` or ``XxYxZ`` (``128x128x16``; commas also accepted)."""
    if _is_auto(text):
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) != 3 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or three positive sizes like 128x128x16, got {text!r}")
    return sizes[0], sizes[1], sizes[2]


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated non-negative integers like 0,2, got {text!r}")
    return values


def auto_int_list(text: str) -> tuple[int, ...] | None:
    return None if _is_auto(text) or text.strip().lower() == "all" else int_list(text)


def optional_text(text: str) -> str | None:
    return None if _is_auto(text) else text


def _knob(default: Any, parse: Callable[[str], Any], help_: str,
          choices: Sequence[str] | None = None) -> Any:
    meta = {"parse": parse, "help": help_, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainParams:
    """One run's settings; ``None`` means auto (resolved by runner.seg.compute)."""

    data_dir: str = _knob("", str, "dataset root (Decathlon layout: dataset.json, imagesTr/)")
    loss: str = _knob("dice_ce", str, "training loss", LOSSES)
    folds: int = _knob(3, positive_int, "k of the k-fold cross-validation (>= 2)")
    fold_indices: tuple[int, ...] | None = _knob(None, auto_int_list,
                                                 "folds to run, e.g. 0,2 (default all)")
    max_epochs: int = _knob(50, positive_int, "epochs per fold")
    steps_per_epoch: int | None = _knob(None, auto_int,
                                        "optimizer steps per epoch (auto: one pass over the "
                                        "training volumes, num_samples crops each)")
    batch_size: int | None = _knob(None, auto_int, "patches per step (auto: from VRAM)")
    num_samples: int = _knob(4, positive_int,
                             "crops drawn per cached volume visit (divides the batch)")
    patch_size: tuple[int, int, int] | None = _knob(
        None, auto_patch, "crop size XxYxZ (auto: from the profile, divisible by the strides)")
    cache_rate: float | None = _knob(None, auto_fraction,
                                     "fraction of volumes cached in RAM (auto: RAM budget)")
    cache_device: str = _knob("auto", str, "where cached volumes live", DEVICES)
    amp: str = _knob("auto", str, "mixed precision", AMP_MODES)
    device: str = _knob("auto", str, "training device", DEVICES)
    filters: tuple[int, ...] | None = _knob(None, auto_int_list, "DynUNet filters per level, "
                                            "e.g. 32,64,128,256 (auto: by compute profile)")
    lr: float = _knob(1e-3, positive_float, "AdamW learning rate (poly decay over epochs)")
    weight_decay: float = _knob(1e-5, unit_float, "AdamW weight decay")
    topo_weight: float = _knob(0.5, weight, "weight of the topology term (cldice, cbdice, warp)")
    val_interval: int = _knob(1, positive_int, "validate every N epochs (and the last)")
    sw_batch_size: int = _knob(4, positive_int, "sliding-window batch in validation")
    sw_overlap: float = _knob(0.25, fraction, "sliding-window overlap in validation")
    seed: int = _knob(0, non_negative_int, "seed of splits, init, crops and bootstrap")
    deterministic: bool | None = _knob(None, auto_bool, "torch.use_deterministic_algorithms "
                                       "(auto: on for CPU runs, off on CUDA for speed)")
    num_threads: int | None = _knob(None, auto_int, "torch CPU threads (auto: cgroup CPUs)")
    debug: bool = _knob(False, parse_bool, f"{DEBUG_EPOCHS} epoch, {DEBUG_FOLDS} folds, "
                        f"at most {DEBUG_VOLUMES} volumes")
    max_volumes: int | None = _knob(None, auto_int, "use only the first N cases (sorted)")
    resume_from: str | None = _knob(None, optional_text,
                                    "a previous run dir: reuse its splits, skip its done folds")
    wandb: str = _knob("disabled", str, "W&B mode (auto: online with ~/.netrc credentials)",
                       WANDB_MODES)
    wandb_project: str = _knob("pod-ops", str, "W&B project name")
    lr_scaling: str = _knob("linear", str, "with several ranks (distributed.nproc_per_node): lr "
                            "times the number of ranks, its square root, or as given",
                            LR_SCALINGS)
    dist_timeout: float = _knob(600.0, positive_float, "seconds a rank waits in a collective "
                                "for the others before the run fails (several ranks only)")

    def effective(self) -> TrainParams:
        """The params a run uses: debug caps epochs, folds and volumes."""
        if not self.debug:
            return self
        volumes = min(self.max_volumes or DEBUG_VOLUMES, DEBUG_VOLUMES)
        indices = None if self.fold_indices is None else tuple(
            i for i in self.fold_indices if i < DEBUG_FOLDS)
        return dataclasses.replace(self, max_epochs=DEBUG_EPOCHS, folds=DEBUG_FOLDS,
                                   max_volumes=volumes, fold_indices=indices or None)

    def fold_list(self) -> list[int]:
        return list(self.fold_indices) if self.fold_indices is not None \
            else list(range(self.folds))

    def to_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in doc.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runner.seg.train", usage="%(prog)s --data_dir=DIR [--key=value ...]",
        description="3D vessel segmentation (MONAI DynUNet) with k-fold cross-validation.")
    for item in dataclasses.fields(TrainParams):
        meta = item.metadata
        kwargs: dict[str, Any] = {"dest": item.name, "type": meta["parse"],
                                  "help": f"{meta['help']} (default: {_shown(item.default)})"}
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
        if meta["parse"] in (parse_bool, auto_bool):
            kwargs.update(nargs="?", const=True)
        parser.add_argument(f"--{item.name}", **kwargs)
    return parser


def _shown(value: Any) -> str:
    if value is None:
        return "auto"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def parse_params(argv: Sequence[str] | None = None) -> TrainParams:
    """Parse ``--key=value`` arguments; exit 2 with a message on a bad or unknown one."""
    parser = build_parser()
    namespace = parser.parse_args(argv)
    given = {k: v for k, v in vars(namespace).items() if v is not None}  # None: auto/default
    params = TrainParams(**given)
    problem = check_params(params)
    if problem:
        parser.error(problem)
    return params


def check_params(params: TrainParams) -> str | None:
    """A cross-field problem, or None."""
    if not params.data_dir:
        return "--data_dir is required"
    if params.folds < 2:
        return f"--folds must be >= 2 (k-fold cross-validation), got {params.folds}"
    bad = [i for i in params.fold_indices or () if i >= params.folds]
    if bad:
        return f"--fold_indices {bad} out of range for --folds={params.folds} (use 0.." \
               f"{params.folds - 1})"
    if params.filters is not None and (len(params.filters) < 2 or min(params.filters) < 1):
        return f"--filters needs at least two positive sizes, got {list(params.filters)}"
    if params.max_volumes is not None and params.max_volumes < params.effective().folds:
        return f"--max_volumes={params.max_volumes} cannot fill --folds={params.folds}"
    return None
