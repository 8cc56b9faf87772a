"""Per-volume segmentation metrics and their bootstrap aggregation over volumes.

Per validation volume (binary masks, foreground = any non-zero value):

- ``dsc``: Dice, ``2|P & L| / (|P| + |L|)``.
- ``cldice``: centreline Dice (Shit et al., CVPR 2021) from 3D skeletons
  (``skimage.morphology.skeletonize``, Lee's thinning, on the voxel grid: skeletons ignore
  spacing). ``Tprec = |S(P) & L| / |S(P)|``, ``Tsens = |S(L) & P| / |S(L)|``, harmonic mean.
  A non-empty mask whose skeleton comes out empty uses the mask itself as its skeleton.
- ``masd``: mean of the two directed mean surface distances, ``(mean d(P->L) + mean d(L->P))/2``.
- ``hd95``: the larger of the two directed 95th percentiles of surface distance (MONAI's
  ``compute_hausdorff_distance(percentile=95)`` convention).

Surfaces are mask voxels with a face neighbour outside the mask (the border of the array counts
as outside); distances are Euclidean between voxel centres in physical units (the spacing
scales the voxel grid), found with a k-d tree (``scipy.spatial.cKDTree``).

Empty masks, explicitly: both empty -> DSC 1, clDice 1, MASD 0, HD95 0 (a correct "nothing
here"); exactly one empty -> DSC 0, clDice 0, MASD and HD95 undefined: ``None`` in the row
(``null`` in JSON), left out of the means and counted as ``n_missing``. ``empty`` says which.

Aggregation: the mean over volumes with a percentile bootstrap confidence interval (1000
resamples of volumes with replacement, seeded), per metric; ``summarize`` does it per fold and
over all volumes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.morphology import skeletonize

METRICS = ("dsc", "cldice", "masd", "hd95")
HIGHER_IS_BETTER = {"dsc": True, "cldice": True, "masd": False, "hd95": False}
N_BOOT = 1000
CI_LEVEL = 0.95

Mask = NDArray[np.bool_]
Row = dict[str, Any]
_FACES = ndimage.generate_binary_structure(3, 1)


def volume_metrics(pred: ArrayLike, label: ArrayLike, spacing: Sequence[float]) -> Row:
    """DSC, clDice, MASD and HD95 of one volume (distances in the units of ``spacing``)."""
    p, lab = np.asarray(pred) != 0, np.asarray(label) != 0
    if p.shape != lab.shape or p.ndim != 3:
        raise ValueError(f"pred {p.shape} and label {lab.shape} must be the same 3D shape")
    sampling = _spacing(spacing)
    row: Row = {"empty": _empty_kind(p, lab), "pred_voxels": int(p.sum()),
                "label_voxels": int(lab.sum())}
    if row["empty"] == "both":
        return {**row, "dsc": 1.0, "cldice": 1.0, "masd": 0.0, "hd95": 0.0}
    if row["empty"] is not None:
        return {**row, "dsc": 0.0, "cldice": 0.0, "masd": None, "hd95": None}
    p, lab = _crop_to_union(p, lab)
    to_label, to_pred = surface_distances(p, lab, sampling)
    return {**row, "dsc": dice(p, lab), "cldice": cldice(p, lab),
            "masd": (float(to_label.mean()) + float(to_pred.mean())) / 2,
            "hd95": max(float(np.percentile(to_label, 95)), float(np.percentile(to_pred, 95)))}


def dice(pred: Mask, label: Mask) -> float:
    total = int(pred.sum()) + int(label.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & label).sum()) / total


def cldice(pred: Mask, label: Mask) -> float:
    """Centreline Dice of two non-empty masks."""
    skel_pred, skel_label = _skeleton(pred), _skeleton(label)
    tprec = int((skel_pred & label).sum()) / int(skel_pred.sum())
    tsens = int((skel_label & pred).sum()) / int(skel_label.sum())
    return 0.0 if tprec + tsens == 0 else 2.0 * tprec * tsens / (tprec + tsens)


def surface(mask: Mask) -> Mask:
    """Voxels of ``mask`` with a face neighbour outside it (or on the array border)."""
    eroded: Mask = ndimage.binary_erosion(mask, structure=_FACES, border_value=0)
    return mask & ~eroded


def surface_distances(pred: Mask, label: Mask,
                      spacing: tuple[float, float, float]) -> tuple[NDArray[np.float64],
                                                                     NDArray[np.float64]]:
    """Distances from each pred surface voxel to the label surface, and the reverse.

    Exact nearest-neighbour queries between the two sets of surface voxel centres in physical
    coordinates (a k-d tree): the same numbers as a Euclidean distance transform with
    ``sampling=spacing``, in a fraction of the time for thin structures.
    """
    scale = np.asarray(spacing, dtype=np.float64)
    pts_pred = np.argwhere(surface(pred)) * scale
    pts_label = np.argwhere(surface(label)) * scale
    to_label, _ = cKDTree(pts_label).query(pts_pred)
    to_pred, _ = cKDTree(pts_pred).query(pts_label)
    return np.asarray(to_label, dtype=np.float64), np.asarray(to_pred, dtype=np.float64)


def _skeleton(mask: Mask) -> Mask:
    skel: Mask = np.asarray(skeletonize(mask), dtype=np.bool_)  # type: ignore[no-untyped-call]
    return skel if skel.any() else mask


def _empty_kind(pred: Mask, label: Mask) -> str | None:
    has_pred, has_label = bool(pred.any()), bool(label.any())
    if has_pred and has_label:
        return None
    if not has_pred and not has_label:
        return "both"
    return "pred" if not has_pred else "label"


def _crop_to_union(pred: Mask, label: Mask) -> tuple[Mask, Mask]:
    """Both masks cut to their joint bounding box plus one voxel: same surfaces and distances,
    much less work for thin structures in a large volume."""
    union = ndimage.find_objects((pred | label).astype(np.uint8))[0]
    box = tuple(slice(max(0, s.start - 1), min(n, s.stop + 1))
                for s, n in zip(union, pred.shape, strict=True))
    return pred[box], label[box]


def _spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    values = [float(s) for s in spacing]
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing needs three positive numbers, got {list(spacing)}")
    return values[0], values[1], values[2]


# ---------------------------------------------------------------------------
# aggregation


def bootstrap_mean(values: Sequence[float], seed: int, n_boot: int = N_BOOT,
                   level: float = CI_LEVEL) -> dict[str, float | None]:
    """Mean and percentile-bootstrap CI; the CI of one value is that value, of none is None."""
    if not values:
        return {"mean": None, "ci_low": None, "ci_high": None}
    data = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(n_boot, len(data)))].mean(axis=1)
    tail = (1.0 - level) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return {"mean": float(data.mean()), "ci_low": float(low), "ci_high": float(high)}


def aggregate(rows: Sequence[Mapping[str, Any]], seed: int, *, n_boot: int = N_BOOT,
              level: float = CI_LEVEL, metrics: Iterable[str] = METRICS) -> dict[str, Any]:
    """Per metric: mean, bootstrap CI, ``n`` volumes used and ``n_missing`` (undefined)."""
    out: dict[str, Any] = {"n_volumes": len(rows), "ci_level": level, "n_boot": n_boot,
                           "empty": _empty_counts(rows)}
    for name in metrics:
        values = [float(r[name]) for r in rows
                  if r.get(name) is not None and math.isfinite(float(r[name]))]
        out[name] = {**bootstrap_mean(values, seed, n_boot, level), "n": len(values),
                     "n_missing": len(rows) - len(values)}
    return out


def summarize(rows: Sequence[Mapping[str, Any]], seed: int, *, n_boot: int = N_BOOT,
              level: float = CI_LEVEL) -> dict[str, Any]:
    """``aggregate`` per fold (rows carry an int ``fold``) and over every row."""
    folds = sorted({int(r["fold"]) for r in rows if r.get("fold") is not None})
    per_fold = [{"fold": fold, **aggregate([r for r in rows if r.get("fold") == fold], seed,
                                            n_boot=n_boot, level=level)} for fold in folds]
    return {"overall": aggregate(rows, seed, n_boot=n_boot, level=level), "folds": per_fold}


def flatten(agg: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"dsc_mean": ..., "dsc_ci_low": ...}`` from an ``aggregate`` result, finite only:
    the shape metrics.jsonl and summary.json want."""
    flat: dict[str, float] = {}
    for name in METRICS:
        stats = agg.get(name) or {}
        for key in ("mean", "ci_low", "ci_high"):
            value = stats.get(key)
            if value is not None and math.isfinite(value):
                flat[f"{prefix}{name}_{key}"] = float(value)
    return flat


def _empty_counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts = {"both": 0, "pred": 0, "label": 0}
    for row in rows:
        kind = row.get("empty")
        if kind in counts:
            counts[kind] += 1
    return counts
