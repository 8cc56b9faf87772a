"""`ops run submit --dry-run`: the spec and argv a submit would use, preflight, and an
estimate of duration and cost from earlier runs. Launches nothing and writes nothing."""

from __future__ import annotations

import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from ops.config.loader import LoadedConfig, resolve_preset
from ops.errors import OpsError
from ops.gitinfo import code_info
from ops.hosts.base import call_runner
from ops.pods.state import PodStore
from ops.services.preflight import run_preflight
from ops.services.runs import Target, checked_runs
from ops.services.spec import secret_values
from ops.services.submit import _spec as submit_spec
from runner import contract, slurm
from runner.workload_command import build_argv, placeholder_values

# overrides a run's length is proportional to, in the order they are looked for
SCALE_KEYS = ("max_steps", "steps", "max_iters", "iters", "max_epochs", "epochs")
HISTORY_LIMIT = 10


def dry_run(loaded: LoadedConfig, target: Target, preset: str, sets: Sequence[str] = (), *,
            debug: bool = False, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    resolved = resolve_preset(loaded.config, preset, sets, debug=debug)
    secrets = secret_values(loaded, resolved, os.environ if environ is None else environ)
    run_id = contract.new_run_id(preset)
    spec = submit_spec(loaded, target, resolved, run_id, secrets=secrets,
                       code=code_info(loaded.repo_root))
    run_dir = PurePosixPath(target.paths.outputs_root) / run_id
    python = "python3"
    argv = build_argv(spec["workload"], placeholder_values(spec, run_dir, python),  # type: ignore[arg-type]
                      slurm.rank_options(spec))
    check = run_preflight(loaded, target, preset)
    estimate = estimate_for(target, preset, dict(resolved.preset.overrides),
                            str(check.get("gpu_model") or "cpu"),
                            _price(loaded, target.host.name))
    return {"schema": "ops.run_dry_run/1", "host": target.host.name, "run_id": run_id,
            "spec": spec, "argv": argv, "preflight": check, "estimate": estimate}


def _price(loaded: LoadedConfig, host: str) -> float | None:
    pod = PodStore(loaded.repo_root).find(host)
    return pod.price_per_hour if pod is not None else None


def _scale(overrides: Mapping[str, Any], earlier: Mapping[str, Any]) -> float:
    for key in SCALE_KEYS:
        now, then = overrides.get(key), earlier.get(key)
        if isinstance(now, (int, float)) and isinstance(then, (int, float)) and then > 0:
            return float(now) / float(then)
    return 1.0


def _setup_seconds(target: Target, run_dir: str, elapsed: float) -> float:
    """Seconds from the wrapper's start to the workload's (snapshots, python start-up): a
    cost that does not grow with the run's steps, so it is not scaled with them. 0 when the
    record does not say (an older run, a workload that never started, an untrusted value)."""
    try:
        meta = call_runner(target.host, ["show", run_dir, contract.METADATA])["doc"]
        started = contract.parse_iso(str(meta["started_at"])).timestamp()
        workload = meta["process"].get("workload_start_time")
    except (OpsError, KeyError, TypeError, AttributeError, ValueError):
        return 0.0
    if not isinstance(workload, (int, float)) or isinstance(workload, bool):
        return 0.0
    return min(max(float(workload) - started, 0.0), elapsed)


def estimate_for(target: Target, preset: str, overrides: Mapping[str, Any], gpu_model: str,
                 price_per_hour: float | None) -> dict[str, Any]:
    runs = checked_runs(call_runner(target.host, ["status", target.paths.outputs_root]))
    done = [r for r in runs if r.get("preset") == preset and r.get("status") == "completed"
            and isinstance(r.get("elapsed_s"), (int, float))]
    done.sort(key=lambda r: str(r.get("ended_at") or ""), reverse=True)
    samples: list[float] = []
    for run in done[:HISTORY_LIMIT]:
        run_dir = target.run_dir(str(run["run_id"]))
        try:
            spec = call_runner(target.host, ["show", run_dir, contract.SPEC])["doc"]
            env = call_runner(target.host, ["show", run_dir, contract.ENV_SNAPSHOT])["doc"]
        except (OpsError, KeyError):
            continue
        gpus = env.get("gpus") if isinstance(env, dict) else None
        model = gpus[0].get("name") if isinstance(gpus, list) and gpus \
            and isinstance(gpus[0], dict) else "cpu"
        if model != gpu_model:
            continue
        earlier = spec.get("workload", {}).get("overrides", {}) if isinstance(spec, dict) else {}
        elapsed = float(run["elapsed_s"])
        setup = _setup_seconds(target, run_dir, elapsed)
        samples.append(setup + (elapsed - setup) * _scale(overrides, earlier))
    if not samples:
        return {"runs": 0, "gpu_model": gpu_model, "duration_s": None, "cost": None,
                "note": f"no completed run of {preset} on {gpu_model} here: no estimate"}
    duration = statistics.median(samples)
    cost = None if price_per_hour is None else round(duration / 3600 * price_per_hour, 4)
    return {"runs": len(samples), "gpu_model": gpu_model, "duration_s": round(duration, 2),
            "price_per_hour": price_per_hour, "cost": cost,
            "note": f"median of {len(samples)} completed run(s) of {preset} on {gpu_model}"}


def dry_run_text(doc: dict[str, Any]) -> str:
    est = doc["estimate"]
    lines = [f"dry run of {doc['spec']['preset']} on {doc['host']} (nothing launched)",
             f"  argv: {' '.join(doc['argv'])}",
             f"  preflight: {doc['preflight'].get('status')} "
             f"(profile {doc['preflight'].get('profile')})"]
    if est["duration_s"] is None:
        lines.append(f"  estimate: {est['note']}")
    else:
        cost = f", ${est['cost']:.2f}" if est.get("cost") is not None else ""
        lines.append(f"  estimate: {est['duration_s']:.1f} s{cost} ({est['note']})")
    return "\n".join(lines)
