"""`ops init`: write a starter configs/ops/project.json and gitignore what is not to commit.

Refused where a project file exists already (unless --force), including the root of the git
repository the current directory is in: a second config in a subdirectory would shadow it.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.config.loader import LOCAL_NAME, PROJECT_RELPATH, read_config_bytes
from ops.config.models import NAME_PATTERN, ProjectConfig
from ops.errors import ConfigError, ConflictError
from runner.contract import atomic_write_bytes, dumps

SCHEMA_RELPATH = Path("schemas/project.schema.json")
SCHEMA_REF = "../../schemas/project.schema.json"
GITIGNORE_LINE = f"{PROJECT_RELPATH.parent.as_posix()}/{LOCAL_NAME}"
# the local overlay, .ops/ (pinned host keys, fetch records), local run dirs (runs/) and
# fetched copies (artifacts/) stay out of git
GITIGNORE_LINES = (GITIGNORE_LINE, ".ops/", "runs/", "artifacts/")

# A workload that runs anywhere: prints a few steps; `--set steps=10` changes how many.
SMOKE_CODE = """\
import sys, time
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
steps = int(args.get("steps", 3))
for step in range(steps):
    print(f"step {step} loss {1.0 / (step + 1):.4f}", flush=True)
    time.sleep(0.2)
print("smoke done")
"""


@dataclass(frozen=True)
class InitResult:
    name: str
    project_path: Path
    created: tuple[Path, ...]
    changed: tuple[Path, ...]


def sanitize_name(raw: str) -> str:
    """A project name from a directory name: allowed characters only, at most 64."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", raw)
    name = re.sub(r"^[^A-Za-z0-9]+", "", name)[:64]
    return name or "project"


def starter_config(name: str, with_schema: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {"$schema": SCHEMA_REF} if with_schema else {}
    doc["project"] = {"name": name}
    doc["presets"] = {
        "smoke": {
            "kind": "command",
            "description": "prints a few steps: checks that launch, tail and fetch work",
            "command": ["{python}", "-c", SMOKE_CODE],
            "overrides": {"steps": 3},
            "metrics_from_stdout": [{"pattern": r"step (?P<step>\d+) loss (?P<loss>[0-9.]+)"}],
            "best": {"loss": "min"},
        }
    }
    return doc


def init_project(repo_root: Path, name: str | None = None, force: bool = False) -> InitResult:
    """Create configs/ops/project.json (refused when it exists, unless ``force``)."""
    project_name = _checked_name(name) if name is not None else sanitize_name(repo_root.name)
    target = repo_root / PROJECT_RELPATH
    if not force:
        _refuse_shadowing(repo_root)
    existed = os.path.lexists(target)
    if existed and not target.is_symlink() and not stat.S_ISREG(target.lstat().st_mode):
        read_config_bytes(target)  # says what it is (a directory, a FIFO, ...), exit 2
    if existed and not force:
        raise ConflictError(
            f"{target} already exists; it was left unchanged",
            hint="edit it, or pass --force to replace it with the starter config",
        )
    doc = starter_config(project_name, (repo_root / SCHEMA_RELPATH).is_file())
    ProjectConfig.model_validate(doc)  # the starter must always be valid
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, dumps(doc))
    created, changed = ([], [target]) if existed else ([target], [])
    gitignore = repo_root / ".gitignore"
    outcomes = {ensure_gitignored(gitignore, line) for line in GITIGNORE_LINES}
    if "created" in outcomes:
        created.append(gitignore)
    elif "changed" in outcomes:
        changed.append(gitignore)
    return InitResult(project_name, target, tuple(created), tuple(changed))


def git_root(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` holding `.git` (a dir, or a worktree's
    file), or None outside a repository."""
    for folder in (start, *start.parents):
        if os.path.lexists(folder / ".git"):
            return folder
    return None


def _refuse_shadowing(here: Path) -> None:
    root = git_root(here.resolve())
    if root is None or root == here.resolve():
        return
    existing = root / PROJECT_RELPATH
    if os.path.lexists(existing):
        raise ConflictError(
            f"this repository already has a project file at its root: {existing}; nothing "
            "was written",
            hint=f"run ops from anywhere in the repository to use it (or `cd {root}`); "
                 "--force writes a second, separate project here",
        )


def _checked_name(name: str) -> str:
    if not re.fullmatch(NAME_PATTERN, name):
        raise ConfigError(
            f"invalid project name {name!r}: use 1-64 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return name


def ensure_gitignored(gitignore: Path, entry: str) -> str:
    """Add ``entry`` to .gitignore once: returns "created", "changed" or "unchanged"."""
    if not os.path.lexists(gitignore):
        atomic_write_bytes(gitignore, f"{entry}\n".encode())
        return "created"
    # a regular file only, read without blocking (a FIFO or directory here is said, exit 2)
    try:
        text = read_config_bytes(gitignore).decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{gitignore} is not UTF-8 text; add {entry} to it by hand") from None
    present = {line.strip().lstrip("/") for line in text.splitlines()}
    if entry.lstrip("/") in present:
        return "unchanged"
    separator = "" if not text or text.endswith("\n") else "\n"
    atomic_write_bytes(gitignore, f"{text}{separator}{entry}\n".encode(), mode=_mode(gitignore))
    return "changed"


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777
