"""Turning a `command` preset into argv, cwd and environment on the host.

Placeholders are replaced only where they are spelled exactly as one of PLACEHOLDERS, so a
literal brace in an argument (``python -c "print({1: 2})"``) passes through untouched.

A preset with ``distributed.nproc_per_node`` N > 1 runs one process a rank, started by one of
RANK_LAUNCHERS: torchrun on a pod (and in a one-node SLURM job without GPUs), srun in a SLURM
job with more than one GPU or node (N tasks a node, each given RANK, LOCAL_RANK, WORLD_SIZE,
and the wrapper's node as MASTER_ADDR:MASTER_PORT).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from runner.envpolicy import DISTRIBUTED_ENV, scrubbed_env

PLACEHOLDERS = ("run_dir", "out_dir", "checkpoints_dir", "code_dir", "data_dir", "run_id", "python",
                "parent_run_dir", "checkpoint", "port")  # the last three: eval and service kinds
_PLACEHOLDER_RE = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


def render(text: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def override_args(overrides: Mapping[str, Any], template: str) -> list[str]:
    """Render overrides in the preset's syntax; a space in the template splits argv items."""
    args: list[str] = []
    for key, value in overrides.items():
        for token in template.split():
            args.append(token.replace("{key}", key).replace("{value}", _format_value(value)))
    return args


def _format_value(value: Any) -> str:
    return str(value)  # Python spelling (True, 0.5): what literal_eval-based configurators read


def build_argv(workload: Mapping[str, Any], values: Mapping[str, str],
               slurm_options: Mapping[str, Any] | None = None) -> list[str]:
    """The workload's argv; with several ranks, behind their launcher. ``slurm_options`` are
    the sbatch options of a run launched by SLURM (None elsewhere)."""
    argv = [render(a, values) for a in workload["command"]]
    if workload.get("config"):
        argv.append(render(workload["config"], values))
    argv += [render(a, values) for a in override_args(workload.get("overrides", {}),
                                                     workload.get("override_format",
                                                                  "--{key}={value}"))]
    launcher = rank_launcher(workload, slurm_options)
    if launcher == "srun":
        return srun_argv(argv, nproc_per_node(workload), slurm_nodes(slurm_options or {}))
    if launcher == "torchrun":
        return torchrun_argv(argv, workload, values)
    return argv


def _count(value: Any) -> int:
    """A SLURM count: 2, "2" or "a100:2" (type:count); 0 when absent or not a count."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    tail = str(value or "").rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def slurm_nodes(options: Mapping[str, Any]) -> int:
    return max(1, _count(options.get("nodes")))


def rank_launcher(workload: Mapping[str, Any],
                  slurm_options: Mapping[str, Any] | None = None) -> str | None:
    """Which of RANK_LAUNCHERS starts the ranks: None for one process; srun in a SLURM job with
    more than one GPU or node (SLURM places the tasks and owns the devices); torchrun else."""
    if nproc_per_node(workload) <= 1:
        return None
    if slurm_options is None:
        return "torchrun"
    nodes = slurm_nodes(slurm_options)
    gpus = max(_count(slurm_options.get("gpus")),
               _count(slurm_options.get("gpus_per_node")) * nodes)
    return "srun" if gpus > 1 or nodes > 1 else "torchrun"


def world_size(workload: Mapping[str, Any],
               slurm_options: Mapping[str, Any] | None = None) -> int:
    nproc = nproc_per_node(workload)
    if rank_launcher(workload, slurm_options) == "srun":
        return nproc * slurm_nodes(slurm_options or {})
    return nproc


# each srun task turns SLURM's numbering into torch's before it becomes the workload
SRUN_RANK_SHIM = ('export RANK="$SLURM_PROCID" LOCAL_RANK="$SLURM_LOCALID" '
                  'WORLD_SIZE="$SLURM_NTASKS" LOCAL_WORLD_SIZE="{nproc}"; exec "$@"')


def srun_argv(argv: list[str], nproc: int, nodes: int) -> list[str]:
    """The command as N tasks a node of the job's allocation (`srun`); when one task fails,
    SLURM ends the others (`--kill-on-bad-exit`); the wrapper's first stop signal (SIGINT)
    ends the step at once (`--quit-on-interrupt`; a plain srun only prints its tasks' state)."""
    return ["srun", f"--nodes={nodes}", f"--ntasks={nproc * nodes}",
            f"--ntasks-per-node={nproc}", "--kill-on-bad-exit=1", "--quit-on-interrupt",
            "--input=none",
            "/bin/sh", "-c", SRUN_RANK_SHIM.format(nproc=nproc), "ops-rank", *argv]


def rank_env(launcher: str | None) -> dict[str, str]:
    """What srun's ranks need beyond the run's environment: the job this wrapper runs in (its
    SLURM_* variables, so srun starts a step of this job, not a new job) and where the ranks
    meet: this node (the job's first, where the wrapper runs) and a port free on it now.
    torchrun --standalone needs none of it."""
    if launcher != "srun":
        return {}
    env = {k: v for k, v in os.environ.items() if k.startswith("SLURM")}
    with socket.socket() as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    env.update(MASTER_ADDR=os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
               MASTER_PORT=str(port))
    return env


RANK_LAUNCHERS = ("torchrun", "srun")


def nproc_per_node(workload: Mapping[str, Any]) -> int:
    block = workload.get("distributed")
    value = block.get("nproc_per_node") if isinstance(block, Mapping) else None
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 64:
        return value
    return 1


def torchrun_argv(argv: list[str], workload: Mapping[str, Any],
                  values: Mapping[str, str]) -> list[str]:
    """With `distributed.nproc_per_node` N > 1: the same command under `torchrun --standalone
    --nproc_per_node=N` (torch.distributed.run of the run's interpreter). A Python command
    (`python script.py ...`, `python -m mod ...`) becomes torchrun's script or module; any
    other command runs with --no-python. Each rank gets RANK, LOCAL_RANK and WORLD_SIZE."""
    nproc = nproc_per_node(workload)
    if nproc <= 1:
        return argv
    launcher = [values["python"], "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc}"]
    rest = argv[1:]
    if is_python(workload) and rest and rest[0] == "-u":
        rest = rest[1:]  # PYTHONUNBUFFERED=1 is set for every rank already
    if is_python(workload) and rest and (not rest[0].startswith("-") or rest[0] == "-m"):
        return [*launcher, *rest]
    return [*launcher, "--no-python", *argv]


def is_python(workload: Mapping[str, Any]) -> bool:
    flag = workload.get("python")
    if flag is not None:
        return bool(flag)
    first = Path(str(workload["command"][0])).name
    return first.startswith("python") or first == "{python}"


def build_env(
    workload: Mapping[str, Any],
    values: Mapping[str, str],
    secrets: Mapping[str, str],
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    env = scrubbed_env(base)
    env.update({k: render(str(v), values) for k, v in workload.get("env", {}).items()})
    for name in DISTRIBUTED_ENV:
        env.pop(name, None)
    if is_python(workload):
        env["PYTHONUNBUFFERED"] = "1"
        # `from runner import track` must work in the workload wherever the runner lives (on a
        # pod it is an uploaded build, not an installed package); the preset's paths go first
        runner_parent = str(Path(__file__).resolve().parent.parent)
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([*parts, runner_parent])
    env.update(
        OPS_RUN_DIR=values["run_dir"],
        OPS_RUN_ID=values["run_id"],
        OPS_OUT_DIR=values["out_dir"],
        OPS_CHECKPOINTS_DIR=values["checkpoints_dir"],
    )
    env.update(secrets)
    return env


def wandb_env(wandb: Mapping[str, Any], run_dir: Path) -> dict[str, str]:
    """W&B settings for a workload that logs there; never a credential (those stay in ~/.netrc).
    WANDB_DIR keeps offline runs inside the run dir; WANDB_SILENT and a /dev/null stdin mean
    W&B never prompts."""
    mode = str(wandb.get("mode") or "disabled")
    if mode == "disabled":
        return {"WANDB_MODE": "disabled"}
    env = {"OPS_WANDB_MODE": mode, "WANDB_DIR": str(run_dir), "WANDB_SILENT": "true",
           "WANDB_CONSOLE": "off"}
    for key in ("project", "entity", "run_id"):
        if wandb.get(key):
            env[f"OPS_WANDB_{key.upper()}"] = str(wandb[key])
    return env


def placeholder_values(spec: Mapping[str, Any], run_dir: Path, python: str) -> dict[str, str]:
    code_dir = str(spec.get("code", {}).get("dir") or run_dir)
    values = {
        "run_dir": str(run_dir),
        "run_id": str(spec["run_id"]),
        "checkpoints_dir": str(run_dir / "checkpoints"),
        "code_dir": code_dir,
        "python": python,
    }
    dataset = spec.get("dataset") or {}
    values["data_dir"] = render(str(dataset.get("dir", "")), values)
    values["out_dir"] = render(str(spec["workload"].get("out_dir") or "{run_dir}/out"), values)
    return values


def resolve_cwd(workload: Mapping[str, Any], values: Mapping[str, str]) -> Path:
    return Path(values["code_dir"]) / render(str(workload.get("cwd", ".")), values)


def command_script(argv: Sequence[str], cwd: Path, env: Mapping[str, str],
                   secret_names: Sequence[str]) -> str:
    """A shell script that reruns the workload by hand; secrets are asked for, never written."""
    import shlex

    lines = ["#!/bin/sh", "# Written by the pod-ops runner: re-runs this run's workload by hand.",
             "set -e"]
    lines += [f': "${{{name}:?export {name} first (a secret, not recorded)}}"'
              for name in secret_names]
    lines.append(f"cd {shlex.quote(str(cwd))}")
    assignments = [f"{k}={shlex.quote(v)}" for k, v in env.items() if k not in secret_names]
    passthrough = [f'{name}="${name}"' for name in secret_names]
    lines.append(shlex.join(["exec", "env", "-i"]) + " \\\n  "
                 + " \\\n  ".join(assignments + passthrough + [shlex.join(argv)]))
    return "\n".join(lines) + "\n"
