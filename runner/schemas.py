"""Find and load the JSON Schemas of the run-directory contract.

The schema files live in ``schemas/`` at the top of a source checkout; the wheel ships the
same files as ``runner/schemas/`` so that a pod with only the runner installed has them.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from runner import contract

_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")


def schema_dir() -> Path:
    """The directory holding ``<name>.schema.json``: the wheel's copy, else the checkout's."""
    shipped = Path(__file__).parent / "schemas"
    if shipped.is_dir():
        return shipped
    return Path(__file__).resolve().parent.parent / "schemas"


def schema_path(name: str) -> Path:
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"not a schema name: {name!r}")
    return schema_dir() / f"{name}.schema.json"


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """The parsed schema ``name`` (e.g. ``"summary"``); cached, so do not mutate it."""
    return contract.read_json(schema_path(name))
