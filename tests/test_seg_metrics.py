"""runner.seg.metrics: values on hand-computable volumes, empty masks, bootstrap aggregation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from runner.seg.metrics import (
    aggregate,
    bootstrap_mean,
    flatten,
    summarize,
    volume_metrics,
)


def _cube(z0: int) -> np.ndarray:
    mask = np.zeros((10, 10, 10), dtype=np.uint8)
    mask[2:6, 2:6, z0:z0 + 4] = 1
    return mask


def _tube(length: slice = slice(2, 30)) -> np.ndarray:
    mask = np.zeros((32, 11, 11), dtype=bool)
    mask[length, 3:8, 3:8] = True
    return mask


def test_identical_masks_score_perfectly() -> None:
    row = volume_metrics(_tube(), _tube(), (0.99, 0.99, 5.0))
    assert (row["dsc"], row["cldice"], row["masd"], row["hd95"]) == (1.0, 1.0, 0.0, 0.0)
    assert row["empty"] is None


# Two 4x4x4 cubes, the second one voxel higher in Z. Of the 56 surface voxels of each, 36 lie on
# the other's surface (distance 0), 16 face it across one Z step (bottom layer of the lower cube,
# top layer of the upper one) and 4 (the centre of the inner face) are one voxel from the
# other's side wall: directed mean (16 dz + 4 min(dx, dz)) / 56 both ways, so MASD is that;
# the 95th percentile lands in the 16 (index 52.25 of 56 sorted), so HD95 = dz.
@pytest.mark.parametrize(("spacing", "masd", "hd95"), [
    ((1.0, 1.0, 1.0), 20 / 56, 1.0),
    ((1.0, 1.0, 2.0), (16 * 2 + 4 * 1) / 56, 2.0),
    ((3.0, 3.0, 0.5), 20 * 0.5 / 56, 0.5),
], ids=["isotropic", "z-coarse", "z-fine"])
def test_cubes_offset_by_one_voxel_in_physical_units(
        spacing: tuple[float, float, float], masd: float, hd95: float) -> None:
    row = volume_metrics(_cube(2), _cube(3), spacing)
    assert row["dsc"] == pytest.approx(2 * 48 / 128)
    assert row["masd"] == pytest.approx(masd)
    assert row["hd95"] == pytest.approx(hd95)


def test_cldice_rewards_topology_not_volume() -> None:
    centreline = np.zeros_like(_tube())
    centreline[2:30, 5, 5] = True
    row = volume_metrics(centreline, _tube(), (1.0, 1.0, 1.0))
    assert row["cldice"] == pytest.approx(1.0)
    assert row["dsc"] < 0.1
    half = volume_metrics(_tube(slice(2, 16)), _tube(), (1.0, 1.0, 1.0))
    # all of pred's centreline lies in the label, half of the label's centreline in pred: 2/3
    assert half["cldice"] == pytest.approx(2 / 3, abs=0.05)


@pytest.mark.parametrize(("pred", "label", "expected"), [
    (False, False, {"empty": "both", "dsc": 1.0, "cldice": 1.0, "masd": 0.0, "hd95": 0.0}),
    (False, True, {"empty": "pred", "dsc": 0.0, "cldice": 0.0, "masd": None, "hd95": None}),
    (True, False, {"empty": "label", "dsc": 0.0, "cldice": 0.0, "masd": None, "hd95": None}),
], ids=["both-empty", "pred-empty", "label-empty"])
def test_empty_masks_follow_the_documented_convention(
        pred: bool, label: bool, expected: dict[str, object]) -> None:
    nothing = np.zeros((10, 10, 10), dtype=np.uint8)
    row = volume_metrics(_cube(2) if pred else nothing, _cube(2) if label else nothing,
                         (1.0, 1.0, 1.0))
    assert {k: row[k] for k in expected} == expected


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="same 3D shape"):
        volume_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), (1, 1, 1))
    with pytest.raises(ValueError, match="three positive"):
        volume_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1, 0, 1))


def test_surface_distances_agree_with_monai() -> None:
    """Random blobs with anisotropic spacing: our HD95 and directed means against MONAI's."""
    import torch
    from monai.metrics.hausdorff_distance import compute_hausdorff_distance
    from monai.metrics.surface_distance import compute_average_surface_distance
    from scipy import ndimage

    rng = np.random.default_rng(0)
    blobs = [ndimage.gaussian_filter(rng.random((40, 40, 12)), (3, 3, 1)) > 0.5
             for _ in range(2)]
    spacing = (0.99, 0.99, 5.0)
    ours = volume_metrics(blobs[0], blobs[1], spacing)
    pred, label = (torch.as_tensor(b[None, None].astype(np.float32)) for b in blobs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI's own deprecation notice
        hd95 = float(compute_hausdorff_distance(pred, label, percentile=95, spacing=spacing))
        forward = float(compute_average_surface_distance(pred, label, spacing=spacing))
        backward = float(compute_average_surface_distance(label, pred, spacing=spacing))
    assert ours["hd95"] == pytest.approx(hd95, rel=1e-5)
    assert ours["masd"] == pytest.approx((forward + backward) / 2, rel=1e-5)


# --- aggregation -----------------------------------------------------------------------------


def _rows() -> list[dict[str, object]]:
    rng = np.random.default_rng(1)
    rows: list[dict[str, object]] = []
    for i in range(12):
        rows.append({"fold": i % 3, "empty": None, "dsc": float(rng.uniform(0.6, 0.9)),
                     "cldice": float(rng.uniform(0.5, 0.9)), "masd": float(rng.gamma(2.0)),
                     "hd95": float(rng.gamma(4.0))})
    rows[5].update(empty="pred", dsc=0.0, cldice=0.0, masd=None, hd95=None)
    return rows


def test_bootstrap_ci_contains_the_mean_and_is_deterministic() -> None:
    rows = _rows()
    first = aggregate(rows, seed=0)
    assert aggregate(rows, seed=0) == first
    assert aggregate(rows, seed=1)["dsc"]["ci_low"] != first["dsc"]["ci_low"]
    for name in ("dsc", "cldice", "masd", "hd95"):
        stats = first[name]
        assert stats["ci_low"] < stats["mean"] < stats["ci_high"]
    assert first["dsc"]["mean"] == pytest.approx(np.mean([r["dsc"] for r in rows]))
    assert (first["hd95"]["n"], first["hd95"]["n_missing"]) == (11, 1)
    assert first["empty"] == {"both": 0, "pred": 1, "label": 0}


def test_bootstrap_edge_cases() -> None:
    assert bootstrap_mean([], seed=0) == {"mean": None, "ci_low": None, "ci_high": None}
    assert bootstrap_mean([0.5], seed=0) == {"mean": 0.5, "ci_low": 0.5, "ci_high": 0.5}


def test_summarize_per_fold_and_overall_and_flatten() -> None:
    rows = _rows()
    summary = summarize(rows, seed=0)
    assert [f["fold"] for f in summary["folds"]] == [0, 1, 2]
    assert [f["n_volumes"] for f in summary["folds"]] == [4, 4, 4]
    assert summary["overall"] == aggregate(rows, seed=0)
    flat = flatten(summary["overall"], prefix="val/")
    assert flat["val/dsc_mean"] == summary["overall"]["dsc"]["mean"]
    assert len(flat) == 12 and all(math.isfinite(v) for v in flat.values())
    assert flatten(aggregate([], seed=0)) == {}
