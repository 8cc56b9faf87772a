"""Submitting an eval: a new run of an `eval` preset that reads a parent run's checkpoint.

`ops run submit -p EVAL --from RUN_ID`: the parent must exist on the same host and have ended
(a live run's checkpoint may still change under the eval); the new run records it as
``parent_run_id`` and its workload gets ``{parent_run_dir}`` and ``{checkpoint}``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from ops.config.loader import LoadedConfig, lookup_preset, resolve_preset
from ops.config.models import EvalPreset
from ops.errors import UsageError
from ops.services import runs
from ops.services.spec import secret_values
from ops.services.submit import CodeChoice, Submitted, _launch_one, _run_id, _spec
from runner import contract


def submit_from(loaded: LoadedConfig, target: runs.Target, preset: str, parent_id: str,
                sets: Sequence[str] = (), *, run_id: str | None = None,
                environ: Mapping[str, str] | None = None, debug: bool = False,
                code: CodeChoice | None = None) -> Submitted:
    """One run of the eval preset ``preset`` on the checkpoint of run ``parent_id``."""
    found = lookup_preset(loaded.config, preset)
    if not isinstance(found, EvalPreset):
        raise UsageError(f"--from needs an eval preset; {preset!r} is of kind {found.kind!r}",
                         hint="--resume RUN_ID continues a run; --from RUN_ID evaluates it")
    parent = runs.run_status(target, parent_id)
    if parent.get("status") not in contract.RECORDED_STATUSES:
        raise UsageError(f"run {parent_id!r} is {parent.get('status')}: an eval reads the "
                         "checkpoint of a run that has ended",
                         hint="wait for it (ops run tail RUN --follow) or cancel it first")
    resolved = resolve_preset(loaded.config, preset, sets, debug=debug)
    secrets = secret_values(loaded, resolved, os.environ if environ is None else environ)
    plan = (code or CodeChoice()).plan(loaded, target)
    spec = _spec(loaded, target, resolved, _run_id(run_id, preset), secrets=secrets,
                 code=plan.code, parent=parent_id)
    return _launch_one(target, spec, secrets, plan)
