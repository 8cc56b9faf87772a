"""Spec templates: the part of a run's spec.json that follows from the config, kept between
submits so that a warm `ops run submit` builds its spec without pydantic (issue 14).

A spec is a function of the config, the preset, its --set values, --debug and the host, plus
a few fields of the run itself: run_id, created_at, the code block, parent_run_id, the names
of the secrets set in the environment, where the host keeps them (secrets.store), W&B's run
id, parent_run_dir and the host's paths of storage.hf_home / datasets_root. ``make`` builds a
template with the models (ops.services.spec.build_spec and the launcher blocks, as every
submit did before) and takes those fields out; ``SpecTemplate.fill`` sets each of them for a
run. A template also holds what a plain submit would otherwise read from the models: whether
the preset is an eval (which needs --from), the names of the secrets it forwards (never their
values) and what its preflight checks.

Templates live in the folder ``spec-templates`` of the config cache (ops.config.cache: same
checks, same atomic writes, a bounded count). A template's key is the config cache key of the
config's bytes, the source of the code that builds a spec, the preset name, the --set values
in order, --debug and the host name. Only a plain submit (one preset, no grid, not a sweep)
stores one, so finding one also says the preset is neither. Anything odd about an entry makes
it a miss, which costs one build with the models.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ops.config import cache
from ops.config.loader import LoadedConfig, ResolvedPreset
from ops.services.preflight import Needs, needs_args, needs_of
from ops.services.runs import Target
from ops.services.spec import (
    HostPaths,
    build_spec,
    cache_env,
    eval_needs_parent,
    forwarded_secrets,
    secrets_store,
    wandb_run_id,
)
from runner import contract

MAGIC = b"ops-spec-template/1\n"
FOLDER = "spec-templates"
MAX_TEMPLATES = 256  # one per preset, --set values, --debug and host in use; oldest go first
_OPS = Path(__file__).resolve().parents[1]
_RUNNER = _OPS.parent / "runner"
# the code whose output a template is: what build_spec, the launcher blocks, resolve_preset,
# --set parsing (typed by the trainer's defaults for monai_seg), the models and the preflight
# needs read or call
SPEC_SOURCES = (
    _OPS / "services" / "spec_template.py", _OPS / "services" / "spec.py",
    _OPS / "services" / "launcher.py", _OPS / "services" / "preflight.py",
    _OPS / "config" / "loader.py", _OPS / "config" / "overrides.py",
    _OPS / "config" / "models.py", _OPS / "config" / "settings.py",
    _RUNNER / "contract.py", _RUNNER / "workload_command.py", _RUNNER / "envpolicy.py",
    _RUNNER / "logpump.py", _RUNNER / "redact.py", _RUNNER / "seg" / "params.py",
)
# what build_spec is given for the per-run fields when a template is made; each one is taken
# out again (tests/test_spec_template.py fills with other values and compares)
_TEMPLATE_RUN = "spec-template"
_TEMPLATE_PATHS = HostPaths(outputs_root="/spec-template/runs", ops_home="/spec-template/home")


class SpecTemplate(NamedTuple):
    """The config-derived part of one preset's spec, and what a submit of it needs."""

    preset: str
    spec: dict[str, Any]
    """The spec with every per-run field None (parent_run_dir absent; workload.env without
    the storage paths)."""
    needs_parent: bool
    """An eval preset: it evaluates the run given with --from."""
    secrets_required: tuple[str, ...]
    """The preset's secrets_env: names that must be set in the environment."""
    secrets_optional: tuple[str, ...]
    """The project's secrets.env: names forwarded when set."""
    preflight: Needs

    def secret_values(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The forwarded secrets' values (ops.services.spec.secret_values, from the names)."""
        return forwarded_secrets(self.preset, self.secrets_required, self.secrets_optional,
                                 environ)

    def preflight_args(self, loaded: LoadedConfig, target: Target) -> list[str]:
        return needs_args(loaded, target, self.preflight)

    def fill(self, loaded: LoadedConfig, target: Target, run_id: str, *,
             secret_names: Sequence[str], code: Mapping[str, Any],
             parent: str | None = None) -> dict[str, Any]:
        """The spec of one run: the template with each per-run field set."""
        if self.needs_parent and not parent:
            raise eval_needs_parent(self.preset)
        spec = copy.deepcopy(self.spec)
        spec.update(run_id=run_id, created_at=contract.iso(), parent_run_id=parent,
                    code=dict(code))
        spec["secrets"].update(env_names=sorted(secret_names),
                               store=secrets_store(target.paths, run_id))
        spec["wandb"]["run_id"] = wandb_run_id(spec["wandb"]["mode"], run_id)
        if parent:
            spec["parent_run_dir"] = target.run_dir(parent)
        expand = getattr(target.host, "expand", os.path.expanduser)
        spec["workload"]["env"] = {**cache_env(loaded, expand), **spec["workload"]["env"]}
        return spec

    def to_json(self) -> dict[str, Any]:
        return {"preset": self.preset, "needs_parent": self.needs_parent,
                "secrets": {"required": list(self.secrets_required),
                            "optional": list(self.secrets_optional)},
                "preflight": {"modules": list(self.preflight.modules),
                              "datasets": list(self.preflight.datasets)},
                "spec": self.spec}

    @classmethod
    def from_json(cls, doc: Any) -> SpecTemplate | None:
        """The template ``doc`` holds, or None when it is not one (any field of a wrong type)."""
        try:
            secrets, needs, spec = doc["secrets"], doc["preflight"], doc["spec"]
            template = cls(doc["preset"], spec, doc["needs_parent"],
                           tuple(secrets["required"]), tuple(secrets["optional"]),
                           Needs(tuple(needs["modules"]), tuple(needs["datasets"])))
            texts = [template.preset, *template.secrets_required, *template.secrets_optional,
                     *template.preflight.modules]
            if not (all(isinstance(t, str) for t in texts)
                    and all(d is None or isinstance(d, str) for d in template.preflight.datasets)
                    and isinstance(template.needs_parent, bool) and _spec_shape(spec)):
                return None
        except (KeyError, TypeError, AttributeError):
            return None
        return template


def _spec_shape(spec: Any) -> bool:
    """The blocks fill writes into are there, as objects."""
    return (isinstance(spec, dict) and isinstance(spec.get("workload"), dict)
            and isinstance(spec["workload"].get("env"), dict)
            and isinstance(spec.get("secrets"), dict) and isinstance(spec.get("wandb"), dict)
            and isinstance(spec["wandb"].get("mode"), str))


def make(loaded: LoadedConfig, host_name: str, resolved: ResolvedPreset) -> SpecTemplate:
    """The template of ``resolved`` on the host ``host_name``, built with the models."""
    from ops.config.models import EvalPreset
    from ops.services import launcher  # only a template being made needs it

    spec = build_spec(loaded, resolved, _TEMPLATE_RUN, paths=_TEMPLATE_PATHS, code={},
                      secret_names=[], parent_run_id=_TEMPLATE_RUN)
    launcher.apply(spec, loaded, host_name, resolved.preset)
    for name in ("run_id", "created_at", "parent_run_id", "code"):
        spec[name] = None
    spec["secrets"].update(env_names=None, store=None)
    spec["wandb"]["run_id"] = None
    template = SpecTemplate(
        resolved.name, spec, isinstance(resolved.preset, EvalPreset),
        tuple(resolved.preset.secrets_env), tuple(loaded.config.secrets.env),
        needs_of(loaded, resolved.name))
    # what a warm submit reads back is JSON: a cold one uses the same document
    return SpecTemplate.from_json(json.loads(json.dumps(template.to_json()))) or template


def key_of(loaded: LoadedConfig, host_name: str, preset: str, sets: Sequence[str],
           debug: bool) -> str | None:
    """The key of a template (None for a config the cache does not know by a key)."""
    if not loaded.cache_key:
        return None
    asked = json.dumps([preset, list(sets), debug, host_name]).encode()
    return cache.digest_of(MAGIC, loaded.cache_key.encode(),
                           *cache.source_bytes(SPEC_SOURCES), asked)


def load(key: str | None) -> SpecTemplate | None:
    """The template stored under ``key``, or None (none, or one that is not trusted)."""
    payload = cache.read_entry(key, MAGIC, FOLDER) if key else None
    if payload is None:
        return None
    try:
        doc = json.loads(payload)
    except ValueError:  # a UnicodeDecodeError too
        return None
    return SpecTemplate.from_json(doc)


def store(key: str | None, template: SpecTemplate) -> None:
    """Keep ``template`` under ``key`` for the next submit; a failure only costs speed."""
    if key:
        payload = json.dumps(template.to_json(), separators=(",", ":")).encode()
        cache.write_entry(key, MAGIC, payload, FOLDER, MAX_TEMPLATES)
