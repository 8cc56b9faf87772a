"""Preflight on a target: what the preset needs, asked of the host's runner in one call."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from ops.config.loader import LoadedConfig, lookup_preset, resolve_preset
from ops.config.models import CommandPreset, SweepPreset
from ops.errors import PreflightError
from ops.hosts.base import call_runner
from ops.hosts.local import LocalHost
from ops.services.runs import Target

# the Python packages each built-in kind imports; a plain command brings its own
KIND_MODULES: dict[str, tuple[str, ...]] = {
    "monai_seg": ("torch", "monai", "numpy"),
    "eval": ("torch", "monai", "numpy"),
}


def presets_of(loaded: LoadedConfig, preset: str | None) -> list[CommandPreset]:
    if preset is None:
        return []
    found = lookup_preset(loaded.config, preset)
    if isinstance(found, SweepPreset):
        return [resolve_preset(loaded.config, m).preset for m in found.members]
    return [resolve_preset(loaded.config, preset).preset]


def run_preflight(loaded: LoadedConfig, target: Target,
                  preset: str | None = None) -> dict[str, Any]:
    args = preflight_args(loaded, target, preset)
    if isinstance(target.host, LocalHost):  # this machine: no need for a process
        doc = _in_process(args)
    else:
        doc = call_runner(target.host, args, timeout=120)
    doc["host"] = target.host.name
    return doc


def preflight_args(loaded: LoadedConfig, target: Target, preset: str | None = None) -> list[str]:
    """The runner's preflight verb and its arguments for ``preset`` on ``target`` (a submit
    hands them to its launching runner call, which checks before it creates anything)."""
    args = ["preflight", "--json", "--outputs-root", target.paths.outputs_root]
    modules: list[str] = []
    for chosen in presets_of(loaded, preset):
        modules += KIND_MODULES.get(chosen.kind, ())
        data = _dataset_dir(loaded, target, chosen)
        if data:
            args += ["--dataset", data]
    for module in dict.fromkeys(modules):
        args += ["--module", module]
    if loaded.config.storage.wandb.mode in ("online", "auto"):
        args.append("--wandb")
    host_config = loaded.config.hosts.get(target.host.name)
    if getattr(host_config, "launcher", "tmux") == "slurm":
        args += ["--launcher", "slurm"]
    return args


def _in_process(args: list[str]) -> dict[str, Any]:
    import argparse

    from runner import preflight as runner_preflight

    parser = argparse.ArgumentParser(prog="preflight")
    sub = parser.add_subparsers(dest="verb")
    runner_preflight.add_verb(sub)
    return runner_preflight.answer(parser.parse_args(args))


def _dataset_dir(loaded: LoadedConfig, target: Target, preset: CommandPreset) -> str | None:
    value = preset.overrides.get("data_dir")
    directory = value if isinstance(value, str) and value else \
        (preset.dataset.dir if preset.dataset else None)
    if not directory:
        return None
    if "{" in directory:  # a placeholder the run fills in: only the local code dir is known now
        if not (isinstance(target.host, LocalHost) and directory.startswith("{code_dir}")):
            return None
        directory = str(Path(loaded.repo_root)) + directory[len("{code_dir}"):]
        if "{" in directory:
            return None
    if directory.startswith("~") or PurePosixPath(directory).is_absolute():
        return directory if not directory.startswith("~") else \
            getattr(target.host, "expand", lambda p: p)(directory)
    if isinstance(target.host, LocalHost):  # relative: the repo the run's code comes from
        return str(Path(loaded.repo_root) / directory)
    return None  # relative to a code dir that exists only once the run is synced


def require_pass(doc: dict[str, Any]) -> None:
    if doc.get("status") != "fail":
        return
    failed = [c for c in doc.get("checks") or [] if isinstance(c, dict)
              and c.get("status") == "fail"]
    raise PreflightError(f"preflight failed on {doc.get('host')}",
                         details=[f"{c.get('name')}: {c.get('detail')}"
                                  + (f" ({c.get('hint')})" if c.get("hint") else "")
                                  for c in failed],
                         hint="fix these, or submit with --skip-preflight")


def preflight_text(doc: dict[str, Any]) -> str:
    lines = [f"preflight on {doc.get('host')}: {doc.get('status')} "
             f"(profile {doc.get('profile')})"]
    for check in doc.get("checks") or []:
        if not isinstance(check, dict):
            continue
        line = f"  {check.get('status')!s:4}  {check.get('name')}: {check.get('detail')}"
        if check.get("hint"):
            line += f"\n        hint: {check.get('hint')}"
        lines.append(line)
    return "\n".join(lines)
