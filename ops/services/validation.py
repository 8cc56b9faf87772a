"""Validating a run directory on this machine (a local run, or one fetched from a pod)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ops.config.loader import load_config
from ops.errors import NotFoundError, UsageError
from runner import contract
from runner.validate import ValidationReport, validate_run_dir


def required_files(explicit_config: Path | None) -> Sequence[str]:
    """artifact_contract.required of the project when there is one (L0 checks those), else
    the contract's default list: validate also works on a run dir outside any project."""
    try:
        return load_config(explicit_config).config.artifact_contract.required
    except NotFoundError:
        return contract.DEFAULT_REQUIRED


def validate_dir(run_dir: Path, *, deep: bool = False,
                 required: Sequence[str] = contract.DEFAULT_REQUIRED) -> ValidationReport:
    if not run_dir.exists():
        raise NotFoundError(f"no such run directory: {run_dir}")
    if not run_dir.is_dir():
        raise UsageError(f"not a directory: {run_dir}")
    return validate_run_dir(run_dir, required=required, deep=deep)
