"""Rules and defaults that finding a host needs, in a module without pydantic.

A command that only asks a host something (`ops run status`, `tail`, `ls`) reads a few
settings of the effective config (``LoadedConfig.setting``) and never builds the models; the
models take their defaults and rules from here, so both read the same config the same way.
"""

from __future__ import annotations

DEFAULT_PYTHON = "python3"
"""The interpreter that runs the runner on a host that names none."""


def remote_outputs_default(project_name: str, remote_outputs_dir: str | None) -> str:
    """Root of the run directories on a remote host that sets no outputs_dir of its own."""
    return remote_outputs_dir or f"/mnt/runs/{project_name}"
