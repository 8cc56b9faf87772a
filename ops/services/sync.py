"""Code sync: put one commit of the local repository on a host as an immutable tree.

1. The ref is resolved here (``pr:N`` is fetched from origin's ``refs/pull/N/head`` into
   ``refs/ops/pr/N``). Syncing what is checked out with a dirty working tree is refused, or with
   ``allow_dirty`` becomes a snapshot commit made through a temporary index.
2. Optimistic first attempt, one exec: when this clone synced an ancestor before (a local
   ``refs/ops/commits/<sha>``), a bundle of the commits since then goes straight to `apply`
   (ops.services.sync_host) with that ancestor's tree as the base to reuse. If the host lacks
   it, `apply` answers with the host's state and the sync goes on from there, as it does when
   there is no such ancestor after one `probe` exec.
3. With the host's state known, the bundle holds only the commits its mirror lacks (``git
   bundle create <sha> ^tip...``) and the base is the nearest first-parent ancestor whose tree
   is on the host. A host without git gets a ``git archive`` tar.gz instead. Either way
   ``<ops_home>/code/<sha>`` ends up equal to ``git archive <sha>``.

The user's index, files and refs are never touched; ops only writes refs under ``refs/ops/``
(``commits/<sha>`` for what was synced, ``snapshots/<sha>``, ``pr/<N>``) so that every commit a
run used stays reachable locally.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ops.errors import HostError, NotFoundError, UsageError
from ops.hosts.base import ExecResult, HostCommandError, human_size, progress
from ops.hosts.local import run_local
from ops.services import sync_host, synced
from ops.services.sync_host import HostState, SyncHost
from runner.envpolicy import scrubbed_env

__all__ = ["LocalCommit", "SyncHost", "SyncResult", "code_home", "resolve_local", "sync_commit",
           "sync_ref"]

Method = Literal["bundle", "mirror", "archive", "present"]

COMMITS_NS = "refs/ops/commits"
SNAPSHOTS_NS = "refs/ops/snapshots"
PR_NS = "refs/ops/pr"
SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
REUSE_DEPTH = 200  # how far back the first-parent history is searched for a tree to reuse
FETCH_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class LocalCommit:
    """The commit to sync, as resolved in the local repository."""

    commit: str
    ref: str
    branch: str | None
    dirty: bool
    base_commit: str


@dataclass(frozen=True)
class SyncResult:
    host: str
    commit: str
    ref: str
    branch: str | None
    dirty: bool
    base_commit: str
    code_dir: str
    method: Method
    bytes_sent: int  # what crossed the wire for the payload (base64 when sent on stdin)
    payload_bytes: int  # the bundle or tar.gz itself
    commits_sent: int
    reused_tree: str | None  # the synced ancestor whose tree was hard-linked into this one
    seconds: float

    def code_info(self) -> dict[str, Any]:
        """The `code` block of a spec (same keys as ops.gitinfo.code_info)."""
        return {"dir": self.code_dir, "commit": self.commit, "ref": self.ref,
                "branch": self.branch, "dirty": self.dirty, "base_commit": self.base_commit}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Sent:
    method: Method
    bytes_sent: int = 0
    commits_sent: int = 0
    reused: str | None = None
    payload_bytes: int = 0


def sync_ref(host: SyncHost, repo_root: Path, ref: str, *, ops_home: str,
             allow_dirty: bool = False) -> SyncResult:
    """Make ``<ops_home>/code/<sha>`` on ``host`` hold the tree of ``ref`` (see module doc)."""
    return sync_commit(host, repo_root, resolve_local(repo_root, ref, allow_dirty=allow_dirty),
                       ops_home=ops_home)


def code_home(host: SyncHost, ops_home: str) -> str:
    """The ops home as the host's paths name it: trees live in ``<it>/code/<sha>``."""
    return host.expand(ops_home).rstrip("/") or "/"


def sync_commit(host: SyncHost, repo_root: Path, local: LocalCommit, *,
                ops_home: str) -> SyncResult:
    """Sync a commit ``resolve_local`` found; the host is then recorded as holding it
    (ops.services.synced), so that a later submit of it needs no sync exec."""
    started = time.monotonic()
    home = code_home(host, ops_home)
    sent = _sync_commit(host, repo_root, home, local.commit)
    synced.remember(repo_root, host.name, home, local.commit)
    seconds = round(time.monotonic() - started, 3)
    progress(f"sync {host.name}: {local.commit[:12]} {sent.method}, {sent.commits_sent} "
             f"commit(s), {human_size(sent.bytes_sent)} sent in {seconds:.2f} s")
    return SyncResult(host.name, local.commit, local.ref, local.branch, local.dirty,
                      local.base_commit, f"{home}/code/{local.commit}", sent.method,
                      sent.bytes_sent, sent.payload_bytes, sent.commits_sent, sent.reused,
                      seconds)


# -- the local side ------------------------------------------------------------------------------

def _git(repo: Path, *args: str, env: dict[str, str] | None = None,
         input_text: str | None = None, check: bool = True) -> ExecResult:
    return run_local(["git", *args], cwd=repo, env=env, input_text=input_text, check=check)


def _out(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return _git(repo, *args, env=env).stdout.strip()


def resolve_local(repo_root: Path, ref: str, *, allow_dirty: bool = False) -> LocalCommit:
    """The commit ``ref`` names; a snapshot commit when it is the dirty checked-out tree."""
    commit, branch, current = _resolve_ref(repo_root, ref)
    if ref in ("HEAD", "@"):
        branch = current or None
    checked_out = ref in ("HEAD", "@") or (branch is not None and branch == current)
    changed = _changed_paths(repo_root) if checked_out else []
    if not changed:
        return LocalCommit(commit, ref, branch, False, commit)
    if not allow_dirty:
        raise UsageError(f"the working tree has uncommitted changes ({len(changed)} paths)",
                         details=[*changed[:5], *(["..."] if len(changed) > 5 else [])],
                         hint="commit them, or pass --allow-dirty to sync a snapshot of the tree")
    return LocalCommit(_snapshot(repo_root, commit), ref, branch, True, commit)


def _resolve_ref(repo: Path, ref: str) -> tuple[str, str | None, str]:
    """(commit, local branch name or None, the checked-out branch or "") of a ref: one git
    process for a plain ref, the careful way (with its messages) when that does not answer."""
    if ref.startswith("pr:"):
        return _fetch_pull_request(repo, ref[3:]), None, _checked_out(repo)
    if not ref or ref.startswith("-"):
        raise UsageError(f"not a ref: {ref!r}")
    # the commit, then HEAD's full name, then the ref's (none for a bare sha)
    quick = _git(repo, "rev-parse", f"{ref}^{{commit}}", "--symbolic-full-name", "HEAD", ref,
                 check=False)
    lines = quick.stdout.split()
    if quick.ok and len(lines) in (2, 3) and SHA_RE.fullmatch(lines[0]):
        return lines[0], _branch(lines[2] if len(lines) == 3 else ""), _branch(lines[1]) or ""
    commit, branch = _verified_ref(repo, ref)
    return commit, branch, _checked_out(repo)


def _checked_out(repo: Path) -> str:
    """The checked-out branch, "" when HEAD is detached."""
    head = _git(repo, "rev-parse", "--symbolic-full-name", "HEAD", check=False).stdout.strip()
    return _branch(head) or ""


def _branch(full_name: str) -> str | None:
    return full_name.removeprefix("refs/heads/") if full_name.startswith("refs/heads/") else None


def _verified_ref(repo: Path, ref: str) -> tuple[str, str | None]:
    """(commit, local branch name or None) of a ref, or a clear error."""
    found = _git(repo, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}", check=False)
    if not found.ok and not _git(repo, "rev-parse", "--git-dir", check=False).ok:
        raise UsageError(f"{repo} is not inside a git repository")
    if not found.ok:
        raise UsageError(f"unknown ref {ref!r} in {repo}",
                         hint="give a branch, tag or commit of this repository, or pr:N")
    full = _git(repo, "rev-parse", "--symbolic-full-name", ref, check=False).stdout.strip()
    return found.stdout.strip(), _branch(full)


def _fetch_pull_request(repo: Path, number: str) -> str:
    """Fetch origin's refs/pull/N/head into refs/ops/pr/N and return its commit."""
    if not re.fullmatch(r"[0-9]+", number):
        raise UsageError(f"pr:N takes a pull request number, not {number!r}")
    local_ref = f"{PR_NS}/{number}"
    # the user's own environment on purpose: fetching may need their ssh agent or proxy
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    fetched = run_local(["git", "fetch", "--no-tags", "-q", "origin",
                         f"+refs/pull/{number}/head:{local_ref}"], cwd=repo, env=env,
                        check=False, timeout=FETCH_TIMEOUT_S)
    if not fetched.ok:
        tail = fetched.stderr.strip().splitlines()[-3:]
        if "couldn't find remote ref" in fetched.stderr:
            raise NotFoundError(f"origin has no pull request {number}", details=tail)
        raise HostError(f"cannot fetch pull request {number} from origin", details=tail)
    return _out(repo, "rev-parse", "--verify", f"{local_ref}^{{commit}}")


# ops's own state in the repo (pinned host keys, remembered runners, fetch records) is never
# code: it neither makes a tree dirty nor goes into a snapshot, gitignored or not
NOT_OPS_STATE = ":(exclude,top).ops"


def _changed_paths(repo: Path) -> list[str]:
    """Paths `git status` reports (tracked changes and untracked, non-ignored files).
    --no-optional-locks: status must not refresh the user's index as a side effect."""
    out = _git(repo, "--no-optional-locks", "status", "--porcelain=v1", "-z",
               "--untracked-files=normal", "--", ".", NOT_OPS_STATE).stdout
    paths: list[str] = []
    fields = iter(out.split("\0"))
    for entry in fields:
        if len(entry) > 3:
            paths.append(entry[3:])
            if entry[0] in "RC":
                next(fields, None)  # the rename's source path
    return paths


def _add_all(repo: Path, env: dict[str, str]) -> None:
    """`git add -A` of everything but ops's state into the temporary index. When `.ops` is
    gitignored, git stages everything and still exits 1 because the exclusion names an
    ignored path; that complaint alone is not a failure."""
    added = _git(repo, "add", "-A", "--", ".", NOT_OPS_STATE, env=env, check=False)
    if added.ok:
        return
    listed = [line.strip() for line in added.stderr.splitlines()
              if line.strip() and not line.startswith(("hint:", "The following paths"))]
    if added.exit_code != 1 or listed != [".ops"]:
        raise HostCommandError(added)


def _snapshot(repo: Path, base: str) -> str:
    """Commit the working tree on top of ``base`` through a temporary index. The same tree on
    the same base always gives the same commit (fixed identity, base's date), so re-syncing an
    unchanged dirty tree finds it on the host."""
    stamp = f"@{_out(repo, 'show', '-s', '--format=%ct', base)} +0000"
    with tempfile.TemporaryDirectory(prefix="ops-snapshot-") as tmp:
        env = {**scrubbed_env(), "GIT_INDEX_FILE": str(Path(tmp) / "index"),
               "GIT_AUTHOR_NAME": "ops snapshot", "GIT_AUTHOR_EMAIL": "ops@localhost",
               "GIT_COMMITTER_NAME": "ops snapshot", "GIT_COMMITTER_EMAIL": "ops@localhost",
               "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
        _git(repo, "read-tree", base, env=env)
        _add_all(repo, env)
        tree = _out(repo, "write-tree", env=env)
        commit = _out(repo, "commit-tree", "--no-gpg-sign", tree, "-p", base, "-m",
                      f"ops snapshot of the working tree on {base[:12]}", env=env)
    _git(repo, "update-ref", f"{SNAPSHOTS_NS}/{commit}", commit)
    return commit


# -- what to send --------------------------------------------------------------------------------

def _sync_commit(host: SyncHost, repo: Path, home: str, commit: str) -> _Sent:
    guess = _synced_ancestor(repo, commit)
    state = None
    if guess is not None:
        sent, state = _send(host, repo, home, commit, excludes=[guess], base=guess)
        if sent is not None:
            return sent
    state = state or sync_host.probe(host, home)
    if commit in state.trees:
        return _Sent("present")
    if not state.git:
        return _send_archive(host, repo, home, commit, state)
    known = _known_commits(repo, [*state.tips, *state.trees])
    base = _nearest(repo, commit, [tree for tree in state.trees if tree in known])
    sent, _ = _send(host, repo, home, commit, excludes=[t for t in state.tips if t in known],
                    base=base, inline=state.base64)
    if sent is None:
        raise HostError(f"{host.name} changed while ops was syncing {commit[:12]}; try again")
    return sent


def _send(host: SyncHost, repo: Path, home: str, commit: str, *, excludes: list[str],
          base: str | None, inline: bool = True) -> tuple[_Sent | None, HostState | None]:
    """Bundle what ``excludes`` lack and apply it: (what was sent, None), or (None, the
    host's state) when the host lacked what ``excludes`` and ``base`` assumed."""
    exclude_args = [f"^{sha}" for sha in excludes]
    if excludes == [commit] == [base]:  # synced from here before: its ref is there already
        missing = 0
    else:
        missing = int(_out(repo, "rev-list", "--count", commit, *exclude_args))
        _git(repo, "update-ref", f"{COMMITS_NS}/{commit}", commit)
    payload = _bundle(repo, commit, exclude_args) if missing else None
    if payload:
        progress(f"sync {host.name}: sending {missing} commit(s), {human_size(len(payload))}")
    base = base if base and _tree_reusable(repo, base, commit) else None
    applied = sync_host.apply(host, home, commit, "bundle" if payload else "mirror",
                              payload=payload, inline=inline, base=base)
    if applied.outcome == "stale":
        return None, applied.state
    if applied.outcome == "present":
        return _Sent("present", applied.bytes_sent), None
    return _Sent("bundle" if payload else "mirror", applied.bytes_sent, missing,
                 applied.reused, len(payload or b"")), None


def _bundle(repo: Path, commit: str, exclude_args: list[str]) -> bytes:
    with tempfile.TemporaryDirectory(prefix="ops-bundle-") as tmp:
        path = Path(tmp) / "sync.bundle"
        _git(repo, "bundle", "create", "-q", str(path), f"{COMMITS_NS}/{commit}",
             *exclude_args)
        return path.read_bytes()


def _synced_ancestor(repo: Path, commit: str) -> str | None:
    """The nearest first-parent ancestor (or the commit itself) this clone synced before:
    the first-parent history, each commit with its refs/ops/commits/ name if it has one."""
    history = _out(repo, "log", "--no-show-signature", "--no-color", "--first-parent",
                   f"--max-count={REUSE_DEPTH}", "--decorate=full",
                   f"--decorate-refs={COMMITS_NS}/", "--format=%H%d", commit)
    for line in history.splitlines():
        sha, _, names = line.partition(" ")
        if f"{COMMITS_NS}/{sha}" in names:
            return sha
    return None


def _nearest(repo: Path, commit: str, candidates: list[str]) -> str | None:
    if not candidates:
        return None
    wanted = set(candidates)
    history = _out(repo, "rev-list", "--first-parent", f"--max-count={REUSE_DEPTH}", commit)
    return next((sha for sha in history.split() if sha in wanted), None)


def _known_commits(repo: Path, shas: list[str]) -> set[str]:
    """Those of ``shas`` that are commits here too (others cannot be named in git commands)."""
    if not shas:
        return set()
    out = _git(repo, "cat-file", "--batch-check=%(objectname) %(objecttype)",
               input_text="".join(f"{sha}\n" for sha in shas)).stdout
    return {line.split()[0] for line in out.splitlines() if line.endswith(" commit")}


def _tree_reusable(repo: Path, base: str, commit: str) -> bool:
    """Whether the tree of ``base`` may become ``commit``'s by a checkout of the difference:
    not when .gitattributes make `git archive` differ from a checkout (export-ignore,
    export-subst) or changed in between."""
    if base == commit:
        return False
    export = _git(repo, "grep", "-q", "-e", "export-ignore", "-e", "export-subst", commit,
                  "--", "*.gitattributes", check=False)
    changed = _git(repo, "diff", "--quiet", base, commit, "--", "*.gitattributes", check=False)
    return export.exit_code == 1 and changed.ok


def _send_archive(host: SyncHost, repo: Path, home: str, commit: str,
                  state: HostState) -> _Sent:
    """The host has no git: send the tree as a tar.gz of `git archive`."""
    with tempfile.TemporaryDirectory(prefix="ops-archive-") as tmp:
        path = Path(tmp) / "tree.tar.gz"
        _git(repo, "archive", "--format=tar.gz", "-o", str(path), commit)
        data = path.read_bytes()
    applied = sync_host.apply(host, home, commit, "tar", payload=data, inline=state.base64)
    if applied.outcome == "stale":
        raise HostError(f"{host.name} changed while ops was syncing {commit[:12]}; try again")
    method: Method = "present" if applied.outcome == "present" else "archive"
    return _Sent(method, applied.bytes_sent, payload_bytes=len(data))
