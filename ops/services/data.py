"""Synthetic datasets and dataset profiles on this machine.

The work is done by ``runner.seg`` (numpy, nibabel, scipy, scikit-image: the ``train`` extra).
It is imported inside these functions, never at module level, so every other ``ops`` command
works on a laptop without the extra; a missing package becomes a UsageError with the fix.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ops.errors import ConflictError, NotFoundError, UsageError

if TYPE_CHECKING:
    from runner.seg.profile import DatasetProfile
    from runner.seg.synth import SynthReport

TRAIN_EXTRA_HINT = "install the training extra: pip install 'pod-ops[train]'"
DEFAULT_DIVISOR = (16, 16, 4)


@contextlib.contextmanager
def _train_extra() -> Iterator[None]:
    """Turn a missing numpy/nibabel/scipy/scikit-image into an error a user can act on."""
    try:
        yield
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise UsageError(f"`ops data` needs the training packages; {missing} is not installed",
                         hint=TRAIN_EXTRA_HINT) from exc


def synth(out_dir: Path, *, n: int = 24, size: int = 256, seed: int = 0,
          overwrite: bool = False, workers: int | None = None,
          progress: Callable[[int], object] | None = None) -> SynthReport:
    """Write a synthetic vessel dataset (NIfTI + dataset.json) under ``out_dir``.

    ``workers`` None uses up to four of this machine's CPUs; the output is the same for any.
    ``progress`` gets 1 per volume written.
    """
    with _train_extra():
        from runner.seg import synth as seg_synth
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"not a directory: {out_dir}")
    try:
        return seg_synth.synthesize(out_dir, n=n, size=size, seed=seed, overwrite=overwrite,
                                    workers=workers or _default_workers(n, size),
                                    progress=progress)
    except seg_synth.DatasetExists as exc:
        raise ConflictError(f"{out_dir} already holds files; nothing was written",
                            hint="choose an empty directory, or pass --force to replace "
                                 "imagesTr/, labelsTr/ and dataset.json there") from exc
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


# below this many voxels per slice summed over volumes (8 volumes of 256 x 256), one process:
# starting a worker (numpy, scipy, nibabel imported again) costs more than it saves
SMALL_DATASET_PIXELS = 8 * 256 * 256


def _default_workers(n: int, size: int) -> int:
    """One process for a small dataset, else up to four of the CPUs this process may use
    (affinity where the OS reports it)."""
    if n * size * size < SMALL_DATASET_PIXELS:
        return 1
    if hasattr(os, "sched_getaffinity"):  # Linux; macOS has only cpu_count
        return min(4, len(os.sched_getaffinity(0)))
    return min(4, os.cpu_count() or 1)


def profile(root: Path, divisor: tuple[int, int, int] = DEFAULT_DIVISOR) -> DatasetProfile:
    """Profile the dataset under ``root`` from its NIfTI headers."""
    if not root.exists():
        raise NotFoundError(f"no such dataset directory: {root}")
    if not root.is_dir():
        raise UsageError(f"not a directory: {root}")
    with _train_extra():
        from runner.seg import profile as seg_profile
    try:
        return seg_profile.profile_dataset(root, divisor)
    except ValueError as exc:  # also a dataset.json that is not JSON
        raise UsageError(str(exc), hint="a dataset has imagesTr/*.nii with labelsTr/ "
                                        "beside it, and optionally a dataset.json") from exc


VOLUME_COLUMNS = ("VOLUME", "SHAPE", "SPACING", "DTYPES", "ON DISK", "ANISO")


def profile_text(found: DatasetProfile) -> str:
    """The profile for people: one line per volume, then the dataset's summary."""
    doc = found.to_json()
    rows = [VOLUME_COLUMNS] + [_volume_row(v) for v in doc["volumes"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(VOLUME_COLUMNS))]
    table = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    return "\n".join([*table, "", found.render_text()])


def _volume_row(volume: dict[str, Any]) -> tuple[str, ...]:
    unit = {"micron": "um"}.get(volume["spacing_unit"], volume["spacing_unit"])
    spacing = " x ".join(f"{v:g}" for v in volume["spacing"])
    on_disk = (volume["image_bytes"] + volume["label_bytes"]) / 2**20
    dtypes = "/".join(d for d in (volume["image_dtype"], volume["label_dtype"]) if d)
    return (str(volume["name"]), " x ".join(map(str, volume["shape"])), f"{spacing} {unit}",
            dtypes, f"{on_disk:.2f} MiB", f"{volume['anisotropy']:g}")


def parse_divisor(text: str) -> tuple[int, int, int]:
    """``"16,16,4"`` -> (16, 16, 4): the network's stride product per axis (X, Y, Z)."""
    try:
        values = [int(part) for part in text.replace("x", ",").split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or min(values) < 1:
        raise UsageError(f"--divisor needs three positive integers like 16,16,4; got {text!r}")
    return values[0], values[1], values[2]
