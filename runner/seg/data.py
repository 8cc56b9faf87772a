"""Volumes in, crops out: one cache shared by every fold, random crops drawn from it.

Each case is loaded once (``CacheDataset`` with a runtime cache, filled on first use, in this
process: no forked workers and no copy of the cache per worker), z-scored, kept as a float32
image and a uint8 label (on the GPU when the plan says they fit) with the flat indices of its
vessel voxels (int32, on the CPU). Training draws ``num_samples`` crops per visit of a cached
volume (``VesselCrops``: half centred on a vessel voxel, half anywhere, random flips), so
loading and normalising a volume is never repeated per step and a crop is a slice of memory
that is already where the model runs. ``ThreadDataLoader`` prefetches the next batch on a
thread. Validation reads the same cache, a whole volume at a time.

Determinism: the order of volumes comes from a ``torch.Generator`` and the crops from the
transform's own ``RandomState``, both seeded per (seed, fold, epoch) by the trainer; the same
seed gives the same crops whether or not the run was resumed in between.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from monai.data.dataset import CacheDataset, Dataset
from monai.data.thread_buffer import ThreadDataLoader
from monai.transforms.compose import Compose
from monai.transforms.intensity.dictionary import NormalizeIntensityd
from monai.transforms.io.dictionary import LoadImaged
from monai.transforms.transform import MapTransform, Randomizable, Transform
from monai.transforms.utility.dictionary import CastToTyped, EnsureChannelFirstd, EnsureTyped
from torch.nn import functional as F
from torch.utils.data import Subset

from runner.seg.profile import DatasetProfile

KEYS = ("image", "label")
FG_KEY = "fg"
FOREGROUND_SHARE = 0.5  # of crops centred on a vessel voxel; the rest anywhere in the volume

Item = dict[Hashable, Any]


def case_records(profile: DatasetProfile, names: Sequence[str] | None = None) -> list[Item]:
    """One dict per case (absolute paths, name, spacing), in the profile's order."""
    wanted = None if names is None else set(names)
    return [{"image": str(Path(profile.root) / v.image), "label": str(Path(profile.root) / v.label),
             "name": v.name, "spacing": list(v.spacing)}
            for v in profile.volumes if v.label and (wanted is None or v.name in wanted)]


class ForegroundIndexd(MapTransform):
    """Adds the flat indices of the label's vessel voxels (int32, CPU) under ``fg``."""

    def __init__(self) -> None:
        super().__init__(keys=["label"])

    def __call__(self, data: Mapping[Hashable, Any]) -> Item:
        item = dict(data)
        label = torch.as_tensor(item["label"])
        flat = torch.nonzero(label.reshape(-1) > 0).reshape(-1)
        item[FG_KEY] = flat.to(torch.int32).cpu().numpy()
        return item


def cache_transform(cache_device: str) -> Compose:
    return Compose([
        LoadImaged(keys=list(KEYS), image_only=True),
        EnsureChannelFirstd(keys=list(KEYS), channel_dim="no_channel"),
        NormalizeIntensityd(keys="image"),
        CastToTyped(keys=list(KEYS), dtype=(np.float32, np.uint8)),
        ForegroundIndexd(),
        EnsureTyped(keys=list(KEYS), track_meta=False, device=torch.device(cache_device)),
    ])


def volume_cache(records: Sequence[Item], cache_rate: float, cache_device: str) -> CacheDataset:
    """Every case once; items are cached the first time they are read (runtime cache)."""
    return CacheDataset(data=list(records), transform=cache_transform(cache_device),
                        cache_rate=cache_rate, runtime_cache=True, copy_cache=False,
                        progress=False)


class VesselCrops(Randomizable, Transform):
    """``num_samples`` random crops of ``patch`` from one cached volume, randomly flipped."""

    def __init__(self, patch: Sequence[int], num_samples: int,
                 foreground_share: float = FOREGROUND_SHARE) -> None:
        self.patch = [int(p) for p in patch]
        self.num_samples = int(num_samples)
        self.foreground_share = float(foreground_share)

    def randomize(self, data: Any = None) -> None:  # crops are drawn in __call__
        return None

    def __call__(self, data: Mapping[Hashable, Any]) -> list[Item]:
        image, label = data["image"], data["label"]
        shape = [int(n) for n in image.shape[1:]]
        return [self._crop(image, label, self._start(shape, data[FG_KEY]))
                for _ in range(self.num_samples)]

    def _start(self, shape: list[int], fg: np.ndarray[Any, Any]) -> list[int]:
        if len(fg) and self.R.rand() < self.foreground_share:
            flat = int(fg[self.R.randint(len(fg))])
            center = [int(c) for c in np.unravel_index(flat, shape)]
        else:
            center = [int(self.R.randint(n)) for n in shape]
        return [min(max(0, c - p // 2), max(0, n - p))
                for c, p, n in zip(center, self.patch, shape, strict=True)]

    def _crop(self, image: torch.Tensor, label: torch.Tensor, start: list[int]) -> Item:
        window = tuple(slice(s, s + p) for s, p in zip(start, self.patch, strict=True))
        img, lab = image[(slice(None), *window)], label[(slice(None), *window)]
        pad = [p - n for p, n in zip(self.patch, img.shape[1:], strict=True)]
        if any(pad):  # a volume smaller than the patch on some axis
            spec = [v for amount in reversed(pad) for v in (0, amount)]
            img, lab = F.pad(img, spec), F.pad(lab, spec)
        flips = [axis + 1 for axis in range(3) if self.R.rand() < 0.5]
        if flips:
            img, lab = torch.flip(img, flips), torch.flip(lab, flips)
        return {"image": img.contiguous(), "label": lab.contiguous()}


def cache_view(cache: CacheDataset, indices: Sequence[int]) -> Sequence[Item]:
    """Some cached items, in this order, without copying them."""
    return cast(Sequence[Item], Subset(cache, list(indices)))


def train_dataset(cache: CacheDataset, indices: Sequence[int], crops: VesselCrops) -> Dataset:
    return Dataset(data=cache_view(cache, indices), transform=crops)


def train_loader(dataset: Dataset, volumes_per_step: int, seed: int) -> ThreadDataLoader:
    """Shuffled volumes, ``volumes_per_step`` x ``num_samples`` crops a batch, seeded."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return ThreadDataLoader(dataset, batch_size=volumes_per_step, shuffle=True,
                            generator=generator, num_workers=0, buffer_size=1)


def _single(batch: list[Item]) -> Item:
    return batch[0]


def val_loader(cache: CacheDataset, indices: Sequence[int]) -> ThreadDataLoader:
    """Whole cached volumes, one at a time, with their name and spacing."""
    return ThreadDataLoader(Dataset(data=cache_view(cache, indices)), batch_size=1, shuffle=False,
                            num_workers=0, collate_fn=_single)

