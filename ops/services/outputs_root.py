"""Where run directories live, per host, and where that came from.

Host `local` keeps its runs in the checkout: ``<repo>/<project.local_outputs_dir>/<name>``
(``runs/<name>`` by default; an absolute `local_outputs_dir` replaces ``<repo>/runs``). So two
checkouts of one project on one machine never list or cancel each other's runs, and the place
does not depend on who runs ops (root once had them in a writable /mnt/runs/<name>). A remote
host keeps them in its `outputs_dir`, else ``project.remote_outputs_dir``, else
``/mnt/runs/<name>``.

Local runs written where the old rule put them are not lost silently: ``earlier_runs_note``
says where they are when that place holds runs of this project.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from ops.config.loader import LoadedConfig, source_of
from ops.config.settings import remote_outputs_default
from ops.errors import ConfigError
from runner import contract

IGNORE_FILE = ".gitignore"  # written beside a root inside the checkout: git never sees runs
SCAN_LIMIT = 2000  # entries of an old outputs root looked at for runs of this project
COUNT_LIMIT = 200  # runs counted there: enough to say "200+"
SPEC_LIMIT = 1 << 20  # bytes of a spec.json read there (a spec is kilobytes)


class OutputsRoot(NamedTuple):
    """The outputs root of one host, and the setting and file it came from."""

    host: str
    kind: str  # local, host, pod
    path: str  # absolute for `local`; as the host will expand it (~ allowed) otherwise
    setting: str  # dotted config path, or the pod record, that decided it
    source: str  # default, project.json, project.local.json or .ops/pods.json

    def to_json(self) -> dict[str, str]:
        return dict(self._asdict())


def local_outputs_root(loaded: LoadedConfig) -> Path:
    """``<repo>/<local_outputs_dir>/<name>``, absolute; nothing is created."""
    base = Path(os.path.expanduser(loaded.setting("project", "local_outputs_dir")))
    return Path(os.path.abspath(loaded.repo_root / base / loaded.setting("project", "name")))


def ensure_local_outputs_root(loaded: LoadedConfig) -> Path:
    """The local outputs root, created if needed (the rule does not depend on whether it
    exists, so a listing of a root that is not there yet just finds nothing)."""
    root = local_outputs_root(loaded)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the local outputs root {root}: "
                          f"{exc.strerror or exc}",
                          hint="set project.local_outputs_dir (in project.local.json for "
                               "this machine only) to a directory you can write") from None
    _ignore_in_git(root, Path(os.path.abspath(loaded.repo_root)))
    return root


def _ignore_in_git(root: Path, repo: Path) -> None:
    """Keep run directories out of git when the root is inside the checkout (``runs/<name>``
    by default): a .gitignore beside the root names the root and itself, and nothing else,
    so run dirs never make the working tree dirty (a dirty tree is recorded with every run
    and refused by a remote submit). An existing .gitignore is the user's and is left as is;
    none is written at the top of the checkout."""
    parent = root.parent
    if parent == repo or not parent.is_relative_to(repo):
        return
    with contextlib.suppress(OSError):  # FileExistsError included: the file is the user's
        fd = os.open(parent / IGNORE_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as fh:
            fh.write("# written by ops: run directories of host `local` are not source\n"
                     f"/{IGNORE_FILE}\n/{root.name}/\n")


def remote_default(loaded: LoadedConfig) -> str:
    """The outputs root of a remote host that sets none of its own."""
    return remote_outputs_default(loaded.setting("project", "name"),
                                  loaded.setting("project", "remote_outputs_dir"))


def outputs_roots(loaded: LoadedConfig, pods: Sequence[tuple[str, str | None]] = ()
                  ) -> list[OutputsRoot]:
    """The outputs root of `local`, of each configured host and of each ``(name,
    outputs_dir)`` pod, each with the setting and file that decided it."""
    project = ("project", "local_outputs_dir")
    roots = [OutputsRoot("local", "local", str(local_outputs_root(loaded)),
                         ".".join(project), _source(loaded, project))]
    for name, host in loaded.setting("hosts").items():
        if host["outputs_dir"] is not None:
            own = ("hosts", name, "outputs_dir")
            roots.append(OutputsRoot(name, "host", host["outputs_dir"], ".".join(own),
                                     _source(loaded, own)))
        else:
            roots.append(_project_default(loaded, name, "host"))
    for name, outputs_dir in pods:
        roots.append(OutputsRoot(name, "pod", outputs_dir, "pod record", ".ops/pods.json")
                     if outputs_dir else _project_default(loaded, name, "pod"))
    return roots


def _project_default(loaded: LoadedConfig, name: str, kind: str) -> OutputsRoot:
    setting = ("project", "remote_outputs_dir")
    return OutputsRoot(name, kind, remote_default(loaded), ".".join(setting),
                       _source(loaded, setting))


def _source(loaded: LoadedConfig, parts: Sequence[str]) -> str:
    return source_of(parts, loaded.project_data, loaded.local_data)


def earlier_local_runs(loaded: LoadedConfig) -> tuple[Path, int, bool] | None:
    """Where the old rule put local runs (project.remote_outputs_dir, or /mnt/runs/<name>,
    when writable), how many runs of this project are there and whether there may be more
    (the count stops at COUNT_LIMIT), when that is not the local outputs root now and holds
    at least one. Its entries are untrusted: only directories with a run id for a name, no
    links, a bounded spec.json each."""
    old = Path(os.path.expanduser(remote_default(loaded)))
    try:
        if not old.is_absolute() or old.resolve() == local_outputs_root(loaded).resolve():
            return None
        count, more = _count_runs(old, loaded.setting("project", "name"))
    except OSError:
        return None
    return (old, count, more) if count else None


def _count_runs(root: Path, project: str) -> tuple[int, bool]:
    count = 0
    with os.scandir(root) as entries:
        for seen, entry in enumerate(entries):
            if seen >= SCAN_LIMIT or count >= COUNT_LIMIT:
                return count, True
            count += _run_of(entry, project)
    return count, False


def _run_of(entry: os.DirEntry[str], project: str) -> bool:
    if not contract.RUN_ID_RE.fullmatch(entry.name):
        return False
    try:
        if not entry.is_dir(follow_symlinks=False):
            return False
    except OSError:
        return False
    spec = contract.read_json_or_none(Path(entry.path) / contract.SPEC, SPEC_LIMIT)
    return spec is not None and spec.get("project") == project


def earlier_runs_note(loaded: LoadedConfig) -> str | None:
    """One line pointing at local runs the old rule put elsewhere, or None."""
    found = earlier_local_runs(loaded)
    if found is None:
        return None
    old, count, more = found
    new = local_outputs_root(loaded)
    runs = f"{count}{'+' if more else ''} earlier run{'s' * (count != 1 or more)}"
    return (f"note: {runs} of this project are in {old}, where local runs went before; "
            f"local runs now live in {new} (`mv {old}/* {new}/` brings them here)")


def all_outputs_roots(loaded: LoadedConfig) -> list[OutputsRoot]:
    """outputs_roots for `local`, the configured hosts and the pods of .ops/pods.json (read
    only when it exists: showing the config creates nothing)."""
    from ops.pods.state import PodStore

    store = PodStore(loaded.repo_root)
    pods = [(pod.name, pod.outputs_dir) for pod in store.all()] if store.path.exists() else []
    return outputs_roots(loaded, pods)
