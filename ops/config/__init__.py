"""The config layer: configs/ops/project.json, its local overlay, presets and --set.

The names below are imported on first use (PEP 562), so `import ops.config.loader` does not
import pydantic and the models; the loader imports them only when a config is validated.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ops.config.loader import (
        LoadedConfig,
        ResolvedPreset,
        find_project_config,
        load_config,
        resolve_preset,
    )
    from ops.config.models import (
        ArtifactContract,
        CommandPreset,
        DatasetRef,
        HostConfig,
        Limits,
        Preset,
        ProjectConfig,
        ProjectSection,
        SecretsSection,
        StdoutMetric,
        StorageSection,
        TmuxSection,
        WandbSection,
    )
    from ops.config.overrides import override_argv, parse_sets
    from ops.config.scaffold import InitResult, init_project

_HOME = {
    "ops.config.loader": ("LoadedConfig", "ResolvedPreset", "find_project_config", "load_config",
                          "resolve_preset"),
    "ops.config.models": ("ArtifactContract", "CommandPreset", "DatasetRef", "HostConfig",
                          "Limits", "Preset", "ProjectConfig", "ProjectSection", "SecretsSection",
                          "StdoutMetric", "StorageSection", "TmuxSection", "WandbSection"),
    "ops.config.overrides": ("override_argv", "parse_sets"),
    "ops.config.scaffold": ("InitResult", "init_project"),
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}

__all__ = [  # noqa: RUF022 - grouped by home module, as _HOME
    "LoadedConfig", "ResolvedPreset", "find_project_config", "load_config", "resolve_preset",
    "ArtifactContract", "CommandPreset", "DatasetRef", "HostConfig", "Limits", "Preset",
    "ProjectConfig", "ProjectSection", "SecretsSection", "StdoutMetric", "StorageSection",
    "TmuxSection", "WandbSection", "override_argv", "parse_sets", "InitResult", "init_project",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'ops.config' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
