"""Statistics of a report: bootstrap confidence intervals and a paired sign-flip test.

Standard library only (random + statistics), which is plenty at these sizes (tens to a few
hundred validation volumes): the laptop side of ops never needs numpy. Every function takes a
seed, so a report is reproducible.

- ``bootstrap_ci``: percentile bootstrap of the mean (resample with replacement).
- ``paired_test``: paired differences ``b - a`` over the same items; a two-sided sign-flip
  permutation test of "mean difference is zero" (exact, all 2**n sign patterns, for n <= 12;
  otherwise ``n_perm`` random patterns with the +1 correction), the mean difference with a
  bootstrap CI, and Cohen's d_z (mean difference over its standard deviation).
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

N_BOOT = 2000
N_PERM = 10000
EXACT_MAX_N = 12
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float | None
    high: float | None
    n: int

    def to_json(self) -> dict[str, float | int | None]:
        return {"mean": self.mean, "ci_low": self.low, "ci_high": self.high, "n": self.n}


@dataclass(frozen=True)
class PairedResult:
    n: int
    mean_diff: float
    ci_low: float | None
    ci_high: float | None
    p_value: float
    effect_dz: float | None
    exact: bool

    def to_json(self) -> dict[str, float | int | bool | None]:
        return {"n": self.n, "mean_diff": self.mean_diff, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "p_value": self.p_value, "effect_dz": self.effect_dz,
                "exact": self.exact}


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default method)."""
    pos = q * (len(sorted_values) - 1)
    lower = math.floor(pos)
    upper = min(lower + 1, len(sorted_values) - 1)
    frac = pos - lower
    return sorted_values[lower] * (1 - frac) + sorted_values[upper] * frac


def bootstrap_ci(values: Sequence[float], *, seed: int = 0, n_boot: int = N_BOOT,
                 level: float = LEVEL) -> Interval | None:
    """Mean and percentile-bootstrap CI of ``values``; no CI for fewer than two values."""
    data = [float(v) for v in values]
    if not data:
        return None
    mean = statistics.fmean(data)
    if len(data) < 2:
        return Interval(mean, None, None, len(data))
    rng = random.Random(seed)  # noqa: S311 - resampling for statistics, seeded on purpose
    n = len(data)
    means = sorted(math.fsum(rng.choices(data, k=n)) / n for _ in range(n_boot))
    tail = (1.0 - level) / 2
    return Interval(mean, _quantile(means, tail), _quantile(means, 1.0 - tail), n)


def paired_test(a: Sequence[float], b: Sequence[float], *, seed: int = 0,
                n_perm: int = N_PERM, n_boot: int = N_BOOT) -> PairedResult:
    """Compare ``b`` against ``a`` item by item (the same volumes, in the same order)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length ({len(a)} vs {len(b)})")
    diffs = [float(y) - float(x) for x, y in zip(a, b, strict=True)]
    if not diffs:
        raise ValueError("no paired items")
    observed = abs(statistics.fmean(diffs))
    p_value, exact = _sign_flip_p(diffs, observed, seed, n_perm)
    ci = bootstrap_ci(diffs, seed=seed, n_boot=n_boot)
    sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    effect = statistics.fmean(diffs) / sd if sd > 0 else None
    return PairedResult(len(diffs), statistics.fmean(diffs), ci.low if ci else None,
                        ci.high if ci else None, p_value, effect, exact)


def _sign_flip_p(diffs: list[float], observed: float, seed: int,
                 n_perm: int) -> tuple[float, bool]:
    n = len(diffs)
    tolerance = 1e-12 * max(1.0, observed)
    if n <= EXACT_MAX_N:
        hits = total = 0
        for signs in itertools.product((1.0, -1.0), repeat=n):
            total += 1
            stat = abs(math.fsum(s * d for s, d in zip(signs, diffs, strict=True)) / n)
            hits += stat >= observed - tolerance
        return hits / total, True
    rng = random.Random(seed)  # noqa: S311 - random sign patterns, seeded on purpose
    hits = 0
    for _ in range(n_perm):
        stat = abs(math.fsum(d if rng.random() < 0.5 else -d for d in diffs) / n)
        hits += stat >= observed - tolerance
    return (hits + 1) / (n_perm + 1), False


# direction of the metrics a segmentation report knows, by name (a preset's `best` wins)
LOWER_IS_BETTER = ("loss", "masd", "hd95", "hd", "error", "err", "time", "seconds")
HIGHER_IS_BETTER = ("dsc", "dice", "cldice", "acc", "accuracy", "iou", "f1", "auc")


def direction(metric: str, rules: dict[str, str] | None = None) -> str | None:
    """``"min"``, ``"max"`` or None (unknown) for a metric name."""
    if rules and rules.get(metric) in ("min", "max"):
        return rules[metric]
    words = metric.lower().replace("/", "_").split("_")
    if any(w in LOWER_IS_BETTER for w in words):
        return "min"
    if any(w in HIGHER_IS_BETTER for w in words):
        return "max"
    return None
