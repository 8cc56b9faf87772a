"""Per-fold checkpoints and completion markers in ``$OPS_CHECKPOINTS_DIR``, and resume.

Files, per fold ``k``:

- ``fold{k}_ckpt_last.pt``: everything needed to continue the fold after its last completed epoch
  (model, AdamW, GradScaler, RNG states, epoch, global step, best score and the per-volume rows
  of the best validation so far). Written after every epoch.
- ``fold{k}_ckpt_best.pt``: the model weights of the best validation DSC so far.
- ``fold{k}_done.json``: written once the fold is finished; holds the fold's per-volume rows,
  so a resumed run skips the fold and still reports it.

Every write is atomic (a temp file in the same directory, flush, fsync, ``os.replace``, fsync
of the directory): a run killed at any moment leaves the previous file or the new one, never a
torn one. ``torch.load`` uses ``weights_only=True``: a checkpoint is data, never code.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runner import contract

DONE_SCHEMA = "seg_fold_done"


def last_path(directory: Path, fold: int) -> Path:
    return Path(directory) / f"fold{fold}_ckpt_last.pt"


def best_path(directory: Path, fold: int) -> Path:
    return Path(directory) / f"fold{fold}_ckpt_best.pt"


def done_path(directory: Path, fold: int) -> Path:
    return Path(directory) / f"fold{fold}_done.json"


def save_atomic(obj: Any, path: Path) -> int:
    """torch.save ``obj`` to ``path`` atomically; returns the bytes written."""
    path = Path(path)
    contract.atomic_write_with(path, lambda fh: torch.save(obj, fh))
    return path.stat().st_size


def copy_atomic(source: Path, target: Path) -> None:
    with open(source, "rb") as src:
        contract.atomic_write_with(Path(target), lambda dst: shutil.copyfileobj(src, dst, 1 << 20))


def load(path: Path) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a checkpoint dictionary")
    return state


def rng_state() -> dict[str, Any]:
    py_state = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [name, torch.from_numpy(np.asarray(keys)), pos, has_gauss, cached],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy(), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_done(directory: Path, fold: int, doc: dict[str, Any]) -> None:
    contract.atomic_write_json(done_path(directory, fold),
                               {"schema": contract.schema_tag(DONE_SCHEMA), "fold": fold, **doc})


def read_done(directory: Path, fold: int) -> dict[str, Any] | None:
    doc = contract.read_json_or_none(done_path(directory, fold))
    if doc is None or contract.check_schema_tag(doc, DONE_SCHEMA) is not None:
        return None
    return doc


def adopt_fold(old: Path, new: Path, fold: int) -> None:
    """Copy a fold's files from a previous run's checkpoints into this run's."""
    for path_of in (last_path, best_path, done_path):
        source = path_of(old, fold)
        if source.is_file():
            copy_atomic(source, path_of(new, fold))
