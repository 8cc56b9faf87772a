"""Tidying a run dir whose wrapper is gone: stale temp files and a leftover secret store.

A kill between ``contract.atomic_write_with`` creating its temp file and replacing the target
leaves ``.<name>.<random>.tmp`` behind; a wrapper killed before it took its secret store leaves
the store (plaintext secrets) on disk. Neither has an owner once the wrapper is gone, so the
status verb removes them. Nothing is removed while the run's wrapper lives.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from runner import contract, redact

STALE_AFTER_SEC = 30.0  # a temp file younger than this may still be written (an escaped child)
WALK_LIMIT = 10_000  # entries looked at under checkpoints/ per call


def temp_files(run_dir: Path) -> Iterator[Path]:
    """Temp files of interrupted atomic writes: in the run dir and under checkpoints/ (links
    are never followed)."""
    yield from _temps_in(run_dir)
    seen = 0
    for parent, dirs, files in os.walk(run_dir / contract.CHECKPOINTS_DIR, followlinks=False):
        seen += len(dirs) + len(files)
        if seen > WALK_LIMIT:
            return
        yield from (Path(parent) / name for name in files if contract.is_temp_name(name))


def _temps_in(directory: Path) -> Iterator[Path]:
    try:
        names = os.listdir(directory)
    except OSError:
        return
    yield from (directory / name for name in names if contract.is_temp_name(name))


def remove_stale_temps(run_dir: Path, now: float) -> int:
    removed = 0
    for path in temp_files(run_dir):
        try:
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode) or now - info.st_mtime < STALE_AFTER_SEC:
                continue
            path.unlink()
        except OSError:
            continue
        removed += 1
    return removed


def store_of_this_run(spec: Mapping[str, Any], run_dir: Path) -> bool:
    """Whether spec.json's store path names this run's store (``.../secrets/<run_id>.json`` or
    ``.../.secrets/<run_id>.json``, a regular file): spec.json is untrusted, and a path it
    names is removed only when it is where a store of this run would be."""
    block = spec.get("secrets")
    store = block.get("store") if isinstance(block, Mapping) else None
    if not isinstance(store, str) or not store or "\0" in store:
        return False
    path = Path(os.path.expanduser(store))
    if path.name != f"{run_dir.name}.json" or path.parent.name not in ("secrets", ".secrets"):
        return False
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def tidy(run_dir: Path, spec: Mapping[str, Any] | None, now: float) -> list[str]:
    """Remove what a gone wrapper left behind; one note per kind of thing removed."""
    notes = []
    removed = remove_stale_temps(run_dir, now)
    if removed:
        notes.append(f"removed {removed} temp file(s) left by an interrupted write")
    if spec is not None and store_of_this_run(spec, run_dir) and redact.discard_store(spec):
        notes.append("removed the run's secret store: its wrapper is gone")
    return notes
