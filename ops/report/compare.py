"""Comparison with statistics: ``--group-by`` and the per-volume comparison of a loss sweep.

``group_runs`` aggregates the runs of each group (a preset, a loss, any config key): per
metric the mean of the runs' final values with a bootstrap CI over runs.

``volume_comparison`` is the loss x metric table: per group the mean of each per-volume metric
(DSC, clDice, MASD, HD95 from ``out/per_volume.json``) with a bootstrap CI over volumes, and a
paired sign-flip test of each group against the reference over the *same* validation volumes.
Runs are paired only when their cross-validation splits (``out/splits.json``) are identical;
otherwise the pair is refused with the difference named.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ops.errors import UsageError
from ops.report import stats

VOLUME_METRICS = ("dsc", "cldice", "masd", "hd95")
VolumeKey = tuple[Any, str]


def group_key(runs: Sequence[dict[str, Any]], key: str) -> str:
    """``preset``, ``run`` (each run its own group), ``lineage`` (each run with the evals of
    it), an exact dotted config key, or the one config key ending in ``.KEY``."""
    if key in ("preset", "status", "kind", "lineage"):
        return key
    if key == "run":
        return "run_id"
    keys = {k for r in runs for k in (r.get("config") or {})}
    if key in keys:
        return f"config:{key}"
    matches = sorted(k for k in keys if k.endswith("." + key))
    if len(matches) == 1:
        return f"config:{matches[0]}"
    if matches:
        raise UsageError(f"--group-by {key} is ambiguous: {', '.join(matches[:6])}")
    raise UsageError(f"--group-by {key}: no selected run has that config key",
                     hint="use preset, or a dotted key as the table shows it")


def group_of(run: dict[str, Any], resolved: str) -> str:
    if resolved == "lineage":  # an eval joins the run whose checkpoint it scored
        parent = run.get("parent_run_id")
        return str(parent if run.get("kind") == "eval" and parent else run.get("run_id"))
    if resolved.startswith("config:"):
        value = (run.get("config") or {}).get(resolved[7:])
    else:
        value = run.get(resolved)
    return "(none)" if value is None else str(value)


def group_runs(runs: Sequence[dict[str, Any]], key: str,
               metrics: Sequence[str]) -> list[dict[str, Any]]:
    resolved = group_key(runs, key)
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        if run.get("status") != "invalid":
            groups.setdefault(group_of(run, resolved), []).append(run)
    out = []
    for name, members in groups.items():
        summary: dict[str, Any] = {}
        for metric in metrics:
            values = [v for r in members
                      if (v := (r.get("metrics_final") or {}).get(metric)) is not None]
            interval = stats.bootstrap_ci(values)
            if interval is not None:
                summary[metric] = interval.to_json()
        out.append({"name": name, "n_runs": len(members),
                    "run_ids": [r["run_id"] for r in members], "metrics": summary})
    return out


def _volumes(members: Sequence[dict[str, Any]]) -> dict[str, dict[VolumeKey, float]] | None:
    """Metric -> (fold, volume) -> value, averaged over the group's runs; None without rows."""
    sums: dict[str, dict[VolumeKey, list[float]]] = {m: {} for m in VOLUME_METRICS}
    found = False
    for run in members:
        for row in run.get("per_volume") or []:
            found = True
            for metric in VOLUME_METRICS:
                if row.get(metric) is not None:
                    sums[metric].setdefault((row.get("fold"), row["name"]), []).append(
                        float(row[metric]))
    if not found:
        return None
    return {m: {k: sum(v) / len(v) for k, v in by_key.items()} for m, by_key in sums.items()}


def splits_problem(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """Why two runs cannot be paired volume by volume, or None when their splits agree."""
    sa, sb = a.get("splits"), b.get("splits")
    names = f"{a['run_id']} and {b['run_id']}"
    if sa is None or sb is None:
        missing = a["run_id"] if sa is None else b["run_id"]
        return f"{missing} has no out/splits.json, so its validation volumes are unknown"
    if sa.get("k") != sb.get("k"):
        return f"splits differ: {names} use k={sa.get('k')} and k={sb.get('k')} folds"
    for fold, (va, vb) in enumerate(zip(sa.get("val") or [], sb.get("val") or [],
                                        strict=False)):
        if va != vb:
            only_a = sorted(set(va) - set(vb))[:3]
            only_b = sorted(set(vb) - set(va))[:3]
            return (f"splits differ: fold {fold} validates on different volumes "
                    f"(only in {a['run_id']}: {only_a}; only in {b['run_id']}: {only_b})")
    return None


def volume_comparison(runs: Sequence[dict[str, Any]], key: str,
                      reference: str | None = None) -> dict[str, Any] | None:
    """The loss x metric table with CIs and paired tests; None when no run has per-volume
    metrics."""
    resolved = group_key(runs, key)
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        if run.get("status") != "invalid" and run.get("per_volume"):
            groups.setdefault(group_of(run, resolved), []).append(run)
    if not groups:
        return None
    ref = reference if reference is not None else next(iter(groups))
    if ref not in groups:
        raise UsageError(f"--reference {ref}: no group of that name with per-volume metrics "
                         f"(groups: {', '.join(groups)})")
    table = [_group_row(name, members) for name, members in groups.items()]
    tests, refused = [], []
    for name, members in groups.items():
        if name == ref:
            continue
        problem = _pair_problem(groups[ref], members)
        if problem:
            refused.append({"group": name, "reason": problem})
            continue
        tests += _tests(name, groups[ref], members)
    return {"group_by": key, "reference": ref, "metrics": list(VOLUME_METRICS),
            "groups": table, "tests": tests, "refused": refused}


def _group_row(name: str, members: Sequence[dict[str, Any]]) -> dict[str, Any]:
    volumes = _volumes(members) or {}
    metrics = {}
    for metric in VOLUME_METRICS:
        interval = stats.bootstrap_ci(list(volumes.get(metric, {}).values()))
        if interval is not None:
            metrics[metric] = interval.to_json()
    n_volumes = max((len(v) for v in volumes.values()), default=0)
    return {"name": name, "run_ids": [r["run_id"] for r in members], "n_volumes": n_volumes,
            "metrics": metrics}


def _pair_problem(ref: Sequence[dict[str, Any]], other: Sequence[dict[str, Any]]) -> str | None:
    first = ref[0]
    for run in [*ref[1:], *other]:
        problem = splits_problem(first, run)
        if problem:
            return problem
    return None


def _tests(name: str, ref: Sequence[dict[str, Any]],
           other: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    a_vol, b_vol = _volumes(ref) or {}, _volumes(other) or {}
    out = []
    for metric in VOLUME_METRICS:
        a, b = a_vol.get(metric, {}), b_vol.get(metric, {})
        common = sorted(set(a) & set(b), key=lambda k: (str(k[0]), k[1]))
        if len(common) < 2:
            continue
        result = stats.paired_test([a[k] for k in common], [b[k] for k in common])
        sense = stats.direction(metric)
        better = None
        if sense and result.mean_diff != 0:
            better = name if (result.mean_diff > 0) == (sense == "max") else "reference"
        out.append({"group": name, "metric": metric, **result.to_json(), "better": better})
    return out
