"""What this clone knows of its past syncs, kept in `ops-synced.json` in the clone's git dir
(beside the refs/ops/ refs that keep those commits; `.ops/synced.json` when the project root
is not the top of its clone). Only hints: each is checked where it is used.

* Which commits each host holds a code tree of. A sync that succeeded records its commit under
  the host's name and ops home. A submit of a recorded commit goes straight to `runner submit`,
  which checks the tree itself (one round trip); a sync of a child of a recorded commit sends
  a bundle of that one commit without looking for a base first. When a record is wrong (the
  pod was rebuilt, a tree removed) the host says so, the host's entry is dropped and the sync
  runs the long way.
* Which commits have no `export-ignore`/`export-subst` attribute (so `git archive` of them is
  a checkout): a child whose .gitattributes did not change inherits that, without a grep.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from runner import contract

RECORD_NAME = "ops-synced.json"
SCHEMA = "ops.synced/1"
KEEP_PER_HOST = 64  # commits remembered per host, newest first
KEEP_PLAIN = 256


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


def _shas(value: Any) -> list[str]:
    return [sha for sha in value if isinstance(sha, str)] if isinstance(value, list) else []


class Record:
    """The record as read once; ``save`` writes it back if anything changed."""

    def __init__(self, repo_root: Path):
        self.path = record_path(repo_root)
        doc = contract.read_json_or_none(self.path) or {}  # damaged: none (it is rewritten)
        hosts = doc.get("hosts")
        self.hosts = {key: _shas(value) for key, value in hosts.items()
                      if isinstance(key, str)} if isinstance(hosts, dict) else {}
        self.plain = _shas(doc.get("plain"))
        self.changed = False

    def holds(self, name: str, home: str, commit: str) -> bool:
        """Whether the last word on this host says it has the tree of ``commit``."""
        return commit in self.hosts.get(host_key(name, home), [])

    def remember(self, name: str, home: str, commit: str) -> None:
        known = self.hosts.get(host_key(name, home), [])
        if known[:1] != [commit]:
            self.hosts[host_key(name, home)] = \
                [commit, *(sha for sha in known if sha != commit)][:KEEP_PER_HOST]
            self.changed = True

    def forget(self, name: str, home: str | None = None) -> None:
        """Drop a host's entries (one ops home, or all of them)."""
        kept = {key: value for key, value in self.hosts.items()
                if not (key == host_key(name, home) if home is not None
                        else key.startswith(f"{name}|"))}
        if kept != self.hosts:
            self.hosts, self.changed = kept, True

    def is_plain(self, commit: str) -> bool:
        return commit in self.plain

    def remember_plain(self, commit: str) -> None:
        if commit not in self.plain:
            self.plain = [commit, *self.plain][:KEEP_PLAIN]
            self.changed = True

    def save(self) -> None:
        """Replace the file (no fsync: a hint lost in a crash costs one sync the long way)."""
        if not self.changed:
            return
        doc = {"schema": SCHEMA, "hosts": self.hosts, "plain": self.plain}
        import tempfile  # here, not at the top: most commands change nothing

        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump(doc, fh)
                os.replace(tmp, self.path)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        self.changed = False


def holds(repo_root: Path, name: str, home: str, commit: str) -> bool:
    return Record(repo_root).holds(name, home, commit)


def forget(repo_root: Path, name: str, home: str | None = None) -> None:
    record = Record(repo_root)
    record.forget(name, home)
    record.save()
