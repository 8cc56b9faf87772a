"""Which commits each host holds a code tree of, as this clone last saw (`ops-synced.json`
in the clone's git dir, beside the refs/ops/ refs that keep those commits; `.ops/synced.json`
when the project root is not the top of its clone).

A sync that succeeded records its commit under the host's name and ops home. A submit of a
commit recorded here goes straight to `runner submit`, which checks the tree itself (one
round trip); a submit of any other commit syncs first. The record is only a hint: when it
is wrong (the pod was rebuilt, someone removed the tree) the runner answers that the code is
missing, the host's entry is dropped and the sync runs after all.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from runner import contract

RECORD_NAME = "ops-synced.json"
KEEP_PER_HOST = 64  # commits remembered per host, newest first


def host_key(name: str, home: str) -> str:
    return f"{name}|{home}"


def record_path(repo_root: Path) -> Path:
    """In the git dir, so the record never shows as an untracked file: `.git/` itself, or
    the dir a `.git` file points at (a worktree, a submodule)."""
    dot_git = repo_root / ".git"
    if dot_git.is_dir():
        return dot_git / RECORD_NAME
    try:
        first = dot_git.read_text(errors="replace").split("\n", 1)[0]
    except OSError:
        first = ""
    if first.startswith("gitdir: ") and (repo_root / first[8:].strip()).is_dir():
        return repo_root / first[8:].strip() / RECORD_NAME
    return repo_root / ".ops" / "synced.json"


def _read(repo_root: Path) -> dict[str, list[str]]:
    doc = contract.read_json_or_none(record_path(repo_root))  # damaged: none (rewritten)
    if doc is None:
        return {}
    return {key: [sha for sha in value if isinstance(sha, str)]
            for key, value in doc.items() if isinstance(key, str) and isinstance(value, list)}


def _write(repo_root: Path, doc: dict[str, list[str]]) -> None:
    path = record_path(repo_root)
    with contextlib.suppress(OSError):  # a hint that cannot be written costs a sync later
        path.parent.mkdir(parents=True, exist_ok=True)
        contract.atomic_write_json(path, doc)


def holds(repo_root: Path, name: str, home: str, commit: str) -> bool:
    """Whether the last word on this host says it has the tree of ``commit``."""
    return commit in _read(repo_root).get(host_key(name, home), [])


def remember(repo_root: Path, name: str, home: str, commit: str) -> None:
    doc = _read(repo_root)
    key = host_key(name, home)
    known = doc.get(key, [])
    if known[:1] == [commit]:
        return  # already the newest: no write
    doc[key] = [commit, *(sha for sha in known if sha != commit)][:KEEP_PER_HOST]
    _write(repo_root, doc)


def forget(repo_root: Path, name: str, home: str | None = None) -> None:
    """Drop what was recorded for a host (one ops home, or all of them)."""
    doc = _read(repo_root)
    kept = {key: value for key, value in doc.items()
            if not (key == host_key(name, home or "") if home is not None
                    else key.startswith(f"{name}|"))}
    if kept != doc:
        _write(repo_root, kept)
