"""Statistics, comparison and analysis of a report: bootstrap CIs, the paired test, groups,
the refusal to pair different splits, and the analysis flags."""

from __future__ import annotations

import random
import statistics
from typing import Any

import pytest

from ops.errors import UsageError
from ops.report import analysis, compare, stats

from .report_runs import SPLITS_2, seg_volumes


def test_bootstrap_ci_brackets_the_mean_and_is_reproducible() -> None:
    values = [0.61, 0.64, 0.7, 0.58, 0.66, 0.69, 0.63, 0.6]
    ci = stats.bootstrap_ci(values, seed=1)
    assert ci is not None and ci.low is not None and ci.high is not None
    assert ci.low < statistics.fmean(values) < ci.high
    assert stats.bootstrap_ci(values, seed=1) == ci
    assert stats.bootstrap_ci([0.5]) == stats.Interval(0.5, None, None, 1)
    assert stats.bootstrap_ci([]) is None


def test_bootstrap_ci_covers_the_true_mean_about_95_percent() -> None:
    rng = random.Random(7)
    hits = 0
    for trial in range(200):
        sample = [rng.gauss(1.0, 1.0) for _ in range(40)]
        ci = stats.bootstrap_ci(sample, seed=trial, n_boot=500)
        assert ci is not None and ci.low is not None and ci.high is not None
        hits += ci.low <= 1.0 <= ci.high
    assert 170 <= hits <= 199  # percentile bootstrap at n=40: slightly under 95%


def test_paired_test_exact_p_values() -> None:
    a = [0.5, 0.6, 0.7, 0.8, 0.55, 0.65]
    up = stats.paired_test(a, [x + 0.05 for x in a])
    assert up.exact and up.p_value == pytest.approx(2 / 64)  # only all-+ and all-- as extreme
    assert up.mean_diff == pytest.approx(0.05)
    same = stats.paired_test(a, a)
    assert same.p_value == 1.0 and same.effect_dz is None
    mixed = stats.paired_test([0, 0, 0, 0], [1, -1, 1, -1])
    assert mixed.p_value == 1.0


def test_paired_test_permutation_path_and_effect_size() -> None:
    rng = random.Random(3)
    a = [rng.random() for _ in range(30)]
    b = [x + 0.1 + rng.gauss(0, 0.05) for x in a]
    result = stats.paired_test(a, b, n_perm=2000)
    assert not result.exact and result.p_value < 0.001 + 1 / 2001
    assert result.effect_dz is not None and result.effect_dz > 1.0
    assert result.ci_low is not None and result.ci_low > 0
    with pytest.raises(ValueError, match="differ in length"):
        stats.paired_test([1.0], [1.0, 2.0])


@pytest.mark.parametrize(("name", "rules", "expected"), [
    ("dsc_mean", None, "max"), ("hd95_mean", None, "min"), ("fold0/train_loss", None, "min"),
    ("val_cldice", None, "max"), ("lr", None, None), ("score", {"score": "min"}, "min"),
])
def test_direction(name: str, rules: dict[str, str] | None, expected: str | None) -> None:
    assert stats.direction(name, rules) == expected


def _run(rid: str, loss: str, offset: float, splits: Any = SPLITS_2) -> dict[str, Any]:
    rows = seg_volumes(offset, splits)
    return {"run_id": rid, "status": "completed", "config": {"overrides.loss": loss},
            "metrics_final": {"dsc_mean": statistics.fmean(r["dsc"] for r in rows)},
            "per_volume": rows, "splits": {"k": len(splits), "seed": 0,
                                           "val": [sorted(v) for v in splits]}}


def test_volume_comparison_pairs_the_same_volumes() -> None:
    runs = [_run("a", "dice_ce", 0.0), _run("b", "cldice", 0.05), _run("c", "warp", -0.01)]
    result = compare.volume_comparison(runs, "loss")
    assert result is not None and result["reference"] == "dice_ce"
    assert [g["name"] for g in result["groups"]] == ["dice_ce", "cldice", "warp"]
    assert all(g["n_volumes"] == 8 for g in result["groups"])
    dsc = {t["group"]: t for t in result["tests"] if t["metric"] == "dsc"}
    assert dsc["cldice"]["mean_diff"] == pytest.approx(0.05)
    assert dsc["cldice"]["p_value"] == pytest.approx(2 / 256) and dsc["cldice"]["exact"]
    assert dsc["cldice"]["better"] == "cldice" and dsc["warp"]["better"] == "reference"
    hd95 = {t["group"]: t for t in result["tests"] if t["metric"] == "hd95"}
    assert hd95["cldice"]["better"] == "cldice"  # lower distance is better
    assert result["refused"] == []


def test_different_splits_are_refused_with_the_reason() -> None:
    other = [[*SPLITS_2[0][:-1], SPLITS_2[1][0]],
             [SPLITS_2[0][-1], *SPLITS_2[1][1:]]]
    runs = [_run("a", "dice_ce", 0.0), _run("b", "cldice", 0.05, other)]
    result = compare.volume_comparison(runs, "loss")
    assert result is not None and result["tests"] == []
    (refused,) = result["refused"]
    assert refused["group"] == "cldice"
    assert refused["reason"].startswith("splits differ: fold 0 validates on different volumes")
    assert "vol_06" in refused["reason"] and "vol_01" in refused["reason"]
    runs[1]["splits"] = {"k": 3, "seed": 0, "val": [[], [], []]}
    assert "k=2 and k=3" in compare.volume_comparison(runs, "loss")["refused"][0]["reason"]
    runs[1]["splits"] = None
    assert "has no out/splits.json" in compare.volume_comparison(runs, "loss")[
        "refused"][0]["reason"]


def test_group_runs_mean_and_ci_over_runs() -> None:
    runs = [_run(f"s{i}", "dice_ce" if i < 3 else "warp", 0.01 * i) for i in range(5)]
    groups = compare.group_runs(runs, "loss", ["dsc_mean"])
    assert [(g["name"], g["n_runs"]) for g in groups] == [("dice_ce", 3), ("warp", 2)]
    cell = groups[0]["metrics"]["dsc_mean"]
    assert cell["ci_low"] <= cell["mean"] <= cell["ci_high"] and cell["n"] == 3
    with pytest.raises(UsageError, match="no selected run has that config key"):
        compare.group_runs(runs, "nokey", ["dsc_mean"])


def _flags(**run: Any) -> list[tuple[str, str]]:
    base = {"run_id": "r", "status": "completed", "metrics_final": {}, "failure": None}
    return [(f.kind, f.message) for f in analysis.run_flags({**base, **run})]


def test_flags_for_what_went_wrong() -> None:
    loss = lambda values: {"train_loss": [[i, v] for i, v in enumerate(values)]}  # noqa: E731
    assert _flags(series=loss([2, 1.5, 1.2, 1.0, 0.9, 0.8])) == []
    assert _flags(series=loss([1, 0.9, 1.1, 1.5, 3.0, 9.0]))[0][0] == "diverging"
    assert _flags(series=loss([2, 0.5, 0.4, 1.3, 1.4, 1.5]))[0][0] == "diverging"
    assert _flags(series=loss([2, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]))[0][0] == "plateau"
    assert _flags(metrics_final={"dsc_mean": None}) == [
        ("non_finite", "non-finite final metrics: dsc_mean")]
    watchdog = _flags(status="aborted", failure={"class": "memory", "message": "rss 3 GB"})
    assert watchdog == [("watchdog", "stopped by the watchdog: rss 3 GB")]
    assert _flags(status="stalled", reason="heartbeat 40 s old")[0] == (
        "no_progress", "heartbeat 40 s old")
    folds = {"fold0/dsc_mean": 0.8, "fold1/dsc_mean": 0.78, "fold2/dsc_mean": 0.4}
    assert _flags(metrics_final=folds) == [
        ("weak_fold", "fold 2 is much worse on dsc_mean: 0.4 vs 0.79 for the others")]
    assert _flags(status="invalid", reason="spec.json: bad") == [("invalid", "spec.json: bad")]


def test_changes_mark_the_better_run() -> None:
    runs = [{"run_id": "a", "status": "completed", "metrics_final": {"dsc_mean": 0.5,
                                                                      "hd95_mean": 10.0}},
            {"run_id": "b", "status": "completed", "metrics_final": {"dsc_mean": 0.6,
                                                                      "hd95_mean": 12.0}}]
    rows = {r["metric"]: r for r in analysis.changes(runs, ["dsc_mean", "hd95_mean"])}
    assert rows["dsc_mean"]["better"] == "b" and rows["dsc_mean"]["percent"] == pytest.approx(20)
    assert rows["hd95_mean"]["better"] == "a" and rows["hd95_mean"]["delta"] == 2.0
