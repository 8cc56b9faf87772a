"""What code a local run uses: the commit, branch and dirtiness of the working tree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ops.hosts.local import run_local


def code_info(repo_root: Path) -> dict[str, Any]:
    """Git facts of ``repo_root``; all None (not an error) outside a git repository."""
    info: dict[str, Any] = {"dir": str(repo_root), "commit": None, "ref": None, "branch": None,
                            "dirty": None, "base_commit": None}
    head = run_local(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=repo_root, check=False)
    if not head.ok:
        return info
    commit = head.stdout.strip()
    branch = run_local(["git", "symbolic-ref", "-q", "--short", "HEAD"], cwd=repo_root,
                       check=False).stdout.strip() or None
    # --no-optional-locks: reading the status must never rewrite the user's .git/index
    porcelain = run_local(["git", "--no-optional-locks", "status", "--porcelain",
                           "--untracked-files=normal"],
                          cwd=repo_root, check=False).stdout
    info.update(commit=commit, ref=branch or commit, branch=branch,
                dirty=bool(porcelain.strip()), base_commit=commit)
    return info
