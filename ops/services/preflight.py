"""Preflight on a target: what the preset needs, asked of the host's runner in one call."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NamedTuple

from ops.config.loader import LoadedConfig, lookup_preset, resolve_preset
from ops.errors import PreflightError
from ops.hosts.base import call_runner
from ops.hosts.local import LocalHost
from ops.services.runs import Target

if TYPE_CHECKING:  # the models are imported where a preset is read, not with this module
    from ops.config.models import CommandPreset

# the Python packages each built-in kind imports; a plain command brings its own
KIND_MODULES: dict[str, tuple[str, ...]] = {
    "monai_seg": ("torch", "monai", "numpy"),
    "eval": ("torch", "monai", "numpy"),
}


class Needs(NamedTuple):
    """What the presets of a submit ask preflight to check, as project.json says it: the
    Python modules their kinds import and their dataset dirs (one entry a preset, None for
    none), before these are placed on a host (``needs_args``)."""

    modules: tuple[str, ...] = ()
    datasets: tuple[str | None, ...] = ()


def presets_of(loaded: LoadedConfig, preset: str | None) -> list[CommandPreset]:
    from ops.config.models import SweepPreset

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
    return needs_args(loaded, target, needs_of(loaded, preset))


def needs_of(loaded: LoadedConfig, preset: str | None) -> Needs:
    """What ``preset`` (each member of a sweep) asks preflight to check; reads the models."""
    chosen = presets_of(loaded, preset)
    modules = [m for p in chosen for m in KIND_MODULES.get(p.kind, ())]
    return Needs(tuple(dict.fromkeys(modules)), tuple(_dataset_of(p) for p in chosen))


def needs_args(loaded: LoadedConfig, target: Target, needs: Needs) -> list[str]:
    """The preflight verb and arguments for ``needs`` on ``target``. Reads the config's dump
    only (no models), so a submit whose spec template holds its needs imports no pydantic."""
    args = ["preflight", "--json", "--outputs-root", target.paths.outputs_root]
    for directory in needs.datasets:
        data = _dataset_dir(loaded, target, directory)
        if data:
            args += ["--dataset", data]
    for module in needs.modules:
        args += ["--module", module]
    if loaded.setting("storage", "wandb", "mode") in ("online", "auto"):
        args.append("--wandb")
    host_config = loaded.setting("hosts").get(target.host.name) or {}
    if host_config.get("launcher", "tmux") == "slurm":
        args += ["--launcher", "slurm"]
    return args


def _in_process(args: list[str]) -> dict[str, Any]:
    import argparse

    from runner import preflight as runner_preflight

    parser = argparse.ArgumentParser(prog="preflight")
    sub = parser.add_subparsers(dest="verb")
    runner_preflight.add_verb(sub)
    return runner_preflight.answer(parser.parse_args(args))


def _dataset_of(preset: CommandPreset) -> str | None:
    """The dataset dir as the preset names it: its data_dir override, else its dataset's."""
    value = preset.overrides.get("data_dir")
    return value if isinstance(value, str) and value else \
        (preset.dataset.dir if preset.dataset else None)


def _dataset_dir(loaded: LoadedConfig, target: Target, directory: str | None) -> str | None:
    """``directory`` (a preset's dataset dir) as a path on ``target``, or None when it is
    known only once the run's code is there."""
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
