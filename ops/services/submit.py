"""Submitting work: one preset, a sweep of presets, a grid of one preset, or a resume.

Everything is validated on this side first (config, --set, run ids, secrets); only then does
one runner call create the run dir(s) exclusively and launch them, so bad input changes nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ops.config.loader import LoadedConfig, ResolvedPreset, lookup_preset, resolve_preset
from ops.config.models import SweepPreset
from ops.config.overrides import Grid, grid_of
from ops.errors import UsageError
from ops.gitinfo import code_info
from ops.hosts.base import call_runner
from ops.hosts.local import LocalHost
from ops.services import launcher
from ops.services.runs import Target, show
from ops.services.spec import build_spec, secret_values
from ops.services.sync import sync_ref
from runner import contract


@dataclass(frozen=True)
class Submitted:
    run_ids: list[str]
    run_dirs: list[str]
    host: str
    tmux_session: str | None
    tmux_socket: str
    sweep_id: str | None = None
    parent_run_id: str | None = None
    notes: list[str] = field(default_factory=list)
    slurm_job_ids: list[str] = field(default_factory=list)  # a slurm host: one job per run
    parallel: bool = False  # a sweep whose members were all submitted at once (SLURM)

    @property
    def run_id(self) -> str:
        return self.run_ids[0]

    def to_json(self) -> dict[str, Any]:
        return {"schema": "ops.run_submit/1", "run_id": self.run_id, "run_ids": self.run_ids,
                "run_dirs": self.run_dirs, "sweep_id": self.sweep_id,
                "parent_run_id": self.parent_run_id, "host": self.host,
                "tmux_session": self.tmux_session, "tmux_socket": self.tmux_socket,
                "slurm_job_ids": self.slurm_job_ids}


def member_note(done: Submitted, index: int) -> str | None:
    """"member k of n: RUN_ID" for the ``index``-th run of a sweep (None for one run)."""
    if done.sweep_id is None:
        return None
    return f"member {index + 1} of {len(done.run_ids)}: {done.run_ids[index]}"


def _job_ids(answer: dict[str, Any]) -> list[str]:
    """The SLURM job ids a slurm host's runner reported (none for tmux); text only."""
    found = answer.get("slurm_job_ids")
    if not isinstance(found, list):
        found = [answer.get("slurm_job_id")]
    return [j for j in found if isinstance(j, str) and j.isdigit() and len(j) <= 12]


def _run_id(given: str | None, preset: str) -> str:
    try:
        return contract.validate_run_id(given) if given else contract.new_run_id(preset)
    except contract.ContractError as exc:
        raise UsageError(str(exc)) from exc


@dataclass(frozen=True)
class CodeChoice:
    """Which code a run uses: on the local host without a ref, the working tree as it is;
    otherwise the commit of ``ref`` (HEAD by default) synced to an immutable tree there."""

    ref: str | None = None
    allow_dirty: bool = False

    def resolve(self, loaded: LoadedConfig, target: Target) -> dict[str, Any]:
        if self.ref is None and isinstance(target.host, LocalHost):
            return code_info(loaded.repo_root)
        done = sync_ref(target.host, loaded.repo_root, self.ref or "HEAD",  # type: ignore[arg-type]
                        ops_home=target.paths.ops_home, allow_dirty=self.allow_dirty)
        return done.code_info()


def _spec(loaded: LoadedConfig, target: Target, resolved: ResolvedPreset, run_id: str, *,
          secrets: Mapping[str, str], code: Mapping[str, Any],
          parent: str | None = None) -> dict[str, Any]:
    spec = build_spec(loaded, resolved, run_id, paths=target.paths,
                      code=code, secret_names=sorted(secrets),
                      parent_run_id=parent)
    launcher.apply(spec, loaded, target.host.name, resolved.preset)  # slurm / torchrun blocks
    if parent:
        spec["parent_run_dir"] = target.run_dir(parent)
    spec["workload"]["env"] = {**cache_env(loaded, target), **spec["workload"]["env"]}
    return spec


def cache_env(loaded: LoadedConfig, target: Target) -> dict[str, str]:
    """HF_HOME and the dataset cache of project.json storage, as paths on the host (a
    preset's own env wins)."""
    storage = loaded.config.storage
    expand = getattr(target.host, "expand", os.path.expanduser)
    env: dict[str, str] = {}
    if storage.hf_home:
        env["HF_HOME"] = expand(storage.hf_home)
    if storage.datasets_root:
        root = expand(storage.datasets_root)
        env.update(OPS_DATASETS_ROOT=root, HF_DATASETS_CACHE=root)
    return env


def submit(loaded: LoadedConfig, target: Target, preset: str, sets: Sequence[str] = (), *,
           run_id: str | None = None, environ: Mapping[str, str] | None = None,
           debug: bool = False, code: CodeChoice = CodeChoice()) -> Submitted:
    """One run of a preset; a sweep preset goes to submit_sweep, a --set with several values
    (a grid) to submit_grid."""
    grid = grid_of(sets)
    is_sweep = isinstance(lookup_preset(loaded.config, preset), SweepPreset)
    if grid.axes:
        if run_id or is_sweep:
            raise UsageError("a --set with several values makes a grid of one preset's runs; "
                             + ("--run-id names one run" if run_id else
                                f"{preset!r} is a sweep already"),
                             hint="drop --run-id" if run_id else "name one of its members")
        return submit_grid(loaded, target, preset, grid, environ=environ, debug=debug,
                           code=code)
    if is_sweep:
        if run_id:
            raise UsageError("--run-id names one run; a sweep names its members itself")
        return submit_sweep(loaded, target, preset, sets, environ=environ, debug=debug,
                            code=code)
    resolved = resolve_preset(loaded.config, preset, sets, debug=debug)
    run_id = _run_id(run_id, preset)
    secrets = secret_values(loaded, resolved, os.environ if environ is None else environ)
    spec = _spec(loaded, target, resolved, run_id, secrets=secrets,
                 code=code.resolve(loaded, target))
    return _launch_one(target, spec, secrets)


def _launch_one(target: Target, spec: dict[str, Any], secrets: Mapping[str, str]) -> Submitted:
    payload = json.dumps({"spec": spec, "secrets": dict(secrets)})
    answer = call_runner(target.host, ["submit", target.paths.outputs_root], input_text=payload)
    return Submitted([answer["run_id"]], [answer["run_dir"]], target.host.name,
                     answer["tmux_session"], answer["tmux_socket"],
                     parent_run_id=spec.get("parent_run_id"), slurm_job_ids=_job_ids(answer))


def submit_sweep(loaded: LoadedConfig, target: Target, name: str, sets: Sequence[str] = (), *,
                 environ: Mapping[str, str] | None = None, debug: bool = False,
                 code: CodeChoice = CodeChoice()) -> Submitted:
    """Every member as its own run, in order, grouped by one sweep id; one round trip."""
    sweep = lookup_preset(loaded.config, name)
    if not isinstance(sweep, SweepPreset):
        raise UsageError(f"preset {name!r} is not a sweep")
    env = os.environ if environ is None else environ
    sweep_id = _run_id(None, name)
    members = []
    for member in sweep.members:
        resolved = resolve_preset(loaded.config, member, sets, debug=debug)
        members.append((resolved, secret_values(loaded, resolved, env)))
    code_block = code.resolve(loaded, target)  # once for all members, after all checks
    specs = [_spec(loaded, target, resolved, _run_id(None, resolved.name),
                   secrets=member_secrets, code=code_block)
             for resolved, member_secrets in members]
    # each member gets only its own preset's secrets (and the project's), never another's
    by_member = {spec["run_id"]: dict(member_secrets)
                 for spec, (_, member_secrets) in zip(specs, members, strict=True)}
    payload = json.dumps({"sweep_id": sweep_id, "specs": specs, "member_secrets": by_member,
                          "parallel": sweep.parallel})  # SLURM: all members at once
    answer = call_runner(target.host, ["submit-sweep", target.paths.outputs_root],
                         input_text=payload)
    return Submitted(answer["run_ids"], answer["run_dirs"], target.host.name,
                     answer["tmux_session"], answer["tmux_socket"], sweep_id=sweep_id,
                     slurm_job_ids=_job_ids(answer), parallel=answer.get("parallel") is True)


def submit_grid(loaded: LoadedConfig, target: Target, preset: str, grid: Grid, *,
                environ: Mapping[str, str] | None = None, debug: bool = False,
                code: CodeChoice = CodeChoice()) -> Submitted:
    """One run of ``preset`` per combination of the grid's axes, as a sweep (in order); the
    sweep's record keeps the grid (secret values redacted). Every combination is checked
    before anything is created."""
    env = os.environ if environ is None else environ
    combos = grid.combinations()
    members = []
    for combo in combos:
        resolved = resolve_preset(loaded.config, preset, grid.member_sets(combo), debug=debug)
        members.append((resolved, secret_values(loaded, resolved, env)))
    code_block = code.resolve(loaded, target)
    specs = [_spec(loaded, target, resolved, run_id, secrets=member_secrets, code=code_block)
             for run_id, (resolved, member_secrets) in zip(_distinct_ids(preset, len(members)),
                                                           members, strict=True)]
    secret_texts = {v for _, member_secrets in members for v in member_secrets.values() if v}
    record = grid_record(preset, grid, combos, [s["run_id"] for s in specs], secret_texts)
    payload = json.dumps({
        "sweep_id": _run_id(None, f"{preset}-grid"), "specs": specs, "grid": record,
        "member_secrets": {spec["run_id"]: dict(member_secrets)
                           for spec, (_, member_secrets) in zip(specs, members, strict=True)}})
    answer = call_runner(target.host, ["submit-sweep", target.paths.outputs_root],
                         input_text=payload)
    return Submitted(answer["run_ids"], answer["run_dirs"], target.host.name,
                     answer["tmux_session"], answer["tmux_socket"], sweep_id=answer["sweep_id"],
                     slurm_job_ids=_job_ids(answer), parallel=answer.get("parallel") is True)


def _distinct_ids(preset: str, count: int) -> list[str]:
    """``count`` new run ids of ``preset``, no two alike (they share the second)."""
    ids: list[str] = []
    while len(ids) < count:
        run_id = _run_id(None, preset)
        if run_id not in ids:
            ids.append(run_id)
    return ids


def grid_record(preset: str, grid: Grid, combos: Sequence[Mapping[str, str]],
                run_ids: Sequence[str], secret_texts: set[str]) -> dict[str, Any]:
    """What the sweep's record says about its grid: the preset, the plain --set values, each
    axis and which run got which combination. A value that is a secret's value is redacted."""
    def clean(value: str) -> str:
        return "[redacted]" if any(s and s in value for s in secret_texts) else value

    fixed = {}
    for text in grid.fixed:
        key, _, value = text.partition("=")
        fixed[key.strip()] = clean(value)
    return {"preset": preset, "fixed": fixed,
            "axes": {k: [clean(v) for v in values] for k, values in grid.axes.items()},
            "members": [{"run_id": run_id, "set": {k: clean(v) for k, v in combo.items()}}
                        for run_id, combo in zip(run_ids, combos, strict=True)]}


def resume(loaded: LoadedConfig, target: Target, parent_id: str, sets: Sequence[str] = (), *,
           run_id: str | None = None, environ: Mapping[str, str] | None = None,
           debug: bool = False, code: CodeChoice = CodeChoice()) -> Submitted:
    """A new run of the parent's preset and overrides that continues where the parent stopped."""
    parent_spec = show(target, parent_id, contract.SPEC)
    preset_name = str(parent_spec.get("preset"))
    earlier = [f"{k}={_text(v)}" for k, v in (parent_spec.get("overrides") or {}).items()]
    resolved = resolve_preset(loaded.config, preset_name, [*earlier, *sets], debug=debug)
    key = resolved.preset.resume_override
    if key:
        overrides = {**resolved.preset.overrides, key: target.run_dir(parent_id)}
        resolved = ResolvedPreset(resolved.name,
                                  resolved.preset.model_copy(update={"overrides": overrides}),
                                  {**resolved.overrides_set, key: target.run_dir(parent_id)})
    secrets = secret_values(loaded, resolved, os.environ if environ is None else environ)
    new_id = _run_id(run_id, preset_name)
    spec = _spec(loaded, target, resolved, new_id, secrets=secrets,
                 code=code.resolve(loaded, target), parent=parent_id)
    return _launch_one(target, spec, secrets)


def _text(value: Any) -> str:
    return str(value) if not isinstance(value, bool) else ("true" if value else "false")
