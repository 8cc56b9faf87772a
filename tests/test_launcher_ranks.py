"""What spec.json asks of SLURM for a distributed preset: a CPU a rank only when torchrun runs
every rank inside one task; when srun starts the ranks, each is a task of its own."""

from __future__ import annotations

from typing import Any

import pytest

from ops.config.models import CommandPreset, HostConfig
from ops.services.launcher import slurm_block


def _preset(**resources: Any) -> CommandPreset:
    return CommandPreset.model_validate({
        "kind": "command", "command": ["{python}", "train.py"],
        "distributed": {"nproc_per_node": 4}, "resources": resources})


HOST = HostConfig.model_validate({"address": "login", "launcher": "slurm",
                                  "slurm": {"cpus_per_task": 2}})


@pytest.mark.parametrize(("resources", "cpus"), [
    pytest.param({}, 4, id="torchrun-in-one-task-gets-a-cpu-a-rank"),
    pytest.param({"gpus": 1}, 4, id="torchrun-beside-one-gpu-still-a-cpu-a-rank"),
    pytest.param({"gpus": 4}, 2, id="srun-over-gpus-is-a-task-a-rank"),
    pytest.param({"nodes": 2}, 2, id="srun-over-nodes-without-gpus-is-a-task-a-rank"),
])
def test_cpus_per_task_follows_the_rank_launcher(resources: dict[str, Any], cpus: int) -> None:
    assert slurm_block(HOST, _preset(**resources))["options"]["cpus_per_task"] == cpus
