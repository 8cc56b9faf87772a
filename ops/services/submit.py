"""Submitting work: one preset, a sweep of presets, a grid of one preset, or a resume.

Everything is validated on this side first (config, --set, run ids, secrets, a dirty tree);
only then does one runner call create the run dir(s) exclusively and launch them, so bad input
changes nothing. That call checks first what would otherwise cost round trips of their own:
that the host has the commit's code tree (a commit this clone synced there before is not
synced again; ops.services.synced) and preflight. A warm submit is one round trip; a host
that lacks the tree refuses, gets it synced, and is asked again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ops.config.loader import LoadedConfig, ResolvedPreset, lookup_preset, resolve_preset
from ops.errors import HostError, UsageError
from ops.gitinfo import code_info
from ops.hosts.base import call_runner
from ops.hosts.local import LocalHost
from ops.services import preflight, spec_template
from ops.services.runs import Target, show
from ops.services.spec import secret_values
from ops.services.sync import LocalCommit, SyncPlan, plan_sync
from ops.services.target import file_host
from runner import contract

if TYPE_CHECKING:  # --set parsing imports the models: a submit with a template needs neither
    from ops.config.overrides import Grid


class Submitted(NamedTuple):
    run_ids: list[str]
    run_dirs: list[str]
    host: str
    tmux_session: str | None
    tmux_socket: str
    sweep_id: str | None = None
    parent_run_id: str | None = None
    notes: tuple[str, ...] = ()
    slurm_job_ids: Sequence[str] = ()  # a slurm host: one job per run
    parallel: bool = False  # a sweep whose members were all submitted at once (SLURM)

    @property
    def run_id(self) -> str:
        return self.run_ids[0]

    def to_json(self) -> dict[str, Any]:
        return {"schema": "ops.run_submit/1", "run_id": self.run_id, "run_ids": self.run_ids,
                "run_dirs": self.run_dirs, "sweep_id": self.sweep_id,
                "parent_run_id": self.parent_run_id, "host": self.host,
                "tmux_session": self.tmux_session, "tmux_socket": self.tmux_socket,
                "slurm_job_ids": list(self.slurm_job_ids)}


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


class CodeChoice(NamedTuple):
    """Which code a run uses: on the local host without a ref, the working tree as it is;
    otherwise the commit of ``ref`` (HEAD by default) synced to an immutable tree there.
    ``preflight``: the runner's preflight arguments (ops.services.preflight.preflight_args),
    checked by the launching runner call itself before it creates anything; None: unchecked."""

    ref: str | None = None
    allow_dirty: bool = False
    preflight: tuple[str, ...] | None = None

    def plan(self, loaded: LoadedConfig, target: Target) -> CodePlan:
        """The code block, found locally. A commit the host is recorded as holding is not
        synced now: the launching call checks its tree and says when it is missing (one round
        trip in all); any other commit is synced first."""
        if self.ref is None and isinstance(target.host, LocalHost):
            return CodePlan(code_info(loaded.repo_root), self.preflight)
        found = plan_sync(file_host(target.host), loaded.repo_root, self.ref or "HEAD",
                          ops_home=target.paths.ops_home, allow_dirty=self.allow_dirty)
        local = found.local
        plan = CodePlan(_code_block(local, f"{found.home}/code/{local.commit}"),
                        self.preflight, _Sync(found))
        if not found.held:
            plan.sync()
        return plan

    def resolve(self, loaded: LoadedConfig, target: Target) -> dict[str, Any]:
        """The code block, synced now (for a caller that launches without the plan)."""
        plan = self.plan(loaded, target)
        if not plan.synced:
            plan.sync()
        return plan.code


_ANY_CODE = CodeChoice()  # the default choice: immutable, so one is shared by every call


def _code_block(local: LocalCommit, code_dir: str) -> dict[str, Any]:
    """The `code` block of a spec (the keys of ops.gitinfo.code_info)."""
    return {"dir": code_dir, "commit": local.commit, "ref": local.ref, "branch": local.branch,
            "dirty": local.dirty, "base_commit": local.base_commit}


class _Sync(NamedTuple):
    found: SyncPlan

    def __call__(self, *, stale: bool = False) -> None:
        found = self.found
        if stale:  # the host lacked what the record said it held: the record goes first
            found.record.forget(found.host.name, found.home)
        found.sync()


class CodePlan:
    """The code block of the specs, and what the launching runner call checks first: that
    the tree is there (for synced code) and preflight (when asked)."""

    __slots__ = ("code", "preflight", "synced", "syncer")

    def __init__(self, code: dict[str, Any], preflight: tuple[str, ...] | None = None,
                 syncer: _Sync | None = None, synced: bool = False) -> None:
        self.code = code
        self.preflight = preflight
        self.syncer = syncer  # None: the local working tree itself, nothing to sync
        self.synced = synced  # by this submit already

    def sync(self, *, stale: bool = False) -> None:
        if self.syncer is not None:
            self.syncer(stale=stale)
            self.synced = True

    def checks(self) -> dict[str, Any]:
        """The launching call's checks, as its payload carries them."""
        return {"need_code": self.syncer is not None,
                "preflight": list(self.preflight) if self.preflight is not None else None}


class CodeMissingError(HostError):
    """The host has no tree of the commit even right after a sync."""


def call_submit(target: Target, verb: str, payload: dict[str, Any],
                plan: CodePlan | None) -> dict[str, Any]:
    """`runner submit` or `submit-sweep` with the plan's checks. A host that lacks the code
    (its record was stale) gets it synced and is asked once more; a failed preflight raises
    PreflightError. Nothing is created on the host by a refused call."""
    text = json.dumps({**payload, **(plan.checks() if plan is not None else {})})
    while True:
        answer = call_runner(target.host, [verb, target.paths.outputs_root], input_text=text)
        refused = answer.get("refused")
        if refused is None:
            return answer
        if refused == "code_missing" and plan is not None and not plan.synced:
            plan.sync(stale=True)
            continue
        raise _refusal(target, answer)


def _refusal(target: Target, answer: dict[str, Any]) -> HostError:
    """The error for a launch the runner refused; a failed preflight raises its own."""
    found = answer.get("preflight")
    if answer.get("refused") == "preflight" and isinstance(found, dict):
        preflight.require_pass({**found, "host": target.host.name, "status": "fail"})
    message = str(answer.get("message") or answer.get("refused"))[:300]
    if answer.get("refused") == "code_missing":
        return CodeMissingError(f"{target.host.name} has no code tree right after a sync: "
                                f"{message}", hint="run the command again")
    return HostError(f"{target.host.name} refused the launch: {message}")


def _spec(loaded: LoadedConfig, target: Target, resolved: ResolvedPreset, run_id: str, *,
          secrets: Mapping[str, str], code: Mapping[str, Any],
          parent: str | None = None) -> dict[str, Any]:
    """The spec of one run of ``resolved``, built with the models (ops.services.spec_template
    makes the template, then fills in the run's own fields)."""
    template = spec_template.make(loaded, target.host.name, resolved)
    return template.fill(loaded, target, run_id, secret_names=list(secrets), code=code,
                         parent=parent)


def submit(loaded: LoadedConfig, target: Target, preset: str, sets: Sequence[str] = (), *,
           run_id: str | None = None, environ: Mapping[str, str] | None = None,
           debug: bool = False, code: CodeChoice = _ANY_CODE,
           check_preflight: bool = False) -> Submitted:
    """One run of a preset; a sweep preset goes to submit_sweep, a --set with several values
    (a grid) to submit_grid. ``check_preflight``: the launching call checks preflight for the
    preset (in place of ``code.preflight``).

    The spec comes from the preset's template (ops.services.spec_template) when this config
    submitted the preset with the same --set values, --debug and host before: then neither
    pydantic nor the models are imported. Otherwise the models build the template, which is
    kept for the next time."""
    key = spec_template.key_of(loaded, target.host.name, preset, sets, debug)
    template = spec_template.load(key)
    if template is None:
        if check_preflight:  # first, as always: an unknown preset is named before a bad --set
            code = code._replace(preflight=tuple(preflight.preflight_args(loaded, target,
                                                                          preset)))
        several = _submit_several(loaded, target, preset, sets, run_id=run_id,
                                  environ=environ, debug=debug, code=code)
        if several is not None:
            return several
        template = spec_template.make(loaded, target.host.name,
                                      resolve_preset(loaded.config, preset, sets, debug=debug))
        spec_template.store(key, template)
    elif check_preflight:
        code = code._replace(preflight=tuple(template.preflight_args(loaded, target)))
    run_id = _run_id(run_id, preset)
    secrets = template.secret_values(os.environ if environ is None else environ)
    plan = code.plan(loaded, target)
    spec = template.fill(loaded, target, run_id, secret_names=list(secrets), code=plan.code)
    return _launch_one(target, spec, secrets, plan)


def _submit_several(loaded: LoadedConfig, target: Target, preset: str, sets: Sequence[str], *,
                    run_id: str | None, environ: Mapping[str, str] | None, debug: bool,
                    code: CodeChoice) -> Submitted | None:
    """A grid (a --set with several values) or a sweep preset, submitted; None for one run."""
    from ops.config.models import SweepPreset
    from ops.config.overrides import grid_of

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
    return None


def _launch_one(target: Target, spec: dict[str, Any], secrets: Mapping[str, str],
                plan: CodePlan | None = None) -> Submitted:
    answer = call_submit(target, "submit", {"spec": spec, "secrets": dict(secrets)}, plan)
    return Submitted([answer["run_id"]], [answer["run_dir"]], target.host.name,
                     answer["tmux_session"], answer["tmux_socket"],
                     parent_run_id=spec.get("parent_run_id"), slurm_job_ids=_job_ids(answer))


def submit_sweep(loaded: LoadedConfig, target: Target, name: str, sets: Sequence[str] = (), *,
                 environ: Mapping[str, str] | None = None, debug: bool = False,
                 code: CodeChoice = _ANY_CODE) -> Submitted:
    """Every member as its own run, in order, grouped by one sweep id; one round trip."""
    from ops.config.models import SweepPreset

    sweep = lookup_preset(loaded.config, name)
    if not isinstance(sweep, SweepPreset):
        raise UsageError(f"preset {name!r} is not a sweep")
    env = os.environ if environ is None else environ
    sweep_id = _run_id(None, name)
    members = []
    for member in sweep.members:
        resolved = resolve_preset(loaded.config, member, sets, debug=debug)
        members.append((resolved, secret_values(loaded, resolved, env)))
    plan = code.plan(loaded, target)  # once for all members, after all checks
    specs = [_spec(loaded, target, resolved, _run_id(None, resolved.name),
                   secrets=member_secrets, code=plan.code)
             for resolved, member_secrets in members]
    # each member gets only its own preset's secrets (and the project's), never another's
    by_member = {spec["run_id"]: dict(member_secrets)
                 for spec, (_, member_secrets) in zip(specs, members, strict=True)}
    payload = {"sweep_id": sweep_id, "specs": specs, "member_secrets": by_member,
               "parallel": sweep.parallel}  # SLURM: all members at once
    answer = call_submit(target, "submit-sweep", payload, plan)
    return Submitted(answer["run_ids"], answer["run_dirs"], target.host.name,
                     answer["tmux_session"], answer["tmux_socket"], sweep_id=sweep_id,
                     slurm_job_ids=_job_ids(answer), parallel=answer.get("parallel") is True)


def submit_grid(loaded: LoadedConfig, target: Target, preset: str, grid: Grid, *,
                environ: Mapping[str, str] | None = None, debug: bool = False,
                code: CodeChoice = _ANY_CODE) -> Submitted:
    """One run of ``preset`` per combination of the grid's axes, as a sweep (in order); the
    sweep's record keeps the grid (secret values redacted). Every combination is checked
    before anything is created."""
    env = os.environ if environ is None else environ
    combos = grid.combinations()
    members = []
    for combo in combos:
        resolved = resolve_preset(loaded.config, preset, grid.member_sets(combo), debug=debug)
        members.append((resolved, secret_values(loaded, resolved, env)))
    plan = code.plan(loaded, target)
    specs = [_spec(loaded, target, resolved, run_id, secrets=member_secrets, code=plan.code)
             for run_id, (resolved, member_secrets) in zip(_distinct_ids(preset, len(members)),
                                                           members, strict=True)]
    secret_texts = {v for _, member_secrets in members for v in member_secrets.values() if v}
    record = grid_record(preset, grid, combos, [s["run_id"] for s in specs], secret_texts)
    payload = {
        "sweep_id": _run_id(None, f"{preset}-grid"), "specs": specs, "grid": record,
        "member_secrets": {spec["run_id"]: dict(member_secrets)
                           for spec, (_, member_secrets) in zip(specs, members, strict=True)}}
    answer = call_submit(target, "submit-sweep", payload, plan)
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
           debug: bool = False, code: CodeChoice = _ANY_CODE) -> Submitted:
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
    plan = code.plan(loaded, target)
    spec = _spec(loaded, target, resolved, new_id, secrets=secrets, code=plan.code,
                 parent=parent_id)
    return _launch_one(target, spec, secrets, plan)


def _text(value: Any) -> str:
    return str(value) if not isinstance(value, bool) else ("true" if value else "false")
