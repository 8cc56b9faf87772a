"""Building spec.json: everything the runner needs to run a preset, and no secret values."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ops.config.loader import LoadedConfig, ResolvedPreset
from ops.errors import UsageError
from runner import contract

if TYPE_CHECKING:  # the models are imported where a spec is built, not with this module
    from ops.config.models import CommandPreset


class HostPaths(NamedTuple):
    """Where things live on the host a run goes to."""

    outputs_root: str
    ops_home: str


def secret_values(loaded: LoadedConfig, resolved: ResolvedPreset,
                  environ: Mapping[str, str]) -> dict[str, str]:
    """Values of the forwarded secrets: a preset's own are required, the project's optional."""
    return forwarded_secrets(resolved.name, resolved.preset.secrets_env,
                             loaded.config.secrets.env, environ)


def forwarded_secrets(preset: str, required: Sequence[str], optional: Sequence[str],
                      environ: Mapping[str, str]) -> dict[str, str]:
    """The values in ``environ`` of the secrets ``preset`` forwards, by name: every one of
    ``required`` must be set; those of ``optional`` that are not set are left out."""
    missing = [n for n in required if not environ.get(n)]
    if missing:
        raise UsageError(f"preset {preset!r} needs {', '.join(missing)} in the environment",
                         hint="export them in the shell you run ops from; they are sent to the "
                              "host out of band and never written to the run dir")
    names = [*optional, *required]
    return {n: environ[n] for n in dict.fromkeys(names) if environ.get(n)}


def cache_env(loaded: LoadedConfig, expand: Callable[[str], str]) -> dict[str, str]:
    """HF_HOME and the dataset cache of project.json storage, as paths on the host (``expand``
    is the host's `~`); read from the config's dump, so it needs no models."""
    env: dict[str, str] = {}
    if hf_home := loaded.setting("storage", "hf_home"):
        env["HF_HOME"] = expand(hf_home)
    if datasets_root := loaded.setting("storage", "datasets_root"):
        root = expand(datasets_root)
        env.update(OPS_DATASETS_ROOT=root, HF_DATASETS_CACHE=root)
    return env


def eval_needs_parent(preset: str) -> UsageError:
    """The error for an eval preset submitted without the run it evaluates."""
    return UsageError(f"preset {preset!r} is an eval: it needs the run to evaluate",
                      hint=f"ops run submit -p {preset} --from RUN_ID")


def secrets_store(paths: HostPaths, run_id: str) -> str:
    """Where the host keeps a run's secret values until the run has read them."""
    return f"{paths.ops_home.rstrip('/')}/secrets/{run_id}.json"


def wandb_run_id(mode: str, run_id: str) -> str | None:
    """The W&B run id of a run (None when W&B is off): the run id in W&B's alphabet."""
    return None if mode == "disabled" else re.sub(r"[^A-Za-z0-9_-]", "-", run_id)[:64]


DATA_DIR_OVERRIDE = "data_dir"


def _with_data_dir(preset: CommandPreset) -> tuple[CommandPreset, str | None]:
    """The preset whose dataset dir is the one the workload is given.

    An override named data_dir (the built-in trainer's parameter; `--set data_dir=...`) is
    rendered into the argv after the command, so it is what the workload reads: the dataset
    record ({data_dir}, dataset_manifest.json) must name that directory, not the preset's.
    Returns the preset and the directory it replaced (None when nothing changed)."""
    value = preset.overrides.get(DATA_DIR_OVERRIDE)
    if preset.dataset is None or not isinstance(value, str) or not value \
            or value == preset.dataset.dir:
        return preset, None
    dataset = preset.dataset.model_copy(update={"dir": value})
    return preset.model_copy(update={"dataset": dataset}), preset.dataset.dir


def _dataset_block(preset: CommandPreset, replaced: str | None) -> dict[str, Any] | None:
    if preset.dataset is None:
        return None
    from ops.config.models import as_json

    block: dict[str, Any] = as_json(preset.dataset)
    if replaced is not None:  # say where the dir came from, and what the preset had
        block.update(dir_from=f"overrides.{DATA_DIR_OVERRIDE}", preset_dir=replaced)
    return block


def _with_wandb(preset: CommandPreset, mode: str, project: str) -> CommandPreset:
    """The built-in trainer logs to W&B as project.json says, unless the preset says else."""
    from ops.config.models import MonaiSegPreset

    if not isinstance(preset, MonaiSegPreset) or mode == "disabled" or "wandb" in preset.overrides:
        return preset
    overrides = {**preset.overrides, "wandb": mode, "wandb_project": project}
    return preset.model_copy(update={"overrides": overrides})


def build_spec(loaded: LoadedConfig, resolved: ResolvedPreset, run_id: str, *, paths: HostPaths,
               code: Mapping[str, Any], secret_names: list[str],
               parent_run_id: str | None = None) -> dict[str, Any]:
    from ops.config.models import EvalPreset, ServicePreset, as_json

    cfg = loaded.config
    if isinstance(resolved.preset, EvalPreset) and not parent_run_id:
        raise eval_needs_parent(resolved.name)
    preset, replaced_dir = _with_data_dir(resolved.preset)
    preset = _with_wandb(preset, cfg.storage.wandb.mode, cfg.storage.wandb.project
                         or cfg.project.name)
    limits = preset.limits
    mib = 2**20
    return {
        "schema": contract.schema_tag("spec"),
        "run_id": run_id,
        "project": cfg.project.name,
        "preset": resolved.name,
        "kind": preset.kind,
        "created_at": contract.iso(),
        "parent_run_id": parent_run_id,
        "sweep_id": None,
        "code": dict(code),
        "workload": {
            "command": list(preset.command), "config": preset.config,
            "overrides": dict(preset.overrides), "override_format": preset.override_format,
            "cwd": preset.cwd, "env": dict(preset.env), "out_dir": preset.out_dir,
            "python": preset.python,
        },
        "config": as_json(preset),
        "overrides": dict(resolved.overrides_set),
        "limits": {
            "rss_limit_bytes": int(limits.rss_limit_mb * mib) if limits.rss_limit_mb else None,
            "gpu_mem_limit_bytes": (int(limits.gpu_mem_limit_mb * mib)
                                    if limits.gpu_mem_limit_mb else None),
            "grace_sec": limits.grace_sec, "timeout_sec": limits.timeout_sec,
            "no_progress_sec": limits.no_progress_sec,
        },
        "heartbeat": {"interval_s": cfg.tmux.watch_interval_sec,
                      "stall_after_intervals": cfg.tmux.stall_after_intervals},
        "metrics": {"from_stdout": [{"pattern": m.pattern} for m in preset.metrics_from_stdout],
                    "summary_from": preset.summary_from, "best": dict(preset.best)},
        "dataset": _dataset_block(preset, replaced_dir),
        "eval": {"checkpoint": preset.checkpoint} if isinstance(preset, EvalPreset) else None,
        "service": (as_json(preset.service)
                    if isinstance(preset, ServicePreset) else None),
        "secrets": {
            "env_names": secret_names,
            "files": [*cfg.secrets.files, *preset.secrets_files],
            "store": secrets_store(paths, run_id),
        },
        "tmux": {"socket": cfg.tmux.socket},
        "wandb": {"mode": cfg.storage.wandb.mode,
                  "project": cfg.storage.wandb.project or cfg.project.name,
                  "entity": cfg.storage.wandb.entity,
                  "run_id": wandb_run_id(cfg.storage.wandb.mode, run_id),
                  "url": None},
    }
