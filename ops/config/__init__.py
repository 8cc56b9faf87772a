"""The config layer: configs/ops/project.json, its local overlay, presets and --set."""

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

__all__ = [
    "ArtifactContract",
    "CommandPreset",
    "DatasetRef",
    "HostConfig",
    "InitResult",
    "Limits",
    "LoadedConfig",
    "Preset",
    "ProjectConfig",
    "ProjectSection",
    "ResolvedPreset",
    "SecretsSection",
    "StdoutMetric",
    "StorageSection",
    "TmuxSection",
    "WandbSection",
    "find_project_config",
    "init_project",
    "load_config",
    "override_argv",
    "parse_sets",
    "resolve_preset",
]
