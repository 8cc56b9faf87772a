"""DynUNet sized from the data: kernels and strides from the voxel spacing, nnU-Net style.

``plan_network`` is pure Python (the compute profile calls it before torch is needed): at every
level an axis is downsampled only while its spacing is at most twice the finest current spacing
and the feature map keeps at least ``MIN_FEATURE`` voxels on it, so a 1 x 1 x 5 um stack keeps
its few Z slices until X and Y have been halved enough to catch up. A kernel is 3 on an axis
within that factor of two and 1 on a much coarser axis (no smoothing across thick slices).
The product of the strides per axis is the network's divisor: every patch must be a multiple.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

Triple = tuple[int, int, int]
MIN_FEATURE = 4  # voxels an axis keeps at the bottom of the U before it stops downsampling
ANISOTROPY_FACTOR = 2.0
IN_CHANNELS, OUT_CHANNELS = 1, 2  # image in; background and vessel logits out


@dataclass(frozen=True)
class NetworkPlan:
    filters: tuple[int, ...]
    kernels: tuple[Triple, ...]
    strides: tuple[Triple, ...]  # first is (1, 1, 1): the input level

    @property
    def divisor(self) -> Triple:
        per_axis = [math.prod(s[axis] for s in self.strides) for axis in range(3)]
        return per_axis[0], per_axis[1], per_axis[2]

    def to_json(self) -> dict[str, Any]:
        return {"filters": list(self.filters), "kernels": [list(k) for k in self.kernels],
                "strides": [list(s) for s in self.strides], "divisor": list(self.divisor)}


def plan_network(spacing: Sequence[float], patch: Sequence[int],
                 filters: Sequence[int]) -> NetworkPlan:
    """Kernels and strides for ``len(filters)`` levels at this spacing and patch size."""
    current = [float(s) for s in spacing]
    size = [int(n) for n in patch]
    kernels: list[Triple] = []
    strides: list[Triple] = [(1, 1, 1)]
    for level in range(len(filters)):
        kernels.append(_kernel(current))
        if level == len(filters) - 1:
            break
        stride = _stride(current, size)
        strides.append(stride)
        current = [s * st for s, st in zip(current, stride, strict=True)]
        size = [n // st for n, st in zip(size, stride, strict=True)]
    return NetworkPlan(tuple(int(f) for f in filters), tuple(kernels), tuple(strides))


def _kernel(spacing: Sequence[float]) -> Triple:
    finest = min(spacing)
    k = [3 if s <= ANISOTROPY_FACTOR * finest else 1 for s in spacing]
    return k[0], k[1], k[2]


def _stride(spacing: Sequence[float], size: Sequence[int]) -> Triple:
    finest = min(spacing)
    s = [2 if sp <= ANISOTROPY_FACTOR * finest and n >= 2 * MIN_FEATURE else 1
         for sp, n in zip(spacing, size, strict=True)]
    return s[0], s[1], s[2]


def floor_to_divisor(patch: Sequence[int], divisor: Sequence[int]) -> Triple:
    """Each axis rounded down to a multiple of the divisor (at least one multiple)."""
    out = [max(d, (p // d) * d) for p, d in zip(patch, divisor, strict=True)]
    return out[0], out[1], out[2]


def build_model(plan: NetworkPlan) -> nn.Module:
    """The DynUNet of ``plan``: residual blocks, instance norm, no deep supervision."""
    from monai.networks.nets.dynunet import DynUNet

    return DynUNet(
        spatial_dims=3, in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS,
        kernel_size=[list(k) for k in plan.kernels],
        strides=[list(s) for s in plan.strides],
        upsample_kernel_size=[list(s) for s in plan.strides[1:]],
        filters=list(plan.filters), norm_name=("INSTANCE", {"affine": True}),
        res_block=True, deep_supervision=False)


def parameter_count(plan: NetworkPlan) -> int:
    """Weights of the plan's DynUNet, estimated without building it (for the VRAM guard)."""
    total = 0
    channels = IN_CHANNELS
    for filters, kernel in zip(plan.filters, plan.kernels, strict=True):
        voxels = math.prod(kernel)
        total += voxels * (channels * filters + 2 * filters * filters)  # two convs (+ skip)
        channels = filters
    return 2 * total  # the decoder mirrors the encoder
