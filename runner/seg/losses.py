"""Training losses of the `monai_seg` workload: ``dice_ce`` plus three topology-aware terms.

All take logits ``(B, 2, X, Y, Z)`` (background, vessel) and a label ``(B, 1, X, Y, Z)`` with
values 0/1, and compute in float32 whatever the autocast dtype of the logits.

- ``dice_ce``: MONAI ``DiceCELoss`` (softmax, one-hot label, batch Dice over the vessel
  channel only: ``include_background=False``; the cross-entropy sees both channels).
- ``dice_ce_cldice``: ``dice_ce + w * clDice`` with MONAI 1.6's ``SoftclDiceLoss``
  (``include_background=False``, ``softmax=True``, ``to_onehot_y=True``; soft skeleton of 3
  iterations), after Shit et al., CVPR 2021.
- ``cbdice``: ``dice_ce + w * cbDice``, the centerline boundary Dice of Shi et al., "Centerline
  Boundary Dice Loss for Vascular Segmentation", MICCAI 2024: clDice's skeleton precision and
  sensitivity, with each skeleton voxel weighted by the inverse square of its normalised radius
  and each mask voxel by its normalised distance to the boundary, so thin vessels count as much
  as thick ones. Approximation: the paper takes distances from a Euclidean distance transform;
  here the distance is the erosion depth (how many 6-neighbourhood erosions a voxel survives,
  capped at ``DISTANCE_ITERS``), a city-block distance in voxels that runs on the GPU with max
  pooling and needs neither cuCIM nor a copy to the CPU. Skeletons are MONAI's soft skeletons.
- ``warp``: ``dice_ce + w * warping``, after Hu, "Structure-Aware Image Segmentation with
  Homotopy Warping", NeurIPS 2022: cross-entropy restricted to topologically critical voxels.
  The paper finds them by warping the label towards the prediction (and back) one simple voxel
  at a time, in distance order; what cannot be flipped without changing topology is critical.
  Approximation: the sequential simple-point test is replaced by a parallel one. A missed
  segment warps down to the label centreline through the gap, a spurious bridge to the
  predicted centreline across it, so the critical set is taken as false negatives on the label's
  skeleton plus false positives on the prediction's skeleton (binary soft skeletons). Boundary
  disagreements, which warping removes as simple voxels, are not critical in either version.

``w`` is ``topo_weight`` (0.5 by default); every loss returns a finite scalar on any input.
"""

from __future__ import annotations

import torch
from monai.losses.cldice import SoftclDiceLoss, soft_erode, soft_skel
from monai.losses.dice import DiceCELoss
from torch import nn
from torch.nn import functional as F

LOSSES = ("dice_ce", "dice_ce_cldice", "cbdice", "warp")
SKELETON_ITERS = 3
DISTANCE_ITERS = 8
CB_SMOOTH = 1.0
RADIUS_SMOOTH = 1e-7


def dice_ce() -> DiceCELoss:
    return DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)


class TopologyLoss(nn.Module):
    """``dice_ce + weight * term(logits, label)``; subclasses define ``term``."""

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.base = dice_ce()
        self.weight = float(weight)

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        logits, label = logits.float(), (label > 0).float()
        total: torch.Tensor = self.base(logits, label)
        if self.weight:
            total = total + self.weight * self.term(logits, label)
        return total

    def term(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class DiceCE(TopologyLoss):
    def __init__(self) -> None:
        super().__init__(0.0)


class DiceCEClDice(TopologyLoss):
    def __init__(self, weight: float) -> None:
        super().__init__(weight)
        self.cldice = SoftclDiceLoss(iter_=SKELETON_ITERS, include_background=False,
                                     to_onehot_y=True, softmax=True)

    def term(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        value: torch.Tensor = self.cldice(logits, label)
        return value


def erosion_depth(mask: torch.Tensor, iters: int = DISTANCE_ITERS) -> torch.Tensor:
    """Per voxel of a binary mask: 1 + the number of erosions it survives (0 outside)."""
    depth, current = mask.clone(), mask
    for _ in range(iters - 1):
        current = soft_erode(current)
        depth = depth + current
    return depth


def cb_weights(prob: torch.Tensor, skel: torch.Tensor,
               binary: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(distance weight x mask, radius x mask, inverse squared radius x skeleton) per voxel."""
    with torch.no_grad():
        mask = prob if binary else (prob > 0.5).float()
        on_skel = skel if binary else (skel > 0.5).float()
        dist = erosion_depth(mask)
        radius = dist * on_skel
        top = radius.flatten(1).amax(dim=1).clamp_min(1.0).view(-1, *[1] * (prob.dim() - 1))
        dist_norm = dist.clamp(max=top) / top
        radius_norm = radius / top
        inverse = torch.where(radius_norm > 0,
                              (1 + RADIUS_SMOOTH) / (radius_norm**2 + RADIUS_SMOOTH),
                              torch.zeros_like(radius_norm))
    return dist_norm * prob, radius_norm * prob, inverse * skel


def _combine(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """b * c, except a * c where only ``a`` has a radius (the paper's overlap weighting)."""
    return torch.where((a != 0) & (b == 0), a * c, b * c)


class CbDice(TopologyLoss):
    def term(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        prob = torch.softmax(logits, dim=1)[:, 1:]
        skel_pred, skel_true = soft_skel(prob, SKELETON_ITERS), soft_skel(label, SKELETON_ITERS)
        q_vl, q_slvl, q_sl = cb_weights(label, skel_true, binary=True)
        q_vp, q_spvp, q_sp = cb_weights(prob, skel_pred, binary=False)
        tprec = (torch.sum(q_sp * q_vl) + CB_SMOOTH) / \
            (torch.sum(_combine(q_spvp, q_slvl, q_sp)) + CB_SMOOTH)
        tsens = (torch.sum(q_sl * q_vp) + CB_SMOOTH) / \
            (torch.sum(_combine(q_slvl, q_spvp, q_sl)) + CB_SMOOTH)
        return 1.0 - 2.0 * tprec * tsens / (tprec + tsens)


def binary_skeleton(mask: torch.Tensor) -> torch.Tensor:
    return (soft_skel(mask, SKELETON_ITERS) > 0.5).float()


def critical_voxels(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Voxels whose flip would change topology (see the module docs for the approximation)."""
    with torch.no_grad():
        pred = logits.argmax(dim=1, keepdim=True).float()
        missed = label * (1 - pred) * binary_skeleton(label)
        spurious = pred * (1 - label) * binary_skeleton(pred)
        return (missed + spurious).clamp(max=1.0)


class Warp(TopologyLoss):
    def term(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        critical = critical_voxels(logits, label)[:, 0]
        ce = F.cross_entropy(logits, label[:, 0].long(), reduction="none")
        return (ce * critical).sum() / critical.sum().clamp_min(1.0)


def build_loss(name: str, topo_weight: float = 0.5) -> TopologyLoss:
    if name == "dice_ce":
        return DiceCE()
    if name == "dice_ce_cldice":
        return DiceCEClDice(topo_weight)
    if name == "cbdice":
        return CbDice(topo_weight)
    if name == "warp":
        return Warp(topo_weight)
    raise ValueError(f"unknown loss {name!r}: use one of {', '.join(LOSSES)}")
