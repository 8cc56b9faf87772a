"""What spec.json says about how a run is started: tmux (default) or SLURM, and torchrun.

A host with `"launcher": "slurm"` gets `launcher` and `slurm` blocks: the host's sbatch options
with the preset's `resources` over them, the host's `extra` options and the TERM lead before
the time limit. A preset with `distributed` gets `workload.distributed`, which the runner turns
into `torchrun --standalone --nproc_per_node=N`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ops.config.loader import LoadedConfig
from runner.workload_command import rank_launcher

if TYPE_CHECKING:  # the models are imported where the blocks are built, not with this module
    from ops.config.models import CommandPreset, HostConfig, SlurmResources


def _options(resources: SlurmResources) -> dict[str, Any]:
    from ops.config.models import SlurmResources, as_json

    return {k: v for k, v in as_json(resources).items()
            if k in SlurmResources.model_fields and v is not None}


def slurm_block(host: HostConfig, preset: CommandPreset) -> dict[str, Any]:
    from ops.config.models import as_json

    options = {**_options(host.slurm), **_options(preset.resources)}
    distributed = preset.distributed
    workload = {"distributed": as_json(distributed) if distributed else None}
    # torchrun in one task needs a CPU a rank; srun gives each rank a task of its own
    if distributed is not None and rank_launcher(workload, options) == "torchrun":
        options["cpus_per_task"] = max(int(options.get("cpus_per_task") or 1),
                                       distributed.nproc_per_node)
    return {"options": options, "extra": list(host.slurm.extra),
            "signal_before_s": host.slurm.signal_before_s, "job_id": None}


def apply(spec: dict[str, Any], loaded: LoadedConfig, host_name: str,
          preset: CommandPreset) -> dict[str, Any]:
    """Add the launcher and distributed blocks to ``spec`` (in place) and return it."""
    from ops.config.models import as_json

    host = loaded.config.hosts.get(host_name)
    if host is not None and host.launcher == "slurm":
        spec["launcher"] = "slurm"
        spec["slurm"] = slurm_block(host, preset)
    if preset.distributed is not None:
        spec["workload"]["distributed"] = as_json(preset.distributed)
    return spec
