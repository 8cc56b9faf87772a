"""Code sync: put one commit of the local repository on a host as an immutable tree.

1. The ref is resolved here (``pr:N`` is fetched from origin's ``refs/pull/N/head`` into
   ``refs/ops/pr/N``). Syncing what is checked out with a dirty working tree is refused, or with
   ``allow_dirty`` becomes a snapshot commit made through a temporary index.
2. Optimistic first attempt, one exec. The common case, a commit whose parent this clone
   synced to the host (ops.services.synced records it): a bundle of that one commit, made
   while `git status` checks the tree in a thread, goes straight to `apply`
   (ops.services.sync_host) with the parent's tree as the base to reuse; its
   ``refs/ops/commits/<sha>`` ref is written during the exec. Otherwise, when this clone
   synced an ancestor before (a local ``refs/ops/commits/<sha>``), a bundle of the commits
   since then goes to `apply` the same way. If the host lacks what was assumed, `apply`
   answers with the host's state and the sync goes on from there, as it does when there is
   no such ancestor after one `probe` exec.
3. With the host's state known, the bundle holds only the commits its mirror lacks (``git
   bundle create <sha> ^tip...``) and the base is the nearest first-parent ancestor whose tree
   is on the host. A host without git gets a ``git archive`` tar.gz instead. Either way
   ``<ops_home>/code/<sha>`` ends up equal to ``git archive <sha>``.

The user's index, files and refs are never touched; ops only writes refs under ``refs/ops/``
(``commits/<sha>`` for what was synced, ``snapshots/<sha>``, ``pr/<N>``) so that every commit a
run used stays reachable locally.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

from ops.errors import HostError, NotFoundError, OpsError, UsageError
from ops.hosts.base import ExecResult, HostCommandError, human_size, progress
from ops.hosts.local import run_local
from ops.services import sync_host, synced
from ops.services.sync_host import HostState, SyncHost
from runner.envpolicy import scrubbed_env

__all__ = ["LocalCommit", "SyncHost", "SyncPlan", "SyncResult", "code_home", "plan_sync",
           "resolve_local", "sync_commit", "sync_ref"]

Method = Literal["bundle", "mirror", "archive", "present"]

COMMITS_NS = "refs/ops/commits"
SNAPSHOTS_NS = "refs/ops/snapshots"
PR_NS = "refs/ops/pr"
SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
REUSE_DEPTH = 200  # how far back the first-parent history is searched for a tree to reuse
FETCH_TIMEOUT_S = 300.0


class LocalCommit(NamedTuple):
    """The commit to sync, as resolved in the local repository."""

    commit: str
    ref: str
    branch: str | None
    dirty: bool
    base_commit: str
    parents: tuple[str, ...] = ()  # as far as the resolving already knew them
    head: bool = False  # the commit is what HEAD pointed at when resolved


class SyncResult(NamedTuple):
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
        return self._asdict()


class _Sent(NamedTuple):
    method: Method
    bytes_sent: int = 0
    commits_sent: int = 0
    reused: str | None = None
    payload_bytes: int = 0


def sync_ref(host: SyncHost, repo_root: Path, ref: str, *, ops_home: str,
             allow_dirty: bool = False) -> SyncResult:
    """Make ``<ops_home>/code/<sha>`` on ``host`` hold the tree of ``ref`` (see module doc)."""
    plan = plan_sync(host, repo_root, ref, ops_home=ops_home, allow_dirty=allow_dirty)
    return plan.sync()


class SyncPlan(NamedTuple):
    """A resolved commit for one host, what this clone knows of that host, and the bundle
    already made for it when it is the child of a commit the host holds."""

    host: SyncHost
    repo_root: Path
    home: str
    local: LocalCommit
    record: synced.Record
    early: _OneCommit | None

    @property
    def held(self) -> bool:
        """Whether the host is recorded as holding the commit's tree already."""
        return self.record.holds(self.host.name, self.home, self.local.commit)

    def sync(self) -> SyncResult:
        return sync_commit(self.host, self.repo_root, self.local, ops_home=self.home,
                           record=self.record, early=self.early)


def plan_sync(host: SyncHost, repo_root: Path, ref: str, *, ops_home: str,
              allow_dirty: bool = False) -> SyncPlan:
    """Resolve ``ref`` for ``host``. While the dirty check runs (a thread), the bundle of a
    commit whose parent the host holds is made already; it is used only if the tree turns
    out clean (a snapshot commit is another commit)."""
    resolving = _Resolving(repo_root, ref)
    record = synced.Record(repo_root)
    home = code_home(host, ops_home)
    early = None
    if resolving.head:
        with contextlib.suppress(OpsError):  # made again, or not needed: the dirty check says
            early = _one_commit(repo_root, record, resolving.commit, resolving.parents,
                                host=host.name, home=home, head=True)
    return SyncPlan(host, repo_root, home, resolving.result(allow_dirty), record, early)


def code_home(host: SyncHost, ops_home: str) -> str:
    """The ops home as the host's paths name it: trees live in ``<it>/code/<sha>``."""
    return host.expand(ops_home).rstrip("/") or "/"


def sync_commit(host: SyncHost, repo_root: Path, local: LocalCommit, *, ops_home: str,
                record: synced.Record | None = None,
                early: _OneCommit | None = None) -> SyncResult:
    """Sync a commit ``resolve_local`` found; the host is then recorded as holding it
    (ops.services.synced), so that a later submit of it needs no sync exec."""
    started = time.monotonic()
    home = code_home(host, ops_home)
    record = record or synced.Record(repo_root)
    try:
        sent = _sync_commit(host, repo_root, home, local, record=record, early=early)
        record.remember(host.name, home, local.commit)
    finally:
        record.save()
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
    return _Resolving(repo_root, ref).result(allow_dirty)


class _Resolving:
    """A ref being resolved: the commit at once, the dirty check (a `git status`, the slow
    part on a big tree) in a thread, so that a sync can prepare its bundle meanwhile."""

    def __init__(self, repo: Path, ref: str):
        self.repo, self.ref = repo, ref
        found = _resolve_ref(repo, ref)
        self.commit, self.parents = found.commit, found.parents
        self.branch = found.current or None if ref in ("HEAD", "@") else found.branch
        self.head = ref in ("HEAD", "@") or \
            (self.branch is not None and self.branch == found.current)
        self._changed: list[str] | BaseException = []
        self._status: threading.Thread | None = None
        if self.head:  # what is checked out: its working tree may differ
            self._status = threading.Thread(target=self._check, daemon=True)
            self._status.start()

    def _check(self) -> None:
        try:
            self._changed = _changed_paths(self.repo)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller in result()
            self._changed = exc

    def result(self, allow_dirty: bool) -> LocalCommit:
        if self._status is not None:
            self._status.join()
        if isinstance(self._changed, BaseException):
            raise self._changed
        changed = self._changed
        if not changed:
            return LocalCommit(self.commit, self.ref, self.branch, False, self.commit,
                               self.parents, self.head)
        if not allow_dirty:
            raise UsageError(f"the working tree has uncommitted changes ({len(changed)} paths)",
                             details=[*changed[:5], *(["..."] if len(changed) > 5 else [])],
                             hint="commit them, or pass --allow-dirty to sync a snapshot of "
                                  "the tree")
        return LocalCommit(_snapshot(self.repo, self.commit), self.ref, self.branch, True,
                           self.commit, (self.commit,))


class _Ref(NamedTuple):
    commit: str
    branch: str | None  # the ref's local branch name, if it is one
    current: str  # the checked-out branch, "" when HEAD is detached
    parents: tuple[str, ...] = ()


def _resolve_ref(repo: Path, ref: str) -> _Ref:
    """The commit of a ref, its parents, its branch and the checked-out one: one git process
    for a plain ref, the careful way (with its messages) when that does not answer."""
    if ref.startswith("pr:"):
        return _Ref(_fetch_pull_request(repo, ref[3:]), None, _checked_out(repo))
    if not ref or ref.startswith("-"):
        raise UsageError(f"not a ref: {ref!r}")
    # the commit, its parents, then HEAD's full name, then the ref's (none for a bare sha)
    quick = _git(repo, "rev-parse", f"{ref}^{{commit}}", f"{ref}^@", "--symbolic-full-name",
                 "HEAD", ref, check=False)
    lines = quick.stdout.split()
    parents = tuple(line for line in lines[1:] if SHA_RE.fullmatch(line))
    names = lines[1 + len(parents):]
    if quick.ok and lines and SHA_RE.fullmatch(lines[0]) and len(names) in (1, 2):
        return _Ref(lines[0], _branch(names[1] if len(names) == 2 else ""),
                    _branch(names[0]) or "", parents)
    commit, branch = _verified_ref(repo, ref)
    return _Ref(commit, branch, _checked_out(repo))


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
    import tempfile  # here, not at the top: a warm submit never gets here (issue 14)

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

class _OneCommit(NamedTuple):
    """A commit whose parent the host holds: the bundle of it alone, and the parent's tree
    as the base to reuse (None when attributes forbid it)."""

    commit: str
    parent: str
    payload: bytes
    base: str | None
    named: bool  # the bundle names the commit under refs/ops/commits/ already


def _one_commit(repo: Path, record: synced.Record, commit: str, parents: tuple[str, ...], *,
                host: str, home: str, head: bool) -> _OneCommit | None:
    """The common sync after a commit: no search for a base, no count of commits to send.
    With ``head``, the bundle names the commit as HEAD, so no ref is written before."""
    if len(parents) != 1 or not record.holds(host, home, parents[0]) or \
            record.holds(host, home, commit):
        return None
    parent = parents[0]
    name = "HEAD" if head else f"{COMMITS_NS}/{commit}"
    if not head:
        _git(repo, "update-ref", name, commit)
    payload = _bundle(repo, name, [f"^{parent}"])
    base = parent if _tree_reusable(repo, record, parent, commit) else None
    return _OneCommit(commit, parent, payload, base, named=not head)


def _send_one(host: SyncHost, repo: Path, home: str,
              one: _OneCommit) -> tuple[_Sent | None, HostState | None]:
    """Apply a one-commit bundle: (what was sent, None), or (None, the host's state) when it
    lacked the parent after all. The commit's refs/ops/commits/ ref is written meanwhile."""
    progress(f"sync {host.name}: sending 1 commit, {human_size(len(one.payload))}")
    naming = None if one.named else _in_background(
        lambda: _git(repo, "update-ref", f"{COMMITS_NS}/{one.commit}", one.commit))
    applied = sync_host.apply(host, home, one.commit, "bundle", payload=one.payload,
                              base=one.base)
    if naming is not None:
        naming()
    if applied.outcome == "stale":
        return None, applied.state
    return _Sent("present" if applied.outcome == "present" else "bundle", applied.bytes_sent,
                 1, applied.reused, len(one.payload)), None


def _in_background(work: Callable[[], object]) -> Callable[[], None]:
    """Start ``work`` in a thread; the function returned waits for it (and raises its error)."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def wait() -> None:
        thread.join()
        if failed:
            raise failed[0]
    return wait


def _sync_commit(host: SyncHost, repo: Path, home: str, local: LocalCommit, *,
                 record: synced.Record, early: _OneCommit | None) -> _Sent:
    commit = local.commit
    one = early if early is not None and early.commit == commit else \
        _one_commit(repo, record, commit, local.parents, host=host.name, home=home, head=False)
    state = None
    if one is not None:
        sent, state = _send_one(host, repo, home, one)
        if sent is not None:
            return sent
        record.forget(host.name, home)  # the host lacked what the record said it held
    guess = None if state is not None else commit if record.holds(host.name, home, commit) \
        else _synced_ancestor(repo, commit)
    if guess is not None:
        sent, state = _send(host, repo, home, commit, record, excludes=[guess], base=guess)
        if sent is not None:
            return sent
    state = state or sync_host.probe(host, home)
    if commit in state.trees:
        return _Sent("present")
    if not state.git:
        return _send_archive(host, repo, home, commit, state)
    known = _known_commits(repo, [*state.tips, *state.trees])
    base = _nearest(repo, commit, [tree for tree in state.trees if tree in known])
    sent, _ = _send(host, repo, home, commit, record,
                    excludes=[t for t in state.tips if t in known],
                    base=base, inline=state.base64)
    if sent is None:
        raise HostError(f"{host.name} changed while ops was syncing {commit[:12]}; try again")
    return sent


def _send(host: SyncHost, repo: Path, home: str, commit: str, record: synced.Record, *,
          excludes: list[str], base: str | None,
          inline: bool = True) -> tuple[_Sent | None, HostState | None]:
    """Bundle what ``excludes`` lack and apply it: (what was sent, None), or (None, the
    host's state) when the host lacked what ``excludes`` and ``base`` assumed."""
    exclude_args = [f"^{sha}" for sha in excludes]
    if excludes == [commit] == [base]:  # synced from here before: its ref is there already
        missing = 0
    else:
        missing = int(_out(repo, "rev-list", "--count", commit, *exclude_args))
        _git(repo, "update-ref", f"{COMMITS_NS}/{commit}", commit)
    payload = _bundle(repo, f"{COMMITS_NS}/{commit}", exclude_args) if missing else None
    if payload:
        progress(f"sync {host.name}: sending {missing} commit(s), {human_size(len(payload))}")
    base = base if base and _tree_reusable(repo, record, base, commit) else None
    applied = sync_host.apply(host, home, commit, "bundle" if payload else "mirror",
                              payload=payload, inline=inline, base=base)
    if applied.outcome == "stale":
        return None, applied.state
    if applied.outcome == "present":
        return _Sent("present", applied.bytes_sent), None
    return _Sent("bundle" if payload else "mirror", applied.bytes_sent, missing,
                 applied.reused, len(payload or b"")), None


def _bundle(repo: Path, name: str, exclude_args: list[str]) -> bytes:
    """A bundle of the ref ``name`` (the host reads the commits, never the ref's name)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ops-bundle-") as tmp:
        path = Path(tmp) / "sync.bundle"
        _git(repo, "bundle", "create", "-q", str(path), name, *exclude_args)
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


def _tree_reusable(repo: Path, record: synced.Record, base: str, commit: str) -> bool:
    """Whether the tree of ``base`` may become ``commit``'s by a checkout of the difference:
    not when .gitattributes changed in between or make `git archive` differ from a checkout
    (export-ignore, export-subst). Unchanged attributes keep the base's recorded verdict."""
    if base == commit:
        return False
    changed = _git(repo, "diff", "--quiet", base, commit, "--", "*.gitattributes", check=False)
    if not changed.ok:
        return False
    if not record.is_plain(base):
        export = _git(repo, "grep", "-q", "-e", "export-ignore", "-e", "export-subst", commit,
                      "--", "*.gitattributes", check=False)
        if export.exit_code != 1:
            return False
    record.remember_plain(commit)
    return True


def _send_archive(host: SyncHost, repo: Path, home: str, commit: str,
                  state: HostState) -> _Sent:
    """The host has no git: send the tree as a tar.gz of `git archive`."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ops-archive-") as tmp:
        path = Path(tmp) / "tree.tar.gz"
        _git(repo, "archive", "--format=tar.gz", "-o", str(path), commit)
        data = path.read_bytes()
    applied = sync_host.apply(host, home, commit, "tar", payload=data, inline=state.base64)
    if applied.outcome == "stale":
        raise HostError(f"{host.name} changed while ops was syncing {commit[:12]}; try again")
    method: Method = "present" if applied.outcome == "present" else "archive"
    return _Sent(method, applied.bytes_sent, payload_bytes=len(data))
